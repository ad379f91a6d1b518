-- The order of proxy65's streamhosts for one requester (cproxy.bytestreams
-- order): Conversations, Dino, Gajim and iris try only the first (#27).
local bytestreams = dofile("lua/cproxy/proxy65/bytestreams.lua");

local function hosts(list)
	local out = {};
	for i, streamhost in ipairs(list) do
		out[i] = streamhost.host;
	end
	return out;
end

describe("cproxy.bytestreams", function ()
	describe(".order", function ()
		local streamhosts = {
			{ host = "203.0.113.7" }, { host = "2001:db8::7" }, { host = "proxy.example.org" },
			{ host = "192.0.2.9", port = 7777 },
		};

		it("keeps the configured order without a requester's address or a check", function ()
			assert.same({ "203.0.113.7", "2001:db8::7", "proxy.example.org", "192.0.2.9" },
				hosts(bytestreams.order(streamhosts, nil, nil)));
		end);

		it("puts the requester's address family first, and the other one last", function ()
			assert.same({ "2001:db8::7", "proxy.example.org", "203.0.113.7", "192.0.2.9" },
				hosts(bytestreams.order(streamhosts, nil, "2001:db8::1")));
			assert.same({ "203.0.113.7", "192.0.2.9", "proxy.example.org", "2001:db8::7" },
				hosts(bytestreams.order(streamhosts, nil, "198.51.100.3")));
			-- An IPv4 client on an IPv6 socket is an IPv4 client.
			assert.same({ "203.0.113.7", "192.0.2.9", "proxy.example.org", "2001:db8::7" },
				hosts(bytestreams.order(streamhosts, nil, "::ffff:198.51.100.3")));
		end);

		it("takes a name's families from the check, and puts what the check found unusable last", function ()
			local report = {
				{ addresses = { "203.0.113.7" }, reachable = true },
				{ addresses = { "2001:db8::7" }, reachable = true },
				{ addresses = { "2001:db8::8" }, reachable = true },
				{ addresses = { "192.0.2.9" } }, -- the hairpin failed
			};
			assert.same({ "2001:db8::7", "proxy.example.org", "203.0.113.7", "192.0.2.9" },
				hosts(bytestreams.order(streamhosts, report, "2001:db8::1")));
			-- The name resolves to IPv6 only: an IPv4 client gets it after
			-- its own family's usable address.
			assert.same({ "203.0.113.7", "2001:db8::7", "proxy.example.org", "192.0.2.9" },
				hosts(bytestreams.order(streamhosts, report, "198.51.100.3")));
		end);

		it("gives one requester the same order every time, and leaves the list as it was", function ()
			local before = hosts(streamhosts);
			local first = hosts(bytestreams.order(streamhosts, nil, "2001:db8::1"));
			for _ = 1, 10 do
				assert.same(first, hosts(bytestreams.order(streamhosts, nil, "2001:db8::1")));
			end
			assert.same(before, hosts(streamhosts));
		end);
	end);
end);
