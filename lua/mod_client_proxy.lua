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
local resources = require "cproxy.client_proxy.resources";
local requests = require "cproxy.client_proxy.requests";
local recent = require "cproxy.client_proxy.recent";
local options = require "cproxy.options";
module:log("debug", "Using the C extension %s", cproxy.core_path);

local st = require "util.stanza";
local jid_split, jid_bare, jid_prep = require "util.jid".split, require "util.jid".bare, require "util.jid".prep;
local new_prefix = require "util.id".custom(6); -- 48 random bits, 8 characters
local time_now = require "util.time".now;
local find, match, sub = string.find, string.match, string.sub;

local host = module.host;

if module:get_host_type() ~= "component" then
	error("client_proxy must be loaded as a Component, not on the VirtualHost " .. host
		.. " (Component \"proxy." .. host .. "\" \"client_proxy\")", 0);
end

-- An account's bare JID: a domain or a full JID would never match the
-- stanzas the implementing client sends.
local target = module:get_option_string("target_address");
local target_node, target_host, target_resource = jid_split(target and jid_prep(target));
if not target_node or target_resource then
	error("client_proxy: target_address must be set to the bare JID of the implementing client"
		.. " (user@host), got " .. tostring(target), 0);
end
target = target_node .. "@" .. target_host;

local policy = options.choice(module, "client_proxy_policy", "random", resources.policies);
local preferred = module:get_option_array("client_proxy_resources", {});
local request_timeout = options.number(module, "client_proxy_timeout", 30, 1, 86400);
local max_pending = options.number(module, "client_proxy_max_pending", 10000, 1, 1000000, true);
local max_per_sender = options.number(module, "client_proxy_max_pending_per_sender", 100, 1, 1000000, true);
local secret = module:get_option_string("client_proxy_secret");
local addressing = options.choice(module, "client_proxy_addressing", "jid", { "jid", "tag" });
local contact_window = options.number(module, "client_proxy_contact_window", 3600, 60, 604800);

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

-- A resource holds at most 1023 bytes (RFC 7622), a full JID up to 3071: a
-- longer sender JID cannot be written into component/JID, and gets a tag
-- instead (as with client_proxy_addressing = "tag"), which replies and the
-- implementing client's own requests reach it through.
local RESOURCE_MAX = 1023;

-- The address part for `sender` (a full JID) in component/ADDRESS, or nil
-- when it cannot be carried. Marks the sender as one that wrote lately.
local address_of;
-- The JID behind ADDRESS, or nil, "unknown" | "invalid".
local peer_of;
if addressing == "jid" then
	function address_of(sender, now)
		if #sender > RESOURCE_MAX then
			return (key:encode(sender));
		end
		senders:put(sender, now);
		return sender;
	end
	function peer_of(address)
		local now = time_now();
		if senders:has(address, now) then
			return address;
		end
		local prepped = jid_prep(address); -- as the implementing client may have spelled it
		if prepped and prepped ~= address and senders:has(prepped, now) then
			return prepped;
		end
		local long = #address == cproxy.core.jat_tag_length and key:decode(address);
		if long then
			return long;
		end
		return nil, prepped and "unknown" or "invalid";
	end
else
	function address_of(sender)
		return (key:encode(sender));
	end
	function peer_of(address)
		return key:decode(address);
	end
end


local measure_routed = module:measure("routed", "counter");
local measure_replies = module:measure("replies", "counter");
local measure_timeouts = module:measure("timeouts", "counter");
local measure_failovers = module:measure("failovers", "counter");
local measure_dropped = module:measure("dropped", "counter");
local measure_messages = module:measure("messages", "counter");
local measure_refused = module:measure("refused", "counter");
-- One series, not one per resource: Prosody 0.12's metric families cannot
-- drop a label set, and a client with random resources would add one on
-- every login.
local pending_gauge = module:metric("gauge", "pending", "", "IQ requests in flight, both ways", {}):with_labels();
local available_gauge = module:metric("gauge", "targets_available", "",
	"Resources of the implementing client that requests can be routed to", {}):with_labels();
local measure_bad_answers = module:measure("bad_answers", "counter");

local pool = assert(resources.new(policy, preferred));
-- Whether the target's sessions are tracked in this process (see
-- track_sessions, below) rather than through a presence subscription.
local tracking_locally = false;
-- Only least_pending reads the requests in flight per resource: the other
-- policies skip that bookkeeping on every request.
local per_resource = policy == "least_pending";

