-- A small XMPP client on LuaSocket for specs and benchmarks, using
-- Prosody's own XML stream parser and stanza library. Plain TCP, SASL
-- PLAIN, resource binding; or an external component (XEP-0114), which
-- may send from any JID of its domain, as a remote server can. Every wait
-- is bounded.
if not package.path:find("/usr/lib/prosody/", 1, true) then
	package.path = "/usr/lib/prosody/?.lua;" .. package.path;
	package.cpath = "/usr/lib/prosody/?.so;" .. package.cpath;
end
local socket = require "socket";
local st = require "util.stanza";
local xmppstream = require "util.xmppstream";
local base64 = require "util.encodings".base64;
local sha1 = require "util.hashes".sha1;

local M = {};

-- st.iq() with a fresh id unless one is given.
function M.iq(attr)
	attr.id = attr.id or ("spec-" .. math.random(1e12));
	return st.iq(attr);
end

local client_mt = {};
client_mt.__index = client_mt;

local id_counter = 0;
local function new_id()
	id_counter = id_counter + 1;
	return ("spec%d-%d"):format(id_counter, math.random(1e9));
end

function client_mt:reset_stream()
	local client = self;
	local ns = self.ns or "jabber:client";
	self.stream = xmppstream.new({ notopen = true }, {
		stream_ns = "http://etherx.jabber.org/streams";
		default_ns = ns;
		streamopened = function (session, attr) session.notopen = nil; client.stream_id = attr.id; end;
		streamclosed = function () client.closed = true; end;
		handlestanza = function (_, stanza) table.insert(client.queue, stanza); end;
		error = function (_, err) client.closed = true; client.error = err; end;
	});
	self.sock:send(("<?xml version='1.0'?><stream:stream xmlns='%s' "
		.. "xmlns:stream='http://etherx.jabber.org/streams' to='%s' version='1.0'>"):format(ns, self.domain));
end

-- Reads from the socket for up to `timeout` seconds, or until data came.
function client_mt:pump(timeout)
	if self.closed then
		return nil, "closed";
	end
	-- Wait for readability, then take whatever is there without blocking.
	if not self.sock:dirty() then
		local readable = socket.select({ self.sock }, nil, timeout);
		if not readable or #readable == 0 then
			return nil, "timeout";
		end
	end
	self.sock:settimeout(0);
	local data, err, partial = self.sock:receive(65536);
	data = data or partial;
	if data and #data > 0 then
		local ok, perr = self.stream:feed(data);
		if not ok then
			self.closed = true;
			return nil, perr;
		end
		return true;
	end
	if err == "closed" then
		self.closed = true;
	end
	return nil, err;
end

function client_mt:await(predicate, timeout)
	local deadline = socket.gettime() + (timeout or 5);
	while true do
		for i, stanza in ipairs(self.queue) do
			if predicate(stanza) then
				table.remove(self.queue, i);
				return stanza;
			end
		end
		local left = deadline - socket.gettime();
		if left <= 0 or self.closed then
			return nil, self.closed and "closed" or "timeout";
		end
		self:pump(math.min(left, 0.5));
	end
end

function client_mt:await_iq(type_, timeout)
	return self:await(function (s) return s.name == "iq" and (not type_ or s.attr.type == type_); end, timeout);
end

function client_mt:await_message(timeout)
	return self:await(function (s) return s.name == "message"; end, timeout);
end

function client_mt:await_presence(from_pattern, timeout)
	return self:await(function (s)
		return s.name == "presence" and (not from_pattern or (s.attr.from or ""):match(from_pattern) ~= nil);
	end, timeout);
end

function client_mt:drain(timeout)
	local deadline = socket.gettime() + (timeout or 0.2);
	while socket.gettime() < deadline and not self.closed do
		self:pump(math.max(0.01, deadline - socket.gettime()));
	end
	local all = self.queue;
	self.queue = {};
	return all;
end

function client_mt:send(stanza)
	return self.sock:send(tostring(stanza));
end

function client_mt:request(stanza, timeout)
	if not stanza.attr.id then
		stanza.attr.id = new_id();
	end
	local id = stanza.attr.id;
	self:send(stanza);
	return self:await(function (s)
		return s.name == "iq" and s.attr.id == id and (s.attr.type == "result" or s.attr.type == "error");
	end, timeout);
end

