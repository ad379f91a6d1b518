-- The recent senders of cproxy.recent: the window, its two generations,
-- and the bounds on JIDs and bytes, on a clock the spec drives.
local recent = dofile("lua/cproxy/client_proxy/recent.lua");

describe("cproxy.recent", function ()
	describe(":has", function ()
		it("knows a JID from when it writes until at least a window later", function ()
			local store = recent.new(60, 100, 1e6, 1000);
			assert.is_false(store:has("a@x/1", 1000));
			store:put("a@x/1", 1010);
			for now = 1010, 1069 do
				assert.is_true(store:has("a@x/1", now), "at " .. now);
			end
			assert.is_false(store:has("b@x/1", 1010));
		end);

		it("forgets a JID at most two windows after it last wrote", function ()
			local store = recent.new(60, 100, 1e6, 1000);
			store:put("a@x/1", 1000);
			assert.is_false(store:has("a@x/1", 1120));
			store:put("b@x/1", 1130); -- rotation by time
			assert.is_false(store:has("a@x/1", 1130));
			assert.is_true(store:has("b@x/1", 1130));
		end);

		it("keeps a JID that writes again, not one that is only looked up", function ()
			local store = recent.new(60, 100, 1e6, 0);
			store:put("kept", 0);
			store:put("looked-up", 0);
			for now = 10, 300, 10 do
				store:put("kept", now);
				assert.is_true(store:has("kept", now));
				store:has("looked-up", now);
			end
			assert.is_false(store:has("looked-up", 300));
		end);
	end);

	describe(":put", function ()
		it("keeps at most two generations of max_entries JIDs", function ()
			local store = recent.new(3600, 10, 1e6, 0);
			for i = 1, 1000 do
				store:put("u" .. i .. "@x/r", i / 1000);
				assert.truthy(store:size() <= 20);
			end
			assert.is_true(store:has("u1000@x/r", 1));
			assert.is_true(store:has("u991@x/r", 1));
			assert.is_false(store:has("u1@x/r", 1));
		end);

		it("bounds the bytes held, not only the number of JIDs", function ()
			local store = recent.new(3600, 1e6, 64 * 1024, 0);
			local long = ("r"):rep(1000);
			for i = 1, 1000 do
				store:put("u" .. i .. "@x/" .. long, 0);
			end
			-- each generation stops at 64 KiB: about 60 of these JIDs
			assert.truthy(store:size() <= 2 * (64 * 1024 / (1000 + recent.entry_overhead) + 1));
			assert.is_true(store:has("u1000@x/" .. long, 0));
		end);
	end);
end);
