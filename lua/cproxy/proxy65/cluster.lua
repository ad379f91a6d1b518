-- prosody-cproxy: proxy65 on several nodes as one service, over XMPP alone.
--
-- A node is a proxy65 with a JID of its own; its pairs and activations stay
-- its own. A front answers for the service JID that clients find in disco:
-- it asks each node for its load every few seconds, and answers a
-- streamhost query with the streamhosts of the node best placed for the
-- requester, each under that node's JID. Dino, Smack and Psi's SI then
-- activate at the node. Conversations, Psi's Jingle, slixmpp and Gajim's SI
-- keep the JID they queried instead, so their activations reach the front,
-- which passes them to every node: the one holding the pair activates it,
-- the others answer item-not-found. The XMPP server's routing carries it
-- all; nodes share no state.
--
-- The wire, in namespace M.xmlns, front to node only (a node answers the
-- JIDs in its `fronts` list, no one else):
--   <iq type='get'><load/></iq> -> <load active= pending= connections=
--     max-connections= bytes-per-second=><streamhost jid= host= port=
--     [reachable='false']/>...</load>
--   <iq type='set'><activate sid= requester= target= [requester-ip=]/></iq>
--     -> result, or the error the requester would get from the node
-- SPDX-License-Identifier: MIT

local bytestreams = require "cproxy.proxy65.bytestreams";

local ipairs, pairs, tonumber, tostring, setmetatable = ipairs, pairs, tonumber, tostring, setmetatable;
local format, sort, max, floor = string.format, table.sort, math.max, math.floor;

local M = {};

M.xmlns = "urn:x-cproxy:cluster:0";

-- An activation forwarded to the nodes waits this long for their answers.
local ACTIVATE_TIMEOUT = 10;
-- Stanza ids of the front's requests start with this, so that their
-- replies are told apart from everything else sent to the service JID.
M.id_prefix = "cproxy-cluster-";

