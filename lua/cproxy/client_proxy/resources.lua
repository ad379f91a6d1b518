-- The implementing client's available resources and the routing policies
-- that pick one for each request. Pure Lua, no Prosody: specs drive it
-- directly.
--
-- Routing looks only at the resources of the highest priority (so a client
-- can drain a resource by lowering its priority), unless a preferred
-- resource from client_proxy_resources is available: the first such wins.
-- A resource that keeps answering with errors a healthy implementation
-- would not send is quarantined for a while: routing passes it by, unless
-- every resource is quarantined.
-- SPDX-License-Identifier: MIT
local ipairs, next, setmetatable = ipairs, next, setmetatable;
local random, table_remove = math.random, table.remove;
local _ENV = nil;

local STICKY_MAX = 10000; -- senders remembered by "sticky", then it starts over
local QUARANTINE_AFTER = 3; -- bad answers in a row
local QUARANTINE_SECONDS = 60;

local pool_mt = {};
pool_mt.__index = pool_mt;

local policies = {};

function policies.random(pool, candidates)
	return candidates[random(#candidates)];
end

function policies.round_robin(pool, candidates)
	local turn = pool.turn;
	pool.turn = turn + 1;
	return candidates[turn % #candidates + 1];
end

-- Fewest pending requests; ties go round the candidates in turn.
function policies.least_pending(pool, candidates)
	local n, pending = #candidates, pool.pending;
	local start = pool.turn;
	pool.turn = start + 1;
	local best, best_count;
	for i = 0, n - 1 do
		local resource = candidates[(start + i) % n + 1];
		local count = pending[resource] or 0;
		if not best or count < best_count then
			best, best_count = resource, count;
		end
	end
	return best;
end

-- A sender stays on its resource while that resource is a candidate: one
-- lowered out of the highest priority is drained like any other.
function policies.sticky(pool, candidates, sender)
	if sender == nil then
		return candidates[random(#candidates)];
	end
	local resource = pool.sticky[sender];
	if resource and pool.candidate[resource] then
		return resource;
	end
	resource = candidates[random(#candidates)];
	if pool.sticky_count >= STICKY_MAX then
		pool.sticky, pool.sticky_count = {}, 0;
	end
	if pool.sticky[sender] == nil then
		pool.sticky_count = pool.sticky_count + 1;
	end
	pool.sticky[sender] = resource;
	return resource;
end

-- Whether `resource` may be routed to, given `exclude` (a set, or nil) and
-- whether quarantined ones count.
local function eligible(pool, resource, exclude, with_quarantined)
	return not (exclude and exclude[resource]) and (with_quarantined or not pool.quarantined[resource]);
end

-- The highest-priority eligible resources, in the order they became
-- available (so that round_robin alternates strictly), and as a set.
-- Quarantined ones only where nothing else is eligible.
local function best_of(pool, exclude)
	for _, with_quarantined in ipairs({ false, true }) do
		local best;
		for _, resource in ipairs(pool.order) do
			local p = pool.priority[resource];
			if eligible(pool, resource, exclude, with_quarantined) and (not best or p > best) then
				best = p;
			end
		end
		if best then
			local candidates, candidate = {}, {};
			for _, resource in ipairs(pool.order) do
				if pool.priority[resource] == best and eligible(pool, resource, exclude, with_quarantined) then
					candidates[#candidates + 1] = resource;
					candidate[resource] = true;
				end
			end
			return candidates, candidate;
		end
	end
	return {}, {};
end

local function rebuild(pool)
	pool.candidates, pool.candidate = best_of(pool, nil);
end

-- Adds or updates an available resource.
function pool_mt:set(resource, priority)
	if not self.priority[resource] then
		self.order[#self.order + 1] = resource;
	end
	self.priority[resource] = priority or 0;
	rebuild(self);
end

-- Removes a resource; returns true if it was available.
function pool_mt:remove(resource)
	if not self.priority[resource] then
		return false;
	end
	self.priority[resource] = nil;
	self.failures[resource], self.quarantined[resource] = nil, nil;
	local order = self.order;
	for i = #order, 1, -1 do
		if order[i] == resource then
			table_remove(order, i); -- no holes: routing never sees a gap
		end
	end
	rebuild(self);
	return true;
end

-- Removes every resource; returns the list of those that were available.
function pool_mt:clear()
	local gone = self.order;
	self.order, self.priority, self.candidates, self.candidate = {}, {}, {}, {};
	self.failures, self.quarantined = {}, {};
	return gone;
end

function pool_mt:has(resource)
	return self.priority[resource] ~= nil;
end

function pool_mt:count()
	return #self.order;
end

-- Ends the quarantines that are over at `now`.
local function release(pool, now)
	local next_end;
	for resource, ends in next, pool.quarantined do
		if ends <= now then
			pool.quarantined[resource] = nil;
		elseif not next_end or ends < next_end then
			next_end = ends;
		end
	end
	pool.next_release = next_end;
	rebuild(pool);
end

-- Returns a resource for a request from `sender`, or nil when none is
-- available. `now` (seconds) ends quarantines; `exclude`, a set of
-- resources already tried for this request, keeps those out.
function pool_mt:choose(sender, now, exclude)
	if self.next_release and now and now >= self.next_release then
		release(self, now);
	end
	local candidates = self.candidates;
	if exclude then -- a retry: rare, so its list is built for it
		candidates = best_of(self, exclude);
	end
	if #candidates == 0 then
		return nil;
	end
	-- A preferred resource wins at any priority, unless quarantined.
	for _, resource in ipairs(self.preferred) do
		if self.priority[resource] and eligible(self, resource, exclude, false) then
			return resource;
		end
	end
	if #candidates == 1 and self.pick ~= policies.sticky then
		return candidates[1];
	end
	return self.pick(self, candidates, sender);
end

-- A resource answered with an error a healthy implementation would not
-- send. Returns true when that put it in quarantine.
function pool_mt:failed(resource, now)
	if not self.priority[resource] or self.quarantined[resource] then
		return false;
	end
	local n = (self.failures[resource] or 0) + 1;
	if n < QUARANTINE_AFTER then
		self.failures[resource] = n;
		return false;
	end
	self.failures[resource] = nil;
	local ends = now + QUARANTINE_SECONDS;
	self.quarantined[resource] = ends;
	if not self.next_release or ends < self.next_release then
		self.next_release = ends;
	end
	rebuild(self);
	return true;
end

-- A resource answered as it should: its count of bad answers starts over.
function pool_mt:succeeded(resource)
	if self.failures[resource] then
		self.failures[resource] = nil;
	end
end

function pool_mt:is_quarantined(resource)
	return self.quarantined[resource] ~= nil;
end

-- Requests in flight per resource, for least_pending and for metrics.
function pool_mt:add_pending(resource, delta)
	local n = (self.pending[resource] or 0) + delta;
	self.pending[resource] = n > 0 and n or nil;
	return n;
end

function pool_mt:pending_of(resource)
	return self.pending[resource] or 0;
end

-- Iterates over the resources with requests in flight.
function pool_mt:pending_resources()
	return next, self.pending, nil;
end

local function new(policy, preferred)
	local pick = policies[policy or "random"];
	if not pick then
		return nil, "unknown policy";
	end
	return setmetatable({
		pick = pick;
		preferred = preferred or {};
		order = {}; -- available resources, oldest first
		priority = {}; -- resource -> priority
		candidates = {}; -- the resources routing picks from, in order
		candidate = {}; -- the same, as a set
		pending = {}; -- resource -> requests in flight
		failures = {}; -- resource -> bad answers in a row
		quarantined = {}; -- resource -> when its quarantine ends
		next_release = nil; -- the earliest of those
		sticky = {}; sticky_count = 0;
		turn = 0;
	}, pool_mt);
end

return {
	new = new;
	policies = { "random", "round_robin", "least_pending", "sticky" };
	QUARANTINE_AFTER = QUARANTINE_AFTER;
	QUARANTINE_SECONDS = QUARANTINE_SECONDS;
};
