-- prosody-cproxy: the proxy65 service, independent of Prosody's module API.
-- It accepts SOCKS5 connections (through a net.server listener), pairs
-- them by hash, and at activation hands both sockets to the C relay engine.
-- Not here: XMPP (mod_proxy65.lua) and the byte relay itself (src/).
-- SPDX-License-Identifier: MIT

local cproxy = ...;
local core = cproxy.core;

local setmetatable, pairs, ipairs = setmetatable, pairs, ipairs;
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

-- opts: activation_timeout (s), engine (options of core.engine),
-- server (net.server), timer (util.timer), log (function(level, fmt, ...)),
-- on_finished (function(result, pair), optional)
function M.new(opts)
	local engine, err = core.engine(opts.engine);
	if not engine then
		return nil, err;
	end
	local self = setmetatable({
		engine = engine;
		server = opts.server;
		timer = opts.timer;
		log = opts.log or noop;
		activation_timeout = opts.activation_timeout or 60;
		on_finished = opts.on_finished or noop;
		sessions = {}; -- conn -> session
		pairs = {}; -- hash -> { hash=, target=session, initiator=session, relay_id= }
		relays = {}; -- relay id -> pair
	}, service_mt);
	self.watcher = self.server.watchfd(engine:getfd(), function ()
		self:reap();
	end);
	self.listener = self:make_listener();
	return self;
end

-- Takes the same options as new(). Returns true, or nil, err, errno when
-- the engine's could not be applied (the rest are).
function service_mt:configure(opts)
	self.activation_timeout = opts.activation_timeout or self.activation_timeout;
	self.on_finished = opts.on_finished or self.on_finished;
	self.log = opts.log or self.log;
	if opts.engine then
		return self.engine:configure(opts.engine);
	end
	return true;
end

-- Relays that ended: their hashes may be used again.
function service_mt:reap()
	for _, result in ipairs(self.engine:reap()) do
		local pair = self.relays[result.id];
		if pair then
			self.relays[result.id] = nil;
			self.pairs[pair.hash] = nil;
			self.log("debug", "Relay %s ended: %d bytes from target, %d from initiator%s",
				pair.hash, result.target_bytes, result.initiator_bytes,
				result.error and (" (" .. result.error .. ")") or "");
			self.on_finished(result, pair);
		end
	end
end

-- Forgets a session that closed before activation, and its partner.
function service_mt:drop(session)
	if session.timer then
		self.timer.stop(session.timer);
		session.timer = nil;
	end
	self.sessions[session.conn] = nil;
	local pair = session.hash and self.pairs[session.hash];
	if pair and not pair.relay_id and (pair.target == session or pair.initiator == session) then
		self.pairs[session.hash] = nil;
		local other = pair.target == session and pair.initiator or pair.target;
		if other then
			self:close_session(other);
		end
	end
end

-- Closes a connection not yet handed to the engine.
function service_mt:close_session(session)
	if session.parked then
		session.parked:close();
		self:drop(session);
	else
		session.closing = true;
		session.conn:close(); -- net.server calls ondisconnect, which drops it
	end
end

-- A client that half-closes right behind its handshake (request, data and
-- FIN in one read) would have its socket closed by net.server, which sees
-- the end of input. Take the socket away from it first, with the bytes
-- read so far, and hold it until activation: the FIN stays queued in the
-- kernel and the engine passes it on after those bytes.
function service_mt:park(session)
	local fd, buffered = detach(session.conn);
	session.early = session.early .. buffered;
	session.parked = core.own_fd(fd);
	self.log("debug", "SOCKS5 client for %s half-closed before activation; holding its socket", session.hash);
end

function service_mt:request_done(session, parser)
	local conn, hash = session.conn, parser:hash();
	local pair = self.pairs[hash];
	if pair and (pair.initiator or pair.relay_id) then
		self.log("debug", "Refusing a third connection for %s", hash);
		send_now(conn, parser:refuse());
		conn:close();
		return;
	end
	conn:pause(); -- early bytes stay in the kernel until activation
	local ok, err = send_now(conn, parser:accept());
	if not ok then
		self.log("debug", "Could not send the SOCKS5 reply: %s", err);
		conn:close();
		return;
	end
	session.hash = hash;
	if pair then
		pair.initiator = session;
		self.log("debug", "SOCKS5 initiator connected for %s", hash);
	else
		self.pairs[hash] = { hash = hash, target = session };
		self.log("debug", "SOCKS5 target connected for %s", hash);
	end
end

