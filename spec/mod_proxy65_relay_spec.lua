-- The relay of mod_proxy65 through a real Prosody, under both relay modes:
-- resets, slow receivers and the byte counts of each ended relay.
-- Negotiation and activation errors are in mod_proxy65_spec.lua.
local socket = require "socket";
local prosody = require "spec.helpers.prosody";
local s5 = require "spec.helpers.socks5_client";
local bs = require "spec.helpers.bytestreams";

local KiB = 1024;

local hosts = [[
VirtualHost "localhost"

Component "proxy.localhost" "proxy65"
]];

-- Runs the XEP-0065 negotiation; returns target and initiator sockets and
-- the stream's sid.
local function open_stream(server, initiator, target)
	local t_sock, i_sock, sid = bs.open_stream(server, initiator, target);
	return t_sock, i_sock, sid;
end

-- The info line of an ended transfer: bytes from the target, from the
-- initiator, and the error, if it ended on one.
local function relay_end(server, sid)
	local pattern = "Transfer " .. sid:gsub("%p", "%%%0") .. " from %S+ to %S+ ended %(([^)]*)%): %d+ bytes %((%d+) to the target, (%d+) back%)";
	assert.truthy(server:wait_log(pattern, 5), "the relay did not end");
	local why, from_initiator, from_target = server:log():match(pattern);
	return tonumber(from_target), tonumber(from_initiator), why:match("^(.-) on the %a+'s side$");
end

-- How long bytes or a reset may take through the relay, whose thread is
-- Prosody's (under valgrind too, make check-valgrind).
local WAIT = 5 * prosody.slow;

local function reset(sock)
	sock:setoption("linger", { on = true, timeout = 0 });
	sock:close();
end

for _, mode in ipairs({ "copy", "splice" }) do
	describe("mod_proxy65 relay in " .. mode .. " mode #integration", function ()
		local server, alice, bob;

		setup(function ()
			server, alice, bob = bs.start({
				hosts = hosts;
				-- Small socket buffers: otherwise the kernel holds seconds of a
				-- slow transfer past the proxy, whose relay then rightly looks
				-- idle while the receiver drains them.
				global = ("proxy65_idle_timeout = 2\nproxy65_socket_buffer = 65536\nproxy65_relay_mode = %q"):format(mode);
			});
		end);

		teardown(function ()
			bs.stop(server, alice, bob);
		end);

		-- A reset used to be lost when the reset side's pump waited to read:
		-- the relay passed it on as a clean EOF and stayed half-open.
		it("resets the initiator when the target resets while both wait to read", function ()
			local t_sock, i_sock, sid = open_stream(server, alice, bob);
			t_sock:settimeout(WAIT);
			i_sock:settimeout(WAIT);
			assert(i_sock:send("ping"));
			assert.equal("ping", t_sock:receive(4));
			assert(t_sock:send("pong"));
			assert.equal("pong", i_sock:receive(4));
			reset(t_sock);
			assert.equal("reset", (s5.await_end(i_sock, WAIT)));
			i_sock:close();
			local from_target, from_initiator, relay_err = relay_end(server, sid);
			assert.equal(4, from_target);
			assert.equal(4, from_initiator);
			assert.equal("Connection reset by peer", relay_err);
		end);

		it("resets the target when the initiator resets partway through a file", function ()
			local t_sock, i_sock, sid = open_stream(server, alice, bob);
			local part = s5.random_bytes(64 * KiB, 5);
			assert(i_sock:send(part));
			t_sock:settimeout(WAIT);
			assert.equal(s5.sha256(part), s5.sha256(assert(t_sock:receive(#part))));
			reset(i_sock);
			-- Not a clean EOF: the target must not take the part for the file.
			assert.equal("reset", (s5.await_end(t_sock, WAIT)));
			t_sock:close();
			local from_target, from_initiator, relay_err = relay_end(server, sid);
			assert.equal(0, from_target);
			assert.equal(#part, from_initiator);
			assert.equal("Connection reset by peer", relay_err);
		end);

		-- Copy mode used to drop the count of a partial send, so a slow but
		-- moving transfer looked idle and was closed.
		it("keeps a slow receiver's transfer past the idle timeout, and counts every byte", function ()
			local t_sock, i_sock, sid = open_stream(server, alice, bob);
			t_sock:setoption("recv-buffer-size", 65536);
			local data = s5.random_bytes(5000 * KiB + 7, 65);
			local got, err, partial = s5.run_paced(i_sock, t_sock, data, 500 * KiB, 60);
			got = got or partial;
			assert.is_nil(err);
			assert.equal(#data, #got);
			assert.equal(s5.sha256(data), s5.sha256(got));
			t_sock:close(); i_sock:close();
			local from_target, from_initiator, relay_err = relay_end(server, sid);
			assert.equal(0, from_target);
			assert.equal(#data, from_initiator);
			assert.is_nil(relay_err);
		end);
	end);
end
