-- prosody-cproxy: client_proxy (Jabber Address Translation) as an XEP-0114
-- external component, for any XMPP server (ejabberd, Openfire, ...): the
-- command line and config file, with the module's options, and the same
-- routing as the Prosody module (cproxy/client_proxy/router.lua). Outside
-- Prosody the target's sessions cannot be seen, so its resources come from
-- its presence, through the subscription the component asks for each time
-- it connects: the target's roster must keep it.
-- The stream is cproxy/standalone/component.lua; the loop, loop.lua.
-- SPDX-License-Identifier: MIT

local core = require "cproxy.core";
local st = require "cproxy.standalone.stanza";
local cli = require "cproxy.standalone.cli";
local jids = require "cproxy.standalone.jid";
local component = require "cproxy.standalone.component";
local loop_lib = require "cproxy.standalone.loop";
local option_table = require "cproxy.client_proxy.options";
local routing = require "cproxy.client_proxy.router";
local recent = require "cproxy.client_proxy.recent";
local socket = require "socket";

local ipairs, tostring, format, random = ipairs, tostring, string.format, math.random;

local M = {};

M.version = "prosody-cproxy client_proxy " .. core.version;

local xmlns_disco_info = "http://jabber.org/protocol/disco#info";

-- The component's JID, then the module's options with their flags
-- (--target, --policy, ...).
local command_line = cli.new({
	program = "client_proxy", version = M.version, secret_env = "CLIENT_PROXY_SECRET",
	options = { { "jid", "string", nil, "the component's JID (required)" } },
	entries = option_table.entries,
	synopsis = { "Usage: client_proxy --jid JID --target USER@HOST --rhost HOST --rport PORT [options]",
		"Jabber Address Translation (client_proxy) as an XEP-0114 external component." },
});

function M.usage()
	return command_line:usage();
end

-- The settings from the command line, as the module builds them from its
-- config. -> settings | nil, message
local function settings_of(opts)
	local settings = {};
	for _, entry in ipairs(option_table.entries) do
		local value = opts[entry.flag];
		if entry.kind == "list" then
			value = value or {}; -- not given
		end
		settings[entry.field] = value;
	end
	local node, host, resource = jids.split(settings.target);
	if not node or resource then
		return nil, "--target must be the bare JID of the implementing client (user@host), got "
			.. tostring(settings.target);
	end
	settings.target = node .. "@" .. host;
	return settings;
end

-- Runs the component; returns the process's exit status.
function M.main(args, env)
	local opts, jid = command_line:start(args, env, "focus.example.org");
	if not opts then
		return jid; -- the exit status
	end
	local settings, serr = settings_of(opts);
	if not settings then
		io.stderr:write("client_proxy: ", serr, "\n");
		return 2;
	end
	local log = cli.logger(opts["log-level"]);
	local loop = loop_lib.new({ log = log, max_queued = opts["max-queued-output"] });
	-- Without --tag-secret, a random key: tags then last until a restart.
	local key, kerr = core.jat(settings.secret, jid);
	if not key then
		io.stderr:write("client_proxy: ", tostring(kerr), "\n");
		return 1;
	end
	local senders = recent.new(settings.contact_window, core.jat_generation_jids, core.jat_generation_bytes,
		socket.gettime());
	local counts = {};
	local conn;
	local router = routing.new({
		host = jid, target = settings.target, st = st,
		jid_split = jids.split, jid_bare = jids.bare, jid_prep = jids.prep,
		send = function (stanza) return conn:send(stanza); end,
		log = log, now = socket.gettime,
		add_timer = function (seconds, f) return loop.timer.add_task(seconds, f); end,
		count = function (name) counts[name] = (counts[name] or 0) + 1; end,
		key = key, senders = senders, addressing = settings.addressing, tag_length = core.jat_tag_length,
		policy = settings.policy, preferred = settings.preferred, request_timeout = settings.request_timeout,
		max_pending = settings.max_pending, max_per_sender = settings.max_per_sender,
		id_prefix = format("%08x-", random(0, 0x7fffffff)),
	});

	-- What the router leaves: disco#info to the component itself.
	local function on_stanza(stanza)
		if router.on_stanza(stanza) then
			return;
		end
		local query = stanza.tags[1];
		if stanza.name == "iq" and stanza.attr.type == "get" and stanza.attr.to == jid and query
			and query.name == "query" and query.attr.xmlns == xmlns_disco_info then
			conn:send(st.reply(stanza):tag("query", { xmlns = xmlns_disco_info })
				:tag("identity", { category = "component", type = "generic", name = "client_proxy" }):up()
				:tag("feature", { var = xmlns_disco_info }):up());
		end
	end

	log("info", "Routing requests to %s for %s (addressing %s, policy %s)", settings.target, jid,
		settings.addressing, settings.policy);
	return component.serve(loop, {
		jid = jid, secret = opts.secret, host = opts.rhost, port = opts.rport,
		server = loop.server, timer = loop.timer, log = log, retry = opts.retry,
		on_stanza = on_stanza,
		on_created = function (c) conn = c; end,
		-- Each (re)connection asks again: the server may have restarted.
		on_online = function ()
			router.subscribe();
		end,
		-- Nobody will answer these now; tell their senders.
		on_stop = function ()
			router.fail_all("cancel", "service-unavailable", "The service is stopping");
		end,
	});
end

return M;