function client_mt:ping(to, timeout)
	local t0 = socket.gettime();
	local reply, err = self:request(M.iq({ type = "get", to = to }):tag("ping", { xmlns = "urn:xmpp:ping" }), timeout);
	if not reply then
		return nil, err;
	end
	return socket.gettime() - t0;
end

function client_mt:close()
	if self.sock then
		pcall(self.sock.send, self.sock, "</stream:stream>");
		self.sock:close();
		self.sock = nil;
		self.closed = true;
	end
end

local function await_features(client, timeout)
	return client:await(function (s) return s.name == "features"; end, timeout);
end

function M.connect(opts)
	local timeout = opts.timeout or 5;
	local sock = socket.tcp();
	sock:settimeout(timeout);
	local ok, err = sock:connect(opts.host or "127.0.0.1", opts.port);
	if not ok then
		return nil, err;
	end
	local client = setmetatable({ sock = sock, domain = opts.domain or "localhost", queue = {} }, client_mt);
	client:reset_stream();
	if not await_features(client, timeout) then
		client:close();
		return nil, "no stream features";
	end
	client:send(st.stanza("auth", { xmlns = "urn:ietf:params:xml:ns:xmpp-sasl", mechanism = "PLAIN" })
		:text(base64.encode("\0" .. opts.username .. "\0" .. opts.password)));
	local answer = client:await(function (s) return s.name == "success" or s.name == "failure"; end, timeout);
	if not answer or answer.name ~= "success" then
		client:close();
		return nil, "authentication failed";
	end
	client:reset_stream();
	if not await_features(client, timeout) then
		client:close();
		return nil, "no stream features after authentication";
	end
	local bind = M.iq({ type = "set", id = new_id() }):tag("bind", { xmlns = "urn:ietf:params:xml:ns:xmpp-bind" })
		:tag("resource"):text(opts.resource or ("spec" .. math.random(1e9)));
	local bound = client:request(bind, timeout);
	if not bound or bound.attr.type ~= "result" then
		client:close();
		return nil, "resource binding failed";
	end
	client.jid = bound:get_child("bind", "urn:ietf:params:xml:ns:xmpp-bind"):get_child_text("jid");
	client.bare = client.jid:match("^[^/]+");
	if opts.presence ~= false then
		local presence = st.presence();
		if opts.priority then
			presence:tag("priority"):text(tostring(opts.priority)):up();
		end
		client:send(presence);
	end
	return client;
end

-- An external component: opts.port (component_ports), opts.domain, opts.secret.
function M.component(opts)
	local timeout = opts.timeout or 5;
	local sock = socket.tcp();
	sock:settimeout(timeout);
	local ok, err = sock:connect(opts.host or "127.0.0.1", opts.port);
	if not ok then
		return nil, err;
	end
	local client = setmetatable({ sock = sock, domain = opts.domain, queue = {}, ns = "jabber:component:accept" }, client_mt);
	client:reset_stream();
	local deadline = socket.gettime() + timeout;
	while not client.stream_id and not client.closed and socket.gettime() < deadline do
		client:pump(0.1);
	end
	if not client.stream_id then
		client:close();
		return nil, "no stream header";
	end
	client:send(st.stanza("handshake"):text(sha1(client.stream_id .. opts.secret, true)));
	if not client:await(function (s) return s.name == "handshake"; end, timeout) then
		client:close();
		return nil, "handshake failed";
	end
	client.jid, client.bare = opts.domain, opts.domain;
	return client;
end

-- Sends `make_request()` from `user` until one reaches one of `clients`
-- (a component may not know an implementing client's session at once;
-- each miss comes back as an error, read here). `is_request` says which
-- stanza counts. -> client, request | nil after `seconds` (10).
function M.until_routed(user, clients, make_request, is_request, seconds)
	local deadline = socket.gettime() + (seconds or 10);
	repeat
		user:send(make_request());
		for _, client in ipairs(clients) do
			local req = client:await(is_request, 0.3);
			if req then
				return client, req;
			end
		end
		user:await_iq("error", 1);
	until socket.gettime() > deadline;
end

-- An error reply's "type/condition" ("cancel/service-unavailable"), or nil.
function M.error_condition(reply)
	local err = reply and reply:get_child("error");
	if not err then
		return nil;
	end
	for child in err:childtags(nil, "urn:ietf:params:xml:ns:xmpp-stanzas") do
		if child.name ~= "text" then
			return err.attr.type .. "/" .. child.name;
		end
	end
end

return M;
