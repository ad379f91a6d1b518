-- mod_proxy65: an XEP-0065 SOCKS5 Bytestreams proxy whose relay runs in C.
--
-- A drop-in for Prosody's built-in mod_proxy65: the same module name and
-- options. Putting this directory first in plugin_paths makes Prosody load
-- this module instead of the built-in one (a deliberate shadowing).
-- This file is the XMPP side: disco, streamhost queries, activation, access
-- rules. The SOCKS5 listener and pairing are in cproxy/proxy65/service.lua.
-- SPDX-License-Identifier: MIT

module:set_global();

local here = debug.getinfo(1, "S").source:match("^@(.*)/[^/]*$") or ".";
local cproxy = dofile(here .. "/cproxy/boot.lua")(here);
local proxy65 = require "cproxy.proxy65.service";
local options = require "cproxy.options";
local option_table = require "cproxy.proxy65.options";
local diagnose = require "cproxy.proxy65.diagnose";
local bytestreams = require "cproxy.proxy65.bytestreams";
local cluster = require "cproxy.proxy65.cluster";
local streamhost = require "cproxy.proxy65.streamhost";
local acl = require "cproxy.proxy65.acl";
local shell = require "cproxy.shell";
module:log("debug", "Using the C extension %s", cproxy.core_path);

local st = require "util.stanza";
local jid_split, jid_prep, jid_bare = require "util.jid".split, require "util.jid".prep, require "util.jid".bare;
local sha1 = require "util.hashes".sha1;
local server = require "net.server";
local timer = require "util.timer";
local time_now = require "util.time".now;
local portmanager = require "core.portmanager";
local new_resolver = require "net.resolvers.basic".new;
local pton = require "util.net".pton;

local xmlns_bytestreams = bytestreams.xmlns;


-- Read once for the whole server (this module is global), from the one
-- table of proxy65's options that the standalone reads too.
local global_options = option_table.names();
local service_options = option_table.from_prosody(module, options);

-- Metrics, through Prosody's statistics (mod_http_openmetrics, the shell).
local transfers_metric = module:metric("counter", "transfers", "", "Bytestreams relayed, by how they ended", { "result" });
local refused_metric = module:metric("counter", "activations_refused", "", "Activations refused, by reason", { "reason" });
local handshake_metric = module:metric("counter", "handshake_failures", "", "SOCKS5 connections closed before pairing, by reason", { "reason" });
local bytes_metric = module:metric("counter", "relayed", "bytes", "Bytes relayed, counted while bytestreams run"):with_labels();
local active_metric = module:metric("gauge", "active", "", "Active bytestreams"):with_labels();
local pending_metric = module:metric("gauge", "pending", "", "SOCKS5 connections waiting for their partner or activation"):with_labels();
local connections_metric = module:metric("gauge", "connections", "", "Sockets held, pending and relayed"):with_labels();
local alone_metric = module:metric("gauge", "awaiting_partner", "", "SOCKS5 connections alone for their hash, waiting for their partner"):with_labels();
local half_pairs_metric = module:metric("counter", "half_pairs", "", "SOCKS5 connections whose partner never came, by listening port", { "port" });
local timeouts_metric = module:metric("counter", "timeouts", "", "SOCKS5 connections closed by a timeout, by what they waited for (partner, activation)", { "wait" });
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
	elseif counter == "half_pairs" then
		half_pairs_metric:with_labels(reason):add(1);
	elseif counter == "timeouts" then
		timeouts_metric:with_labels(reason):add(1);
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
	alone_metric:set(stats.alone);
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

-- The last check of each component's streamhosts (see cproxy/proxy65/diagnose.lua),
-- and each component's way to check again.
local reports = module:shared("streamhost-reports");
local checkers = {};
-- Each front's cproxy/proxy65/cluster.lua object, by its JID.
local fronts = {};

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
		print(("Of them, waiting for their partner: %d"):format(stats.alone));
		print(("Finished relays: %d (%d failed, %d timed out)"):format(stats.finished, stats.failed, stats.timed_out));
		print(("Bytes relayed by finished relays: %d"):format(stats.bytes));
		return true, ("%d active relays, %d pending connections"):format(stats.active, stats.pending);
	end;
});

