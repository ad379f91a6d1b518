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
module:log("debug", "Using the C extension %s", cproxy.core_path);

local st = require "util.stanza";
local jid_compare, jid_prep, jid_bare = require "util.jid".compare, require "util.jid".prep, require "util.jid".bare;
local sha1 = require "util.hashes".sha1;
local server = require "net.server";
local timer = require "util.timer";
local time_now = require "util.time".now;
local portmanager = require "core.portmanager";

local xmlns_bytestreams = "http://jabber.org/protocol/bytestreams";

local MiB = 1024 * 1024;

-- Read once for the whole server (this module is global).
local global_options = {
	"proxy65_activation_timeout", "proxy65_handshake_timeout", "proxy65_relay_mode",
	"proxy65_buffer_size", "proxy65_idle_timeout", "proxy65_socket_buffer",
	"proxy65_max_connections", "proxy65_max_connections_per_ip", "proxy65_max_transfers_per_user",
	"proxy65_rate_limit", "proxy65_total_rate_limit", "proxy65_max_transfer_bytes",
	"proxy65_relay_nice",
};
local RATE_MAX = 2 ^ 34; -- the engine's bound (16 GiB/s)
local defaults = proxy65.defaults;
local service_options = {
	activation_timeout = options.number(module, "proxy65_activation_timeout", defaults.activation_timeout, 1, 86400);
	handshake_timeout = options.number(module, "proxy65_handshake_timeout", defaults.handshake_timeout, 0, 86400);
	max_connections = options.number(module, "proxy65_max_connections", defaults.max_connections, 0, math.huge, true);
	max_connections_per_ip = options.number(module, "proxy65_max_connections_per_ip", defaults.max_connections_per_ip, 0, math.huge, true);
	max_transfers_per_user = options.number(module, "proxy65_max_transfers_per_user", defaults.max_transfers_per_user, 0, math.huge, true);
	engine = {
		mode = options.choice(module, "proxy65_relay_mode", "copy", { "copy", "splice" });
		buffer_size = options.number(module, "proxy65_buffer_size", 4 * MiB, 4096, 256 * MiB, true);
		idle_timeout = options.number(module, "proxy65_idle_timeout", 300, 0, 86400 * 7, true);
		sockbuf = options.number(module, "proxy65_socket_buffer", 0, 0, 64 * MiB, true);
		rate_limit = options.number(module, "proxy65_rate_limit", 0, 0, RATE_MAX, true);
		total_rate_limit = options.number(module, "proxy65_total_rate_limit", 0, 0, RATE_MAX, true);
		max_bytes = options.number(module, "proxy65_max_transfer_bytes", 0, 0, 2 ^ 53, true);
		nice = options.number(module, "proxy65_relay_nice", 10, 0, 19, true);
	};
};

-- Metrics, through Prosody's statistics (mod_http_openmetrics, the shell).
local transfers_metric = module:metric("counter", "transfers", "", "Bytestreams relayed, by how they ended", { "result" });
local refused_metric = module:metric("counter", "activations_refused", "", "Activations refused, by reason", { "reason" });
local handshake_metric = module:metric("counter", "handshake_failures", "", "SOCKS5 connections closed before pairing, by reason", { "reason" });
local bytes_metric = module:metric("counter", "relayed", "bytes", "Bytes relayed, counted while bytestreams run"):with_labels();
local active_metric = module:metric("gauge", "active", "", "Active bytestreams"):with_labels();
local pending_metric = module:metric("gauge", "pending", "", "SOCKS5 connections waiting for their partner or activation"):with_labels();
local connections_metric = module:metric("gauge", "connections", "", "Sockets held, pending and relayed"):with_labels();
local limited_metric = module:metric("counter", "rate_limited", "seconds", "Time bytestreams spent waiting for a bandwidth limit"):with_labels();

local function log(level, fmt, ...)
	return module:log(level, fmt, ...);
end

local function on_finished(result)
	local how = result.timed_out and "idle" or result.error and "failed" or "completed";
	transfers_metric:with_labels(how):add(1);
end

local function on_count(counter, reason)
	if counter == "handshake_failures" then
		handshake_metric:with_labels(reason):add(1);
	end
end

service_options.log, service_options.on_finished, service_options.on_count = log, on_finished, on_count;
service_options.server, service_options.timer, service_options.now = server, timer, time_now;

