-- prosody-cproxy: an XEP-0114 external component connection: the stream
-- to the server, the handshake (SHA-1 of stream id and secret), stanzas
-- both ways, stream errors, and reconnection with backoff. Independent of
-- what the component does (cproxy/standalone/main.lua) and of the event loop
-- (any net.server-like one: addclient, timer).
-- SPDX-License-Identifier: MIT

local core = require "cproxy.core";
local st = require "cproxy.standalone.stanza";

local setmetatable, ipairs, format, min = setmetatable, ipairs, string.format, math.min;

local M = {};

local xmlns_component = "jabber:component:accept";
local xmlns_streams = "urn:ietf:params:xml:ns:xmpp-streams";
local xmlns_stream = "http://etherx.jabber.org/streams";
local BACKOFF_MIN, BACKOFF_MAX = 1, 60;

local component_mt = {};
component_mt.__index = component_mt;

-- opts: jid, secret, host, port, server (addclient), timer, log
-- (function(level, fmt, ...)), on_stanza (function(stanza)), on_online
-- (function()), on_failure (function(reason, fatal): fatal when retrying
-- cannot help, e.g. a wrong secret), retry (keep trying when the first
-- connection fails), limits (options of cproxy.core.xmlstream).
function M.new(opts)
	return setmetatable({ opts = opts, log = opts.log, backoff = BACKOFF_MIN, ever_online = false }, component_mt);
end

function component_mt:connect()
	local opts = self.opts;
	local listener = {};
	self.online, self.header = false, nil;
	self.parser = assert(core.xmlstream(opts.limits));
	self.log("debug", "Connecting to %s port %d as %s", opts.host, opts.port, opts.jid);
	function listener.onconnect(conn)
		conn:write(format("<?xml version='1.0'?><stream:stream xmlns='%s' xmlns:stream='%s' to='%s'>",
			xmlns_component, xmlns_stream, st.escape(opts.jid)));
	end
	function listener.onincoming(_, data)
		self:incoming(data);
	end
	function listener.ondisconnect(_, err)
		self:disconnected(err);
	end
	local conn, err = opts.server.addclient(opts.host, opts.port, listener);
	self.conn = conn;
	if not conn then
		self:disconnected(err);
	end
end

-- Ends the stream with a stream error.
function component_mt:stream_error(condition, text)
	if self.conn then
		self.conn:write(format("<stream:error><%s xmlns='%s'/>%s</stream:error></stream:stream>", condition,
			xmlns_streams, text and format("<text xmlns='%s'>%s</text>", xmlns_streams, st.escape(text)) or ""));
		self.conn:close();
	end
end

function component_mt:incoming(data)
	local events, reason, condition, before = self.parser:feed(data);
	if not events then
		-- What was complete before the error is handled first, as if it had
		-- come in a read of its own.
		self:handle(before);
		if not self.conn then
			return;
		end
		self.log("error", "Closing the stream: the server sent invalid XML (%s)", reason);
		self.failure = "invalid XML from the server (" .. reason .. ")";
		return self:stream_error(condition);
	end
	self:handle(events);
end

function component_mt:handle(events)
	for _, event in ipairs(events) do
		if not self.conn then
			return;
		end
		if event.event == "header" then
			self.header = event;
			local id = event.attr.id;
			if not id then
				return self:stream_error("invalid-id", "No stream id to compute the handshake from");
			end
			self.conn:write(format("<handshake>%s</handshake>", core.sha1(id .. self.opts.secret)));
		elseif event.event == "end" then
			self.log("info", "The server closed the stream");
			self.conn:write("</stream:stream>");
			self.conn:close();
		else
			self:stanza(st.adopt(event));
		end
	end
end

function component_mt:stanza(stanza)
	if stanza.name == "error" and stanza.attr.xmlns == xmlns_stream then
		local condition = stanza.tags[1] and stanza.tags[1].name or "undefined-condition";
		local text = stanza:get_child_text("text", xmlns_streams);
		self.failure = condition .. (text and (": " .. text) or "");
		self.fatal = condition == "not-authorized" or condition == "host-unknown";
		self.log("error", "The server ended the stream: %s", self.failure);
		self.conn:close();
		return;
	end
	if not self.online then
		if stanza.name == "handshake" then
			self.online, self.ever_online, self.backoff = true, true, BACKOFF_MIN;
			self.log("info", "Connected to %s as %s", self.opts.host, self.opts.jid);
			if self.opts.on_online then
				self.opts.on_online();
			end
		else
			self.log("debug", "Ignoring a %s before the handshake", stanza.name);
		end
		return;
	end
	self.opts.on_stanza(stanza);
end

function component_mt:send(stanza)
	if not self.online then
		return nil, "offline";
	end
	return self.conn:write(st.serialize(stanza, xmlns_component));
end

function component_mt:disconnected(err)
	local was_online = self.online;
	self.online, self.conn = false, nil;
	if self.parser then
		self.parser:close();
		self.parser = nil;
	end
	if self.stopping then
		return;
	end
	local reason = self.failure or err or "closed";
	self.failure = nil;
	-- A wrong secret, or a server never reached at start, ends here unless
	-- told to keep trying: retrying would only hide the mistake.
	if self.fatal or (not self.ever_online and not self.opts.retry) then
		local fatal = self.fatal;
		self.fatal = nil;
		if self.opts.on_failure then
			self.opts.on_failure(reason, fatal or not self.ever_online);
		end
		if not self.opts.retry then
			return;
		end
	end
	self.log(was_online and "warn" or "info", "Disconnected (%s); reconnecting in %d s", reason, self.backoff);
	local delay = self.backoff;
	self.backoff = min(self.backoff * 2, BACKOFF_MAX);
	self.opts.timer.add_task(delay, function ()
		if not self.stopping then
			self:connect();
		end
	end);
end

function component_mt:close()
	self.stopping = true;
	if self.conn then
		self.conn:write("</stream:stream>");
		self.conn:close();
	end
end

-- Runs a component on `loop` until the loop ends: opts as for new(), but
-- for on_failure, which this provides: a failure that retrying cannot mend
-- ends the loop; and on_created(conn) and on_stop() (before the stream
-- closes), if given. Returns the exit status (0, or 1 after such a failure or
-- a failing loop).
function M.serve(loop, opts)
	local status = 0;
	local log = opts.log;
	opts.on_failure = function (reason, fatal)
		if fatal then
			log("error", "Giving up: %s", reason);
			status = 1;
			loop:quit("failed");
		end
	end;
	local conn = M.new(opts);
	if opts.on_created then
		opts.on_created(conn);
	end
	conn:connect();
	local reason, err = loop:run();
	if not reason and err then
		log("error", "%s", err);
		status = 1;
	end
	if opts.on_stop then
		opts.on_stop();
	end
	conn:close();
	return status;
end

return M;
