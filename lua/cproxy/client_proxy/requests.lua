-- client_proxy's IQ requests in flight, both ways: each one under a fresh
-- id, its deadline, and the caps on how many one sender and everyone may
-- hold. Pure Lua, no Prosody: specs drive it with their own clock. Not
-- here: stanzas, routing, what a reply must match beyond its id.
--
-- Fresh ids are a per-load prefix and a counter, so ids sent out stay
-- unique across a module reload: a late reply to the previous load's
-- request matches nothing here. Only requests in flight are held (the GC
-- walks every live table on each cycle), so the expiry scan is
-- O(requests in flight), at most max_pending.
-- SPDX-License-Identifier: MIT
local ceil, next, pairs, setmetatable = math.ceil, next, pairs, setmetatable;
local tostring = tostring;
local _ENV = nil;

local set_mt = {};
set_mt.__index = set_mt;

-- (record, owner, now) -> fresh id | nil, "overall" | "sender"
-- Holds `record` until finish(); sets record.fresh_id and
-- record.deadline. `owner` (a sender's bare JID) is counted against
-- max_per_owner; nil counts only against max_pending.
function set_mt:add(record, owner, now)
	if self.count >= self.max_pending then
		return nil, "overall";
	end
	local held = 0;
	if owner ~= nil then
		held = self.per_owner[owner] or 0;
		if held >= self.max_per_owner then
			return nil, "sender";
		end
		self.per_owner[owner] = held + 1;
	end
	local n = self.issued + 1;
	self.issued = n;
	local id = self.prefix .. tostring(n);
	record.fresh_id, record.owner, record.deadline = id, owner, ceil(now + self.timeout);
	self.records[id] = record;
	self.count = self.count + 1;
	return id;
end

-- The record sent out under `id`, or nil.
function set_mt:get(id)
	return self.records[id];
end

-- Stops holding `record`; returns false if it was not held.
function set_mt:finish(record)
	local id = record.fresh_id;
	if self.records[id] ~= record then
		return false;
	end
	self.records[id] = nil;
	self.count = self.count - 1;
	local owner = record.owner;
	if owner ~= nil then
		local held = self.per_owner[owner] - 1;
		self.per_owner[owner] = held > 0 and held or nil;
	end
	return true;
end

-- Records for which `predicate(record, arg)` holds, still held: taken out of
-- the table first, so that handling them may add to it.
function set_mt:select(predicate, arg)
	local found = {};
	for _, record in pairs(self.records) do
		if predicate(record, arg) then
			found[#found + 1] = record;
		end
	end
	return found;
end

local function is_due(record, now)
	return record.deadline <= now;
end

-- (now) -> records whose deadline has passed, no longer held.
function set_mt:expire(now)
	local due = self:select(is_due, now);
	for i = 1, #due do
		self:finish(due[i]);
	end
	return due;
end

-- () -> every record, no longer held.
function set_mt:drain()
	local all = self:select(function () return true; end);
	self.records, self.per_owner, self.count = {}, {}, 0;
	return all;
end

function set_mt:empty()
	return next(self.records) == nil;
end

-- Requests held for `owner`.
function set_mt:held_by(owner)
	return self.per_owner[owner] or 0;
end

-- opts: timeout (seconds), max_pending, max_per_owner, prefix (unique to
-- this load of the module).
local function new(opts)
	return setmetatable({
		timeout = opts.timeout;
		max_pending = opts.max_pending;
		max_per_owner = opts.max_per_owner;
		prefix = opts.prefix;
		records = {}; -- fresh id -> record
		per_owner = {}; -- owner -> requests held
		count = 0;
		issued = 0;
	}, set_mt);
end

return {
	new = new;
};
