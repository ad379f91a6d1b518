-- prosody-cproxy: the proxy65 service, independent of Prosody's module API.
-- It accepts SOCKS5 connections (through a net.server listener), pairs
-- them by hash, and at activation hands both sockets to the C relay engine.
-- Not here: XMPP (mod_proxy65.lua) and the byte relay itself (src/).
-- SPDX-License-Identifier: MIT

local core = require "cproxy.core";

local setmetatable, pairs, ipairs, tostring = setmetatable, pairs, ipairs, tostring;
local os_time, max = os.time, math.max;
local concat = table.concat;

local M = {};

local service_mt = {};
service_mt.__index = service_mt;

local function noop() end

-- Sends a handshake reply at once, bypassing the backend's write buffer:
-- the socket may be handed to C right after, and nothing may stay behind.
local function send_now(conn, data)
	if data == "" then
		return true;
	end
	local n, err = conn:socket():send(data);
	if n ~= #data then
		return nil, err or "short write";
	end
	return true;
end

-- Takes the socket away from net.server without closing it. Returns the
-- fd and any bytes LuaSocket had already buffered from it.
local function detach(conn)
	local sock = conn:socket();
	-- One byte at a time: a receive of n bytes takes what LuaSocket holds
	-- and then reads the kernel for the rest, buffering more than it
	-- returns, and that surplus would be lost with the socket object. A
	-- receive(1) from a non-empty buffer never reads the kernel, so this
	-- empties LuaSocket's buffer (at most its 8 KiB) and nothing beyond.
	local buffered = {};
	while sock:dirty() do
		local byte = sock:receive(1);
		if not byte then
			break;
		end
		buffered[#buffered + 1] = byte;
	end
	local fd = sock:getfd();
	if conn.del then -- server_epoll: leave the poller while the fd is valid
		conn:del();
	else
		conn:pause();
	end
	sock:setfd(-1); -- neither LuaSocket nor the backend may close it now
	return fd, concat(buffered);
end

-- The service's settings and their defaults (the engine's apart) come from
-- the one table of proxy65's options; 0 turns a limit or a timeout off.
local defaults = {};
for _, entry in ipairs(require "cproxy.proxy65.options".entries) do
	if not entry.engine then
		defaults[entry.name] = entry.default;
	end
end
M.defaults = defaults;

