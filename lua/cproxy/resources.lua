-- The implementing client's available resources and the routing policies
-- that pick one for each request. Pure Lua, no Prosody: specs drive it
-- directly.
--
-- Routing looks only at the resources of the highest priority (so a client
-- can drain a resource by lowering its priority), unless a preferred
-- resource from client_proxy_resources is available: the first such wins.
-- SPDX-License-Identifier: MIT
local ipairs, next, setmetatable = ipairs, next, setmetatable;
local random, table_remove = math.random, table.remove;
local _ENV = nil;

local STICKY_MAX = 10000; -- senders remembered by "sticky", then it starts over

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

-- Rebuilds the candidate list: the highest-priority resources, in the
-- order they became available, so that round_robin alternates strictly.
local function rebuild(pool)
	local best;
	for _, resource in ipairs(pool.order) do
		local p = pool.priority[resource];
		if not best or p > best then
			best = p;
		end
	end
	local candidates, candidate = {}, {};
	for _, resource in ipairs(pool.order) do
		if pool.priority[resource] == best then
			candidates[#candidates + 1] = resource;
			candidate[resource] = true;
		end
	end
	pool.candidates, pool.candidate = candidates, candidate;
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
	return gone;
end

function pool_mt:has(resource)
	return self.priority[resource] ~= nil;
end

function pool_mt:count()
	return #self.order;
end

-- Returns a resource for a request from `sender`, or nil when none is available.
function pool_mt:choose(sender)
	local candidates = self.candidates;
	if #candidates == 0 then
		return nil;
	end
	for _, resource in ipairs(self.preferred) do
		if self.priority[resource] then
			return resource;
		end
	end
	if #candidates == 1 and self.pick ~= policies.sticky then
		return candidates[1];
	end
	return self.pick(self, candidates, sender);
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
		sticky = {}; sticky_count = 0;
		turn = 0;
	}, pool_mt);
end

return {
	new = new;
	policies = { "random", "round_robin", "least_pending", "sticky" };
};