-- (type, condition, text) of an error reply (util.stanza's get_error,
-- which the standalone's stanza library has too).
local function error_of(stanza)
	local kind, condition, text = stanza:get_error();
	return kind or "cancel", condition or "undefined-condition", text;
end

---------------------------------------------------------------- the node

local function from_front(ctx, stanza)
	local from = ctx.jid_bare(stanza.attr.from or "");
	for _, front in ipairs(ctx.fronts or {}) do
		if ctx.jid_prep(front) == from then
			return true;
		end
	end
	ctx.log("warn", "Refusing a cluster request from %s, which is not in this node's fronts", tostring(stanza.attr.from));
	return false;
end

-- A function(relayed) -> bytes per second since its previous call, for
-- the load report. A call within half a second of the previous one gives
-- the previous figure again: two fronts asking at once see the same rate.
function M.rate_meter(now)
	local last_time, last_bytes, rate;
	return function (relayed)
		local t = now();
		if last_time == nil then
			last_time, last_bytes, rate = t, relayed, 0;
		elseif t - last_time >= 0.5 then
			rate = max(0, relayed - last_bytes) / (t - last_time);
			last_time, last_bytes = t, relayed;
		end
		return rate;
	end
end

-- <iq type='get'><load/></iq> from a front. ctx: bytestreams' ctx plus
-- fronts, rate (from M.rate_meter) and max_connections.
function M.load(ctx, stanza)
	local st = ctx.st;
	if not from_front(ctx, stanza) then
		return st.error_reply(stanza, "auth", "forbidden");
	end
	local stats = ctx.service:stats();
	local reply = st.reply(stanza):tag("load", { xmlns = M.xmlns,
		active = format("%d", stats.active), pending = format("%d", stats.pending),
		connections = format("%d", stats.connections),
		["max-connections"] = format("%d", ctx.max_connections or 0),
		["bytes-per-second"] = format("%d", floor(ctx.rate(stats.relayed))) });
	local port = ctx.port();
	if port then -- not listening: no streamhost to offer
		local report = ctx.report and ctx.report();
		for i, streamhost in ipairs(ctx.streamhosts) do
			local entry = report and report[i];
			reply:tag("streamhost", { jid = ctx.host, host = streamhost.host,
				port = format("%d", streamhost.port or port),
				reachable = (entry and not entry.reachable) and "false" or nil }):up();
		end
	end
	return reply;
end

-- <iq type='set'><activate sid= requester= target=/></iq> from a front:
-- the requester's activation, as if it had come to this node.
function M.activate(ctx, stanza)
	local st = ctx.st;
	if not from_front(ctx, stanza) then
		return st.error_reply(stanza, "auth", "forbidden");
	end
	local request = stanza.tags[1];
	local sid, requester, target = request.attr.sid, request.attr.requester, request.attr.target;
	if not sid or sid == "" or not requester or not target then
		return st.error_reply(stanza, "modify", "bad-request", "sid, requester and target are required");
	end
	local refusal = bytestreams.activation(ctx, sid, requester, target, request.attr["requester-ip"]);
	if refusal then
		return st.error_reply(stanza, refusal[1], refusal[2], refusal[3]);
	end
	return st.reply(stanza);
end

---------------------------------------------------------------- the front

local front_mt = {};
front_mt.__index = front_mt;

-- opts: host (the service JID), nodes (their JIDs), interval (seconds
-- between load requests; a node that has not answered the last one within
-- it is out of the list), listed (how many nodes' streamhosts a query
-- gets, best first), st (stanza library), send (function(stanza)), timer
-- (util.timer-like), now, log.
function M.front(opts)
	local self = setmetatable({ opts = opts, st = opts.st, log = opts.log, pending = {}, next_id = 0,
		nodes = {}, turn = 0, running = false }, front_mt);
	for i, jid in ipairs(opts.nodes) do
		self.nodes[i] = { jid = jid, up = false, streamhosts = {}, assigned = 0, seen = false };
	end
	return self;
end

-- Sends an IQ of `kind` to `to` holding the element `name` of M.xmlns
-- with `attrs`; callback(reply) with the result or error stanza, or
-- callback(nil, "timeout") after `timeout` seconds.
function front_mt:request(kind, to, name, attrs, timeout, callback)
	self.next_id = self.next_id + 1;
	local id = format("%s%d-%08x%08x", M.id_prefix, self.next_id, math.random(0, 0xffffffff),
		math.random(0, 0xffffffff));
	attrs.xmlns = M.xmlns;
	local iq = self.st.iq({ type = kind, to = to, from = self.opts.host, id = id }):tag(name, attrs):up();
	local entry = { callback = callback, to = to };
	entry.timer = self.opts.timer.add_task(timeout, function ()
		if self.pending[id] == entry then
			self.pending[id] = nil;
			callback(nil, "timeout");
		end
	end);
	self.pending[id] = entry;
	self.opts.send(iq);
end

-- A result or error sent to the service JID: true if it answers one of
-- the front's requests (and is then handled). As Prosody's own send_iq,
-- it takes an answer only from the JID asked: anyone may guess an id.
function front_mt:on_reply(stanza)
	local id = stanza.attr.id;
	local entry = id and self.pending[id];
	if entry and stanza.attr.from ~= entry.to then
		self.log("warn", "Ignoring an answer to a request to %s from %s", entry.to, tostring(stanza.attr.from));
		return true;
	end
	if not entry then
		if id and id:sub(1, #M.id_prefix) == M.id_prefix then
			self.log("debug", "A reply from %s came after its request timed out", tostring(stanza.attr.from));
			return true;
		end
		return false;
	end
	self.pending[id] = nil;
	self.opts.timer.stop(entry.timer);
	entry.callback(stanza);
	return true;
end

-- A count from a report: a whole number from 0 up, else 0.
local function number(attr, name)
	local n = tonumber(attr[name]);
	if not n or n ~= n or n < 0 or n >= 2^53 then
		return 0;
	end
	return floor(n);
end

function front_mt:node_answered(node, reply)
	local load = reply.attr.type == "result" and reply:get_child("load", M.xmlns);
	if not load then
		local _, condition, text = error_of(reply);
		return self:node_failed(node, text and (condition .. ": " .. text) or condition);
	end
	local streamhosts = {};
	for streamhost in load:childtags("streamhost") do
		local port = tonumber(streamhost.attr.port);
		if streamhost.attr.host and port and port >= 1 and port <= 65535 and port == floor(port) then
			streamhosts[#streamhosts + 1] = { jid = streamhost.attr.jid or node.jid, host = streamhost.attr.host,
				port = port, reachable = streamhost.attr.reachable ~= "false" };
		end
	end
	node.streamhosts = streamhosts;
	node.active, node.pending = number(load.attr, "active"), number(load.attr, "pending");
	node.connections, node.max_connections = number(load.attr, "connections"), number(load.attr, "max-connections");
	node.rate = number(load.attr, "bytes-per-second");
	node.assigned = 0; -- counted in the report from now on
	node.answered = self.opts.now();
	node.reason = nil;
	if not node.up then
		node.up = true;
		self.log("info", "Node %s is in the list: %d streamhosts, %d active relays", node.jid, #streamhosts, node.active);
	end
	node.seen = true;
end

function front_mt:node_failed(node, reason)
	node.reason = reason;
	if node.up or not node.seen then
		self.log(node.up and "warn" or "info", "Node %s is out of the list: %s", node.jid, reason);
	end
	node.up, node.seen = false, true;
end

-- One round of load requests. Each times out a little before the next
-- round, so that a silent node is out of the list by then and the round
-- asks it again.
function front_mt:poll()
	local interval = self.opts.interval;
	for _, node in ipairs(self.nodes) do
		if not node.polling then
			node.polling = true;
			self:request("get", node.jid, "load", {}, 0.9 * interval,
				function (reply)
					node.polling = false;
					if not self.running then
						return;
					elseif reply then
						self:node_answered(node, reply);
					else
						self:node_failed(node, format("no answer within %g s", 0.9 * interval));
					end
				end);
		end
	end
end

function front_mt:start()
	if self.running then
		return;
	end
	self.running = true;
	self:poll();
	self.poll_timer = self.opts.timer.add_task(self.opts.interval, function ()
		if not self.running then
			return nil;
		end
		self:poll();
		return self.opts.interval;
	end);
end

-- Stops polling; what waits for an answer gets none (an activation is
-- then refused).
function front_mt:stop()
	self.running = false;
	if self.poll_timer then
		self.opts.timer.stop(self.poll_timer);
		self.poll_timer = nil;
	end
	for id, entry in pairs(self.pending) do
		self.opts.timer.stop(entry.timer);
		self.pending[id] = nil;
		entry.callback(nil, "stopped");
	end
end

-- Whether a node offers a streamhost of the requester's address family:
-- 0 yes (or the family is unknown), 1 a name, family unknown, 2 no.
local function fit(node, requester_ip)
	local want = requester_ip and bytestreams.family(requester_ip);
	if not want then
		return 0;
	end
	local best = 2;
	for _, streamhost in ipairs(node.streamhosts) do
		local family = bytestreams.family(streamhost.host);
		if family == want then
			return 0;
		elseif family == nil then
			best = 1;
		end
	end
	return best;
end

-- The nodes in the order this requester should get them: those that
-- answered the last request and offer a streamhost, of the requester's
-- address family first, then with a streamhost their own check found
-- reachable, then below their connection cap, then by load
-- (active and pending relays, and what this front sent their way since
-- their last report), then by rate; equals take turns.
function front_mt:ranked(requester_ip)
	local candidates = {};
	self.turn = self.turn + 1;
	local n = #self.nodes;
	for i, node in ipairs(self.nodes) do
		if node.up and #node.streamhosts > 0 then
			local full = node.max_connections > 0 and node.connections + 2 * node.assigned >= node.max_connections;
			local unusable = 1;
			for _, streamhost in ipairs(node.streamhosts) do
				if streamhost.reachable then
					unusable = 0;
				end
			end
			candidates[#candidates + 1] = { node = node, fit = fit(node, requester_ip), full = full and 1 or 0,
				unusable = unusable,
				load = node.active + node.pending + node.assigned, rate = node.rate,
				turn = (i - self.turn) % n };
		end
	end
	sort(candidates, function (a, b)
		if a.fit ~= b.fit then
			return a.fit < b.fit;
		elseif a.unusable ~= b.unusable then
			return a.unusable < b.unusable;
		elseif a.full ~= b.full then
			return a.full < b.full;
		elseif a.load ~= b.load then
			return a.load < b.load;
		elseif a.rate ~= b.rate then
			return a.rate < b.rate;
		end
		return a.turn < b.turn;
	end);
	local ranked = {};
	for i, candidate in ipairs(candidates) do
		ranked[i] = candidate.node;
	end
	return ranked;
end

-- The streamhosts for a query: those of the `listed` best nodes, each
-- node's in the requester's order (bytestreams.order). Returns nil when
-- no node is in the list.
function front_mt:streamhosts(requester_ip)
	local ranked = self:ranked(requester_ip);
	if #ranked == 0 then
		return nil;
	end
	ranked[1].assigned = ranked[1].assigned + 1;
	local list = {};
	for i = 1, math.min(self.opts.listed, #ranked) do
		local node = ranked[i];
		local report = {};
		for j, streamhost in ipairs(node.streamhosts) do
			report[j] = { reachable = streamhost.reachable, addresses = {} };
		end
		for _, streamhost in ipairs(bytestreams.order(node.streamhosts, report, requester_ip)) do
			list[#list + 1] = streamhost;
		end
	end
	return list;
end

-- Which of the nodes' refusals the requester gets: the most telling. A
-- node's server answering for it (it is down) tells the least: the pair
-- is most likely on another node, which said item-not-found.
local preference = { ["not-allowed"] = 1, ["forbidden"] = 2, ["resource-constraint"] = 3, ["bad-request"] = 4,
	["jid-malformed"] = 5, ["item-not-found"] = 7, ["remote-server-timeout"] = 8, ["remote-server-not-found"] = 8,
	["service-unavailable"] = 8 };

-- Passes an activation to every node; done(true) once one activated it,
-- else done(false, type, condition, text).
function front_mt:activate(requester, sid, target, requester_ip, done)
	local waiting, finished, refusals = #self.nodes, false, {};
	if waiting == 0 then
		return done(false, "modify", "item-not-found");
	end
	for _, node in ipairs(self.nodes) do
		self:request("set", node.jid, "activate", { sid = sid, requester = requester, target = target,
			["requester-ip"] = requester_ip }, ACTIVATE_TIMEOUT, function (reply)
			if finished then
				return;
			end
			waiting = waiting - 1;
			if reply and reply.attr.type == "result" then
				finished = true;
				self.log("debug", "Node %s activated sid %q of %s", node.jid, sid, requester);
				return done(true, node.jid);
			end
			if reply then
				refusals[#refusals + 1] = { error_of(reply) };
			end
			if waiting == 0 then
				finished = true;
				sort(refusals, function (a, b)
					return (preference[a[2]] or 6) < (preference[b[2]] or 6);
				end);
				local refusal = refusals[1];
				if not refusal or (preference[refusal[2]] or 6) > 7 then
					refusal = { "modify", "item-not-found" };
				end
				return done(false, refusal[1], refusal[2], refusal[3]);
			end
		end);
	end
end

-- Each node: jid, up, reason (why it is out), streamhosts, and its last
-- report's active, pending, connections, max_connections, rate.
function front_mt:status()
	local list = {};
	for i, node in ipairs(self.nodes) do
		list[i] = { jid = node.jid, up = node.up, reason = node.reason, streamhosts = #node.streamhosts,
			active = node.active or 0, pending = node.pending or 0, connections = node.connections or 0,
			max_connections = node.max_connections or 0, rate = node.rate or 0 };
	end
	return list;
end

---------------------------------------------------------------- the front's answers

-- A streamhost query to the front (as bytestreams.query, from the nodes).
function M.query(front, ctx, stanza)
	local st = ctx.st;
	local refusal = bytestreams.denied(ctx, stanza);
	if refusal then
		return refusal;
	end
	local streamhosts = front:streamhosts(ctx.origin_ip);
	if not streamhosts then
		ctx.log("warn", "No proxy65 node is available");
		return st.error_reply(stanza, "wait", "service-unavailable", "No relay node is available");
	end
	return bytestreams.answer(ctx, stanza, streamhosts);
end

-- An activation sent to the front; reply(stanza) sends the answer, now or
-- once the nodes have answered.
function M.activate_at_front(front, ctx, stanza, reply)
	local st = ctx.st;
	local sid, target = bytestreams.activation_request(ctx, stanza);
	if not sid then
		return reply(target);
	end
	front:activate(stanza.attr.from, sid, target, ctx.origin_ip, function (ok, kind, condition, text)
		if ok then
			return reply(st.reply(stanza));
		end
		ctx.refused(condition);
		return reply(st.error_reply(stanza, kind, condition, condition ~= "item-not-found" and text or nil));
	end);
end

return M;
