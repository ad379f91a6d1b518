-- mod_client_proxy: Jabber Address Translation (JAT) in front of a client.
--
-- IQ requests and messages sent to this component go to a resource of the
-- target account (the "implementing client"), from component/ADDRESS.
-- ADDRESS is the sender's full JID by default, as prosody-modules' module
-- writes it (implementing clients such as Jitsi's jicofo read it), or with
-- client_proxy_addressing = "tag" an unforgeable 16-character name of it,
-- made and turned back by the C extension (src/jat.c, src/jat_lua.c).
-- Replies are routed back only when they answer a request in flight: the
-- fresh id it was sent with, from the resource it went to, to the address
-- it came from (whatever the addressing); the implementing client can
-- also start IQs and messages to component/ADDRESS, which reach the JID
-- behind ADDRESS if it wrote to the component lately.
-- A superset of prosody-modules' mod_client_proxy, with its configuration.
-- Resource choice is in cproxy/client_proxy/resources.lua, the requests in flight in
-- cproxy/client_proxy/requests.lua, the recent senders in cproxy/client_proxy/recent.lua.
-- SPDX-License-Identifier: MIT

local here = debug.getinfo(1, "S").source:match("^@(.*)/[^/]*$") or ".";
local cproxy = dofile(here .. "/cproxy/boot.lua")(here);
local option_table = require "cproxy.client_proxy.options";
local routing = require "cproxy.client_proxy.router";
local recent = require "cproxy.client_proxy.recent";
local options = require "cproxy.options";
module:log("debug", "Using the C extension %s", cproxy.core_path);

local st = require "util.stanza";
local jid_split, jid_bare, jid_prep = require "util.jid".split, require "util.jid".bare, require "util.jid".prep;
local new_prefix = require "util.id".custom(6); -- 48 random bits, 8 characters
local time_now = require "util.time".now;


local host = module.host;

if module:get_host_type() ~= "component" then
	error("client_proxy must be loaded as a Component, not on the VirtualHost " .. host
		.. " (Component \"proxy." .. host .. "\" \"client_proxy\")", 0);
end

-- From the one table of client_proxy's options that bin/client_proxy reads too.
local settings = option_table.from_prosody(module, options);

-- An account's bare JID: a domain or a full JID would never match the
-- stanzas the implementing client sends.
local target = settings.target;
local target_node, target_host, target_resource = jid_split(target and jid_prep(target));
if not target_node or target_resource then
	error("client_proxy: target_address must be set to the bare JID of the implementing client"
		.. " (user@host), got " .. tostring(target), 0);
end
target = target_node .. "@" .. target_host;

local secret, contact_window = settings.secret, settings.contact_window;

-- The key survives a module reload, so tags handed out before it stay valid.
local shared = module:shared("key");
if not shared.key or shared.secret ~= secret then
	if shared.key then
		shared.key:close();
	end
	shared.key = assert(cproxy.core.jat(secret, host));
	shared.secret = secret;
end
local key = shared.key;

-- The JIDs that wrote lately, for "jid" addressing; kept across a reload,
-- with the C extension's bounds (the same as for the tags' JIDs).
if not shared.recent then
	shared.recent = recent.new(contact_window, cproxy.core.jat_generation_jids,
		cproxy.core.jat_generation_bytes, time_now());
end
local senders = shared.recent;
senders.window = contact_window;

-- One series, not one per resource: Prosody 0.12's metric families cannot
-- drop a label set, and a client with random resources would add one on
-- every login.
local pending_gauge = module:metric("gauge", "pending", "", "IQ requests in flight, both ways", {}):with_labels();
local available_gauge = module:metric("gauge", "targets_available", "",
	"Resources of the implementing client that requests can be routed to", {}):with_labels();
local counters = {};
for _, name in ipairs({ "routed", "replies", "timeouts", "failovers", "bad_answers", "dropped", "messages", "refused" }) do
	counters[name] = module:measure(name, "counter");
end

