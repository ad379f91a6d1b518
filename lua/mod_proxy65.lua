-- mod_proxy65: an XEP-0065 SOCKS5 Bytestreams proxy whose relay runs in C.
--
-- A drop-in for Prosody's built-in mod_proxy65: the same module name and
-- options. Putting this directory first in plugin_paths makes Prosody load
-- this module instead of the built-in one (a deliberate shadowing).
-- This file is the XMPP side: disco, streamhost queries, activation, access
-- rules. The SOCKS5 listener and pairing are in cproxy/proxy65.lua.
-- SPDX-License-Identifier: MIT

module:set_global();

local here = debug.getinfo(1, "S").source:match("^@(.*)/[^/]*$") or ".";
local cproxy = dofile(here .. "/cproxy/boot.lua")(here);
local proxy65 = cproxy.require("proxy65");
local options = cproxy.require("options");
local shell = cproxy.require("shell");
module:log("debug", "Using the C extension %s", cproxy.core_path);

local st = require "util.stanza";
local jid_compare, jid_prep = require "util.jid".compare, require "util.jid".prep;
local sha1 = require "util.hashes".sha1;
local server = require "net.server";
local timer = require "util.timer";
local portmanager = require "core.portmanager";

local xmlns_bytestreams = "http://jabber.org/protocol/bytestreams";

local MiB = 1024 * 1024;

-- Read once for the whole server (this module is global).
local global_options = {
	"proxy65_activation_timeout", "proxy65_relay_mode", "proxy65_buffer_size",
	"proxy65_idle_timeout", "proxy65_socket_buffer",
};
local activation_timeout = options.number(module, "proxy65_activation_timeout", 60, 1, 86400);
local engine_options = {
	mode = options.choice(module, "proxy65_relay_mode", "splice", { "splice", "copy" });
	buffer_size = options.number(module, "proxy65_buffer_size", 4 * MiB, 4096, 256 * MiB, true);
	idle_timeout = options.number(module, "proxy65_idle_timeout", 300, 0, 86400 * 7, true);
	sockbuf = options.number(module, "proxy65_socket_buffer", 0, 0, 64 * MiB, true);
};

local measure_relays = module:measure("relays", "counter");
local measure_bytes = module:measure("bytes", "counter");

local function log(level, fmt, ...)
	return module:log(level, fmt, ...);
end

local function on_finished(result)
	measure_relays(1);
	measure_bytes(result.target_bytes + result.initiator_bytes);
end

-- The service outlives a module reload, so that active relays survive it.
local shared = module:shared("service");
local service = shared.service;
if service then
	-- A reload: new settings apply to what comes next (see engine:configure).
	local ok, err = service:configure({ activation_timeout = activation_timeout, engine = engine_options,
		log = log, on_finished = on_finished });
	if not ok then
		module:log("error", "Could not apply the new relay settings, the old ones stay: %s", err);
	end
else
	local err;
	service, err = proxy65.new({
		activation_timeout = activation_timeout;
		engine = engine_options;
		server = server;
		timer = timer;
		log = log;
		on_finished = on_finished;
	});
	if not service then
		error("proxy65: cannot start the relay engine: " .. tostring(err));
	end
	shared.service = service;
end

-- `prosodyctl shell "proxy65:status()"`, and on Prosody 13 also
-- `prosodyctl shell proxy65 status`.
local remove_shell_command = shell.add(module, {
	section = "proxy65";
	section_desc = "SOCKS5 bytestreams relayed by prosody-cproxy";
	name = "status";
	desc = "Show the active relays and the connections awaiting activation";
	handler = function (self)
		local stats = service:stats();
		local print = self.session.print;
		print(("Active relays: %d"):format(stats.active));
		print(("Connections awaiting activation: %d"):format(stats.pending));
		print(("Finished relays: %d (%d failed, %d timed out)"):format(stats.finished, stats.failed, stats.timed_out));
		print(("Bytes relayed by finished relays: %d"):format(stats.bytes));
		return true, ("%d active relays, %d pending connections"):format(stats.active, stats.pending);
	end;
});

