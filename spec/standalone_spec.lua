-- The standalone proxy65 (bin/proxy65) as an XEP-0114 external component
-- of a real Prosody: the handshake, disco, full transfers between two c2s
-- clients, a wrong secret, a server restart mid-transfer, and malformed
-- XML from the server side (a scripted peer, for that one case) (#20).
local socket = require "socket";
local prosody = require "spec.helpers.prosody";
local xmpp = require "spec.helpers.xmpp_client";
local s5 = require "spec.helpers.socks5_client";
local bs = require "spec.helpers.bytestreams";
local standalone = require "spec.helpers.standalone";

local MiB = 1048576;
local SECRET = "s3cret-" .. math.random(1e9);

local function hosts()
	return ("VirtualHost \"localhost\"\n\nComponent \"proxy.localhost\"\n\tcomponent_secret = %q\n"):format(SECRET);
end

local function start_component(opts)
	opts.secret = opts.secret or SECRET;
	return standalone.start(opts);
end
local run_component = standalone.run;

-- The component's retries back off to one a minute (cproxy/standalone/component.lua)
-- while the server is down, so its next one may come that long after the
-- server is back.
local RECONNECT = 80;

describe("standalone proxy65 #integration", function ()
	local server, component, alice, bob;

	setup(function ()
		server, alice, bob = bs.start({ hosts = hosts(), wait_ports = { "c2s", "component" } });
		component = start_component({ rport = server.ports.component });
		assert(component.wait_log("Connected to 127%.0%.0%.1 as proxy%.localhost"), component.log());
	end);

	teardown(function ()
		if component then component.stop(); end
		bs.stop(server, alice, bob);
	end);

	it("answers disco#info as the Prosody module does", function ()
		local reply = assert(alice:request(xmpp.iq({ type = "get", to = "proxy.localhost" })
			:tag("query", { xmlns = "http://jabber.org/protocol/disco#info" })));
		assert.equal("result", reply.attr.type);
		local query = reply:get_child("query", "http://jabber.org/protocol/disco#info");
		local identity = query:get_child("identity");
		assert.same({ "proxy", "bytestreams" }, { identity.attr.category, identity.attr.type });
		local features = {};
		for feature in query:childtags("feature") do
			features[feature.attr.var] = true;
		end
		assert.is_true(features[bs.xmlns]);
		local items = assert(alice:request(xmpp.iq({ type = "get", to = "proxy.localhost" })
			:tag("query", { xmlns = "http://jabber.org/protocol/disco#items" })));
		assert.equal("result", items.attr.type);
	end);

	it("gives its streamhost, and relays full transfers both ways", function ()
		local reply = assert(alice:request(xmpp.iq({ type = "get", to = "proxy.localhost" })
			:tag("query", { xmlns = bs.xmlns, sid = "s" })));
		local streamhost = reply:get_child("query", bs.xmlns):get_child("streamhost");
		assert.same({ "proxy.localhost", "127.0.0.1", tostring(component.port) },
			{ streamhost.attr.jid, streamhost.attr.host, streamhost.attr.port });
		local t_sock, i_sock = bs.open_stream(server, alice, bob, { port = component.port });
		local up, down = s5.random_bytes(8 * MiB + 3, 1), s5.random_bytes(MiB + 1, 2);
		local got = s5.run({ { from = i_sock, to = t_sock, data = up }, { from = t_sock, to = i_sock, data = down } }, 60);
		assert.equal(s5.sha256(up), s5.sha256(got[1]));
		assert.equal(s5.sha256(down), s5.sha256(got[2]));
		t_sock:close(); i_sock:close();
	end);

	it("refuses activation errors as the Prosody module does", function ()
		local reply = assert(alice:request(bs.activation("unknown", bob.jid)));
		assert.same({ "modify", "item-not-found" }, { bs.error_of(reply) });
		reply = assert(alice:request(bs.activation("x", nil)));
		assert.same({ "modify", "bad-request" }, { bs.error_of(reply) });
	end);

	it("answers other requests with service-unavailable", function ()
		local reply = assert(alice:request(xmpp.iq({ type = "get", to = "proxy.localhost" })
			:tag("query", { xmlns = "jabber:iq:version" })));
		assert.same({ "cancel", "service-unavailable" }, { bs.error_of(reply) });
	end);

	it("keeps a transfer alive across a server restart, and reconnects", function ()
		local t_sock, i_sock = bs.open_stream(server, alice, bob, { port = component.port });
		assert(i_sock:send("before|"));
		t_sock:settimeout(5);
		assert.equal("before|", t_sock:receive(7));
		alice:close(); bob:close();
		server:restart();
		assert(component.wait_log("reconnecting in", 10), component.log());
		assert(component.wait_log("Connected to [^\n]*\n.*Connected to", RECONNECT), component.log());
		-- The bytestream never went through the server.
		local got = s5.run({ { from = i_sock, to = t_sock, data = "after" } });
		assert.equal("after", got[1]);
		t_sock:close(); i_sock:close();
		alice = bs.login(server, "alice");
		bob = bs.login(server, "bob");
		local t2, i2 = bs.open_stream(server, alice, bob, { port = component.port });
		assert.equal("again", s5.run({ { from = i2, to = t2, data = "again" } })[1]);
		t2:close(); i2:close();
	end);
end);

describe("standalone proxy65 on several nodes #integration", function ()
	-- One JID per node: each advertises its own address, and a transfer's
	-- two connections meet on the node its initiator picked.
	it("relays through each of two nodes with their own JIDs", function ()
		local server, alice, bob = bs.start({
			hosts = ("VirtualHost \"localhost\"\n\nComponent \"proxy-a.localhost\"\n\tcomponent_secret = %q\n"
				.. "\nComponent \"proxy-b.localhost\"\n\tcomponent_secret = %q\n"):format(SECRET, SECRET);
			wait_ports = { "c2s", "component" };
		});
		local a = start_component({ rport = server.ports.component, jid = "proxy-a.localhost" });
		local b = start_component({ rport = server.ports.component, jid = "proxy-b.localhost" });
		finally(function ()
			a.stop(); b.stop();
			bs.stop(server, alice, bob);
		end);
		assert(a.wait_log("Connected to"), a.log());
		assert(b.wait_log("Connected to"), b.log());
		for _, node in ipairs({ { a, "proxy-a.localhost" }, { b, "proxy-b.localhost" } }) do
			local reply = assert(alice:request(xmpp.iq({ type = "get", to = node[2] }):tag("query", { xmlns = bs.xmlns })));
			local streamhost = reply:get_child("query", bs.xmlns):get_child("streamhost");
			assert.same({ node[2], tostring(node[1].port) }, { streamhost.attr.jid, streamhost.attr.port });
			local sid = "node-" .. math.random(1e9);
			local hash = s5.hash(sid, alice.jid, bob.jid);
			local t_sock = assert(s5.connect(node[1].port, hash));
			local i_sock = assert(s5.connect(node[1].port, hash));
			local act = assert(alice:request(bs.activation(sid, bob.jid, node[2])));
			assert.equal("result", act.attr.type, tostring(act));
			assert.equal(node[2], s5.run({ { from = i_sock, to = t_sock, data = node[2] } })[1]);
			t_sock:close(); i_sock:close();
		end
	end);
end);

-- As dist/systemd/proxy65@.service runs it: every option from a config
-- file, the secret from a file (the unit's credential), and --retry (#32).
describe("standalone proxy65 as its systemd unit runs it #integration", function ()
	it("takes its options from --config and its secret from --secret-file", function ()
		local server, alice, bob = bs.start({ hosts = hosts(), wait_ports = { "c2s", "component" } });
		local dir = assert(io.popen("mktemp -d \"${TMPDIR:-/tmp}/cproxy-unit.XXXXXX\"")):read("l");
		local socks_port = prosody.free_port();
		local f = assert(io.open(dir .. "/unit.cfg.lua", "w"));
		f:write(("jid = \"proxy.localhost\"\nrhost = \"127.0.0.1\"\nrport = %d\nproxyips = \"127.0.0.1:%d\"\n"
			.. "partner_timeout = 1800\nrelay_nice = 5\nlog_level = \"debug\"\n"):format(server.ports.component, socks_port));
		f:close();
		f = assert(io.open(dir .. "/secret", "w"));
		f:write(SECRET, "\n");
		f:close();
		local pid = assert(io.popen(("%s/bin/proxy65 --config %q --secret-file %q --retry >%q 2>&1 & echo $!")
			:format(prosody.root, dir .. "/unit.cfg.lua", dir .. "/secret", dir .. "/log")):read("l"));
		finally(function ()
			os.execute("kill " .. pid .. " 2>/dev/null");
			os.execute(("rm -rf %q"):format(dir));
			bs.stop(server, alice, bob);
		end);
		local deadline = socket.gettime() + 10 * prosody.slow;
		while not prosody.read_file(dir .. "/log"):match("Connected to") and socket.gettime() < deadline do
			socket.sleep(0.05);
		end
		local reply = assert(alice:request(xmpp.iq({ type = "get", to = "proxy.localhost" })
			:tag("query", { xmlns = bs.xmlns, sid = "unit" })));
		assert.equal("result", reply.attr.type, prosody.read_file(dir .. "/log"));
		local streamhost = reply:get_child("query", bs.xmlns):get_child("streamhost");
		assert.same({ "127.0.0.1", tostring(socks_port) }, { streamhost.attr.host, streamhost.attr.port });
		local t_sock, i_sock = bs.open_stream(server, alice, bob, { port = socks_port });
		assert.equal("unit", s5.run({ { from = i_sock, to = t_sock, data = "unit" } })[1]);
		t_sock:close(); i_sock:close();
	end);
end);

describe("standalone proxy65 when its server is killed #integration", function ()
	it("keeps the transfer, and reconnects once the server is back (#21)", function ()
		local server, alice, bob = bs.start({ hosts = hosts(), wait_ports = { "c2s", "component" } });
		local component = start_component({ rport = server.ports.component });
		finally(function ()
			component.stop();
			bs.stop(server, alice, bob);
		end);
		assert(component.wait_log("Connected to"), component.log());
		local t_sock, i_sock = bs.open_stream(server, alice, bob, { port = component.port });
		local data = s5.random_bytes(4 * MiB + 1, 5);
		assert(i_sock:send(data:sub(1, MiB)));
		os.execute("kill -KILL " .. server.pid);
		alice:close(); bob:close();
		local got = s5.run({ { from = i_sock, to = t_sock, data = data:sub(MiB + 1) } }, 60);
		-- The target read nothing before: it gets the whole stream.
		assert.equal(#data, #got[1]);
		assert.equal(s5.sha256(data), s5.sha256(got[1]));
		t_sock:close(); i_sock:close();
		assert(component.wait_log("reconnecting in", 10), component.log());
		server:restart();
		assert(component.wait_log("Connected to [^\n]*\n.*Connected to", RECONNECT), component.log());
	end);
end);

describe("standalone proxy65 failures #integration", function ()
	it("exits non-zero with a clear error on a wrong secret", function ()
		local server = prosody.start({ hosts = hosts(), wait_ports = { "component" } });
		local f = assert(io.open(server.dir .. "/wrong", "w"));
		f:write("not-the-secret\n");
		f:close();
		local status, out = run_component(("--jid proxy.localhost --secret-file %q --rport %d --proxyips 127.0.0.1:%d")
			:format(server.dir .. "/wrong", server.ports.component, prosody.free_port()));
		server:stop();
		assert.equal(1, status, out);
		assert.truthy(out:match("not%-authorized"), out);
		assert.truthy(out:match("Giving up"), out);
	end);

	it("exits non-zero when the server is unreachable at start", function ()
		local status, out = run_component(("--jid proxy.localhost --secret x --rport %d --proxyips 127.0.0.1:%d")
			:format(prosody.free_port(), prosody.free_port()));
		assert.equal(1, status, out);
		assert.truthy(out:match("refused"), out);
	end);

	it("checks its command line: usage, version, and bad values", function ()
		local status, out = run_component("--help");
		assert.equal(0, status);
		assert.truthy(out:match("%-%-proxyips"));
		status, out = run_component("--version");
		assert.equal(0, status);
		assert.truthy(out:match("proxy65"));
		status, out = run_component("--jid proxy.localhost --secret x --rport notaport");
		assert.equal(2, status);
		assert.truthy(out:match("rport must be a non%-negative integer"), out);
		status, out = run_component("--jid user@proxy.localhost --secret x");
		assert.equal(2, status);
		status, out = run_component("--jid proxy.localhost");
		assert.equal(2, status);
		assert.truthy(out:match("no secret"), out);
	end);

	it("closes the stream with not-well-formed when the server sends malformed XML", function ()
		-- A scripted server: accepts the component, then sends bad XML.
		local listener = assert(socket.bind("127.0.0.1", 0));
		local _, port = listener:getsockname();
		listener:settimeout(10);
		local component = start_component({ rport = tonumber(port), args = { "--retry" } });
		local peer = assert(listener:accept());
		peer:settimeout(5);
		local header = peer:receive(100);
		assert.truthy(header and header:match("jabber:component:accept"), header);
		peer:send("<stream:stream xmlns='jabber:component:accept' xmlns:stream='http://etherx.jabber.org/streams' id='x1'>");
		local handshake = "";
		while not handshake:match("</handshake>") do
			handshake = handshake .. assert(peer:receive(1));
		end
		assert.truthy(handshake:match("<handshake>" .. require "spec.helpers.core".sha1("x1" .. SECRET) .. "</handshake>"));
		peer:send("<handshake/><iq type='get' id='1'><a></b></iq>");
		local rest, err, partial = peer:receive("*a");
		rest = rest or partial;
		assert.truthy(rest:match("<not%-well%-formed xmlns='urn:ietf:params:xml:ns:xmpp%-streams'/>"), rest);
		peer:close();
		assert.truthy(component.wait_log("invalid XML from the server"), component.log());
		-- With --retry it comes back.
		local again = assert(listener:accept());
		again:close();
		listener:close();
		component.stop();
	end);
end);