local router = routing.new({
	host = host, target = target, st = st, jid_split = jid_split, jid_bare = jid_bare, jid_prep = jid_prep,
	send = function (stanza) return module:send(stanza); end,
	log = function (level, fmt, ...) return module:log(level, fmt, ...); end,
	now = time_now,
	add_timer = function (seconds, f) return module:add_timer(seconds, f); end,
	count = function (name) counters[name](1); end,
	key = key, senders = senders, addressing = settings.addressing, tag_length = cproxy.core.jat_tag_length,
	policy = settings.policy, preferred = settings.preferred, request_timeout = settings.request_timeout,
	max_pending = settings.max_pending, max_per_sender = settings.max_per_sender,
	-- A fresh prefix per load: a late reply to the previous load's ids
	-- matches nothing.
	id_prefix = new_prefix() .. "-",
});
local pool, inflight = router.pool, router.inflight;

module:hook_global("stats-update", function ()
	pending_gauge:set(inflight.count);
	available_gauge:set(pool:count());
end);

local function on_stanza(event)
	return router.on_stanza(event.stanza);
end

for _, kind in ipairs({ "iq", "message", "presence" }) do
	for _, to_type in ipairs({ "host", "bare", "full" }) do
		module:hook(kind .. "/" .. to_type, on_stanza, -1);
	end
end

-- A target that is an account of this server (Jitsi's focus@auth.domain)
-- has its sessions in this process: they are tracked directly, with no
-- subscription. The roster entry a subscription needs is what Jitsi
-- deployments lose most (jicofo #849, jitsi-meet #8388): without it a
-- subscribed component learns no presence and answers every request with
-- service-unavailable.
local tracking_locally = false;
local resource_available, resource_gone, priority_of = router.resource_available, router.resource_gone, router.priority_of;

local function track_sessions()
	if tracking_locally then
		return;
	end
	tracking_locally = true;
	router.track_locally();
	module:log("debug", "Tracking %s's sessions on this server, with no subscription", target);
	local on_target_host = module:context(target_host);
	-- Each available session now.
	local user = prosody.bare_sessions[target];
	for resource, session in pairs(user and user.sessions or {}) do
		if session.presence then
			resource_available(resource, priority_of(session.presence));
		end
	end
	-- A session's own presence, as it broadcasts it (no 'to'): before
	-- mod_presence handles it, and left for it to handle.
	on_target_host:hook("presence/bare", function (event)
		local origin, stanza = event.origin, event.stanza;
		if origin.type ~= "c2s" or origin.username ~= target_node or stanza.attr.to ~= nil or not origin.resource then
			return;
		end
		local type_ = stanza.attr.type;
		if type_ == nil then
			resource_available(origin.resource, priority_of(stanza));
		elseif type_ == "unavailable" then
			resource_gone(origin.resource);
		end
	end, 10);
	on_target_host:hook("resource-unbind", function (event)
		local session = event.session;
		if session.username == target_node and session.resource then
			resource_gone(session.resource);
		end
	end);
end

-- Start-up order must not matter: once the target's host is up (now, or
-- whenever it (re)activates), its sessions are tracked if it is one of
-- this server's, and the component subscribes to the target's presence,
-- which a remote target's resources are learnt from.
-- The priority lets the module manager load that host's modules (roster,
-- presence) first.
local function target_host_up()
	local target_host_session = prosody.hosts[target_host];
	if target_host_session and target_host_session.type == "local" then
		track_sessions();
	end
	-- Also for a local target: harmless, and what the module this one
	-- replaces does, so an implementing client that waits for it is served.
	router.subscribe();
end

module:hook_global("host-activated", function (activated)
	if activated == target_host then
		target_host_up();
	end
end, -100);

-- A local target host that is not up yet will announce itself.
if prosody.hosts[target_host] or not require "core.configmanager".getconfig()[target_host] then
	target_host_up();
end

function module.unload()
	-- Nobody will answer these any more; tell their senders now.
	router.fail_all("cancel", "service-unavailable", "The service is restarting");
	pending_gauge:set(0); -- the metric family outlives this module instance
end