-- The service outlives a module reload, so that active relays survive it.
local shared = module:shared("service");
local service = shared.service;
if service then
	-- A reload: new settings apply to what comes next (see engine:configure).
	local ok, err = service:configure(service_options);
	if not ok then
		module:log("error", "Could not apply the new relay settings, the old ones stay: %s", err);
	end
else
	local err;
	service, err = proxy65.new(service_options);
	if not service then
		error("proxy65: cannot start the relay engine: " .. tostring(err));
	end
	shared.service = service;
end

-- Gauges and the running byte count are read when statistics are
-- collected, not per event. The count outlives a reload, as the service does.
module:hook_global("stats-update", function ()
	local stats = service:stats();
	active_metric:set(stats.active);
	pending_metric:set(stats.pending);
	connections_metric:set(stats.connections);
	local counted = shared.relayed_counted or 0;
	if stats.relayed > counted then
		bytes_metric:add(stats.relayed - counted);
		shared.relayed_counted = stats.relayed;
	end
	local limited = shared.limited_counted or 0;
	if stats.limited_us > limited then
		limited_metric:add((stats.limited_us - limited) / 1e6);
		shared.limited_counted = stats.limited_us;
	end
end);

function module.unload()
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

-- "host", "host:port", "[IPv6]" or "[IPv6]:port" -> host, port (or nil);
-- a bare IPv6 address (several colons) is a host. nil if malformed.
local function parse_streamhost(entry)
	local v6, rest = entry:match("^%[([%x:.]+)%](.*)$");
	local address, port = v6, rest and rest:match("^:(%d+)$");
	if v6 then
		if rest ~= "" and not port then
			return nil;
		end
	elseif select(2, entry:gsub(":", "")) > 1 then
		address = entry:match("^[%x:.]+$");
	else
		address, port = entry:match("^([^:%s]+):(%d+)$");
		address = address or entry:match("^[^:%s]+$");
	end
	port = tonumber(port);
	if not address or (port and (port < 1 or port > 65535)) then
		return nil;
	end
	return address, port;
end

function module.add_host(module)
	if module:get_host_type() ~= "component" then
		error("proxy65 must be loaded as a Component, e.g. Component \"proxy."
			.. module.host .. "\" \"proxy65\", not on the VirtualHost " .. module.host, 0);
	end

	options.warn_host_level(module, global_options);
	local host = module:get_host();
	local name = module:get_option_string("name", "SOCKS5 Bytestreams Service");
	-- Each entry is advertised as a <streamhost/>, in order: "host" (with
	-- the port we listen on) or "host:port" / "[v6]:port" (a port forwarded
	-- to ours, behind NAT). Where we listen is proxy65_interfaces/_ports.
	local streamhosts = {};
	for _, entry in ipairs(module:get_option_array("proxy65_address", { host })) do
		local address, port = parse_streamhost(tostring(entry));
		if address then
			table.insert(streamhosts, { host = address, port = port });
		else
			module:log("error", "Config option 'proxy65_address' has an entry %q that is not host, host:port"
				.. " or [IPv6]:port; it is not advertised", tostring(entry));
		end
	end
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
		local reply = st.reply(stanza):tag("query", { xmlns = xmlns_bytestreams, sid = stanza.tags[1].attr.sid });
		for _, streamhost in ipairs(streamhosts) do
			reply:tag("streamhost", { jid = host, host = streamhost.host, port = ("%d"):format(streamhost.port or port) }):up();
		end
		origin.send(reply);
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
		local ok, condition, text = service:activate(hash, {
			sid = sid, initiator = from, user = jid_bare(from), target = prepped_to,
		});
		if ok then
			module:log("debug", "Activated %s (sid %q, initiator %s, target %s)", hash, sid, from, prepped_to);
			origin.send(st.reply(stanza));
			return true;
		end
		refused_metric:with_labels(condition):add(1);
		module:log("debug", "Refused to activate %s (sid %q, initiator %s, target %s): %s", hash, sid, from,
			prepped_to, text or condition);
		if condition == "item-not-found" then
			origin.send(st.error_reply(stanza, "modify", "item-not-found"));
		elseif condition == "not-allowed" then
			origin.send(st.error_reply(stanza, "cancel", "not-allowed", text));
		elseif condition == "resource-constraint" then
			origin.send(st.error_reply(stanza, "wait", "resource-constraint", text));
		else
			module:log("error", "Activation of %s failed: %s", hash, tostring(text));
			origin.send(st.error_reply(stanza, "wait", "internal-server-error"));
		end
		return true;
	end);
end