-- Requests in flight, both ways, under fresh ids: a user's request is
-- sent to the implementing client with one (its own id comes back in the
-- reply), and so is the implementing client's to a user (two resources
-- may use the same id). The per-load prefix keeps them apart from a
-- previous load's. A record is `in` (from a user) or `out` (started by
-- the implementing client).
local inflight = requests.new({
	timeout = request_timeout, max_pending = max_pending, max_per_owner = max_per_sender,
	prefix = new_prefix() .. "-",
});
local sweep_timer;

module:hook_global("stats-update", function ()
	pending_gauge:set(inflight.count);
	available_gauge:set(pool:count());
end);

-- Says once, when the last resource goes (or the first request finds
-- none), that requests now fail, and once when one is back.
local none_logged = false;
local function log_availability()
	local available = pool:count() > 0;
	if not available and not none_logged then
		none_logged = true;
		module:log("warn", "No resource of %s is available: requests get service-unavailable until one is", target);
	elseif available and none_logged then
		none_logged = false;
		module:log("info", "%s is available again", target);
	end
end

-- An error to whoever sent the request of `record`, as if from the address
-- the request was sent to.
local function send_error(record, type_, condition, text)
	local request = st.iq({ type = record.stanza and "get" or "set", id = record.id, from = record.sender, to = record.via });
	module:send(st.error_reply(request, type_, condition, text));
end

local function finish(record)
	if inflight:finish(record) and per_resource and record.kind == "in" then
		pool:add_pending(record.resource, -1);
	end
end

-- Once a second while anything is in flight: O(requests in flight).
local function expire()
	for _, record in ipairs(inflight:expire(time_now())) do
		if per_resource and record.kind == "in" then
			pool:add_pending(record.resource, -1);
		end
		measure_timeouts(1);
		module:log("debug", "No reply from %s/%s to %s's %s in %gs", target, record.resource,
			record.sender, record.id, request_timeout);
		send_error(record, "wait", "remote-server-timeout", "The implementing client did not reply in time");
	end
	if inflight:empty() then
		sweep_timer = nil;
		return;
	end
	return 1;
end

local function arm_timer()
	if not sweep_timer then
		sweep_timer = module:add_timer(1, expire);
	end
end

-- Records of users' requests are reused once their reply has gone: the
-- one table a request would otherwise allocate is most of what this
-- module adds to Prosody's garbage per stanza. Only the reply path gives
-- one back, when nothing else can refer to it.
local SPARE_MAX = 256;
local spare, spare_count = {}, 0;

local function take_record()
	if spare_count > 0 then
		local record = spare[spare_count];
		spare[spare_count], spare_count = nil, spare_count - 1;
		return record;
	end
	-- Every field named, so that the table is built at its final size.
	return {
		kind = "in", sender = false, via = false, id = false, address = false, stanza = false,
		resource = false, fresh_id = false, owner = false, deadline = 0, sent_from = false, sent_to = false,
		tried = false,
	};
end

local function give_back(record)
	if spare_count < SPARE_MAX then
		record.stanza, record.tried = false, false; -- let the stanza go
		spare_count = spare_count + 1;
		spare[spare_count] = record;
	end
end

-- Sends a user's request, held under record.fresh_id, to `resource`.
local function dispatch(record, stanza, resource)
	record.resource = resource;
	if per_resource then
		pool:add_pending(resource, 1);
	end
	-- A genuine reply comes back with exactly these two addresses swapped.
	local from, to = host .. "/" .. record.address, target .. "/" .. resource;
	record.sent_from, record.sent_to = from, to;
	stanza.attr.from, stanza.attr.to, stanza.attr.id = from, to, record.fresh_id;
	module:send(stanza);
end

local refusals = {
	overall = "Too many requests are in flight to this service";
	sender = "Too many of your requests are in flight to this service";
};

-- Holds `record`, or answers `stanza` with resource-constraint.
local function hold(record, stanza, owner, now)
	local id, over = inflight:add(record, owner, now);
	if not id then
		measure_refused(1);
		module:log("debug", "Refused %s's %s: %s", record.sender, record.id, refusals[over]);
		module:send(st.error_reply(stanza, "wait", "resource-constraint", refusals[over]));
		return false;
	end
	arm_timer();
	return true;
end