-- opts: the settings above, engine (options of core.engine), server
-- (net.server), timer (util.timer), now (a clock in seconds, e.g.
-- util.time.now), log (function(level, fmt, ...)),
-- on_finished (function(result, pair)), on_count (function(counter,
-- reason), for metrics: counter is "handshake_failures", "half_pairs"
-- (reason: the listening port) or "timeouts" (reason: "partner" or
-- "activation", what the connection waited for)).
function M.new(opts)
	local engine, err = core.engine(opts.engine);
	if not engine then
		return nil, err;
	end
	local self = setmetatable({
		engine = engine;
		server = opts.server;
		timer = opts.timer;
		sessions = {}; -- conn -> session, until handed to the engine
		-- hash -> { hash=, first=session, second=session, relay_id=, ... }:
		-- first and second in order of arrival, which says nothing of who is
		-- who (Conversations' requester comes first, a legacy one second).
		pairs = {};
		relays = {}; -- relay id -> pair
		connections = 0; -- sockets held: sessions, and two per relay
		by_ip = {}; -- source address -> sockets held
		by_user = {}; -- initiator's bare JID -> active relays
		half_pairs = {}; -- listening port -> connections whose partner never came
	}, service_mt);
	self:configure(opts);
	self.watcher = self.server.watchfd(engine:getfd(), function ()
		self:reap();
	end);
	self.listener = self:make_listener();
	return self;
end

-- Takes the options of new() (all but server and timer). Returns true, or
-- nil, err, errno when the engine's could not be applied (the rest are).
function service_mt:configure(opts)
	for name, default in pairs(defaults) do
		self[name] = opts[name] or self[name] or default;
	end
	self.log = opts.log or self.log or noop;
	self.now = opts.now or self.now or os_time;
	self.on_finished = opts.on_finished or self.on_finished or noop;
	self.on_count = opts.on_count or self.on_count or noop;
	if opts.engine and self.configured then
		return self.engine:configure(opts.engine);
	end
	self.configured = true;
	return true;
end

local function hold(self, ip)
	self.connections = self.connections + 1;
	self.by_ip[ip] = (self.by_ip[ip] or 0) + 1;
end

local function release(self, ip)
	self.connections = self.connections - 1;
	local n = self.by_ip[ip] - 1;
	self.by_ip[ip] = n > 0 and n or nil;
end

-- Which limit a new connection from `ip` is over, if any.
function service_mt:over_limit(ip)
	if self.max_connections > 0 and self.connections >= self.max_connections then
		return "max-connections";
	end
	if self.max_connections_per_ip > 0 and (self.by_ip[ip] or 0) >= self.max_connections_per_ip then
		return "max-connections-per-ip";
	end
end

-- Why a relay ended, in words for the log.
local function ending(result)
	if result.timed_out then
		return "idle";
	elseif result.error and result.failed then
		return ("%s on the %s's side"):format(result.error, result.failed);
	elseif result.error then
		return result.error; -- the relay's own decision, e.g. the size cap
	end
	return "completed";
end

-- Relays that ended: their hashes may be used again.
function service_mt:reap()
	local now = self.now();
	for _, result in ipairs(self.engine:reap()) do
		local pair = self.relays[result.id];
		if pair then
			self.relays[result.id] = nil;
			self.pairs[pair.hash] = nil;
			release(self, pair.ips[1]);
			release(self, pair.ips[2]);
			local n = self.by_user[pair.user] - 1;
			self.by_user[pair.user] = n > 0 and n or nil;
			local bytes = result.target_bytes + result.initiator_bytes;
			local seconds = max(now - pair.started, 0.001);
			self.log("info", "Transfer %s from %s to %s ended (%s): %d bytes (%d to the target, %d back), %.2f s, %.1f MiB/s",
				pair.sid or pair.hash, pair.initiator_jid or "?", pair.target_jid or "?", ending(result),
				bytes, result.initiator_bytes, result.target_bytes, seconds, bytes / seconds / 1048576);
			self.on_finished(result, pair);
		end
	end
end

local function unwatch(session)
	if session.watcher then
		session.watcher:close();
		session.watcher = nil;
	end
end

-- The other connection of a session's pair, if it has one.
function service_mt:partner_of(session)
	local pair = session.hash and self.pairs[session.hash];
	if not pair or pair.relay_id then
		return nil;
	elseif pair.first == session then
		return pair.second;
	elseif pair.second == session then
		return pair.first;
	end
end

-- Forgets a session that closed before activation. Its partner, if any,
-- stays and waits for another: iris connects to every streamhost at once
-- and closes those it did not choose, and the requester is still to come.
function service_mt:drop(session)
	if session.timer then
		self.timer.stop(session.timer);
		session.timer = nil;
	end
	if self.sessions[session.conn] ~= session then
		return; -- already dropped
	end
	self.sessions[session.conn] = nil;
	release(self, session.ip);
	local pair = session.hash and self.pairs[session.hash];
	if not pair or pair.relay_id or (pair.first ~= session and pair.second ~= session) then
		return;
	end
	if not session.partnered then
		-- Alone to the end: the signature of a streamhost address the
		-- other party cannot reach.
		local port = tostring(session.port or "?");
		self.half_pairs[port] = (self.half_pairs[port] or 0) + 1;
		self.on_count("half_pairs", port);
	end
	local other = pair.first;
	if other == session then
		other = pair.second;
	end
	if not other then
		self.pairs[session.hash] = nil;
		return;
	end
	pair.first, pair.second = other, nil;
	if other.ended_empty then
		-- Alone now, and its stream ended without a byte: it has left.
		return self:close_session(other);
	end
	self:expire_in(other, "partner");
end

-- Closes a connection not yet handed to the engine.
function service_mt:close_session(session)
	if session.parked then
		unwatch(session);
		session.parked:close();
		self:drop(session);
	else
		session.conn:close(); -- net.server calls ondisconnect, which drops it
		self:drop(session); -- in case it did not (a closing connection)
	end
end

-- Once its handshake is done, a connection leaves net.server: its stream
-- bytes must wait in the kernel for the relay, and net.server would read
-- them (or, seeing a FIN behind them, close the socket). Its fd is held
-- and watched only to notice a peer that leaves before activation.
function service_mt:park(session)
	local fd, buffered = detach(session.conn);
	session.early = session.early .. buffered;
	session.parked = core.own_fd(fd);
	session.conn:close(); -- net.server's record and the socket object, not the fd
	session.watcher = self.server.watchfd(fd, function ()
		self:probe(session);
	end);
end

-- A parked socket turned readable: bytes stay for the relay, and watching
-- stops (they would keep it readable). Either side may send its bytes and
-- its FIN before the activation is answered, and a sender with nothing to
-- send may close at once (gloox does): once paired, a FIN is the end of
-- that side's stream, relayed after any bytes before it. Alone, a FIN with
-- no byte before it means the client has left; so does an error from
-- either. Returns the probe's state.
function service_mt:probe(session)
	if self.sessions[session.conn] ~= session then
		unwatch(session);
		return "gone";
	end
	local state, err = session.parked:probe();
	local pair = self.pairs[session.hash];
	local paired = pair and pair.first and pair.second;
	if state == "data" or (state == "eof" and (session.early ~= "" or paired)) then
		session.ended_empty = state == "eof" and session.early == "";
		unwatch(session); -- relayed once activated, or closed by a timeout
		local partner = self:partner_of(session);
		if session.ended_empty and partner and partner.ended_empty then
			-- Both ended without a byte: nothing to relay, and no one left.
			self.log("debug", "Both SOCKS5 clients for %s left before activation", session.hash);
			self:close_session(session);
			self:close_session(partner);
			return "gone";
		end
	elseif state == "eof" or not state then
		self.log("debug", "SOCKS5 client for %s left before activation (%s)", session.hash, err or "closed");
		self:close_session(session);
		return "gone";
	end
	return state;
end

-- Both places of a pair are taken and a third connection comes. A place
-- whose client has gone, or ended its stream without a byte, is freed for
-- it: that is iris closing a streamhost it did not choose, the FIN perhaps
-- not yet seen by the loop. Returns whether a place is free now.
function service_mt:make_room(pair)
	for _, session in ipairs({ pair.second, pair.first }) do
		if self:probe(session) ~= "gone" and session.ended_empty then
			self.log("debug", "SOCKS5 client for %s ended its stream empty before activation: its place goes to a newcomer",
				session.hash);
			self:close_session(session);
		end
		if not (pair.first and pair.second) then
			return true;
		end
	end
	return false;
end

-- What a connection waits for, its timeout setting, and the words for
-- the log: its handshake, then its partner, then the activation.
local waits = {
	handshake = { "handshake_timeout", "no complete SOCKS5 request" };
	partner = { "partner_timeout", "no partner came" };
	activation = { "activation_timeout", "not activated" };
};

-- Closes `session` once the wait for `what` (a key of waits) has lasted its
-- timeout (none if 0), unless it moves on first.
function service_mt:expire_in(session, what)
	local setting, why = waits[what][1], waits[what][2];
	local seconds = self[setting];
	if session.timer then
		self.timer.stop(session.timer);
		session.timer = nil;
	end
	if seconds <= 0 then
		return;
	end
	session.timer = self.timer.add_task(seconds, function ()
		session.timer = nil;
		if self.sessions[session.conn] == session then
			self.log("debug", "Closing a SOCKS5 connection from %s: %s within %gs", session.ip, why, seconds);
			if what == "handshake" then
				self.on_count("handshake_failures", "timeout");
			else
				self.on_count("timeouts", what);
			end
			-- The activation timeout is the pair's: its partner goes too,
			-- rather than waiting alone for another.
			local partner = what == "activation" and self:partner_of(session);
			self:close_session(session);
			if partner then
				self.on_count("timeouts", what);
				self:close_session(partner);
			end
		end
	end);
end

-- Refuses a valid request: `why` is a reason for the metrics.
local function refuse(self, session, parser, why, over_limit)
	self.on_count("handshake_failures", why);
	send_now(session.conn, parser:refuse(over_limit and "over-limit" or "not-allowed"));
	self:close_session(session);
end

-- A complete request for `hash`: accept it and park the socket, or refuse.
function service_mt:request_done(session, parser, hash)
	local conn = session.conn;
	if session.over_limit then
		self.log("debug", "Refusing a SOCKS5 connection from %s for %s: over %s", session.ip, hash, session.over_limit);
		return refuse(self, session, parser, session.over_limit, true);
	end
	local pair = self.pairs[hash];
	if pair and (pair.relay_id or (pair.second and not self:make_room(pair))) then
		self.log("debug", "Refusing a third connection for %s", hash);
		return refuse(self, session, parser, "hash-in-use");
	end
	pair = self.pairs[hash]; -- gone if make_room closed its last place
	local ok, err = send_now(conn, parser:accept());
	if not ok then
		self.log("debug", "Could not send the SOCKS5 reply: %s", err);
		self:close_session(session);
		return;
	end
	session.hash = hash;
	self:park(session);
	if pair then
		pair.second = session;
		for _, each in ipairs({ pair.first, session }) do
			each.partnered = true;
			self:expire_in(each, "activation");
		end
		self.log("debug", "SOCKS5 connection for %s paired, waiting for activation", hash);
	else
		self.pairs[hash] = { hash = hash, first = session };
		self:expire_in(session, "partner");
		self.log("debug", "SOCKS5 connection for %s waiting for its partner", hash);
	end
end

function service_mt:make_listener()
	local listener = {};

	local function session_for(conn)
		local session = self.sessions[conn];
		if not session then
			local ip = conn:ip() or "?";
			session = { conn = conn, ip = ip, port = conn.serverport and conn:serverport(),
				parser = core.socks5(), early = "" };
			-- Checked before this socket counts; refused once its request
			-- is read, with a SOCKS5 reply that says so.
			session.over_limit = self:over_limit(ip);
			hold(self, ip);
			self.sessions[conn] = session;
			self:expire_in(session, "handshake");
		end
		return session;
	end

	function listener.onconnect(conn)
		if not conn:ssl() then
			session_for(conn);
		end
	end

	-- With server_epoll, the bytes of a read that ended in the peer's FIN
	-- arrive here before the disconnect; server_select drops them.
	function listener.onincoming(conn, data)
		if not self.sessions[conn] and conn:ssl() then
			-- mod_net_multiplex matches the same pattern on its TLS ports.
			-- The relay moves raw bytes between fds: inside TLS they would
			-- be ciphertext, so SOCKS5 is only spoken in the clear.
			self.log("debug", "Refusing SOCKS5 over TLS from %s", conn:ip());
			conn:close();
			return;
		end
		local session = session_for(conn);
		if session.parked then
			return; -- cannot happen: parked connections have left net.server
		end
		local parser = session.parser;
		local state, reply, used, reason, hash = parser:feed(data);
		if state == "failed" then
			self.log("debug", "Invalid SOCKS5 handshake from %s (%s)", session.ip, reason);
			self.on_count("handshake_failures", reason);
			send_now(conn, reply);
			self:close_session(session);
			return;
		end
		local sent, send_err = send_now(conn, reply);
		if not sent then
			self.log("debug", "Could not send the SOCKS5 reply: %s", send_err);
			self:close_session(session);
			return;
		end
		if state == "done" then
			session.early = data:sub(used + 1);
			self:request_done(session, parser, hash);
		end
	end

	-- Connections leave net.server once their handshake is done (park), so
	-- this only ever sees one that had not finished it, or one we close.
	function listener.ondisconnect(conn)
		local session = self.sessions[conn];
		if session and not session.handed_over and not session.parked then
			self:drop(session);
		end
	end

	listener.ondetach = listener.ondisconnect;

	return listener;
end

-- The handle of a session's fd, for the engine, which takes it over.
local function take_fd(session)
	unwatch(session);
	return session.parked;
end

-- Which of a pair's connections is the initiator's. Both sent the same
-- hash, so the proxy can tell only where it knows the initiator's address
-- (a local client's session) and exactly one of the two came from there.
-- Otherwise the first to connect is taken as the target, as in legacy
-- XEP-0065 order. -> target, initiator, known
local function sides(pair, initiator_ip)
	local first, second = pair.first, pair.second;
	if initiator_ip and first.ip ~= second.ip then
		if first.ip == initiator_ip then
			return second, first, true;
		elseif second.ip == initiator_ip then
			return first, second, true;
		end
	end
	return first, second, false;
end

-- XEP-0065 activation of the pair with this hash. who: { sid=,
-- initiator= (full JID), user= (its bare JID), target= (JID),
-- initiator_ip= (if known) }, for limits and logs. Returns true, or nil
-- and one of: "item-not-found" (unknown hash), "not-allowed" (not both
-- connected), "resource-constraint" (over a limit), "internal"; and a
-- text. Activating an active bytestream again succeeds and changes nothing.
function service_mt:activate(hash, who)
	local pair = self.pairs[hash];
	if not pair then
		return nil, "item-not-found";
	end
	if pair.relay_id then
		-- The hash names sid, initiator and target, so this is the same
		-- initiator asking again: Smack's Jingle S5B activates twice, and
		-- gives up on an error. Answered as the built-in does, with success.
		self.log("debug", "Transfer %s is already active: activated again", pair.sid or hash);
		return true;
	end
	if not pair.second then
		return nil, "not-allowed", "Only one party is connected to the proxy";
	end
	local user = who and who.user or "?";
	if self.max_transfers_per_user > 0 and (self.by_user[user] or 0) >= self.max_transfers_per_user then
		return nil, "resource-constraint", "Too many active transfers";
	end
	local target, initiator, known = sides(pair, who and who.initiator_ip);
	for _, session in ipairs({ target, initiator }) do
		session.handed_over = true;
		if session.timer then
			self.timer.stop(session.timer);
			session.timer = nil;
		end
		self.sessions[session.conn] = nil;
	end
	-- The two sockets stay counted, now as the relay's.
	pair.ips = { target.ip, initiator.ip };
	pair.user = user;
	-- engine:add raises only on a programmer's error; even then the pair is
	-- undone below, and the handles close their fds.
	local ok, id, err = pcall(self.engine.add, self.engine, take_fd(target), take_fd(initiator),
		target.early, initiator.early);
	if not ok then
		id, err = nil, id;
		target.parked:close();
		initiator.parked:close();
	end
	if not id then
		self.pairs[hash] = nil;
		release(self, target.ip);
		release(self, initiator.ip);
		return nil, "internal", err;
	end
	self.by_user[user] = (self.by_user[user] or 0) + 1;
	pair.relay_id = id;
	pair.first, pair.second = nil, nil; -- the conns are gone
	pair.sid, pair.initiator_jid, pair.target_jid = who and who.sid, who and who.initiator, who and who.target;
	pair.sides_known = known;
	if not known then
		self.log("debug", "Transfer %s: which connection is the initiator's cannot be told (from %s and %s);"
			.. " the first to connect is counted as the target's", pair.sid or hash, target.ip, initiator.ip);
	end
	pair.started = self.now();
	self.relays[id] = pair;
	return true;
end

-- The engine's stats, plus pending (connections not yet relayed), alone
-- (those of them still waiting for their partner) and connections
-- (sockets held).
function service_mt:stats()
	local stats = self.engine:stats();
	stats.pending, stats.alone = 0, 0;
	for _ in pairs(self.sessions) do
		stats.pending = stats.pending + 1;
	end
	for _, pair in pairs(self.pairs) do
		if not pair.relay_id and not pair.second then
			stats.alone = stats.alone + 1;
		end
	end
	stats.connections = self.connections;
	return stats;
end

-- The active bytestreams, oldest first: { id=, sid=, initiator=, target=,
-- to_target=, to_initiator= (bytes so far), seconds= } | nil, err.
function service_mt:transfers()
	local running, err = self.engine:list();
	if not running then
		return nil, err;
	end
	local now, list = self.now(), {};
	for _, relay in ipairs(running) do
		local pair = self.relays[relay.id];
		if pair then
			list[#list + 1] = {
				id = relay.id, sid = pair.sid or pair.hash, initiator = pair.initiator_jid, target = pair.target_jid,
				to_target = relay.initiator_bytes, to_initiator = relay.target_bytes,
				seconds = max(now - pair.started, 0),
			};
		end
	end
	table.sort(list, function (a, b) return a.id < b.id; end);
	return list;
end

-- Ends an active bytestream, named by its sid (or hash), resetting both
-- peers. Returns true, or nil and "item-not-found".
function service_mt:cancel(sid)
	for id, pair in pairs(self.relays) do
		if pair.sid == sid or pair.hash == sid then
			local ok, err = self.engine:cancel(id);
			if not ok then
				return nil, err;
			end
			self.log("info", "Cancelling transfer %s from %s to %s, as asked", sid,
				pair.initiator_jid or "?", pair.target_jid or "?");
			return true;
		end
	end
	return nil, "item-not-found";
end

-- Closes every connection and relay; idempotent.
function service_mt:close()
	if self.watcher then
		self.watcher:close();
		self.watcher = nil;
	end
	for _, session in pairs(self.sessions) do
		if session.parked then
			unwatch(session);
			session.parked:close();
		else
			session.conn:close();
		end
	end
	self.sessions = {};
	self.engine:close();
	self.pairs, self.relays = {}, {};
	self.connections, self.by_ip, self.by_user = 0, {}, {};
end

return M;
