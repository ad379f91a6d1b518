-- proxy65 behind mod_net_multiplex: SOCKS5 is recognised on the plain
-- multiplex port, and never taken from a TLS one, whose raw fd carries
-- ciphertext the relay must not see (#16).
local socket = require "socket";
local ssl = require "ssl";
local prosody = require "spec.helpers.prosody";
local s5 = require "spec.helpers.socks5_client";
local bs = require "spec.helpers.bytestreams";

describe("mod_proxy65 on mod_net_multiplex ports #integration", function ()
	local server, alice, bob, certs, plain_port, tls_port;

	setup(function ()
		local h = io.popen("mktemp -d \"${TMPDIR:-/tmp}/cproxy-certs.XXXXXX\"");
		certs = h:read("l");
		h:close();
		assert(os.execute(("openssl req -x509 -newkey rsa:2048 -nodes -days 1 -subj /CN=localhost"
			.. " -keyout %q -out %q >/dev/null 2>&1"):format(certs .. "/key.pem", certs .. "/cert.pem")));
		plain_port, tls_port = prosody.free_port(), prosody.free_port();
		server, alice, bob = bs.start({
			hosts = "VirtualHost \"localhost\"\nComponent \"proxy.localhost\" \"proxy65\"";
			global = table.concat({
				"modules_enabled = { \"roster\", \"saslauth\", \"disco\", \"ping\", \"net_multiplex\" }";
				("ports = { %d }"):format(plain_port);
				("ssl_ports = { %d }"):format(tls_port);
				("ssl = { certificate = %q, key = %q }"):format(certs .. "/cert.pem", certs .. "/key.pem");
			}, "\n");
		});
	end);

	teardown(function ()
		bs.stop(server, alice, bob);
		if certs then os.execute(("rm -rf %q"):format(certs)); end
	end);

	it("relays a bytestream negotiated on the plain multiplex port", function ()
		local t_sock, i_sock = bs.open_stream(server, alice, bob, { port = plain_port });
		local data = s5.random_bytes(300000, 8);
		local got = s5.run({ { from = i_sock, to = t_sock, data = data } });
		assert.equal(s5.sha256(data), s5.sha256(got[1]));
		t_sock:close(); i_sock:close();
	end);

	it("never speaks SOCKS5 inside TLS", function ()
		local sock = socket.tcp();
		sock:settimeout(5);
		assert(sock:connect("127.0.0.1", tls_port));
		local tls = assert(ssl.wrap(sock, { mode = "client", protocol = "any", verify = "none" }));
		tls:settimeout(5);
		assert(tls:dohandshake());
		assert(tls:send("\5\1\0" .. s5.request(s5.hash("tls", alice.jid, bob.jid))));
		local reply, err = tls:receive(2);
		assert.is_nil(reply);
		assert.equal("closed", err);
		tls:close();
		assert.truthy(server:wait_log("SOCKS5 over TLS"));
	end);
end);