-- A request from a user (anyone but the target).
local function route_request(stanza)
	local sender, id = stanza.attr.from, stanza.attr.id;
	if id == nil then -- s2s and components may send one
		module:send(st.error_reply(stanza, "modify", "bad-request", "An IQ request needs an id"));
		return true;
	end
	local now = time_now();
	local resource = pool:choose(sender, now);
	if not resource then
		log_availability();
		module:send(st.error_reply(stanza, "cancel", "service-unavailable", "No implementing client is available"));
		return true;
	end
	local address = address_of(sender, now);
	if not address then
		module:send(st.error_reply(stanza, "modify", "jid-malformed", "The sender's address is too long to be carried"));
		return true;
	end
	local record = take_record();
	record.sender, record.via, record.id, record.address = sender, stanza.attr.to, id, address;
	-- A get may be re-sent to another resource if this one goes away.
	record.stanza = stanza.attr.type == "get" and stanza or false;
	if not hold(record, stanza, match(sender, "^[^/]*"), now) then -- by bare JID
		return true;
	end
	dispatch(record, stanza, resource);
	measure_routed(1);
	return true;
end

-- Re-sends a get to another resource, or fails the request: a set may have
-- taken effect, so it is never repeated. The fresh id stays: a late reply
-- from the resource that left no longer matches, as it comes from elsewhere.
local function reroute(record, gone)
	if per_resource then
		pool:add_pending(gone, -1);
	end
	local other = record.stanza and pool:choose(record.sender, time_now(), record.tried or nil);
	if other then
		measure_failovers(1);
		module:log("debug", "Re-sent %s's %s from %s to %s", record.sender, record.id, gone, other);
		dispatch(record, st.clone(record.stanza), other);
		return;
	end
	inflight:finish(record);
	module:log("debug", "%s went away with %s's %s %s", gone, record.sender, record.stanza and "get" or "set", record.id);
	send_error(record, "cancel", "recipient-unavailable", "The implementing client went away");
end

local function went_to(record, resource)
	return record.kind == "in" and record.resource == resource;
end

local function started_by(record, resource)
	return record.kind == "out" and record.resource == resource;
end

-- Moves or fails the requests sent to a resource that went away, and
-- forgets those it started: their replies have nowhere to go.
local function fail_over(resource)
	for _, record in ipairs(inflight:select(went_to, resource)) do
		reroute(record, resource);
	end
	for _, record in ipairs(inflight:select(started_by, resource)) do
		inflight:finish(record);
	end
end

local function resource_gone(resource)
	if pool:remove(resource) then
		module:log("debug", "%s/%s is unavailable", target, resource);
	end
	fail_over(resource);
	log_availability();
end

local function all_gone()
	for _, resource in ipairs(pool:clear()) do
		fail_over(resource);
	end
	log_availability();
end

local function resource_available(resource, priority)
	if not pool:has(resource) then
		module:log("debug", "%s/%s is available (priority %d)", target, resource, priority);
	end
	pool:set(resource, priority);
	log_availability();
end

-- A presence's priority, as Prosody reads it: an integer from -128 to 127,
-- 0 when missing or malformed.
local function priority_of(stanza)
	local text = stanza:get_child_text("priority");
	local priority = text and match(text, "^[+-]?%d+$") and tonumber(text) or 0;
	return priority < -128 and -128 or priority > 127 and 127 or priority;
end

-- Asks for the target's presence and subscribes to it. Harmless to repeat.
-- The probe goes first: while the subscription is not approved, the
-- target's server answers a probe with "unsubscribed", which would cancel
-- a subscription request sent before it.
local function subscribe()
	module:log("debug", "Subscribing to %s", target);
	module:send(st.presence({ type = "probe", from = host, to = target }));
	module:send(st.presence({ type = "subscribe", from = host, to = target }));
end

local function on_target_presence(stanza)
	local _, _, resource = jid_split(stanza.attr.from);
	local type_ = stanza.attr.type;
	if tracking_locally and type_ ~= "subscribe" and type_ ~= "probe" then
		-- The sessions say it all; presence from an old subscription would
		-- only repeat it, or (unsubscribed, error) wrongly clear it.
		return true;
	end
	if type_ == nil then
		if resource then
			resource_available(resource, priority_of(stanza));
		end
	elseif type_ == "unavailable" then
		if resource then
			resource_gone(resource);
		else
			all_gone();
		end
	elseif type_ == "error" then
		all_gone();
	elseif type_ == "subscribe" then
		module:send(st.presence({ type = "subscribed", from = host, to = target }));
	elseif type_ == "subscribed" then
		module:log("info", "%s accepted the subscription", target);
		module:send(st.presence({ type = "probe", from = host, to = target }));
	elseif type_ == "unsubscribed" then
		module:log("warn", "%s has not accepted this component's subscription, and is not an account of this server"
			.. " whose sessions could be seen directly: no request can be routed until its roster has the"
			.. " subscription (lost with the roster entry, as after an upgrade or a failed mod_roster_command)", target);
		all_gone();
	elseif type_ == "probe" then
		module:send(st.presence({ from = host, to = stanza.attr.from }));
	end
	return true;
