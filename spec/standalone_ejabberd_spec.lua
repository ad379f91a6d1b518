-- The standalone proxy65 (bin/proxy65) as an XEP-0114 external component
-- of a real ejabberd (Debian's package, spec/helpers/ejabberd.lua): two
-- c2s clients find it through the server's disco, take its streamhost and
-- transfer through it both ways; a wrong secret ends it. Where ejabberd is
-- not installed, says so and skips.
local ejabberd = require "spec.helpers.ejabberd";
local xmpp = require "spec.helpers.xmpp_client";
local s5 = require "spec.helpers.socks5_client";
local bs = require "spec.helpers.bytestreams";
local standalone = require "spec.helpers.standalone";

local MiB = 1048576;
local SECRET = "s3cret-" .. math.random(1e9);

local available, why = ejabberd.available();
if not available then
	print("ejabberd specs skipped: " .. why);
	describe("standalone proxy65 with ejabberd #ejabberd", function ()
		pending("skipped: " .. why);
	end);
	return;
end

local find_proxies = bs.find_proxies;

describe("standalone proxy65 with ejabberd #ejabberd", function ()
	local server, component, alice, bob;

	setup(function ()
		server = ejabberd.start({ components = { ["proxy.localhost"] = SECRET }, accounts = bs.accounts() });
		component = standalone.start({ rport = server.ports.component, secret = SECRET });
		assert(component.wait_log("Connected to 127%.0%.0%.1 as proxy%.localhost", 20), component.log());
		alice = bs.login(server, "alice");
		bob = bs.login(server, "bob");
	end);

	teardown(function ()
		if component then component.stop(); end
		bs.stop(server, alice, bob);
	end);

	it("is found through the server's disco#items", function ()
		assert.same({ "proxy.localhost" }, find_proxies(alice));
		assert.same({ "proxy.localhost" }, find_proxies(bob));
	end);

	it("gives its streamhost, and relays 1 MiB + 1 byte each way intact", function ()
		local reply = assert(alice:request(xmpp.iq({ type = "get", to = "proxy.localhost" })
			:tag("query", { xmlns = bs.xmlns, sid = "s" })));
		assert.equal("result", reply.attr.type, tostring(reply));
		local streamhost = reply:get_child("query", bs.xmlns):get_child("streamhost");
		assert.same({ "proxy.localhost", "127.0.0.1", tostring(component.port) },
			{ streamhost.attr.jid, streamhost.attr.host, streamhost.attr.port });
		local t_sock, i_sock = bs.open_stream(server, alice, bob, { port = tonumber(streamhost.attr.port) });
		local up, down = s5.random_bytes(MiB + 1, 1), s5.random_bytes(MiB + 1, 2);
		local got = s5.run({ { from = i_sock, to = t_sock, data = up }, { from = t_sock, to = i_sock, data = down } }, 60);
		assert.equal(#up, #got[1]);
		assert.equal(s5.sha256(up), s5.sha256(got[1]));
		assert.equal(#down, #got[2]);
		assert.equal(s5.sha256(down), s5.sha256(got[2]));
		t_sock:close(); i_sock:close();
	end);

	it("refuses an activation it has no pair for", function ()
		local reply = assert(alice:request(bs.activation("unknown", bob.jid)));
		assert.same({ "modify", "item-not-found" }, { bs.error_of(reply) });
	end);

	it("exits non-zero with a clear error on a wrong secret", function ()
		local wrong = server.dir .. "/wrong";
		local f = assert(io.open(wrong, "w"));
		f:write("not-the-secret\n");
		f:close();
		local status, out = standalone.run(("--jid proxy.localhost --secret-file %q --rport %d --proxyips 127.0.0.1:%d")
			:format(wrong, server.ports.component, ejabberd.free_port()));
		assert.equal(1, status, out);
		assert.truthy(out:match("not%-authorized"), out);
		assert.truthy(out:match("Giving up"), out);
	end);
end);
