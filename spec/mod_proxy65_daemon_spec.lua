-- proxy65 in a Prosody started as operators start it: `prosodyctl start`
-- (and the Debian init script, and `daemonize = true`) run `prosody -D`,
-- which forks after the modules have loaded. The relay must run in the
-- daemon, not in the process that loaded the module (#16).
-- `prosody -F` (systemd's unit) is what every other integration spec runs.
local socket = require "socket";
local prosody = require "spec.helpers.prosody";
local s5 = require "spec.helpers.socks5_client";
local bs = require "spec.helpers.bytestreams";

local MiB = 1048576;

describe("mod_proxy65 under prosodyctl start #integration", function ()
	local server, alice, bob;

	setup(function ()
		server, alice, bob = bs.start({
			daemonize = true;
			hosts = "VirtualHost \"localhost\"\nComponent \"proxy.localhost\" \"proxy65\"";
			global = "proxy65_idle_timeout = 2";
		});
	end);

	teardown(function ()
		bs.stop(server, alice, bob);
	end);

	it("runs daemonized, in a process other than the one that loaded the module", function ()
		assert.truthy(server:wait_log("Successfully daemonized to PID " .. server.pid));
	end);

	it("relays 16 MiB each way intact", function ()
		local t_sock, i_sock = bs.open_stream(server, alice, bob);
		local up, down = s5.random_bytes(16 * MiB + 5, 3), s5.random_bytes(16 * MiB + 9, 4);
		local got = s5.run({ { from = i_sock, to = t_sock, data = up }, { from = t_sock, to = i_sock, data = down } }, 60);
		assert.equal(s5.sha256(up), s5.sha256(got[1]));
		assert.equal(s5.sha256(down), s5.sha256(got[2]));
		t_sock:close(); i_sock:close();
	end);

	it("ends relays, so their hash can be used again", function ()
		local t_sock, i_sock, sid = bs.open_stream(server, alice, bob);
		assert.equal("x", s5.run({ { from = i_sock, to = t_sock, data = "x" } })[1]);
		t_sock:close(); i_sock:close();
		local hash = s5.hash(sid, alice.jid, bob.jid);
		local again;
		local deadline = socket.gettime() + 5 * prosody.slow;
		repeat
			socket.sleep(0.05);
			again = s5.connect(server.ports.proxy65, hash);
		until again or socket.gettime() > deadline;
		assert.truthy(again, "the hash is still taken");
		again:close();
	end);

	it("closes an idle relay after proxy65_idle_timeout", function ()
		local t_sock, i_sock = bs.open_stream(server, alice, bob);
		t_sock:settimeout(10);
		local _, err = t_sock:receive(1); -- nothing moves: the sweep closes it
		assert.equal("closed", err);
		t_sock:close(); i_sock:close();
	end);

	it("stops cleanly with a relay running", function ()
		local t_sock, i_sock = bs.open_stream(server, alice, bob);
		assert.equal("y", s5.run({ { from = i_sock, to = t_sock, data = "y", finish = "keep" } })[1]);
		local pid = server.pid;
		local ok = os.execute(("%s --config %q stop >/dev/null 2>&1"):format(prosody.command("prosodyctl"), server.config_path));
		assert.truthy(ok);
		local deadline = socket.gettime() + 10 * prosody.slow;
		while os.execute("kill -0 " .. pid .. " 2>/dev/null") == true and socket.gettime() < deadline do
			socket.sleep(0.1);
		end
		assert.is_false(os.execute("kill -0 " .. pid .. " 2>/dev/null") == true, "Prosody is still running");
		assert.is_nil(server:log():match("\terror\t[^\n]*proxy65"));
		assert.is_nil(server:log():match("[Tt]raceback"));
		i_sock:settimeout(5);
		local _, err = i_sock:receive(1);
		assert.equal("closed", err);
		t_sock:close(); i_sock:close();
	end);
end);
