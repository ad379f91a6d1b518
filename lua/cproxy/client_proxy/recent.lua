-- The JIDs that wrote to a component lately: client_proxy lets its
-- implementing client reach only those. Pure Lua, no Prosody: specs drive
-- it with their own clock.
--
-- Two generations. Each one lasts `window` seconds, or until it holds
-- `max_entries` JIDs or about `max_bytes` bytes, then becomes the previous
-- one and the old previous one is dropped. Writing again puts a JID in the
-- current generation; looking it up does not. So a JID stays known for at
-- least `window` seconds after it last wrote, unless more than
-- `max_entries` others wrote since, and for at most twice that: memory
-- stays bounded whatever the senders do. Not here: what a JID may do.
-- SPDX-License-Identifier: MIT
local pairs, setmetatable = pairs, setmetatable;
local _ENV = nil;

-- What one entry costs beyond the key's bytes (the string's header and a
-- table node), roughly.
local ENTRY_OVERHEAD = 96;

local store_mt = {};
store_mt.__index = store_mt;

-- The current generation becomes the previous one; the new one starts at
-- `started`.
local function rotate(self, started)
	self.previous, self.current = self.current, {};
	self.entries, self.bytes, self.started = 0, 0, started;
end

-- Remembers that `jid` wrote at time `now`.
function store_mt:put(jid, now)
	local window = self.window;
	if now >= self.started + window then
		-- Generations stay aligned on windows, so that the previous one
		-- holds only JIDs that wrote in the window before this one.
		if now < self.started + 2 * window then
			rotate(self, self.started + window);
		else
			rotate(self, now);
			self.previous = {}; -- all older than a window
		end
	end
	if self.current[jid] then
		return;
	end
	if self.entries >= self.max_entries or self.bytes >= self.max_bytes then
		rotate(self, now);
	end
	self.current[jid] = true;
	self.entries = self.entries + 1;
	self.bytes = self.bytes + #jid + ENTRY_OVERHEAD;
end

-- Whether `jid` wrote within the window, as of `now`.
function store_mt:has(jid, now)
	local age = now - self.started;
	if age >= 2 * self.window then
		return false; -- nothing was written for two windows
	end
	if self.current[jid] then
		return true;
	end
	return age < self.window and self.previous[jid] == true;
end

-- How many JIDs are held, in both generations (for specs).
function store_mt:size()
	local n = 0;
	for _ in pairs(self.current) do
		n = n + 1;
	end
	for _ in pairs(self.previous) do
		n = n + 1;
	end
	return n;
end

local function new(window, max_entries, max_bytes, now)
	return setmetatable({
		window = window;
		max_entries = max_entries;
		max_bytes = max_bytes;
		current = {}; previous = {};
		entries = 0; bytes = 0; started = now;
	}, store_mt);
end

return {
	new = new;
	entry_overhead = ENTRY_OVERHEAD;
};
