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
local component = require "cproxy.standalone.component";
local loop_lib = require "cproxy.standalone.loop";

local socket = require "socket";

local ipairs, pairs, tonumber, tostring, type, select = ipairs, pairs, tonumber, tostring, type, select;
local format, concat = string.format, table.concat;

local M = {};

M.version = "prosody-cproxy proxy65 " .. core.version;

-- Every option: its name on the command line and in a config file (with
-- underscores), a kind, a default and what it does. The service's options
-- come from the table the Prosody module reads too (inserted below).
local OPTIONS = {
	{ "jid", "string", nil, "the component's JID (required)" },
	{ "secret", "string", nil, "the component secret; prefer --secret-file or PROXY65_SECRET" },
	{ "secret-file", "string", nil, "a file whose first line is the secret" },
	{ "rhost", "string", "127.0.0.1", "the XMPP server's component host" },
	{ "rport", "integer", 5347, "the XMPP server's component port" },
	{ "proxyips", "string", nil, "IP:port,... to listen on and advertise (port 7777 if omitted); default 0.0.0.0:7777, advertised as the JID" },
	{ "advertise", "string", nil, "host[:port],... advertised instead of --proxyips (behind NAT)" },
	{ "acl", "string", nil, "JIDs or domains allowed to use the proxy, comma-separated; default: anyone" },
	{ "name", "string", "SOCKS5 Bytestreams Service", "the disco identity's name" },
	{ "max-queued-output", "integer", 1048576, "bytes of output queued for the server before reading from it pauses until half is sent" },
	{ "retry", "boolean", false, "keep trying when the server is unreachable or refuses at start" },
	{ "log-level", "string", "info", "debug, info, warn or error" },
	{ "config", "string", nil, "a file of option = value lines (Lua syntax, names with underscores)" },
	{ "help", "boolean", false, "show this help" },
	{ "version", "boolean", false, "show the version" },
};

-- The service's, after "name": { flag, kind, default, meaning, entry }.
for i, entry in ipairs(option_table.entries) do
	table.insert(OPTIONS, 9 + i, { entry.flag, entry.kind, entry.default, entry.meaning, entry });
end

local by_name = {};
for _, option in ipairs(OPTIONS) do
	by_name[option[1]] = option;
end

