-- The requests in flight of cproxy.requests: fresh ids, deadlines, caps per
-- owner and overall, and the scans for expiry and failover, on a clock the
-- spec drives.
local requests = dofile("lua/cproxy/client_proxy/requests.lua");

local function new_set(opts)
	opts = opts or {};
	return requests.new({
		timeout = opts.timeout or 30, max_pending = opts.max_pending or 100,
		max_per_owner = opts.max_per_owner or 10, prefix = opts.prefix or "p-",
	});
end

describe("cproxy.requests", function ()
	describe(":add", function ()
		it("gives each request a fresh id under the set's prefix and finds it by that id", function ()
			local set = new_set({ prefix = "load1-", max_per_owner = 50 });
			local seen = {};
			for i = 1, 50 do
				local record = { n = i };
				local id = assert(set:add(record, "alice@x", 0));
				assert.equal(id, record.fresh_id);
				assert.equal("load1-", id:sub(1, 6));
				assert.is_nil(seen[id]);
				seen[id] = true;
				assert.equal(record, set:get(id));
			end
			assert.equal(50, set.count);
		end);

		it("never reuses an id of another prefix, as after a reload (#17)", function ()
			local old, new = new_set({ prefix = "a-" }), new_set({ prefix = "b-" });
			local r1, r2 = {}, {};
			old:add(r1, "alice@x", 0);
			new:add(r2, "alice@x", 0);
			assert.not_equal(r1.fresh_id, r2.fresh_id);
			assert.is_nil(new:get(r1.fresh_id));
		end);

		it("refuses over the cap per owner, then over the overall cap", function ()
			local set = new_set({ max_pending = 5, max_per_owner = 2 });
			assert.truthy(set:add({}, "alice@x", 0));
			assert.truthy(set:add({}, "alice@x", 0));
			assert.same({ nil, "sender" }, { set:add({}, "alice@x", 0) });
			assert.truthy(set:add({}, "bob@x", 0));
			assert.truthy(set:add({}, "bob@x", 0));
			assert.truthy(set:add({}, nil, 0)); -- no owner: only the overall cap
			assert.same({ nil, "overall" }, { set:add({}, "carol@x", 0) });
			assert.equal(5, set.count);
			assert.equal(2, set:held_by("alice@x"));
		end);

		it("holds at most max_pending whatever the number of owners", function ()
			local set = new_set({ max_pending = 100, max_per_owner = 1 });
			local held = 0;
			for i = 1, 10000 do
				if set:add({}, "u" .. i .. "@remote", 0) then
					held = held + 1;
				end
			end
			assert.equal(100, held);
			assert.equal(100, set.count);
		end);
	end);

	describe(":finish", function ()
		it("frees the request's place under both caps, once", function ()
			local set = new_set({ max_pending = 2, max_per_owner = 1 });
			local record = {};
			set:add(record, "alice@x", 0);
			assert.same({ nil, "sender" }, { set:add({}, "alice@x", 0) });
			assert.is_true(set:finish(record));
			assert.is_false(set:finish(record));
			assert.is_nil(set:get(record.fresh_id));
			assert.equal(0, set:held_by("alice@x"));
			assert.equal(0, set.count);
			assert.truthy(set:add({}, "alice@x", 0));
			assert.is_true(set:empty() == false);
		end);
	end);

	describe(":expire", function ()
		it("returns and forgets the requests whose deadline has passed, on whole seconds", function ()
			local set = new_set({ timeout = 10 });
			local early, late = {}, {};
			set:add(early, "a@x", 100.2);
			set:add(late, "b@x", 105);
			assert.same({}, set:expire(110));
			assert.same({ early }, set:expire(111));
			assert.is_nil(set:get(early.fresh_id));
			assert.equal(late, set:get(late.fresh_id));
			assert.same({ late }, set:expire(1000));
			assert.is_true(set:empty());
			assert.equal(0, set:held_by("a@x"));
		end);
	end);

	describe(":select and :drain", function ()
		it("find the requests sent to one resource, and take them all", function ()
			local set = new_set();
			local a1, a2, b1 = { resource = "a" }, { resource = "a" }, { resource = "b" };
			for _, r in ipairs({ a1, a2, b1 }) do
				set:add(r, "o@x", 0);
			end
			local found = set:select(function (r, res) return r.resource == res; end, "a");
			table.sort(found, function (x, y) return x.fresh_id < y.fresh_id; end);
			assert.same({ a1, a2 }, found);
			assert.equal(3, set.count, "select leaves them held");
			assert.equal(3, #set:drain());
			assert.is_true(set:empty());
			assert.equal(0, set.count);
			assert.equal(0, set:held_by("o@x"));
		end);
	end);
end);
