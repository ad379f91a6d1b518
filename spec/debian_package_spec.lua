-- The Debian package (make deb, #32), as an operator uses it: installed
-- with dpkg, both modules loaded from where it puts them by a Prosody
-- started as Debian's unit starts it (the prosody user, prosody -F), a
-- transfer relayed and a JAT round trip, then removed again, cleanly.
-- Needs root and the package built (make check-package does both).
local prosody = require "spec.helpers.prosody";
local xmpp = require "spec.helpers.xmpp_client";
local s5 = require "spec.helpers.socks5_client";
local bs = require "spec.helpers.bytestreams";
local st = require "util.stanza";

local PLUGINS = "/usr/share/lua/5.4/prosody_cproxy";

local function sh(cmd)
	local h = io.popen(cmd .. " 2>&1; echo \"status=$?\"");
	local out = h:read("a");
	h:close();
	return out:match("status=0\n$") ~= nil, out;
end

local deb = select(2, sh("ls build/deb/prosody-cproxy_*.deb")):match("(build/deb/prosody%-cproxy_[^\n]*%.deb)");
local why = not select(1, sh("test \"$(id -u)\" = 0")) and "not root (dpkg -i needs it)"
	or not deb and "the package is not built (make deb)" or nil;
if why then
	print("Debian package specs skipped: " .. why);
	describe("the Debian package #package", function ()
		pending("skipped: " .. why);
	end);
	return;
end

describe("the Debian package #package", function ()
	it("installs, runs both modules under the prosody user, relays, and removes cleanly", function ()
		local ok, out = sh("dpkg -i " .. deb);
		assert.truthy(ok, out);
		local server, alice, bob, svc;
		finally(function ()
			for _, c in ipairs({ alice, bob, svc }) do c:close(); end
			if server then server:stop(); end
			sh("dpkg -r prosody-cproxy");
		end);
		-- The commands are there and run.
		ok, out = sh("proxy65 --version && client_proxy --version");
		assert.truthy(ok and out:match("prosody%-cproxy proxy65") and out:match("prosody%-cproxy client_proxy"), out);

		server = prosody.start({
			plugin_paths = { PLUGINS };
			user = "prosody";
			hosts = 'VirtualHost "localhost"\n\nComponent "proxy.localhost" "proxy65"\n\n'
				.. 'Component "jat.localhost" "client_proxy"\n\ttarget_address = "svc@localhost"\n';
			accounts = { { "alice", "localhost", "alice-pw" }, { "bob", "localhost", "bob-pw" },
				{ "svc", "localhost", "svc-pw" } };
			wait_ports = { "c2s", "proxy65" };
		});
		local log = server:log();
		assert.truthy(log:find("Using the C extension /usr/lib/", 1, true), log);
		alice, bob = bs.login(server, "alice"), bs.login(server, "bob");
		-- It runs as the prosody user, not root.
		local uid = prosody.read_file("/proc/" .. server.pid .. "/status"):match("Uid:%s*(%d+)");
		assert.are_not.equal("0", uid);

		local t_sock, i_sock = bs.open_stream(server, alice, bob);
		local up, down = s5.random_bytes(1048576 + 7, 41), s5.random_bytes(1048576 + 7, 42);
		local got = s5.run({ { from = i_sock, to = t_sock, data = up }, { from = t_sock, to = i_sock, data = down } });
		assert.equal(s5.sha256(up), s5.sha256(got[1]));
		assert.equal(s5.sha256(down), s5.sha256(got[2]));
		t_sock:close(); i_sock:close();

		svc = assert(xmpp.connect({ port = server.ports.c2s, domain = "localhost", username = "svc",
			password = "svc-pw", resource = "svc" }));
		local _, req = xmpp.until_routed(alice, { svc }, function ()
			return xmpp.iq({ type = "get", to = "jat.localhost", id = "deb" }):tag("query", { xmlns = "urn:example:deb" }):up();
		end, function (s) return s.name == "iq" and s.attr.type == "get"; end, 10 * prosody.slow);
		assert.truthy(req, "client_proxy routed nothing");
		assert.equal("jat.localhost/" .. alice.jid, req.attr.from);
		svc:send(st.reply(req));
		assert.equal("deb", assert(alice:await_iq("result")).attr.id);

		for _, c in ipairs({ alice, bob, svc }) do c:close(); end
		alice, bob, svc = nil, nil, nil;
		server:stop();
		server = nil;
		ok, out = sh("dpkg -r prosody-cproxy");
		assert.truthy(ok, out);
		for _, path in ipairs({ "/usr/bin/proxy65", "/usr/bin/client_proxy", PLUGINS,
			"/lib/systemd/system/proxy65@.service" }) do
			assert.falsy(select(1, sh("test -e " .. path)), path .. " is left");
		end
	end);
end);