function M.usage()
	local lines = { "Usage: proxy65 --jid JID --rhost HOST --rport PORT --proxyips IP:PORT[,...] [options]",
		"An XEP-0065 SOCKS5 bytestreams proxy, as an XEP-0114 external component.", "" };
	for _, option in ipairs(OPTIONS) do
		local default = option[3] ~= nil and option[2] ~= "boolean" and (" (default " .. tostring(option[3]) .. ")") or "";
		lines[#lines + 1] = format("  --%-24s %s%s", option[1] .. (option[2] ~= "boolean" and "=V" or ""), option[4], default);
	end
	lines[#lines + 1] = "";
	lines[#lines + 1] = "The secret may also come from the environment variable PROXY65_SECRET.";
	return concat(lines, "\n");
end

-- What an option's value must be, in words.
local function expected(option)
	local kind, entry = option[2], option[5];
	if kind == "boolean" then
		return "true or false";
	elseif kind == "choice" then
		return "one of " .. concat(entry.choices, ", ");
	elseif kind == "string" then
		return "a string";
	elseif entry and (entry.min ~= 0 or entry.max ~= math.huge) then
		return format("%s from %s to %s", kind == "integer" and "an integer" or "a number",
			tostring(entry.min), tostring(entry.max));
	end
	return "a non-negative " .. kind;
end

-- A value as given (a string from the command line, anything from a config
-- file) -> the option's value | nil, message. Out of range is an error:
-- the command line has no log to warn in before it starts.
local function convert(option, value, where)
	local kind, entry = option[2], option[5];
	if kind == "boolean" then
		if value == true or value == "true" or value == "yes" or value == "1" then
			return true;
		elseif value == false or value == "false" or value == "no" or value == "0" then
			return false;
		end
	elseif kind == "integer" or kind == "number" then
		local n = tonumber(value);
		local min, max = entry and entry.min or 0, entry and entry.max or math.huge;
		if n and n >= min and n <= max and (kind == "number" or n == math.floor(n)) then
			return n;
		end
	elseif kind == "choice" then
		for _, choice in ipairs(entry.choices) do
			if value == choice then
				return value;
			end
		end
	elseif type(value) == "string" then
		return value;
	end
	return nil, format("%s: %s must be %s, not %q", where, option[1], expected(option), tostring(value));
end

-- Command-line arguments -> options | nil, message.
function M.parse_args(args)
	local opts = {};
	local i = 1;
	while i <= #args do
		local arg = args[i];
		local name, value = arg:match("^%-%-([%w-]+)=(.*)$");
		name = name or arg:match("^%-%-([%w-]+)$");
		local option = name and by_name[name];
		if not option then
			return nil, format("unknown argument %q (see --help)", arg);
		end
		if value == nil and option[2] ~= "boolean" then
			i = i + 1;
			value = args[i];
			if value == nil then
				return nil, format("--%s needs a value", name);
			end
		end
		local converted, err = convert(option, value == nil or value, "command line");
		if converted == nil then
			return nil, err;
		end
		opts[name] = converted;
		i = i + 1;
	end
	return opts;
end

-- A config file (Lua assignments) -> options | nil, message.
function M.read_config(path)
	local values = {};
	local chunk, err = loadfile(path, "t", values);
	if not chunk then
		return nil, "cannot read the config file: " .. tostring(err);
	end
	local ok, run_err = pcall(chunk);
	if not ok then
		return nil, "error in the config file: " .. tostring(run_err);
	end
	local opts = {};
	for key, value in pairs(values) do
		local name = tostring(key):gsub("_", "-");
		local option = by_name[name];
		if not option or name == "config" then
			return nil, format("%s: unknown option %q", path, tostring(key));
		end
		local converted, cerr = convert(option, value, path);
		if converted == nil then
			return nil, cerr;
		end
		opts[name] = converted;
	end
	return opts;
end

-- "ip:port", "[v6]:port", "ip" (port 7777) -> host, port | nil.
local function parse_endpoint(entry, default_port)
	local v6, rest = entry:match("^%[([%x:.]+)%](.*)$");
	if v6 then
		local port = rest == "" and default_port or tonumber(rest:match("^:(%d+)$"));
		return v6, port;
	end
	local host, port = entry:match("^([^:]+):(%d+)$");
	if host then
		return host, tonumber(port);
	end
	if entry:match("^[^:]+$") then
		return entry, default_port;
	end
	if entry:match("^[%x:]+$") then -- a bare IPv6 address
		return entry, default_port;
	end
end

local function split_list(text)
	local list = {};
	for item in (text or ""):gmatch("[^,%s]+") do
		list[#list + 1] = item;
	end
	return list;
end

-- A JID's parts; nil when it is not one (the standalone has no
-- stringprep: addresses must come normalised, as clients send them).
local function jid_split(jid)
	if type(jid) ~= "string" or #jid == 0 or #jid > 3071 then
		return nil;
	end
	local node, rest = jid:match("^([^@/]+)@(.*)$");
	rest = rest or jid;
	local host, resource = rest:match("^([^/]+)/(.+)$");
	host = host or rest:match("^([^/@]+)$");
	if not host or host:find("[%s@]") or (node and node:find("%s")) then
		return nil;
	end
	return node, host:lower(), resource;
end

local function jid_bare(jid)
	local node, host = jid_split(jid);
	return host and (node and (node .. "@" .. host) or host);
end

local function jid_prep(jid)
	local node, host, resource = jid_split(jid);
	if not host then
		return nil;
	end
	return (node and (node .. "@") or "") .. host .. (resource and ("/" .. resource) or "");
end

-- As proxy65_acl: an entry's empty parts match anything, so a domain
-- admits all its users.
local function acl_match(jid, entry)
	local node, host, resource = jid_split(jid);
	local e_node, e_host, e_resource = jid_split(entry);
	return host ~= nil and host == e_host and (not e_node or e_node == node)
		and (not e_resource or e_resource == resource);
end

local levels = { debug = 1, info = 2, warn = 3, error = 4 };

local function make_log(level)
	local threshold = levels[level] or 2;
	return function (lvl, fmt, ...)
		if (levels[lvl] or 4) >= threshold then
			local ok, text = pcall(format, fmt, ...);
			io.stderr:write(format("%s %-5s %s\n", os.date("!%Y-%m-%dT%H:%M:%SZ"), lvl, ok and text or fmt));
		end
	end;
end

-- Runs the component; returns the process's exit status.
function M.main(args, env)
	local opts, err = M.parse_args(args);
	if not opts then
		io.stderr:write("proxy65: ", err, "\n");
		return 2;
	end
	if opts.help then
		print(M.usage());
		return 0;
	elseif opts.version then
		print(M.version);
		return 0;
	end
	if opts.config then
		local from_file, ferr = M.read_config(opts.config);
		if not from_file then
			io.stderr:write("proxy65: ", ferr, "\n");
			return 2;
		end
		for name, value in pairs(from_file) do
			if opts[name] == nil then -- the command line wins
				opts[name] = value;
			end
		end
	end
	for _, option in ipairs(OPTIONS) do
		if opts[option[1]] == nil then
			opts[option[1]] = option[3];
		end
	end
	local secret = opts.secret or (env and env.PROXY65_SECRET);
	if not secret and opts["secret-file"] then
		local f, ferr = io.open(opts["secret-file"]);
		if not f then
			io.stderr:write("proxy65: cannot read the secret file: ", tostring(ferr), "\n");
			return 2;
		end
		secret = f:read("l");
		f:close();
	end
	if not opts.jid or not jid_prep(opts.jid) or select(1, jid_split(opts.jid)) then
		io.stderr:write("proxy65: --jid must be the component's domain JID, e.g. proxy65.example.org\n");
		return 2;
	end
	if not secret or secret == "" then
		io.stderr:write("proxy65: no secret: give --secret-file, PROXY65_SECRET or --secret\n");
		return 2;
	end
	if opts["relay-mode"] ~= "splice" and opts["relay-mode"] ~= "copy" then
		io.stderr:write("proxy65: --relay-mode must be copy or splice\n");
		return 2;
	end
	local jid = jid_prep(opts.jid);
	local log = make_log(opts["log-level"]);

	local listens = {};
	for _, entry in ipairs(split_list(opts.proxyips or "0.0.0.0:7777")) do
		local host, port = parse_endpoint(entry, 7777);
		if not host or not port or port < 1 or port > 65535 then
			io.stderr:write(format("proxy65: --proxyips entry %q is not IP:port\n", entry));
			return 2;
		end
		listens[#listens + 1] = { host = host, port = port };
	end
	local streamhosts = {};
	for _, entry in ipairs(split_list(opts.advertise)) do
		local host, port = parse_endpoint(entry, nil);
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

	local acl = split_list(opts.acl);
	local conn;
	local ctx = {
		st = st, host = jid, streamhosts = streamhosts, service = service, log = log,
		port = function () return listens[1].port; end,
		sha1 = core.sha1, jid_prep = jid_prep, jid_bare = jid_bare,
		refused = function () end,
		permitted = function (stanza)
			if #acl == 0 then
				return true;
			end
			for _, entry in ipairs(acl) do
				if acl_match(stanza.attr.from, entry) then
					return true;
				end
			end
			return false;
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

	local status = 0;
	conn = component.new({
		jid = jid, secret = secret, host = opts.rhost, port = opts.rport,
		server = loop.server, timer = loop.timer, log = log, retry = opts.retry,
		on_stanza = on_stanza,
		on_failure = function (reason, fatal)
			if fatal then
				log("error", "Giving up: %s", reason);
				status = 1;
				loop:quit("failed");
			end
		end,
	});
	conn:connect();
	local reason, lerr = loop:run();
	if not reason and lerr then
		log("error", "%s", lerr);
		status = 1;
	end
	conn:close();
	service:close();
	return status;
end

return M;