function service_mt:make_listener()
	local listener = {};

	local function session_for(conn)
		local session = self.sessions[conn];
		if not session then
			session = { conn = conn, parser = core.socks5(), early = "" };
			self.sessions[conn] = session;
			-- A connection that never gets activated is closed: nothing waits forever.
			session.timer = self.timer.add_task(self.activation_timeout, function ()
				session.timer = nil;
				if self.sessions[conn] == session and not session.handed_over then
					self.log("debug", "Closing a SOCKS5 connection not activated within %ds", self.activation_timeout);
					self:close_session(session);
				end
			end);
		end
		return session;
	end

	function listener.onconnect(conn)
		if not conn:ssl() then
			session_for(conn);
		end
	end

	-- err is "closed" when these are the last bytes before the peer's FIN
	-- (server_epoll; server_select drops such bytes and never calls this).
	function listener.onincoming(conn, data, err)
		if not self.sessions[conn] and conn:ssl() then
			-- mod_net_multiplex matches the same pattern on its TLS ports.
			-- The relay moves raw bytes between fds: inside TLS they would
			-- be ciphertext, so SOCKS5 is only spoken in the clear.
			self.log("debug", "Refusing SOCKS5 over TLS from %s", conn:ip());
			conn:close();
			return;
		end
		local session = session_for(conn);
		if session.hash then -- past the handshake (a backend may still read once)
			session.early = session.early .. data;
			if err == "closed" and not session.parked and self.sessions[conn] == session then
				self:park(session);
			end
			return;
		end
		local parser = session.parser;
		local state, reply, used = parser:feed(data);
		if not state then -- nil, reason, reply
			self.log("debug", "Invalid SOCKS5 handshake (%s)", reply);
			send_now(conn, used);
			conn:close();
			return;
		end
		local sent, send_err = send_now(conn, reply);
		if not sent then
			self.log("debug", "Could not send the SOCKS5 reply: %s", send_err);
			conn:close();
			return;
		end
		if state == "done" then
			session.early = data:sub(used + 1);
			self:request_done(session, parser);
			if err == "closed" and session.hash and self.sessions[conn] == session then
				self:park(session);
			end
		end
	end

	-- The epoll backend hears a FIN even on a paused connection (it always
	-- watches for the peer's hang-up) and closes it, when the read that
	-- found the FIN found no byte before it. A FIN behind stream bytes read
	-- earlier is a half-close to pass on after activation, as in onincoming:
	-- hold the socket, whose fd is still open here. One with nothing to
	-- relay is a client giving up: drop it, and its partner, at once. The
	-- end of input comes as err "closed" (13) or no err at all (0.12, as for
	-- a close of ours, which close_session marks); a read error is no FIN.
	function listener.ondisconnect(conn, err)
		local session = self.sessions[conn];
		local sock = conn:socket();
		if (err == nil or err == "closed") and session and session.hash and not session.closing
				and not session.handed_over and not session.parked
				and sock and sock:getfd() >= 0 and (session.early ~= "" or sock:dirty()) then
			self:park(session);
			return;
		end
		if session and not session.handed_over and not session.parked then
			self:drop(session);
		end
	end

	listener.ondetach = listener.ondisconnect;

	return listener;
end

-- The fd of a session for the engine, and the bytes buffered with it.
local function take_fd(session)
	if session.parked then
		return session.parked:release(), "";
	end
	local fd, buffered = detach(session.conn);
	session.conn:close(); -- the socket object only: its fd is no longer its own
	return fd, buffered;
end

-- XEP-0065 activation of the pair with this hash.
-- Returns true, or nil and one of: "item-not-found" (unknown hash),
-- "not-allowed" (not both connected, or already active), "internal" (msg).
function service_mt:activate(hash)
	local pair = self.pairs[hash];
	if not pair then
		return nil, "item-not-found";
	end
	if pair.relay_id then
		return nil, "not-allowed", "The bytestream is already active";
	end
	if not pair.initiator then
		return nil, "not-allowed", "The initiator is not connected to the proxy";
	end
	local target, initiator = pair.target, pair.initiator;
	for _, session in pairs({ target, initiator }) do
		session.handed_over = true;
		if session.timer then
			self.timer.stop(session.timer);
			session.timer = nil;
		end
		self.sessions[session.conn] = nil;
	end
	local target_fd, target_buffered = take_fd(target);
	local initiator_fd, initiator_buffered = take_fd(initiator);
	local id, err = self.engine:add(target_fd, initiator_fd,
		target.early .. target_buffered, initiator.early .. initiator_buffered);
	if not id then
		self.pairs[hash] = nil;
		return nil, "internal", err;
	end
	pair.relay_id = id;
	pair.target, pair.initiator = nil, nil; -- the conns are gone
	self.relays[id] = pair;
	return true;
end

function service_mt:stats()
	local stats = self.engine:stats();
	stats.pending = 0;
	for _ in pairs(self.sessions) do
		stats.pending = stats.pending + 1;
	end
	return stats;
end

-- Closes every connection and relay; idempotent.
function service_mt:close()
	if self.watcher then
		self.watcher:close();
		self.watcher = nil;
	end
	for _, session in pairs(self.sessions) do
		if session.parked then
			session.parked:close();
		else
			session.closing = true;
			session.conn:close();
		end
	end
	self.sessions = {};
	self.engine:close();
	self.pairs, self.relays = {}, {};
end

return M;
