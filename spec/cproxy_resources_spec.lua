-- The resource pool of cproxy.resources: bookkeeping, highest-priority
-- candidates, each routing policy, and preferred resources.
local resources = dofile("lua/cproxy/client_proxy/resources.lua");

-- A pool with the given resources, all at priority 0 unless given.
local function pool_of(policy, list, preferred)
	local pool = assert(resources.new(policy, preferred));
	for _, resource in ipairs(list) do
		pool:set(resource, 0);
	end
	return pool;
end

-- Picks n times; returns the picks and how often each resource came up.
local function pick(pool, n, sender)
	local picks, seen = {}, {};
	for i = 1, n do
		local resource = pool:choose(sender);
		picks[i] = resource;
		if resource ~= nil then
			seen[resource] = (seen[resource] or 0) + 1;
		end
	end
	return picks, seen;
end

local function assert_only(seen, allowed)
	for resource in pairs(seen) do
		assert.truthy(allowed[resource], "picked " .. tostring(resource));
	end
end

describe("cproxy.resources", function ()
	it("lists its policies and refuses unknown ones", function ()
		assert.same({ "random", "round_robin", "least_pending", "sticky" }, resources.policies);
		assert.same({ nil, "unknown policy" }, { resources.new("fastest") });
		for _, policy in ipairs(resources.policies) do
			assert.truthy(resources.new(policy));
		end
		assert.truthy(resources.new()); -- random by default
	end);

	it("keeps track of available resources", function ()
		local pool = pool_of("random", {});
		assert.is_nil(pool:choose("s@example"));
		assert.equal(0, pool:count());
		pool:set("a", 1);
		pool:set("b", 1);
		pool:set("a", 2); -- an update, not a second entry
		assert.equal(2, pool:count());
		assert.is_true(pool:has("a"));
		assert.is_false(pool:has("c"));
		assert.is_true(pool:remove("a"));
		assert.is_false(pool:remove("a"));
		assert.is_false(pool:has("a"));
		assert.equal(1, pool:count());
		pool:set("c");
		assert.same({ "b", "c" }, pool:clear());
		assert.equal(0, pool:count());
		assert.is_false(pool:has("b"));
		assert.is_nil(pool:choose("s@example"));
	end);

	it("routes only to the highest priority", function ()
		local pool = pool_of("round_robin", {});
		pool:set("low", 1);
		pool:set("high1", 5);
		pool:set("high2", 5);
		local _, seen = pick(pool, 20);
		assert.same({ high1 = 10, high2 = 10 }, seen);
		pool:set("high1", 0); -- drained
		_, seen = pick(pool, 10);
		assert.same({ high2 = 10 }, seen);
		pool:remove("high2");
		_, seen = pick(pool, 10);
		assert.same({ low = 10 }, seen);
	end);

	describe("round_robin", function ()
		it("alternates strictly in arrival order", function ()
			local picks = pick(pool_of("round_robin", { "a", "b" }), 30);
			for i = 1, 30 do
				assert.equal(i % 2 == 1 and "a" or "b", picks[i]);
			end
			local order = { "x", "y", "z" };
			picks = pick(pool_of("round_robin", order), 30);
			for i = 1, 30 do
				assert.equal(order[(i - 1) % 3 + 1], picks[i]);
			end
		end);

		it("never sees a gap after removals", function ()
			local pool = pool_of("round_robin", { "a", "b", "c", "d", "e" });
			pick(pool, 7);
			pool:remove("b");
			pool:remove("d");
			local picks, seen = pick(pool, 300);
			for i = 1, 300 do
				assert.is_not_nil(picks[i]);
				if i > 1 then
					assert.are_not.equal(picks[i - 1], picks[i]);
				end
			end
			assert.same({ a = 100, c = 100, e = 100 }, seen);
			pool:remove("c");
			pool:set("f", 0);
			picks, seen = pick(pool, 300);
			assert.equal(300, #picks);
			assert.same({ a = 100, e = 100, f = 100 }, seen);
		end);
	end);

	it("random picks every candidate and nothing else", function ()
		local pool = pool_of("random", {});
		pool:set("a", 3);
		pool:set("b", 3);
		pool:set("c", 3);
		pool:set("low", 2);
		local picks, seen = pick(pool, 2000);
		assert.equal(2000, #picks);
		assert_only(seen, { a = true, b = true, c = true });
		assert.truthy(seen.a and seen.b and seen.c);
	end);

	it("least_pending picks the least busy resource", function ()
		local pool = pool_of("least_pending", { "a", "b", "c" });
		assert.equal(2, pool:add_pending("a", 2));
		assert.equal(1, pool:add_pending("b", 1));
		assert.equal(3, pool:add_pending("c", 3));
		local _, seen = pick(pool, 20);
		assert.same({ b = 20 }, seen);
		assert.equal(2, pool:add_pending("b", 1));
		assert.equal(1, pool:add_pending("a", -1));
		_, seen = pick(pool, 20);
		assert.same({ a = 20 }, seen);
		assert.equal(0, pool:add_pending("a", -1));
		assert.is_nil(pool.pending.a);
		assert.equal(2, pool.pending.b);
		-- ties go round the candidates
		pool:add_pending("b", -2);
		pool:add_pending("c", -3);
		assert.same({}, pool.pending);
		_, seen = pick(pool, 30);
		assert.same({ a = 10, b = 10, c = 10 }, seen);
	end);

	describe("sticky", function ()
		it("keeps a sender on one resource and spreads senders", function ()
			local pool = pool_of("sticky", { "a", "b", "c" });
			local _, seen = pick(pool, 100, "alice@example/1");
			local first = next(seen);
			assert.same({ [first] = 100 }, seen);
			pool = pool_of("sticky", { "a", "b" });
			local used = {};
			for i = 1, 200 do
				used[pool:choose("user" .. i .. "@example")] = true;
			end
			assert.same({ a = true, b = true }, used);
		end);

		it("moves a sender whose resource went away, then stays", function ()
			local pool = pool_of("sticky", { "a", "b", "c" });
			local old = pool:choose("alice@example");
			pool:remove(old);
			local new = pool:choose("alice@example");
			assert.is_not_nil(new);
			assert.are_not.equal(old, new);
			assert.is_true(pool:has(new));
			local _, seen = pick(pool, 100, "alice@example");
			assert.same({ [new] = 100 }, seen);
		end);

		it("moves a sender off a resource lowered out of the highest priority", function ()
			local pool = pool_of("sticky", { "a", "b", "c" });
			local old = pool:choose("alice@example");
			pool:set(old, -1);
			local _, seen = pick(pool, 50, "alice@example");
			local new = next(seen);
			assert.are_not.equal(old, new);
			assert.same({ [new] = 50 }, seen);
		end);

		it("keeps a sender that came while one resource was up on it when more arrive", function ()
			local pool = pool_of("sticky", { "a" });
			assert.equal("a", pool:choose("alice@example"));
			pool:set("b", 0);
			pool:set("c", 0);
			local _, seen = pick(pool, 50, "alice@example");
			assert.same({ a = 50 }, seen);
		end);
	end);

	it("prefers the first available preferred resource", function ()
		local pool = pool_of("random", { "a", "b", "c" }, { "b", "a" });
		local _, seen = pick(pool, 50);
		assert.same({ b = 50 }, seen);
		pool:remove("b");
		_, seen = pick(pool, 50);
		assert.same({ a = 50 }, seen);
		pool:remove("a");
		pool:set("d", 0);
		_, seen = pick(pool, 200);
		assert_only(seen, { c = true, d = true });
		assert.truthy(seen.c and seen.d);
		-- a preferred resource wins even below the highest priority
		pool:set("a", -5);
		pool:set("c", 10);
		_, seen = pick(pool, 50);
		assert.same({ a = 50 }, seen);
	end);

	-- jitsi-meet #14049: a session that answered feature-not-implemented
	-- kept its share of the requests for months (#28).
	describe(":failed", function ()
		local AFTER, SECONDS = resources.QUARANTINE_AFTER, resources.QUARANTINE_SECONDS;

		it("quarantines a resource after bad answers in a row, until its time is up", function ()
			for _, policy in ipairs(resources.policies) do
				local pool = pool_of(policy, { "good", "bad" });
				for i = 1, AFTER - 1 do
					assert.is_false(pool:failed("bad", 100), policy .. " " .. i);
				end
				assert.is_true(pool:failed("bad", 100));
				assert.is_true(pool:is_quarantined("bad"));
				local _, seen = pick(pool, 50, "alice@example");
				assert.same({ good = 50 }, seen, policy);
				-- Still out just before the end, back in at it.
				assert.equal("good", pool:choose("alice@example", 100 + SECONDS - 1));
				local back = false;
				for _ = 1, 200 do
					back = back or pool:choose("bob@example/" .. _, 100 + SECONDS) == "bad";
				end
				assert.is_true(back, policy);
				assert.is_false(pool:is_quarantined("bad"));
			end
		end);

		it("starts the count over after a good answer", function ()
			local pool = pool_of("random", { "a", "b" });
			for _ = 1, 5 do
				for _ = 1, AFTER - 1 do
					assert.is_false(pool:failed("a", 0));
				end
				pool:succeeded("a");
			end
			assert.is_false(pool:is_quarantined("a"));
		end);

		it("routes to quarantined resources when nothing else is there, and passes a quarantined preferred one by", function ()
			local pool = pool_of("round_robin", { "a", "b" }, { "a" });
			for _ = 1, AFTER do
				pool:failed("a", 0);
			end
			assert.equal("b", pool:choose("x", 1));
			pool:failed("b", 0); pool:failed("b", 0); pool:failed("b", 0);
			local _, seen = pick(pool, 20);
			assert_only(seen, { a = true, b = true });
			assert.equal(20, (seen.a or 0) + (seen.b or 0));
		end);

		it("forgets a resource's record when it goes away", function ()
			local pool = pool_of("random", { "a", "b" });
			for _ = 1, AFTER do
				pool:failed("a", 0);
			end
			pool:remove("a");
			pool:set("a", 0);
			assert.is_false(pool:is_quarantined("a"));
		end);
	end);

	describe(":choose with resources to exclude", function ()
		it("picks among the others, at the best priority they have, or none", function ()
			local pool = pool_of("round_robin", { "a", "b" });
			pool:set("c", -1);
			for _ = 1, 10 do
				assert.equal("b", pool:choose("x", 0, { a = true }));
			end
			assert.equal("c", pool:choose("x", 0, { a = true, b = true }));
			assert.is_nil(pool:choose("x", 0, { a = true, b = true, c = true }));
		end);
	end);
end);
