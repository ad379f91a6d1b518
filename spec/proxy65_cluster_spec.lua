-- proxy65 on several nodes as one service (#31): three nodes (bin/proxy65,
-- each with a JID and a loopback address of its own, as three machines
-- would have) behind a front that answers for the service JID, joined by
-- nothing but the XMPP server's routing. Once in a real Prosody, with the
-- Prosody module as the front, and once in a real ejabberd, with a
-- bin/proxy65 as the front. Transfers are activated both where clients
-- send them: at the streamhost's JID, the node (Dino, Smack, Psi's SI),
-- and at the JID they queried, the front (Conversations, Psi's Jingle,
-- slixmpp, Gajim's SI). One node is killed in the middle of transfers and
-- restarted.
local socket = require "socket";
local prosody = require "spec.helpers.prosody";
local ejabberd = require "spec.helpers.ejabberd";
local xmpp = require "spec.helpers.xmpp_client";
local s5 = require "spec.helpers.socks5_client";
local bs = require "spec.helpers.bytestreams";
local standalone = require "spec.helpers.standalone";

local MiB = 1048576;
local SECRET = "s3cret-" .. math.random(1e9);
-- One secret per component, as an operator would set them. (ejabberd
-- also needs a listener per component: see its setup.)
local function secret(jid)
	return SECRET .. "-" .. jid;
end
local FRONT = "proxy.localhost";
local NODES = { "node-a.localhost", "node-b.localhost", "node-c.localhost" };
local ADDRESSES = { "127.0.0.2", "127.0.0.3", "127.0.0.4" };
-- proxy65_node_check_interval: a silent node is out of the list at most
-- two of these after it fell silent (one to the next request, one for
-- its answer), as the README states.
local INTERVAL = 1;
local PYTHON = os.getenv("CPROXY_PYTHON") or "/usr/bin/python3";
local SLIXMPP = prosody.root .. "/spec/clients/slixmpp_transfer.py";

local function node_index(jid)
	for i, node in ipairs(NODES) do
		if node == jid then
			return i;
		end
	end
end

-- The front's answer to a streamhost query: its streamhosts, or nil and
-- the error reply.
local function query(client)
	local reply = assert(client:request(xmpp.iq({ type = "get", to = FRONT })
		:tag("query", { xmlns = bs.xmlns, sid = "q" .. math.random(1e9) }), 10));
	if reply.attr.type ~= "result" then
		return nil, reply;
	end
	local list = {};
	for streamhost in reply:get_child("query", bs.xmlns):childtags("streamhost") do
		list[#list + 1] = { jid = streamhost.attr.jid, host = streamhost.attr.host, port = tonumber(streamhost.attr.port) };
	end
	return list;
end

-- Queries the front until `wanted(seen)` holds, `seen` counting the nodes
-- each answer put first; returns seen and whether it held in time.
local function query_until(client, wanted, timeout)
	local seen = {};
	local deadline = socket.gettime() + (timeout or 10) * prosody.slow;
	repeat
		local list = query(client);
		if list and list[1] then
			seen[list[1].jid] = (seen[list[1].jid] or 0) + 1;
			if wanted(seen) then
				return seen, true;
			end
		end
		socket.sleep(0.05);
	until socket.gettime() > deadline;
	return seen, false;
end

local function show(seen)
	local parts = {};
	for jid, count in pairs(seen) do
		parts[#parts + 1] = jid .. "=" .. count;
	end
	return table.concat(parts, " ");
end

local function all_nodes(seen)
	return seen[NODES[1]] and seen[NODES[2]] and seen[NODES[3]];
end

local sid_counter = 0;
local function new_sid()
	sid_counter = sid_counter + 1;
	return ("cluster-%d-%d"):format(sid_counter, math.random(1e9));
end

-- Opens a bytestream through `streamhost`, activated at `activate_at`;
-- returns the target's and the initiator's sockets.
local function open(world, streamhost, activate_at)
	local sid = new_sid();
	local hash = s5.hash(sid, world.alice.jid, world.bob.jid);
	local target = assert(s5.connect(streamhost.port, hash, { host = streamhost.host }));
	local initiator = assert(s5.connect(streamhost.port, hash, { host = streamhost.host }));
	local reply = assert(world.alice:request(bs.activation(sid, world.bob.jid, activate_at), 15));
	assert.equal("result", reply.attr.type, tostring(reply));
	return target, initiator;
end

-- Paced flows (each { from=, to=, data= }, `rate` bytes a second each),
-- calling action() once `at` seconds in. A flow that breaks is not an
-- error here: each gets got (what arrived) and err (nil at a clean EOF).
local function run_paced(flows, rate, at, action)
	local start, fired = socket.gettime(), false;
	local by_from, by_to = {}, {};
	for _, flow in ipairs(flows) do
		flow.sent, flow.parts, flow.done = 0, {}, false;
		flow.from:settimeout(0);
		flow.to:settimeout(0);
		by_from[flow.from], by_to[flow.to] = flow, flow;
	end
	local deadline = start + 60 * prosody.slow;
	while socket.gettime() < deadline do
		local now = socket.gettime() - start;
		if not fired and now >= at then
			fired = true;
			action();
		end
		local readers, writers, open_flows = {}, {}, 0;
		for _, flow in ipairs(flows) do
			if not flow.done then
				open_flows = open_flows + 1;
				readers[#readers + 1] = flow.to;
				if not flow.broken and flow.sent < #flow.data and flow.sent < rate * now then
					writers[#writers + 1] = flow.from;
				end
			end
		end
		if open_flows == 0 then
			break;
		end
		local readable, writable = socket.select(readers, writers, 0.02);
		for _, sock in ipairs(writable or {}) do
			local flow = by_from[sock];
			local last = math.min(#flow.data, math.floor(rate * now), flow.sent + 65536);
			local n, err, partial = sock:send(flow.data, flow.sent + 1, last);
			n = n or partial;
			if n and n > flow.sent then
				flow.sent = n;
			elseif err and err ~= "timeout" then
				flow.broken = err;
			end
			if flow.sent >= #flow.data then
				sock:shutdown("send");
			end
		end
		for _, sock in ipairs(readable or {}) do
			local flow = by_to[sock];
			local data, err, partial = sock:receive(1048576);
			local got = data or partial;
			if got and #got > 0 then
				flow.parts[#flow.parts + 1] = got;
			end
			if err and err ~= "timeout" then
				flow.done, flow.err = true, err ~= "closed" and err or nil;
			end
		end
	end
	assert(fired, "the flows ended before the action");
	for _, flow in ipairs(flows) do
		assert(flow.done, "a flow did not end");
		flow.got = table.concat(flow.parts);
	end
end

local function slixmpp_available()
	return prosody.shell(("%q -c 'import slixmpp'"):format(PYTHON));
end

-- The specs both servers run. world(): { server, alice, bob, nodes (their
-- handles), start_node(i) }.
local function cluster_specs(world)
	-- The front starts with no node, until each answers its first request
	-- (one interval): every spec starts once all three are in the list.
	before_each(function ()
		local seen, ok = query_until(world().alice, all_nodes, 20);
		assert(ok, "not all nodes are in the list: " .. show(seen));
	end);

	it("lists each node once it answers, equals taking turns", function ()
		local w = world();
		local seen, ok = query_until(w.alice, all_nodes, 15);
		assert.is_true(ok, "nodes put first: " .. show(seen));
		local list = assert(query(w.alice));
		local i = node_index(list[1].jid);
		assert.truthy(i, list[1].jid);
		-- Each node's own address and port, under its own JID.
		assert.same({ ADDRESSES[i], w.nodes[i].port }, { list[1].host, list[1].port });
		assert.equal(1, #list); -- proxy65_streamhost_nodes = 1: one node per answer
	end);

	it("shows clients the front as the proxy, not the nodes", function ()
		assert.same({ FRONT }, bs.find_proxies(world().alice));
	end);

	it("relays intact through the nodes, activated at the node (Dino, Smack) and at the front (Conversations)", function ()
		local w = world();
		local used = {};
		for k = 1, 6 do
			local streamhost = assert(query(w.alice))[1];
			used[streamhost.jid] = true;
			local target, initiator = open(w, streamhost, k % 2 == 1 and streamhost.jid or FRONT);
			local up, down = s5.random_bytes(MiB + 7 * k, k), s5.random_bytes(MiB // 3 + k, 100 + k);
			local got = s5.run({ { from = initiator, to = target, data = up }, { from = target, to = initiator, data = down } }, 60);
			assert.equal(s5.sha256(up), s5.sha256(got[1]));
			assert.equal(s5.sha256(down), s5.sha256(got[2]));
			target:close(); initiator:close();
		end
		local count = 0;
		for _ in pairs(used) do
			count = count + 1;
		end
		assert.is_true(count >= 2, "six transfers all went to one node");
	end);

	it("answers an activation at the front that no node holds with item-not-found", function ()
		local w = world();
		local reply = assert(w.alice:request(bs.activation(new_sid(), w.bob.jid, FRONT), 20));
		assert.same({ "modify", "item-not-found" }, { bs.error_of(reply) });
	end);

	it("lets a node answer only its fronts", function ()
		local w = world();
		local reply = assert(w.alice:request(xmpp.iq({ type = "get", to = NODES[1] })
			:tag("load", { xmlns = "urn:x-cproxy:cluster:0" }), 10));
		assert.same({ "auth", "forbidden" }, { bs.error_of(reply) });
		reply = assert(w.alice:request(xmpp.iq({ type = "set", to = NODES[1] })
			:tag("activate", { xmlns = "urn:x-cproxy:cluster:0", sid = "x", requester = w.alice.jid,
				target = w.bob.jid }), 10));
		assert.same({ "auth", "forbidden" }, { bs.error_of(reply) });
	end);

	it("carries slixmpp's transfers, which activate at the front, on more than one node", function ()
		if not slixmpp_available() then
			return pending("slixmpp cannot be imported by " .. PYTHON);
		end
		local w = world();
		assert.is_true(select(2, query_until(w.alice, all_nodes, 15)));
		local hosts = {};
		for k = 1, 3 do
			local size = MiB + 13 * k;
			local ok, out = prosody.shell(("timeout 120 %q %q %d alice@localhost alice-pw bob@localhost bob-pw %d %d 60")
				:format(PYTHON, SLIXMPP, w.server.ports.c2s, size, k));
			assert.is_true(ok, out);
			local host = out:match("streamhost %S+ (%S+) %d+");
			assert.truthy(host == ADDRESSES[1] or host == ADDRESSES[2] or host == ADDRESSES[3], out);
			hosts[host] = true;
			local sent = out:match("initiator: sent (%d+ bytes, sha256 %x+)");
			assert.equal(size .. " bytes", sent and sent:match("^%d+ bytes"), out);
			assert.equal(sent, out:match("target: received (%d+ bytes, sha256 %x+)"), out);
		end
		-- Each run is a new client, which asks the front once.
		assert.truthy(next(hosts, next(hosts)), "three slixmpp transfers all went to one node");
	end);

	it("keeps the other nodes' transfers going when one is killed, leaves it out, and takes it back", function ()
		local w = world();
		assert.is_true(select(2, query_until(w.alice, all_nodes, 15)));
		-- A transfer on each node, opened at the node directly.
		local flows = {};
		for i = 1, 3 do
			local target, initiator = open(w, { host = ADDRESSES[i], port = w.nodes[i].port }, NODES[i]);
			flows[i] = { from = initiator, to = target, data = s5.random_bytes(3 * MiB + i, 40 + i) };
		end
		local killed_at;
		run_paced(flows, 2 * MiB, 0.5, function ()
			os.execute("kill -KILL " .. w.nodes[2].pid);
			killed_at = socket.gettime();
		end);
		for _, i in ipairs({ 1, 3 }) do
			assert.is_nil(flows[i].err);
			assert.equal(#flows[i].data, #flows[i].got);
			assert.equal(s5.sha256(flows[i].data), s5.sha256(flows[i].got));
		end
		assert.is_true(#flows[2].got < #flows[2].data); -- its node died under it
		for _, flow in ipairs(flows) do
			flow.from:close(); flow.to:close();
		end
		-- Out of the list within two intervals of its death.
		socket.sleep(math.max(0, killed_at + 2 * INTERVAL * prosody.slow + 0.5 - socket.gettime()));
		for _ = 1, 12 do
			local list = assert(query(w.alice));
			assert.are_not.equal(NODES[2], list[1].jid);
		end
		-- New transfers go to the others, intact.
		local streamhost = assert(query(w.alice))[1];
		local target, initiator = open(w, streamhost, FRONT);
		local data = s5.random_bytes(MiB + 3, 77);
		local got = s5.run({ { from = initiator, to = target, data = data } }, 60);
		assert.equal(s5.sha256(data), s5.sha256(got[1]));
		target:close(); initiator:close();
		-- Restarted, it is back in the list.
		w.start_node(2);
		local seen, ok = query_until(w.alice, function (s) return s[NODES[2]]; end, 20);
		assert.is_true(ok, "node-b not back: " .. show(seen));
	end);
end

local function start_node(rport, i, port)
	local node = standalone.start({ jid = NODES[i], rport = rport, secret = secret(NODES[i]), socks_host = ADDRESSES[i],
		socks_port = port, args = { "--fronts", FRONT } });
	assert(node.wait_log("Connected to 127%.0%.0%.1 as " .. NODES[i]:gsub("%p", "%%%0"), 20), node.log());
	return node;
end

-- Starts the three nodes into w.nodes, each on the component port
-- port_of(its JID), and gives w a start_node(i) that restarts one.
local function start_nodes(w, port_of)
	w.nodes = {};
	for i = 1, 3 do
		w.nodes[i] = start_node(port_of(NODES[i]), i);
	end
	function w.start_node(i)
		w.nodes[i].stop();
		w.nodes[i] = start_node(port_of(NODES[i]), i, w.nodes[i].port);
	end
end

-- Stops what a setup started, whatever it got to.
local function stop_all(w)
	if w.front then
		w.front.stop();
	end
	for _, node in ipairs(w.nodes or {}) do
		node.stop();
	end
	bs.stop(w.server, w.alice, w.bob);
end

describe("proxy65 nodes behind a front in Prosody #integration #cluster", function ()
	local w = {};

	setup(function ()
		local hosts = { "VirtualHost \"localhost\"", ("Component %q \"proxy65\""):format(FRONT),
			("\tproxy65_nodes = { %q, %q, %q }"):format(NODES[1], NODES[2], NODES[3]),
			("\tproxy65_node_check_interval = %d"):format(INTERVAL) };
		for _, node in ipairs(NODES) do
			hosts[#hosts + 1] = ("Component %q\n\tcomponent_secret = %q"):format(node, secret(node));
		end
		w.server, w.alice, w.bob = bs.start({ hosts = table.concat(hosts, "\n"), admin = true,
			wait_ports = { "c2s", "component", "proxy65" } });
		start_nodes(w, function () return w.server.ports.component; end);
	end);

	teardown(function ()
		stop_all(w);
	end);

	cluster_specs(function () return w; end);

	it("shows the nodes and their load in the shell", function ()
		query_until(w.alice, all_nodes, 15);
		local ok, out = w.server:shell("proxy65:nodes()");
		assert.is_true(ok, out);
		for _, node in ipairs(NODES) do
			assert.truthy(out:find(FRONT .. ": node " .. node .. ": in the list; 1 streamhosts", 1, true), out);
		end
		assert.truthy(out:find("3 of 3 nodes in the list", 1, true), out);
	end);
end);

local available, why = ejabberd.available();
if not available then
	describe("proxy65 nodes behind a front in ejabberd #ejabberd #cluster", function ()
		pending("skipped: " .. why);
	end);
	return;
end

describe("proxy65 nodes behind a front in ejabberd #ejabberd #cluster", function ()
	local w = {};

	setup(function ()
		local components = { [FRONT] = secret(FRONT) };
		for _, node in ipairs(NODES) do
			components[node] = secret(node);
		end
		-- A listener each: ejabberd gives a component's connection the routes
		-- of every host of its listener, so on one listener the nodes and
		-- the front would get each other's stanzas.
		w.server = ejabberd.start({ components = components, listener_per_component = true,
			accounts = bs.accounts() });
		local function port(jid)
			return w.server.ports["component:" .. jid];
		end
		start_nodes(w, port);
		w.front = standalone.start({ jid = FRONT, rport = port(FRONT), secret = secret(FRONT),
			args = { "--nodes", table.concat(NODES, ","), "--node-check-interval", tostring(INTERVAL) } });
		assert(w.front.wait_log("Connected to 127%.0%.0%.1 as proxy%.localhost", 20), w.front.log());
		w.alice = bs.login(w.server, "alice");
		w.bob = bs.login(w.server, "bob");
	end);

	teardown(function ()
		stop_all(w);
	end);

	cluster_specs(function () return w; end);
end);
