-- The relay of mod_proxy65 through a real Prosody, under both relay modes:
-- resets, slow receivers and the byte counts of each ended relay.
-- Negotiation and activation errors are in mod_proxy65_spec.lua.
local socket = require "socket";
local prosody = require "spec.helpers.prosody";
local xmpp = require "spec.helpers.xmpp_client";
local s5 = require "spec.helpers.socks5_client";

local xmlns_bytestreams = "http://jabber.org/protocol/bytestreams";
local KiB = 1024;

local hosts = [[
VirtualHost "localhost"

Component "proxy.localhost" "proxy65"
]];

local function login(server, user)
	return assert(xmpp.connect({ port = server.ports.c2s, domain = "localhost",
		username = user, password = user .. "-pw", resource = "r" .. math.random(1e6) }));
end

-- Runs the XEP-0065 negotiation; returns target and initiator sockets and
-- the stream's hash.
local sid_counter = 0;
local function open_stream(server, initiator, target)
	sid_counter = sid_counter + 1;
	local sid = "relay-" .. sid_counter .. "-" .. math.random(1e9);
	local hash = s5.hash(sid, initiator.jid, target.jid);
	local t_sock = assert(s5.connect(server.ports.proxy65, hash));
	local i_sock = assert(s5.connect(server.ports.proxy65, hash));
	local reply = assert(initiator:request(xmpp.iq({ type = "set", to = "proxy.localhost" })
		:tag("query", { xmlns = xmlns_bytestreams, sid = sid })
		:tag("activate"):text(target.jid):up(), 10));
	assert.equal("result", reply.attr.type);
	return t_sock, i_sock, hash;
end

-- The log line of an ended relay: bytes from target, from initiator, error.
local function relay_end(server, hash)
	local pattern = "Relay " .. hash .. " ended: (%d+) bytes from target, (%d+) from initiator([^\n]*)";
	assert.truthy(server:wait_log(pattern, 5), "the relay did not end");
	local from_target, from_initiator, rest = server:log():match(pattern);
	return tonumber(from_target), tonumber(from_initiator), rest:match("%((.*)%)");
end

local function reset(sock)
	sock:setoption("linger", { on = true, timeout = 0 });
	sock:close();
end

for _, mode in ipairs({ "copy", "splice" }) do
	describe("mod_proxy65 relay in " .. mode .. " mode #integration", function ()
		local server, alice, bob;

		setup(function ()
			server = prosody.start({
				hosts = hosts;
				accounts = { { "alice", "localhost", "alice-pw" }, { "bob", "localhost", "bob-pw" } };
				-- Small socket buffers: otherwise the kernel holds seconds of a
				-- slow transfer past the proxy, whose relay then rightly looks
				-- idle while the receiver drains them.
				global = ("proxy65_idle_timeout = 2\nproxy65_socket_buffer = 65536\nproxy65_relay_mode = %q"):format(mode);
				wait_ports = { "c2s", "proxy65" };
			});
			alice = login(server, "alice");
			bob = login(server, "bob");
		end);

		teardown(function ()
			if alice then alice:close(); end
			if bob then bob:close(); end
			if server then server:stop(); end
		end);

		-- A reset used to be lost when the reset side's pump waited to read:
		-- the relay passed it on as a clean EOF and stayed half-open.
		it("resets the initiator when the target resets while both wait to read", function ()
			local t_sock, i_sock, hash = open_stream(server, alice, bob);
			t_sock:settimeout(5);
			i_sock:settimeout(5);
			assert(i_sock:send("ping"));
			assert.equal("ping", t_sock:receive(4));
			assert(t_sock:send("pong"));
			assert.equal("pong", i_sock:receive(4));
			reset(t_sock);
			assert.equal("reset", (s5.await_end(i_sock, 2)));
			i_sock:close();
			local from_target, from_initiator, relay_err = relay_end(server, hash);
			assert.equal(4, from_target);
			assert.equal(4, from_initiator);
			assert.equal("Connection reset by peer", relay_err);
		end);

		it("resets the target when the initiator resets partway through a file", function ()
			local t_sock, i_sock, hash = open_stream(server, alice, bob);
			local part = s5.random_bytes(64 * KiB, 5);
			assert(i_sock:send(part));
			t_sock:settimeout(5);
			assert.equal(s5.sha256(part), s5.sha256(assert(t_sock:receive(#part))));
			reset(i_sock);
			-- Not a clean EOF: the target must not take the part for the file.
			assert.equal("reset", (s5.await_end(t_sock, 2)));
			t_sock:close();
			local from_target, from_initiator, relay_err = relay_end(server, hash);
			assert.equal(0, from_target);
			assert.equal(#part, from_initiator);
			assert.equal("Connection reset by peer", relay_err);
		end);

		-- Copy mode used to drop the count of a partial send, so a slow but
		-- moving transfer looked idle and was closed.
		it("keeps a slow receiver's transfer past the idle timeout, and counts every byte", function ()
			local t_sock, i_sock, hash = open_stream(server, alice, bob);
			t_sock:setoption("recv-buffer-size", 65536);
			local data = s5.random_bytes(5000 * KiB + 7, 65);
			local got, err, partial = s5.run_paced(i_sock, t_sock, data, 500 * KiB, 60);
			got = got or partial;
			assert.is_nil(err);
			assert.equal(#data, #got);
			assert.equal(s5.sha256(data), s5.sha256(got));
			t_sock:close(); i_sock:close();
			local from_target, from_initiator, relay_err = relay_end(server, hash);
			assert.equal(0, from_target);
			assert.equal(#data, from_initiator);
			assert.is_nil(relay_err);
		end);
	end);
end