function module.unload()
	remove_shell_command();
	if not module.reloading then
		service:close();
		shared.service = nil;
	end
end

module:provides("net", {
	default_port = 5000;
	listener = service.listener;
	multiplex = {
		pattern = "^\5";
	};
});

local function listening_port()
	local ports = {};
	for _, by_port in ipairs(portmanager.get_active_services():search("proxy65", nil)) do
		for port in pairs(by_port) do
			table.insert(ports, port);
		end
	end
	table.sort(ports);
	return ports[1];
end

function module.add_host(module)
	if module:get_host_type() ~= "component" then
		error("proxy65 must be loaded as a Component, e.g. Component \"proxy."
			.. module.host .. "\" \"proxy65\", not on the VirtualHost " .. module.host, 0);
	end

	options.warn_host_level(module, global_options);
	local host = module:get_host();
	local name = module:get_option_string("name", "SOCKS5 Bytestreams Service");
	local proxy_address = module:get_option_string("proxy65_address", host);
	local proxy_acl = module:get_option_array("proxy65_acl");
	local proxy_open_access = module:get_option_boolean("proxy65_open_access", false);

	module:depends("disco");
	module:add_identity("proxy", "bytestreams", name);
	module:add_feature(xmlns_bytestreams);

	-- As the built-in: a non-empty ACL alone decides; otherwise local users
	-- (c2s) are allowed, and remote ones only with open access.
	local function is_permitted(origin, stanza)
		if proxy_acl and #proxy_acl > 0 then
			local from = stanza.attr.from;
			for _, acl in ipairs(proxy_acl) do
				if jid_compare(from, acl) then
					return true;
				end
			end
			return false;
		end
		return proxy_open_access or origin.type == "c2s";
	end

	module:hook("iq-get/host/" .. xmlns_bytestreams .. ":query", function (event)
		local origin, stanza = event.origin, event.stanza;
		if not is_permitted(origin, stanza) then
			module:log("warn", "Denying use of proxy for %s", stanza.attr.from);
			origin.send(st.error_reply(stanza, "auth", "forbidden"));
			return true;
		end
		local port = listening_port();
		if not port then
			module:log("warn", "Not listening on any port");
			origin.send(st.error_reply(stanza, "wait", "item-not-found", "Not listening on any port"));
			return true;
		end
		origin.send(st.reply(stanza)
			:tag("query", { xmlns = xmlns_bytestreams, sid = stanza.tags[1].attr.sid })
			:tag("streamhost", { jid = host, host = proxy_address, port = ("%d"):format(port) }));
		return true;
	end);

	module:hook("iq-set/host/" .. xmlns_bytestreams .. ":query", function (event)
		local origin, stanza = event.origin, event.stanza;
		if not is_permitted(origin, stanza) then
			module:log("warn", "Denying use of proxy for %s", stanza.attr.from);
			origin.send(st.error_reply(stanza, "auth", "forbidden"));
			return true;
		end
		local query = stanza.tags[1];
		local sid, from = query.attr.sid, stanza.attr.from;
		local to = query:get_child_text("activate");
		if not sid or sid == "" or not to then
			origin.send(st.error_reply(stanza, "modify", "bad-request", "A sid and an activate element are required"));
			return true;
		end
		local prepped_to = jid_prep(to);
		if not prepped_to then
			origin.send(st.error_reply(stanza, "modify", "jid-malformed"));
			return true;
		end
		local hash = sha1(sid .. from .. prepped_to, true);
		local ok, condition, text = service:activate(hash);
		if ok then
			module:log("debug", "Activated %s (sid %q, initiator %s, target %s)", hash, sid, from, prepped_to);
			origin.send(st.reply(stanza));
		elseif condition == "item-not-found" then
			origin.send(st.error_reply(stanza, "modify", "item-not-found"));
		elseif condition == "not-allowed" then
			origin.send(st.error_reply(stanza, "cancel", "not-allowed", text));
		else
			module:log("error", "Activation of %s failed: %s", hash, tostring(text));
			origin.send(st.error_reply(stanza, "wait", "internal-server-error"));
		end
		return true;
	end);
end
