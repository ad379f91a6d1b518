-- prosody-cproxy: proxy65's options, one table for both front ends: the
-- Prosody module (mod_proxy65.lua) reads them from Prosody's config, the
-- standalone component (cproxy/standalone/main.lua) from its command line
-- and config file, and spec/readme_spec.lua checks the README's option
-- tables against it. An engine option's bounds, and its default unless
-- the table says otherwise and why, are the C engine's
-- (cproxy.core.engine_limits), so no bound is written twice.
-- Not here: reading one value (cproxy/options.lua), what the service does
-- with them (cproxy/proxy65/service.lua).
-- SPDX-License-Identifier: MIT

local ipairs, huge = ipairs, math.huge;
local limits = require "cproxy.core".engine_limits;

local M = {};

-- Each entry: name (as in Prosody's config, without the "proxy65_"
-- prefix), kind ("number", "integer" or "choice"), min and max (or
-- choices), default, field (where it goes in the service's settings:
-- "engine.x" for the relay engine's), and meaning. The standalone's flag is
-- the name with dashes (--partner-timeout), unless `flag` says otherwise.
-- All apply to the whole server in Prosody (global options).
local entries = {
	{ name = "handshake_timeout", kind = "number", min = 0, max = 86400, default = 10,
		meaning = "seconds a connection has to complete its SOCKS5 request; 0: no limit" },
	{ name = "partner_timeout", kind = "number", min = 0, max = 86400, default = 900,
		meaning = "seconds a SOCKS5 connection alone for its hash waits for its partner (a person may be"
			.. " reading the file offer); 0: no limit, as the built-in" },
	{ name = "activation_timeout", kind = "number", min = 1, max = 86400, default = 60,
		meaning = "seconds a pair, once both have connected, waits for its activation" },
	{ name = "idle_timeout", engine = "idle_timeout", kind = "integer", default = 300,
		-- The engine alone knows no idle peer; a proxy on the internet must.
		why_default = "the engine's own default is 0 (none): a service must end relays whose peers vanished",
		meaning = "seconds an active bytestream may move no byte before it is closed; 0: never" },
	{ name = "max_connections", kind = "integer", min = 0, max = huge, default = 0,
		meaning = "sockets held at once, pending and relayed (a bytestream holds two); 0: no limit" },
	{ name = "max_connections_per_ip", kind = "integer", min = 0, max = huge, default = 0,
		meaning = "the same, from one source address; 0: no limit" },
	{ name = "max_transfers_per_user", kind = "integer", min = 0, max = huge, default = 0,
		meaning = "active bytestreams of one initiator (bare JID); 0: no limit" },
	{ name = "rate_limit", engine = "rate_limit", kind = "integer",
		meaning = "bytes per second of each bytestream, both ways together; 0: no limit" },
	{ name = "total_rate_limit", engine = "total_rate_limit", kind = "integer",
		meaning = "bytes per second of all bytestreams together; 0: no limit" },
	{ name = "max_transfer_bytes", engine = "max_bytes", kind = "integer",
		meaning = "a bytestream that moves more is aborted; 0: no limit" },
	{ name = "relay_mode", engine = "mode", kind = "choice", choices = { "copy", "splice" }, default = "copy",
		meaning = "\"copy\" or \"splice\" (the README's Design says which to use)" },
	{ name = "buffer_size", engine = "buffer_size", kind = "integer",
		meaning = "the relay thread's copy buffer, shared by all bytestreams" },
	{ name = "relay_memory", engine = "relay_memory", kind = "integer",
		meaning = "bytes of buffers the relay thread may hold for data read and not yet sent, besides its copy"
			.. " buffer; past it, transfers leave such bytes in the kernel, at more CPU per byte; 0: never" },
	{ name = "socket_buffer", engine = "sockbuf", kind = "integer",
		meaning = "SO_SNDBUF/SO_RCVBUF for relayed sockets; 0 leaves them to the kernel" },
	{ name = "relay_nice", engine = "nice", kind = "integer", default = 10,
		why_default = "the engine's own default is 0; measured, 10 keeps Prosody's loop responsive while relaying",
		meaning = "how much nicer (0-19) the relay thread runs than the process's own thread" },
};

-- Bounds and defaults from the C engine where it has them.
for _, entry in ipairs(entries) do
	local limit = entry.engine and limits[entry.engine];
	if limit then
		entry.min, entry.max = limit.min, limit.max;
		if entry.default == nil then
			entry.default = limit.default;
		end
	end
	entry.option = "proxy65_" .. entry.name;
	entry.flag = entry.flag or entry.name:gsub("_", "-");
end
M.entries = entries;

-- Several nodes as one service (cproxy/proxy65/cluster.lua): options of
-- each component (host-level in Prosody's config), not of the server.
local cluster_entries = {
	{ name = "nodes", kind = "list", default_text = "empty",
		meaning = "the JIDs of the nodes this component is the front of: it lists their streamhosts"
			.. " and passes activations on; empty: it relays itself" },
	{ name = "fronts", kind = "list", default_text = "empty",
		meaning = "on a node: the JIDs of its fronts, the only ones it reports its load to and takes"
			.. " activations from; a node does not show itself as a proxy in disco" },
	{ name = "node_check_interval", kind = "number", min = 0.5, max = 60, default = 2,
		meaning = "seconds between a front's load requests; a node that leaves one unanswered this long"
			.. " is out of the list until it answers again" },
	{ name = "streamhost_nodes", kind = "integer", min = 1, max = 64, default = 1,
		meaning = "how many nodes' streamhosts a front's answer holds, best first: most clients try only"
			.. " the first streamhost, and slixmpp only the last" },
};
for _, entry in ipairs(cluster_entries) do
	entry.option = "proxy65_" .. entry.name;
	entry.flag = entry.name:gsub("_", "-");
end
M.cluster_entries = cluster_entries;

-- The cluster settings of one component from Prosody's config (the
-- component module's `module`): { nodes=, fronts=, node_check_interval=,
-- streamhost_nodes= }.
function M.cluster_from_prosody(module, readers)
	local settings = {};
	for _, entry in ipairs(cluster_entries) do
		if entry.kind == "list" then
			settings[entry.name] = module:get_option_array(entry.option, {});
		else
			settings[entry.name] = readers.number(module, entry.option, entry.default, entry.min, entry.max,
				entry.kind == "integer");
		end
	end
	return settings;
end

-- The options' names in Prosody's config, for its warnings about global
-- options written under a host.
function M.names()
	local names = {};
	for i, entry in ipairs(entries) do
		names[i] = entry.option;
	end
	return names;
end

-- The service's settings (cproxy/proxy65/service.lua's new() and
-- configure()) from `value(entry)`, which gives each entry's value.
function M.settings(value)
	local settings = { engine = {} };
	for _, entry in ipairs(entries) do
		local v = value(entry);
		if entry.engine then
			settings.engine[entry.engine] = v;
		else
			settings[entry.name] = v;
		end
	end
	return settings;
end

-- The settings as Prosody's config gives them: each read with `readers`
-- (cproxy/options.lua), a mistake logged, clamped or replaced by the default.
function M.from_prosody(module, readers)
	return M.settings(function (entry)
		if entry.kind == "choice" then
			return readers.choice(module, entry.option, entry.default, entry.choices);
		end
		return readers.number(module, entry.option, entry.default, entry.min, entry.max, entry.kind == "integer");
	end);
end

return M;
