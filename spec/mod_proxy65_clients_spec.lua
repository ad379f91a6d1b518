-- proxy65 in a real Prosody, replaying the orders and timings of real
-- clients, as read from their source (#27; README, "Clients"):
-- - Conversations connects to its own proxy candidate before it even
--   offers the file, and its peer comes once a person has accepted it;
-- - iris (Psi) connects to every advertised streamhost at once with the
--   same hash, and closes those it did not choose;
-- - a sender may stream its bytes, or nothing, and close before its
--   activation is answered (Gajim 1.x, gloox), whichever side came first.
-- The waits a person takes are shortened with the options, not slept.
local socket = require "socket";
local prosody = require "spec.helpers.prosody";
local s5 = require "spec.helpers.socks5_client";
local bs = require "spec.helpers.bytestreams";
local metrics = require "spec.helpers.metrics";

local MiB = 1048576;
-- The wait between pairing and activation: a few seconds, as a client's
-- negotiation takes. The wait for a partner keeps its default.
local ACTIVATION_TIMEOUT = 2 * prosody.slow;

describe("mod_proxy65 with real clients' orders and timings (#27) #integration", function ()
	local server, alice, bob, metrics_port;

	setup(function ()
		metrics_port = prosody.free_port();
		server, alice, bob = bs.start({
			hosts = "VirtualHost \"localhost\"\nComponent \"proxy.localhost\" \"proxy65\"";
			global = metrics.global(metrics_port) .. "\nproxy65_activation_timeout = " .. ACTIVATION_TIMEOUT;
		});
		metrics.wait(metrics_port, 10 * prosody.slow);
	end);

	teardown(function ()
		bs.stop(server, alice, bob);
	end);

	local counter = 0;
	local function new_sid(name)
		counter = counter + 1;
		return ("%s-%d-%d"):format(name, counter, math.random(1e9));
	end

	local function activate(sid)
		local reply = assert(alice:request(bs.activation(sid, bob.jid), 10));
		assert.equal("result", reply.attr.type, tostring(reply));
	end

	-- Whether the proxy still holds `sock` open: nothing to read, no EOF.
	local function still_open(sock)
		local readable = socket.select({ sock }, nil, 0);
		return not (readable and readable[1]);
	end

	-- The requester (alice, who activates) comes first and waits past the
	-- activation timeout for the target, as for a person to accept.
	it("relays for a requester that connected long before its target (Conversations)", function ()
		local sid = new_sid("conversations");
		local hash = s5.hash(sid, alice.jid, bob.jid);
		local requester = assert(s5.connect(server.ports.proxy65, hash));
		socket.sleep(ACTIVATION_TIMEOUT + 1);
		assert.is_true(still_open(requester));
		local target = assert(s5.connect(server.ports.proxy65, hash));
		activate(sid);
		local up, down = s5.random_bytes(MiB + 7, 31), s5.random_bytes(MiB + 7, 32);
		local got = s5.run({ { from = requester, to = target, data = up }, { from = target, to = requester, data = down } }, 60);
		assert.equal(s5.sha256(up), s5.sha256(got[1]));
		assert.equal(s5.sha256(down), s5.sha256(got[2]));
		requester:close(); target:close();
	end);

	it("relays what a first-come requester sent, and its FIN, before the target came", function ()
		local sid = new_sid("early-fin");
		local hash = s5.hash(sid, alice.jid, bob.jid);
		local data = s5.random_bytes(100003, 33);
		local requester = assert(s5.connect(server.ports.proxy65, hash,
			{ mode = "pipelined", early = data, shutdown = true }));
		local target = assert(s5.connect(server.ports.proxy65, hash));
		activate(sid);
		local got = s5.run({ { from = target, to = requester, data = "received" } });
		assert.equal("received", got[1]);
		local how, rest = s5.await_end(target, 10 * prosody.slow);
		assert.equal("closed", how);
		assert.equal(s5.sha256(data), s5.sha256(rest));
		requester:close(); target:close();
	end);

	-- An empty file: the requester came first, and ends its stream before
	-- its activation is answered. The target must see an empty stream end.
	it("relays an empty stream from a first-come requester that closed before activation", function ()
		local sid = new_sid("empty");
		local hash = s5.hash(sid, alice.jid, bob.jid);
		local requester = assert(s5.connect(server.ports.proxy65, hash));
		local target = assert(s5.connect(server.ports.proxy65, hash));
		requester:shutdown("send");
		socket.sleep(0.2); -- the proxy sees the FIN before the activation
		activate(sid);
		local how, got = s5.await_end(target, 10 * prosody.slow);
		assert.equal("closed", how);
		assert.equal("", got);
		target:send("x"); -- the other direction still carries
		assert.equal("x", requester:receive(1));
		requester:close(); target:close();
	end);

	-- iris connects to every streamhost with the same hash; two of them
	-- may lead to this one listener. It keeps the first that answers.
	it("pairs the requester with the target's chosen connection once iris closes the other", function ()
		for _, wait in ipairs({ 0.2, 0 }) do
			local sid = new_sid("iris");
			local hash = s5.hash(sid, alice.jid, bob.jid);
			local chosen = assert(s5.connect(server.ports.proxy65, hash));
			local other = assert(s5.connect(server.ports.proxy65, hash));
			other:close();
			-- With no wait the close may still be in flight as the requester
			-- comes: the place must be freed for it all the same.
			socket.sleep(wait);
			local requester = assert(s5.connect(server.ports.proxy65, hash), "after " .. wait .. " s");
			activate(sid);
			local up = s5.random_bytes(65537, 34);
			local got = s5.run({ { from = requester, to = chosen, data = up }, { from = chosen, to = requester, data = "ok" } });
			assert.equal(s5.sha256(up), s5.sha256(got[1]));
			assert.equal("ok", got[2]);
			requester:close(); chosen:close();
		end
	end);

	it("still refuses a third connection while a pair that has sent nothing waits", function ()
		local sid = new_sid("hijack");
		local hash = s5.hash(sid, alice.jid, bob.jid);
		local target = assert(s5.connect(server.ports.proxy65, hash));
		local requester = assert(s5.connect(server.ports.proxy65, hash));
		local third, err, reply = s5.connect(server.ports.proxy65, hash);
		assert.is_nil(third);
		assert.equal("refused", err);
		assert.equal(2, reply:byte(2));
		activate(sid);
		assert.equal("x", s5.run({ { from = requester, to = target, data = "x" } })[1]);
		requester:close(); target:close();
	end);

	it("closes a pair never activated at the activation timeout, and counts it apart from a lone wait", function ()
		local key = "prosody_mod_proxy65__timeouts_total{wait=\"activation\"}";
		local before = metrics.fetch(metrics_port, "prosody_mod_proxy65__timeouts")[key] or 0;
		local hash = s5.hash(new_sid("never"), alice.jid, bob.jid);
		local first = assert(s5.connect(server.ports.proxy65, hash));
		local second = assert(s5.connect(server.ports.proxy65, hash));
		for _, sock in ipairs({ first, second }) do
			local how = s5.await_end(sock, ACTIVATION_TIMEOUT + 5 * prosody.slow);
			assert.equal("closed", how);
			sock:close();
		end
		local deadline = socket.gettime() + 5 * prosody.slow;
		local after;
		repeat
			after = metrics.fetch(metrics_port, "prosody_mod_proxy65__timeouts")[key] or 0;
		until after >= before + 2 or not socket.sleep(0.05) and socket.gettime() > deadline;
		assert.equal(before + 2, after);
	end);

	it("shows the connections waiting for their partner in the metrics", function ()
		local key = "prosody_mod_proxy65__awaiting_partner";
		local lone = assert(s5.connect(server.ports.proxy65, s5.hash(new_sid("lone"), alice.jid, bob.jid)));
		assert.equal(1, metrics.fetch(metrics_port, key)[key]);
		lone:close();
		local deadline = socket.gettime() + 5 * prosody.slow;
		while metrics.fetch(metrics_port, key)[key] ~= 0 and socket.gettime() < deadline do
			socket.sleep(0.05);
		end
		assert.equal(0, metrics.fetch(metrics_port, key)[key]);
	end);
end);
