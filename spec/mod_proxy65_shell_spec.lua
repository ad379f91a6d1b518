-- proxy65's admin shell command, run as operators run it, through
-- `prosodyctl shell`, on whichever Prosody the helper starts: 0.12's shell
-- and 13's find commands in different ways (lua/cproxy/shell.lua, #23).
local socket = require "socket";
local prosody = require "spec.helpers.prosody";
local s5 = require "spec.helpers.socks5_client";
local bs = require "spec.helpers.bytestreams";

-- Whether this Prosody's admin shell takes commands as "shell-command"
-- items, with help and the `section name` syntax (13 does, 0.12 not).
local function shell_takes_items()
	local plugins = prosody.src and prosody.src .. "/plugins" or "/usr/lib/prosody/modules";
	local f = assert(io.open(plugins .. "/mod_admin_shell.lua"));
	local source = f:read("a");
	f:close();
	return source:find("\"shell-command\"", 1, true) ~= nil;
end

describe("mod_proxy65's shell command proxy65:status() #integration", function ()
	local server, alice, bob;

	setup(function ()
		server, alice, bob = bs.start({
			-- A streamhost that never resolves, whatever the machine's
			-- resolver (RFC 6761), for the check to report (#26).
			hosts = "VirtualHost \"localhost\"\nComponent \"proxy.localhost\" \"proxy65\"\n"
				.. "\tproxy65_address = { \"127.0.0.1\", \"proxy.invalid\" }";
			admin = true;
		});
	end);

	teardown(function ()
		bs.stop(server, alice, bob);
	end);

	local function status()
		local ok, out = server:shell("proxy65:status()");
		assert.truthy(ok, out);
		return out;
	end

	it("shows no relay and no connection at rest", function ()
		local out = status();
		assert.truthy(out:match("Active relays: 0\n"), out);
		assert.truthy(out:match("Connections awaiting activation: 0\n"), out);
		assert.truthy(out:match("OK: 0 active relays, 0 pending connections"), out);
	end);

	it("counts active relays and connections awaiting activation, and relays once they finish", function ()
		local t_sock, i_sock = bs.open_stream(server, alice, bob);
		local lone = assert(s5.connect(server.ports.proxy65, s5.hash("unpaired", alice.jid, bob.jid)));
		local out = status();
		assert.truthy(out:match("Active relays: 1\n"), out);
		assert.truthy(out:match("Connections awaiting activation: 1\n"), out);
		assert.truthy(out:match("OK: 1 active relays, 1 pending connections"), out);

		assert.equal("x", s5.run({ { from = i_sock, to = t_sock, data = "x" } })[1]);
		t_sock:close(); i_sock:close(); lone:close();
		local deadline = socket.gettime() + 5 * prosody.slow;
		repeat
			out = status();
			socket.sleep(0.05);
		until out:match("Active relays: 0\n") and out:match("awaiting activation: 0\n") or socket.gettime() > deadline;
		assert.truthy(out:match("Active relays: 0\n"), out);
		assert.truthy(out:match("Connections awaiting activation: 0\n"), out);
		assert.truthy(out:match("Finished relays: 1 %(0 failed, 0 timed out%)\n"), out);
		assert.truthy(out:match("Bytes relayed by finished relays: 1\n"), out);
	end);

	it("lists active bytestreams with their parties, bytes, age and rate, and closes one by sid (#19)", function ()
		local t_sock, i_sock, sid = bs.open_stream(server, alice, bob);
		assert(i_sock:send(("u"):rep(1000)));
		assert(t_sock:send("dd"));
		t_sock:settimeout(5);
		i_sock:settimeout(5);
		assert.equal(1000, #t_sock:receive(1000));
		assert.equal("dd", i_sock:receive(2));
		local ok, out = server:shell("proxy65:list()");
		assert.truthy(ok, out);
		assert.truthy(out:find(("%s  %s -> %s  1000 bytes to the target, 2 back  "):format(sid, alice.jid, bob.jid),
			1, true), out);
		assert.truthy(out:match("MiB/s\n"), out);
		assert.truthy(out:match("OK: 1 active bytestreams"), out);
		ok, out = server:shell(("proxy65:close(%q)"):format(sid));
		assert.truthy(ok and out:match("OK: Closing bytestream"), out);
		assert.equal("reset", (s5.await_end(t_sock, 5)));
		assert.equal("reset", (s5.await_end(i_sock, 5)));
		t_sock:close(); i_sock:close();
		ok, out = server:shell("proxy65:close(\"no-such-sid\")");
		assert.truthy(out:match("No active bytestream \"no%-such%-sid\""), out);
		assert.truthy(server:wait_log("Transfer " .. sid:gsub("%p", "%%%0") .. " [^\n]*ended %(Operation canceled%)"));
	end);

	it("reports the streamhost check and connections whose partner never came (#19, #27)", function ()
		local lone = assert(s5.connect(server.ports.proxy65, s5.hash("alone", alice.jid, bob.jid)));
		lone:close();
		-- The check runs in the background (name lookups take time), and
		-- the proxy counts the lone pair once it has seen the close.
		local ok, out;
		local deadline = socket.gettime() + 20 * prosody.slow;
		repeat
			ok, out = server:shell("proxy65:check()");
			assert.truthy(ok, out);
			socket.sleep(0.2);
		until out:match("does not resolve") and out:match("connections whose partner") or socket.gettime() > deadline;
		assert.truthy(out:match("proxy%.localhost: streamhost proxy%.invalid:%d+: proxy%.invalid does not resolve"), out);
		assert.truthy(out:match("Port %d+: [1-9]%d* connections whose partner never connected"), out);
		assert.truthy(out:match("OK: [1-9]%d* problems found; checking again"), out);
	end);

	it("is there once after a module reload", function ()
		local ok, out = server:shell("module:reload(\"proxy65\")");
		assert.truthy(ok and out:match("OK"), out);
		out = status();
		assert.truthy(out:match("OK: 0 active relays, 0 pending connections"), out);
		assert.truthy(out:match("Finished relays: [1-9]"), out); -- the relay engine outlives a reload
		assert.is_nil(server:log():match("Ignoring command"));
		assert.is_nil(server:log():match("already registered"));
	end);

	local it_items = shell_takes_items() and it or pending;
	it_items("is in the help and runs as `proxy65 status` where the shell takes shell-command items", function ()
		local ok, out = server:shell("help");
		assert.truthy(ok, out);
		assert.truthy(out:match("proxy65[^\n]*SOCKS5 bytestreams relayed by prosody%-cproxy"), out);
		local h = io.popen(("%s --config %q shell proxy65 status 2>&1"):format(
			prosody.command("prosodyctl", "timeout 20"), server.config_path));
		out = h:read("a");
		assert.truthy(h:close(), out);
		assert.truthy(out:match("OK: 0 active relays, 0 pending connections"), out);
	end);
end);
