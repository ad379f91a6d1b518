-- proxy65's operator options in a real Prosody: the handshake timeout,
-- connection and transfer limits, bandwidth and size caps, several
-- advertised addresses, ACLs by domain, metrics and the log of each
-- transfer (#19). Short timeouts, loopback only.
local socket = require "socket";
local prosody = require "spec.helpers.prosody";
local xmpp = require "spec.helpers.xmpp_client";
local s5 = require "spec.helpers.socks5_client";
local bs = require "spec.helpers.bytestreams";
local metrics = require "spec.helpers.metrics";

local MiB = 1048576;

-- True when the proxy closes `sock` within `timeout` seconds (whatever
-- it still had to say before).
local function closed_within(sock, timeout)
	sock:settimeout(timeout);
	local _, err = sock:receive("*a");
	return err == nil or err == "closed" or err == "connection reset by peer";
end

-- A SOCKS5 connection from `source` (a loopback address) for `hash`.
local function connect_from(server, source, hash)
	local sock = socket.tcp();
	sock:settimeout(5);
	assert(sock:bind(source, 0));
	assert(sock:connect("127.0.0.1", server.ports.proxy65));
	sock:send("\5\1\0" .. s5.request(hash));
	-- The method reply, then the head of the request's: VER REP RSV ATYP LEN.
	local reply = sock:receive(2 + 5);
	if reply and reply:byte(4) == 0 then
		sock:receive(reply:byte(7) + 2); -- the rest of a success reply
	end
	return sock, reply;
end

-- REP of the request reply in what connect_from read, or nil.
local function escape(text)
	return (text:gsub("%p", "%%%0"));
end

local function rep_of(reply)
	return reply and reply:byte(4);
end

describe("mod_proxy65 limits #integration", function ()
	local server, alice, bob, metrics_port;

	-- Waits until the proxy holds `n` sockets or fewer: it learns of a
	-- client's close, and reaps an ended relay, only some time after.
	local function settle(n)
		local key = "prosody_mod_proxy65__connections";
		local deadline = socket.gettime() + 5 * prosody.slow;
		while (metrics.fetch(metrics_port, key)[key] or 0) > (n or 0) and socket.gettime() < deadline do
			socket.sleep(0.05);
		end
	end

	setup(function ()
		metrics_port = prosody.free_port();
		server, alice, bob = bs.start({
			hosts = [[
VirtualHost "localhost"
VirtualHost "other.localhost"

Component "proxy.localhost" "proxy65"
	proxy65_address = { "127.0.0.1", "proxy.invalid:7777", "[::1]", "not a host:", "proxy.localhost" }

Component "domain-acl.localhost" "proxy65"
	proxy65_acl = { "localhost" }

Component "proxy.example.com" "proxy65"
	proxy65_address = { "10.255.255.1", "127.0.0.1:1" }
]];
			accounts = { { "alice", "localhost", "alice-pw" }, { "bob", "localhost", "bob-pw" },
				{ "carol", "other.localhost", "carol-pw" } };
			global = table.concat({
				metrics.global(metrics_port);
				"proxy65_handshake_timeout = 1";
				"proxy65_activation_timeout = 20";
				"proxy65_max_connections = 10";
				"proxy65_max_connections_per_ip = 6";
				"proxy65_max_transfers_per_user = 1";
				"proxy65_max_transfer_bytes = 4000000";
			}, "\n");
		});
	end);

	teardown(function ()
		bs.stop(server, alice, bob);
	end);

	it("closes a connection that sends nothing within proxy65_handshake_timeout", function ()
		local sock = socket.tcp();
		sock:settimeout(5);
		assert(sock:connect("127.0.0.1", server.ports.proxy65));
		assert.is_true(closed_within(sock, 5));
		sock:close();
		assert.truthy(server:wait_log("no complete SOCKS5 request within 1s"));
	end);

	it("closes a connection whose request stops half-way at the handshake timeout", function ()
		local sock = socket.tcp();
		sock:settimeout(5);
		assert(sock:connect("127.0.0.1", server.ports.proxy65));
		sock:send("\5\1\0\5\1\0\3\40abc");
		assert.equal("\5\0", sock:receive(2));
		assert.is_true(closed_within(sock, 5));
		sock:close();
	end);

	it("refuses, with a general failure, connections past proxy65_max_connections_per_ip", function ()
		local socks = {};
		for i = 1, 6 do
			local sock, reply = connect_from(server, "127.0.0.1", s5.hash("ip-" .. i, alice.jid, bob.jid));
			assert.equal(0, rep_of(reply), "connection " .. i);
			socks[i] = sock;
		end
		local seventh, reply = connect_from(server, "127.0.0.1", s5.hash("ip-0", alice.jid, bob.jid));
		assert.equal(1, rep_of(reply));
		assert.is_true(closed_within(seventh, 5));
		seventh:close();
		-- Another source address has its own count.
		local other, other_reply = connect_from(server, "127.0.0.2", s5.hash("ip-6", alice.jid, bob.jid));
		assert.equal(0, rep_of(other_reply));
		-- A closed connection frees its place (5 from here, 1 from 127.0.0.2).
		socks[1]:close();
		settle(6);
		local again, again_reply = connect_from(server, "127.0.0.1", s5.hash("ip-7", alice.jid, bob.jid));
		assert.equal(0, rep_of(again_reply));
		for _, sock in ipairs({ socks[2], socks[3], socks[4], socks[5], socks[6], other, again }) do
			sock:close();
		end
		settle(); -- the next spec needs every place
	end);

	it("refuses connections past proxy65_max_connections, from any address", function ()
		local socks = {};
		for i = 1, 10 do
			local source = ("127.0.0.%d"):format(10 + i);
			local sock, reply = connect_from(server, source, s5.hash("total-" .. i, alice.jid, bob.jid));
			assert.equal(0, rep_of(reply), "connection " .. i);
			socks[i] = sock;
		end
		local eleventh, reply = connect_from(server, "127.0.0.30", s5.hash("total-0", alice.jid, bob.jid));
		assert.equal(1, rep_of(reply));
		eleventh:close();
		for _, sock in ipairs(socks) do
			sock:close();
		end
		settle();
	end);

	it("refuses a second active transfer of one user with wait/resource-constraint", function ()
		local t1, i1 = bs.open_stream(server, alice, bob);
		local sid = "second-" .. math.random(1e9);
		local hash = s5.hash(sid, alice.jid, bob.jid);
		local t2 = assert(s5.connect(server.ports.proxy65, hash));
		local i2 = assert(s5.connect(server.ports.proxy65, hash));
		local reply = assert(alice:request(bs.activation(sid, bob.jid)));
		assert.same({ "wait", "resource-constraint" }, { bs.error_of(reply) });
		-- Bob's transfers are his own.
		local t3, i3 = bs.open_stream(server, bob, alice);
		t3:close(); i3:close();
		-- Once the first has ended, the second may go.
		t1:close(); i1:close();
		local deadline = socket.gettime() + 5 * prosody.slow;
		repeat
			socket.sleep(0.1);
			reply = assert(alice:request(bs.activation(sid, bob.jid)));
		until reply.attr.type == "result" or socket.gettime() > deadline;
		assert.equal("result", reply.attr.type);
		assert.equal("ok", s5.run({ { from = i2, to = t2, data = "ok" } })[1]);
		t2:close(); i2:close();
		settle(); -- reaped: alice's next transfer is not refused for this one
	end);

	it("aborts a transfer past proxy65_max_transfer_bytes, and relays one within it", function ()
		local t_sock, i_sock, sid = bs.open_stream(server, alice, bob);
		local data = s5.random_bytes(4000000, 8);
		assert.equal(s5.sha256(data), s5.sha256(s5.run({ { from = i_sock, to = t_sock, data = data } }, 30)[1]));
		t_sock:close(); i_sock:close();
		assert.truthy(server:wait_log("Transfer " .. escape(sid) .. " from [^\n]* ended %(completed%)"));
		t_sock, i_sock, sid = bs.open_stream(server, alice, bob);
		-- Keep sending and reading until the proxy cuts the stream.
		local big, sent, ended = s5.random_bytes(6 * MiB, 9), 0, nil;
		i_sock:settimeout(0);
		local deadline = socket.gettime() + 10 * prosody.slow;
		while not ended and socket.gettime() < deadline do
			if sent < #big then
				local n, _, partial = i_sock:send(big, sent + 1);
				sent = n or (partial and partial > 0 and partial) or sent;
			end
			local how = s5.await_end(t_sock, 0.05);
			if how ~= "timeout" then
				ended = how;
			end
		end
		assert.equal("reset", ended);
		t_sock:close(); i_sock:close();
		assert.truthy(server:wait_log("Transfer " .. escape(sid) .. " from [^\n]* ended %(File too large%)"));
	end);

	it("logs each finished transfer: initiator, target, bytes, seconds, rate, and why", function ()
		local t_sock, i_sock, sid = bs.open_stream(server, alice, bob);
		s5.run({ { from = i_sock, to = t_sock, data = ("a"):rep(1000) }, { from = t_sock, to = i_sock, data = "bc" } });
		t_sock:close(); i_sock:close();
		local line = server:wait_log("\tinfo\t(Transfer " .. escape(sid) .. " [^\n]*)");
		assert.truthy(line);
		assert.truthy(line:find(("from %s to %s ended (completed): 1002 bytes (1000 to the target, 2 back), ")
			:format(alice.jid, bob.jid), 1, true), line);
		assert.truthy(line:match(", [%d.]+ s, [%d.]+ MiB/s$"), line);
	end);

	local function streamhosts_for(user)
		local reply = assert(user:request(xmpp.iq({ type = "get", to = "proxy.localhost" })
			:tag("query", { xmlns = bs.xmlns })));
		local got = {};
		for streamhost in reply:get_child("query", bs.xmlns):childtags("streamhost") do
			assert.equal("proxy.localhost", streamhost.attr.jid);
			table.insert(got, streamhost.attr.host .. " " .. streamhost.attr.port);
		end
		return got;
	end

	-- Conversations, Dino, Gajim and iris try only the first streamhost.
	it("advertises each proxy65_address, those this requester can use first, and skips a malformed one (#27)", function ()
		local port = tostring(server.ports.proxy65);
		assert.truthy(server:log():match("'proxy65_address' has an entry \"not a host:\""));
		-- Once the check has found which ones work: for an IPv4 client,
		-- IPv4 and the name that resolves to both families, in the
		-- configured order; then those found unusable, the name that does
		-- not resolve before the other family's address.
		assert.truthy(server:wait_log("Streamhost proxy%.localhost:" .. port .. " is reachable", 10));
		assert.truthy(server:wait_log("Streamhost ::1:" .. port .. ": could not reach", 10));
		local expected = { "127.0.0.1 " .. port, "proxy.localhost " .. port, "proxy.invalid 7777", "::1 " .. port };
		assert.same(expected, streamhosts_for(alice));
		assert.same(expected, streamhosts_for(alice)); -- stable
	end);

	it("checks each advertised streamhost and warns about those clients cannot use", function ()
		local function warned(streamhost, text)
			return server:wait_log("\twarn\tStreamhost " .. escape(streamhost) .. ": [^\n]*" .. escape(text), 10);
		end
		local port = server.ports.proxy65;
		-- A name that does not resolve, and a port that is not ours.
		assert.truthy(warned("proxy.invalid:7777", "does not resolve"));
		assert.truthy(warned("proxy.invalid:7777", "port 7777 is not one proxy65 listens on"));
		-- An address nothing of ours listens on: the hairpin check fails.
		assert.truthy(warned("::1:" .. port, "could not reach this proxy through ::1 port " .. port));
		assert.truthy(warned("127.0.0.1:1", "could not reach this proxy through 127.0.0.1 port 1"));
		-- A private address is flagged for a public domain, not for a local one.
		assert.truthy(warned("10.255.255.1:" .. port, "10.255.255.1 is a private address"));
		assert.is_nil(server:log():match("Streamhost 127%.0%.0%.1:" .. port .. ": "));
		assert.truthy(server:log():match("Streamhost 127%.0%.0%.1:" .. port .. " is reachable"));
		-- A localhost name is loopback whichever resolver Prosody has (#26).
		assert.truthy(server:wait_log("Streamhost proxy%.localhost:" .. port .. " is reachable", 10));
	end);

	it("counts pairs whose initiator never came, by listening port", function ()
		local before = metrics.fetch(metrics_port, "prosody_mod_proxy65__half_pairs");
		local key = ("prosody_mod_proxy65__half_pairs_total{port=\"%d\"}"):format(server.ports.proxy65);
		local t_sock = assert(s5.connect(server.ports.proxy65, s5.hash("alone", alice.jid, bob.jid)));
		t_sock:close();
		settle(); -- the pair is counted as the proxy drops it
		local after = metrics.fetch(metrics_port, "prosody_mod_proxy65__half_pairs");
		assert.equal((before[key] or 0) + 1, after[key]);
	end);

	it("lets an ACL name a whole domain", function ()
		local carol = assert(xmpp.connect({ port = server.ports.c2s, domain = "other.localhost",
			username = "carol", password = "carol-pw" }));
		local query = xmpp.iq({ type = "get", to = "domain-acl.localhost" }):tag("query", { xmlns = bs.xmlns });
		assert.equal("result", assert(alice:request(query)).attr.type);
		query = xmpp.iq({ type = "get", to = "domain-acl.localhost" }):tag("query", { xmlns = bs.xmlns });
		assert.same({ "auth", "forbidden" }, { bs.error_of(assert(carol:request(query))) });
		carol:close();
	end);

	it("counts transfers, refusals, failed handshakes and bytes in Prosody's statistics", function ()
		local samples = metrics.fetch(metrics_port, "prosody_mod_proxy65__");
		local before = samples["prosody_mod_proxy65__relayed_bytes_total"];
		local function value(name, labels)
			return samples["prosody_mod_proxy65__" .. name .. (labels or "")] or 0;
		end
		assert.truthy(value("transfers_total", "{result=\"completed\"}") >= 2);
		assert.truthy(value("transfers_total", "{result=\"failed\"}") >= 1);
		assert.truthy(value("activations_refused_total", "{reason=\"resource-constraint\"}") >= 1);
		assert.truthy(value("handshake_failures_total", "{reason=\"timeout\"}") >= 2);
		assert.truthy(value("handshake_failures_total", "{reason=\"max-connections-per-ip\"}") >= 1);
		assert.truthy(value("handshake_failures_total", "{reason=\"max-connections\"}") >= 1);
		assert.truthy(value("relayed_bytes_total") >= 8000000);
		assert.equal(0, value("active"));
		-- While a transfer runs, it counts as active, and its bytes count already.
		local t_sock, i_sock = bs.open_stream(server, alice, bob);
		assert.equal("x", s5.run({ { from = i_sock, to = t_sock, data = ("x"), finish = "keep" } })[1]);
		-- The relay thread counts a byte just after sending it.
		local deadline = socket.gettime() + 5 * prosody.slow;
		repeat
			samples = metrics.fetch(metrics_port, "prosody_mod_proxy65__");
		until value("relayed_bytes_total") ~= before or socket.gettime() > deadline;
		assert.equal(1, value("active"));
		assert.equal(2, value("connections"));
		assert.equal(before + 1, value("relayed_bytes_total"));
		t_sock:close(); i_sock:close();
	end);
end);

describe("mod_proxy65 bandwidth limits #integration", function ()
	local server, alice, bob;

	setup(function ()
		server, alice, bob = bs.start({
			hosts = "VirtualHost \"localhost\"\nComponent \"proxy.localhost\" \"proxy65\"";
			global = "proxy65_rate_limit = 4194304\nproxy65_total_rate_limit = 8388608";
		});
	end);

	teardown(function ()
		bs.stop(server, alice, bob);
	end);

	it("relays intact under proxy65_rate_limit and proxy65_total_rate_limit", function ()
		local flows, socks = {}, {};
		for i = 1, 3 do
			local t_sock, i_sock = bs.open_stream(server, alice, bob);
			flows[i] = { from = i_sock, to = t_sock, data = s5.random_bytes(MiB + i, i) };
			socks[#socks + 1], socks[#socks + 2] = t_sock, i_sock;
		end
		local got = s5.run(flows, 30);
		for i = 1, 3 do
			assert.equal(s5.sha256(flows[i].data), s5.sha256(got[i]));
		end
		for _, sock in ipairs(socks) do
			sock:close();
		end
	end);
end);
