-- prosody-cproxy: proxy65 as an XEP-0114 external component, for any XMPP
-- server: the command line (Proxy65-compatible), the config file, and the
-- component's answers, on the same service and C engine as the Prosody
-- module. The stream itself is cproxy/standalone/component.lua; the loop,
-- cproxy/standalone/loop.lua.
-- SPDX-License-Identifier: MIT

local core = require "cproxy.core";
local st = require "cproxy.standalone.stanza";
local proxy65 = require "cproxy.proxy65.service";
local option_table = require "cproxy.proxy65.options";
local bytestreams = require "cproxy.proxy65.bytestreams";
local streamhost = require "cproxy.proxy65.streamhost";
local acl = require "cproxy.proxy65.acl";
local component = require "cproxy.standalone.component";
local cli = require "cproxy.standalone.cli";
local jids = require "cproxy.standalone.jid";
local loop_lib = require "cproxy.standalone.loop";

local socket = require "socket";

local ipairs, tostring = ipairs, tostring;
local format = string.format;

local M = {};

M.version = "prosody-cproxy proxy65 " .. core.version;

-- Every option: its name on the command line and in a config file (with
-- underscores), a kind, a default and what it does. The service's options
-- come from the table the Prosody module reads too (inserted below).
local OPTIONS = {
	{ "jid", "string", nil, "the component's JID (required)" },
	{ "proxyips", "string", nil, "IP:port,... to listen on and advertise (port 7777 if omitted); default 0.0.0.0:7777, advertised as the JID" },
	{ "advertise", "string", nil, "host[:port],... advertised instead of --proxyips (behind NAT)" },
	{ "acl", "string", nil, "JIDs or domains allowed to use the proxy, comma-separated; default: anyone" },
	{ "name", "string", "SOCKS5 Bytestreams Service", "the disco identity's name" },
};

local command_line = cli.new({
	program = "proxy65", version = M.version, secret_env = "PROXY65_SECRET", options = OPTIONS,
	entries = option_table.entries, -- the service's options, as the module's
	synopsis = { "Usage: proxy65 --jid JID --rhost HOST --rport PORT --proxyips IP:PORT[,...] [options]",
		"An XEP-0065 SOCKS5 bytestreams proxy, as an XEP-0114 external component." },
});
function M.usage()
	return command_line:usage();
end

-- Runs the component; returns the process's exit status.
function M.main(args, env)
	local opts, jid = command_line:start(args, env, "proxy65.example.org");
	if not opts then
		return jid; -- the exit status
	end
	local log = cli.logger(opts["log-level"]);

	local listens = {};
	for _, entry in ipairs(cli.split_list(opts.proxyips or "0.0.0.0:7777")) do
		local host, port = streamhost.parse(entry);
		port = host and (port or 7777);
		if not host then
			io.stderr:write(format("proxy65: --proxyips entry %q is not IP:port\n", entry));
			return 2;
		end
		listens[#listens + 1] = { host = host, port = port };
	end
	local streamhosts = {};
	for _, entry in ipairs(cli.split_list(opts.advertise)) do
		local host, port = streamhost.parse(entry);
		if not host then
			io.stderr:write(format("proxy65: --advertise entry %q is not host[:port]\n", entry));
			return 2;
		end
		streamhosts[#streamhosts + 1] = { host = host, port = port };
	end
	if #streamhosts == 0 then
		for _, listen in ipairs(listens) do
			local wildcard = listen.host == "0.0.0.0" or listen.host == "::";
			streamhosts[#streamhosts + 1] = { host = wildcard and jid or listen.host, port = listen.port };
		end
	end

	local loop = loop_lib.new({ log = log, max_queued = opts["max-queued-output"] });
	-- The same settings the Prosody module builds, engine's included.
	local settings = option_table.settings(function (entry)
		return opts[entry.flag];
	end);
	settings.server, settings.timer, settings.now, settings.log = loop.server, loop.timer, socket.gettime, log;
	local service, serr = proxy65.new(settings);
	if not service then
		io.stderr:write("proxy65: cannot start the relay engine: ", tostring(serr), "\n");
		return 1;
	end
	for _, listen in ipairs(listens) do
		local ok, lerr = loop.server.listen(listen.host, listen.port, service.listener);
		if not ok then
			io.stderr:write(format("proxy65: cannot listen on %s port %d: %s\n", listen.host, listen.port, tostring(lerr)));
			service:close();
			return 1;
		end
		log("info", "SOCKS5 on %s port %d", listen.host, listen.port);
	end

	local acl_list = cli.split_list(opts.acl);
	local conn;
	local ctx = {
		st = st, host = jid, streamhosts = streamhosts, service = service, log = log,
		port = function () return listens[1].port; end,
		sha1 = core.sha1, jid_prep = jids.prep, jid_bare = jids.bare,
		refused = function () end,
		-- No --acl: whoever the server lets reach the component.
		permitted = function (stanza)
			return #acl_list == 0 or acl.admits(acl_list, stanza.attr.from, jids.split);
		end,
	};

	local function disco_info(stanza)
		local reply = st.reply(stanza):tag("query", { xmlns = "http://jabber.org/protocol/disco#info" })
			:tag("identity", { category = "proxy", type = "bytestreams", name = opts.name }):up();
		for _, feature in ipairs({ "http://jabber.org/protocol/disco#info",
			"http://jabber.org/protocol/disco#items", bytestreams.xmlns }) do
			reply:tag("feature", { var = feature }):up();
		end
		return reply;
	end

	local function on_stanza(stanza)
		local kind, to = stanza.attr.type, stanza.attr.to;
		if stanza.name == "iq" and (kind == "get" or kind == "set") then
			local query = stanza.tags[1];
			local xmlns = query and query.attr.xmlns;
			local reply;
			if to ~= jid then
				reply = st.error_reply(stanza, "cancel", "service-unavailable");
			elseif kind == "get" and xmlns == "http://jabber.org/protocol/disco#info" and query.name == "query" then
				reply = disco_info(stanza);
			elseif kind == "get" and xmlns == "http://jabber.org/protocol/disco#items" and query.name == "query" then
				reply = st.reply(stanza):tag("query", { xmlns = xmlns }):up();
			elseif xmlns == bytestreams.xmlns and query.name == "query" then
				reply = kind == "get" and bytestreams.query(ctx, stanza) or bytestreams.activate(ctx, stanza);
			else
				reply = st.error_reply(stanza, "cancel", "service-unavailable");
			end
			conn:send(reply);
		elseif stanza.name == "message" and kind ~= "error" then
			conn:send(st.error_reply(stanza, "cancel", "service-unavailable"));
		elseif stanza.name == "presence" and kind == "probe" then
			conn:send(st.new("presence", { from = jid, to = stanza.attr.from }));
		end
		-- IQ results and errors, other presence: nothing to answer.
	end

	local status = component.serve(loop, {
		jid = jid, secret = opts.secret, host = opts.rhost, port = opts.rport,
		server = loop.server, timer = loop.timer, log = log, retry = opts.retry,
		on_stanza = on_stanza,
		on_created = function (c) conn = c; end,
	});
	service:close();
	return status;
end

return M;