local remove_list_command = shell.add(module, {
	section = "proxy65";
	name = "list";
	desc = "List the active bytestreams: sid, initiator, target, bytes each way, age and rate";
	handler = function (self)
		local transfers, err = service:transfers();
		if not transfers then
			return false, "Cannot list the bytestreams: " .. tostring(err);
		end
		local print = self.session.print;
		for _, t in ipairs(transfers) do
			local bytes = t.to_target + t.to_initiator;
			print(("%s  %s -> %s  %d bytes to the target, %d back  %.0f s  %.1f MiB/s"):format(t.sid,
				t.initiator or "?", t.target or "?", t.to_target, t.to_initiator, t.seconds,
				bytes / math.max(t.seconds, 0.001) / 1048576));
		end
		return true, ("%d active bytestreams"):format(#transfers);
	end;
});

local remove_close_command = shell.add(module, {
	section = "proxy65";
	name = "close";
	desc = "End an active bytestream, named by its sid (see proxy65:list()); both peers are reset";
	args = { { name = "sid", type = "string" } };
	handler = function (_, sid)
		local ok, err = service:cancel(tostring(sid));
		if not ok then
			return false, ("No active bytestream %q (%s)"):format(tostring(sid), tostring(err));
		end
		return true, ("Closing bytestream %q"):format(tostring(sid));
	end;
});

local remove_nodes_command = shell.add(module, {
	section = "proxy65";
	name = "nodes";
	desc = "Show each front's nodes: in the list or why not, and their last load report";
	handler = function (self)
		local print = self.session.print;
		local count, up = 0, 0;
		for host, front in pairs(fronts) do
			for _, node in ipairs(front:status()) do
				count = count + 1;
				up = up + (node.up and 1 or 0);
				print(("%s: node %s: %s; %d streamhosts, %d active, %d pending, %d connections (cap %d), %.1f MiB/s"):format(
					host, node.jid, node.up and "in the list" or ("out: " .. tostring(node.reason or "no answer yet")),
					node.streamhosts, node.active, node.pending, node.connections, node.max_connections,
					node.rate / 1048576));
			end
		end
		return true, ("%d of %d nodes in the list"):format(up, count);
	end;
});

local remove_check_command = shell.add(module, {
	section = "proxy65";
	name = "check";
	desc = "Show whether clients can reach each advertised streamhost, and start a new check";
	handler = function (self)
		local print = self.session.print;
		local problems = 0;
		for host, report in pairs(reports) do
			for _, entry in ipairs(report) do
				if #entry.problems == 0 then
					print(("%s: streamhost %s: reachable"):format(host, entry.streamhost));
				end
				for _, problem in ipairs(entry.problems) do
					problems = problems + 1;
					print(("%s: streamhost %s: %s"):format(host, entry.streamhost, problem));
				end
			end
		end
		-- Connections whose partner never came: the mark of an address
		-- the other party cannot reach. Which party came is not known.
		for port, count in pairs(service.half_pairs) do
			print(("Port %s: %d connections whose partner never connected"):format(port, count));
		end
		for _, check in pairs(checkers) do
			check();
		end
		return true, ("%d problems found; checking again (run this again in a few seconds for the result)"):format(problems);
	end;
});

function module.unload()
	remove_check_command();
	remove_nodes_command();
	remove_shell_command();
	remove_list_command();
	remove_close_command();
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

local function listening_ports()
	local ports = {};
	for _, by_port in ipairs(portmanager.get_active_services():search("proxy65", nil)) do
		for port in pairs(by_port) do
			table.insert(ports, port);
		end
	end
	table.sort(ports);
	return ports;
end

local function listening_port()
	return listening_ports()[1];
end

-- All addresses of a name (or the address itself), through Prosody's
-- asynchronous resolver.
local function resolve(host, port, callback)
	local resolver = new_resolver(host, port, "tcp", {});
	local addresses = {};
	local function collect(conn_type, ip)
		if not conn_type then
			return callback(addresses, resolver.last_error);
		end
		table.insert(addresses, ip);
		return resolver:next(collect);
	end
	resolver:next(collect);
end

local diagnose_deps = { resolve = resolve, connect = server.addclient, timer = timer, pton = pton };


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
		local address, port = streamhost.parse(tostring(entry));
		if address then
			table.insert(streamhosts, { host = address, port = port });
		else
			module:log("error", "Config option 'proxy65_address' has an entry %q that is not host, host:port"
				.. " or [IPv6]:port; it is not advertised", tostring(entry));
		end
	end
	local cluster_settings = option_table.cluster_from_prosody(module, options);
	local proxy_acl = module:get_option_array("proxy65_acl");
	local proxy_open_access = module:get_option_boolean("proxy65_open_access", false);

	-- Once the loop runs: ports are open then, and lookups can complete.
	local function check_streamhosts(done)
		diagnose.check(diagnose_deps, host, streamhosts, listening_ports(), function (report)
			reports[host] = report;
			for _, entry in ipairs(report) do
				for _, problem in ipairs(entry.problems) do
					module:log("warn", "Streamhost %s: %s", entry.streamhost, problem);
				end
				if #entry.problems == 0 then
					module:log("debug", "Streamhost %s is reachable", entry.streamhost);
				end
			end
			if done then
				done(report);
			end
		end);
	end
	checkers[host] = check_streamhosts;
	module:hook("module-unloaded", function (event)
		if event.module == "proxy65" and event.host == host then
			checkers[host] = nil;
		end
	end);
	if #cluster_settings.nodes == 0 then -- a front advertises no streamhost of its own
		module:add_timer(0, function ()
			check_streamhosts();
		end);
	end

	-- Several nodes as one service (cproxy/proxy65/cluster.lua): this
	-- component may be a front, listing its nodes, or a node, answering its
	-- fronts, and then not shown as a proxy to clients.
	local front;
	if #cluster_settings.nodes > 0 then
		-- The host module's timers: they end with it, on unload and on
		-- reload, which then makes a new front.
		local host_timer = {
			add_task = function (delay, f) return module:add_timer(delay, function () return f(); end); end,
			stop = function (t) t:stop(); end,
		};
		front = cluster.front({ host = host, nodes = cluster_settings.nodes,
			interval = cluster_settings.node_check_interval, listed = cluster_settings.streamhost_nodes,
			st = st, send = function (stanza) module:send(stanza); end, timer = host_timer, now = time_now,
			log = function (level, fmt, ...) return module:log(level, fmt, ...); end });
		fronts[host] = front;
		module:add_timer(0, function ()
			front:start();
		end);
		-- The nodes' answers, before mod_iq looks for a handler of their id.
		module:hook("iq/host", function (event)
			local kind = event.stanza.attr.type;
			if (kind == "result" or kind == "error") and front:on_reply(event.stanza) then
				return true;
			end
		end, 10);
	end

	module:depends("disco");
	if front or #cluster_settings.fronts == 0 then
		module:add_identity("proxy", "bytestreams", name);
		module:add_feature(xmlns_bytestreams);
	else
		-- A node: not a proxy for clients to find, but disco#info needs an
		-- identity.
		module:add_identity("component", "generic", name);
	end

	-- As the built-in: a non-empty ACL alone decides; otherwise local users
	-- (c2s) are allowed, and remote ones only with open access.
	local function is_permitted(origin, stanza)
		if proxy_acl and #proxy_acl > 0 then
			return acl.admits(proxy_acl, stanza.attr.from, jid_split);
		end
		return proxy_open_access or origin.type == "c2s";
	end

	local ctx = {
		st = st, host = host, streamhosts = streamhosts, port = listening_port,
		service = service, jid_prep = jid_prep, jid_bare = jid_bare,
		sha1 = function (data) return sha1(data, true); end,
		log = function (level, fmt, ...) return module:log(level, fmt, ...); end,
		refused = function (condition) refused_metric:with_labels(condition):add(1); end,
		report = function () return reports[host]; end,
		-- As a node: whom it answers, and what its load report holds.
		fronts = cluster_settings.fronts, max_connections = service_options.max_connections,
		rate = cluster.rate_meter(time_now),
	};
	-- The requester's address where this server has its session: for the
	-- streamhosts' order, and to tell its connection from its peer's.
	local function set_origin(event)
		ctx.permitted = function (stanza) return is_permitted(event.origin, stanza); end;
		local origin = event.origin;
		ctx.origin_ip = origin.type == "c2s" and origin.full_jid == event.stanza.attr.from and origin.ip or nil;
	end

	module:hook("iq-get/host/" .. xmlns_bytestreams .. ":query", function (event)
		set_origin(event);
		event.origin.send(front and cluster.query(front, ctx, event.stanza) or bytestreams.query(ctx, event.stanza));
		return true;
	end);

	module:hook("iq-set/host/" .. xmlns_bytestreams .. ":query", function (event)
		set_origin(event);
		if front then
			-- Answered once the nodes have, through the router: the
			-- requester's session may be gone by then.
			cluster.activate_at_front(front, ctx, event.stanza, function (reply) module:send(reply); end);
		else
			event.origin.send(bytestreams.activate(ctx, event.stanza));
		end
		return true;
	end);

	module:hook("iq-get/host/" .. cluster.xmlns .. ":load", function (event)
		set_origin(event);
		event.origin.send(cluster.load(ctx, event.stanza));
		return true;
	end);

	module:hook("iq-set/host/" .. cluster.xmlns .. ":activate", function (event)
		set_origin(event);
		event.origin.send(cluster.activate(ctx, event.stanza));
		return true;
	end);
end
