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
local cluster = require "cproxy.proxy65.cluster";
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
	{ "proxyips", "string", nil, "IP:port,... to listen on and advertise (port 7777 if omitted); default 0.0.0.0:7777, advertised as the JID, or none on a front (--nodes)" },
	{ "advertise", "string", nil, "host[:port],... advertised instead of --proxyips (behind NAT)" },
	{ "acl", "string", nil, "JIDs or domains allowed to use the proxy, comma-separated; default: anyone" },
	{ "name", "string", "SOCKS5 Bytestreams Service", "the disco identity's name" },
};

-- The service's options, as the module's, then the cluster's.
local entries = {};
for _, list in ipairs({ option_table.entries, option_table.cluster_entries }) do
	for _, entry in ipairs(list) do
		entries[#entries + 1] = entry;
	end
end

local command_line = cli.new({
	program = "proxy65", version = M.version, secret_env = "PROXY65_SECRET", options = OPTIONS,
	entries = entries,
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
	local nodes, fronts = opts.nodes or {}, opts.fronts or {};

	local listens = {};
	-- A front relays nothing itself unless told where to listen.
	local proxyips = opts.proxyips or (#nodes == 0 and "0.0.0.0:7777" or nil);
	for _, entry in ipairs(cli.split_list(proxyips)) do
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
		port = function () return listens[1] and listens[1].port; end,
		sha1 = core.sha1, jid_prep = jids.prep, jid_bare = jids.bare,
		refused = function () end,
		-- No --acl: whoever the server lets reach the component.
		permitted = function (stanza)
			return #acl_list == 0 or acl.admits(acl_list, stanza.attr.from, jids.split);
		end,
	};

	-- A node answers its fronts' load requests and forwarded activations.
	ctx.fronts, ctx.max_connections = fronts, settings.max_connections;
	ctx.rate = cluster.rate_meter(socket.gettime);
	local front;
	if #nodes > 0 then
		front = cluster.front({ host = jid, nodes = nodes, interval = opts["node-check-interval"],
			listed = opts["streamhost-nodes"], st = st, timer = loop.timer, now = socket.gettime, log = log,
			send = function (stanza)
				if conn then
					conn:send(stanza);
				end
			end });
	end
	-- A node is reached through its front: clients should not find it.
	local hidden = #fronts > 0 and not front;

	local function disco_info(stanza)
		local reply = st.reply(stanza):tag("query", { xmlns = "http://jabber.org/protocol/disco#info" });
		-- A node is not a proxy for clients to find, but needs an identity.
		reply:tag("identity", { category = hidden and "component" or "proxy",
			type = hidden and "generic" or "bytestreams", name = opts.name }):up();
		for _, feature in ipairs({ "http://jabber.org/protocol/disco#info",
			"http://jabber.org/protocol/disco#items", not hidden and bytestreams.xmlns or nil }) do
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
			elseif xmlns == bytestreams.xmlns and query.name == "query" and front then
				if kind == "get" then
					reply = cluster.query(front, ctx, stanza);
				else
					return cluster.activate_at_front(front, ctx, stanza, function (answer) conn:send(answer); end);
				end
			elseif xmlns == bytestreams.xmlns and query.name == "query" then
				reply = kind == "get" and bytestreams.query(ctx, stanza) or bytestreams.activate(ctx, stanza);
			elseif xmlns == cluster.xmlns and kind == "get" and query.name == "load" then
				reply = cluster.load(ctx, stanza);
			elseif xmlns == cluster.xmlns and kind == "set" and query.name == "activate" then
				reply = cluster.activate(ctx, stanza);
			else
				reply = st.error_reply(stanza, "cancel", "service-unavailable");
			end
			conn:send(reply);
		elseif stanza.name == "iq" and front and front:on_reply(stanza) then
			return; -- a node's answer
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
		on_online = front and function () front:start(); end,
	});
	if front then
		front:stop();
	end
	service:close();
	return status;
end

return M;