end

local function drop(stanza, why)
	measure_dropped(1);
	module:log("debug", "Dropped %s %s from %s to %s: %s", stanza.name, stanza.attr.type or "", stanza.attr.from,
		stanza.attr.to, why);
	return true;
end

-- The request in flight that `stanza`, a result or error, answers: one
-- sent with its id, to the resource it comes from, from the address it
-- goes to. Whole addresses are compared, so nothing is split or copied.
local function answered_by(stanza)
	local attr = stanza.attr;
	local record = inflight:get(attr.id);
	if record and record.kind == "in" and record.sent_to == attr.from and record.sent_from == attr.to then
		return record;
	end
end

-- Errors a healthy implementation does not send for a request it can
-- answer: the resource is broken or misconfigured (jitsi-meet #14049), not
-- the request.
local BAD_ANSWERS = {
	["service-unavailable"] = true, ["feature-not-implemented"] = true, ["recipient-unavailable"] = true,
};
local xmlns_stanzas = "urn:ietf:params:xml:ns:xmpp-stanzas";

local function is_bad_answer(stanza)
	local err = stanza.attr.type == "error" and stanza:get_child("error");
	if not err then
		return false;
	end
	for condition in err:childtags(nil, xmlns_stanzas) do
		if condition.name ~= "text" then
			return BAD_ANSWERS[condition.name] == true;
		end
	end
	return false;
end

-- A bad answer to a user's request: counted against the resource, and a
-- get is tried on another resource it has not been to (a set may have
-- taken effect, so it is never repeated). Returns true if it was re-sent.
local function retry_elsewhere(record)
	local now, resource = time_now(), record.resource;
	measure_bad_answers(1);
	if pool:failed(resource, now) then
		module:log("warn", "%s/%s keeps answering with errors a working implementation would not send:"
			.. " it gets no requests for %d s", target, resource, resources.QUARANTINE_SECONDS);
	end
	if not record.stanza then
		return false;
	end
	local tried = record.tried or {};
	tried[resource] = true;
	record.tried = tried;
	local other = pool:choose(record.sender, now, tried);
	if not other then
		return false;
	end
	if per_resource then
		pool:add_pending(resource, -1);
	end
	measure_failovers(1);
	module:log("debug", "Re-sent %s's %s from %s, which failed it, to %s", record.sender, record.id, resource, other);
	dispatch(record, st.clone(record.stanza), other);
	return true;
end

-- A reply from the target to a user's request: passed back to the user.
local function on_target_reply(stanza, record)
	if is_bad_answer(stanza) then
		if retry_elsewhere(record) then
			return true;
		end
	else
		pool:succeeded(record.resource);
	end
	finish(record);
	measure_replies(1);
	stanza.attr.from, stanza.attr.to, stanza.attr.id = record.via, record.sender, record.id;
	give_back(record);
	module:send(stanza);
	return true;
end

-- An IQ request or a message from the target to component/ADDRESS.
local function on_target_request(stanza, resource, address)
	local peer, err = peer_of(address);
	if not peer then
		if stanza.attr.type ~= "error" and stanza.attr.type ~= "result" then
			module:send(st.error_reply(stanza, "cancel", "item-not-found",
				err == "unknown" and "No one with this address has contacted this component lately" or "Not an address of this component"));
		end
		return drop(stanza, "the address is " .. err);
	end
	if stanza.name == "message" then
		measure_messages(1);
		stanza.attr.from, stanza.attr.to = host, peer;
		module:send(stanza);
		return true;
	end
	if stanza.attr.id == nil then
		module:send(st.error_reply(stanza, "modify", "bad-request", "An IQ request needs an id"));
		return true;
	end
	local record = {
		kind = "out", resource = resource, id = stanza.attr.id, sender = stanza.attr.from, via = stanza.attr.to, peer = peer,
	};
	if not hold(record, stanza, nil, time_now()) then
		return true;
	end
	measure_routed(1);
	stanza.attr.from, stanza.attr.to, stanza.attr.id = host, peer, record.fresh_id;
	module:send(stanza);
	return true;
end

-- A user's reply to a request the implementing client started.
local function on_user_reply(stanza)
	local record = inflight:get(stanza.attr.id);
	if not record or record.kind ~= "out" or record.peer ~= stanza.attr.from then
		return drop(stanza, "not a reply to a pending request");
	end
	finish(record);
	measure_replies(1);
	stanza.attr.from, stanza.attr.to, stanza.attr.id = record.via, record.sender, record.id;
	module:send(stanza);
	return true;
end

local function is_request(stanza)
	return stanza.name == "iq" and (stanza.attr.type == "get" or stanza.attr.type == "set");
end

-- Plain prefix tests: this runs for every stanza, and a JID split per
-- address would allocate its parts each time.
local host_prefix, target_prefix = host .. "/", target .. "/";

-- The resource part of `address` if it starts with `prefix`.
local function resource_after(address, prefix)
	if address and find(address, prefix, 1, true) == 1 and #address > #prefix then
		return sub(address, #prefix + 1);
	end
end

-- For node@component and node@component/res, which prosody-modules'
-- module served like the component: true and the resource, if any.
local function node_address(to)
	local at = find(to, "@", 1, true);
	if not at then
		return false;
	end
	local slash = find(to, "/", 1, true);
	if slash and slash < at then
		return false; -- component/res@..., not a node
	end
	local rest = sub(to, at + 1);
	if rest == host then
		return true, nil;
	end
	local resource = resource_after(rest, host_prefix);
	return resource ~= nil, resource;
end

local function on_stanza(event)
	local stanza = event.stanza;
	local from, to = stanza.attr.from, stanza.attr.to;
	if stanza.name == "iq" and (stanza.attr.type == "result" or stanza.attr.type == "error") then
		local record = answered_by(stanza); -- first: half of all the traffic
		if record then
			return on_target_reply(stanza, record);
		end
	end
	local to_resource = resource_after(to, host_prefix);
	local to_host = to == host;
	if not to_resource and not to_host then
		local ours;
		ours, to_resource = node_address(to or "");
		if not ours then
			return; -- not ours (cannot happen for a component, but cheap to check)
		end
	end
	local from_resource = resource_after(from, target_prefix);
	if stanza.name == "presence" then
		-- Only presence to the component itself says whether the target is
		-- available; presence directed at component/X or node@component
		-- does not.
		if to_host and (from_resource or jid_bare(from) == target) then
			return on_target_presence(stanza);
		end
		if from_resource then
			return drop(stanza, "directed presence");
		end
		return; -- others' presence is not ours to handle
	end
	if from_resource then
		if stanza.name == "iq" and not is_request(stanza) then
			return drop(stanza, "not a reply to a pending request");
		end
		if not to_resource then
			if stanza.attr.type ~= "error" then
				module:send(st.error_reply(stanza, "cancel", "feature-not-implemented",
					"Address component/ADDRESS, where ADDRESS is the resource requests came from"));
			end
			return true;
		end
		return on_target_request(stanza, from_resource, to_resource);
	end
	if is_request(stanza) then
		return route_request(stanza);
	end
	if stanza.name == "iq" then
		if to_resource then
			return drop(stanza, "replies go to the component's bare address");
		end
		return on_user_reply(stanza);
	end
	-- A message from a user.
	local resource = pool:choose(from, time_now());
	if not resource then
		log_availability();
		if stanza.attr.type ~= "error" then
			module:send(st.error_reply(stanza, "cancel", "service-unavailable", "No implementing client is available"));
		end
		return true;
	end
	local address = address_of(from, time_now());
	if not address then
		if stanza.attr.type ~= "error" then
			module:send(st.error_reply(stanza, "modify", "jid-malformed", "The sender's address is too long to be carried"));
		end
		return true;
	end
	measure_messages(1);
	stanza.attr.from, stanza.attr.to = host .. "/" .. address, target .. "/" .. resource;
	module:send(stanza);
	return true;
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
local function track_sessions()
	if tracking_locally then
		return;
	end
	tracking_locally = true;
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
	subscribe();
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
	local records = inflight:drain();
	pending_gauge:set(0); -- the metric family outlives this module instance
	for _, record in ipairs(records) do
		send_error(record, "cancel", "service-unavailable", "The service is restarting");
	end
end
