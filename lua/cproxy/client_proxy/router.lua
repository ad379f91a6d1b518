-- prosody-cproxy: Jabber Address Translation, whatever carries the stanzas:
-- the routing of client_proxy, shared by the Prosody module
-- (mod_client_proxy.lua) and the standalone component (bin/client_proxy).
-- IQ requests and messages to the component go to a resource of the
-- target, from component/ADDRESS; only replies to requests in flight come
-- back; a resource that leaves or answers badly has its gets failed over.
-- The target's resources come from its presence to the component (the
-- subscription) or, inside Prosody, from its sessions (the module feeds
-- resource_available/resource_gone).
-- Not here: where stanzas come from and go to, options and metrics (the
-- front ends); the requests in flight (requests.lua), the resources and
-- policies (resources.lua), the recent senders (recent.lua).
-- SPDX-License-Identifier: MIT

local ipairs, tonumber = ipairs, tonumber;
local find, match, sub = string.find, string.match, string.sub;
local resources = require "cproxy.client_proxy.resources";
local requests = require "cproxy.client_proxy.requests";

local M = {};

-- deps: host (the component's JID), target (the implementing client's
-- bare JID), st (a stanza library: util.stanza or cproxy/standalone/
-- stanza.lua), jid_split, jid_bare, jid_prep, send(stanza), log(level,
-- fmt, ...), now() (seconds), add_timer(seconds, f) (f returns seconds to
-- run again, or nil), count(name) (a counter: routed, replies, timeouts,
-- failovers, bad_answers, dropped, messages, refused), key (cproxy.core.jat),
-- senders (recent.lua's store), addressing ("jid" or "tag"), policy,
-- preferred, request_timeout, max_pending, max_per_sender, id_prefix,
-- tag_length (cproxy.core.jat_tag_length).
-- Returns the router: on_stanza(stanza) (true when handled),
-- resource_available(resource, priority), resource_gone(resource),
-- subscribe(), track_locally() (presence from the subscription is then
-- ignored), fail_all(type, condition, text) (every request in flight, at
-- unload), priority_of(presence), and its pool and requests in flight.
function M.new(deps)
	local host, target = deps.host, deps.target;
	local st, jid_split, jid_bare, jid_prep = deps.st, deps.jid_split, deps.jid_bare, deps.jid_prep;
	local send, log, now, add_timer, count = deps.send, deps.log, deps.now, deps.add_timer, deps.count;
	local key, senders, addressing = deps.key, deps.senders, deps.addressing;
	local policy, preferred, request_timeout = deps.policy, deps.preferred, deps.request_timeout;
	local max_pending, max_per_sender = deps.max_pending, deps.max_per_sender;

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
		function address_of(sender, at)
			if #sender > RESOURCE_MAX then
				return (key:encode(sender));
			end
			senders:put(sender, at);
			return sender;
		end
		function peer_of(address)
			local at = now();
			if senders:has(address, at) then
				return address;
			end
			local prepped = jid_prep(address); -- as the implementing client may have spelled it
			if prepped and prepped ~= address and senders:has(prepped, at) then
				return prepped;
			end
			local long = #address == deps.tag_length and key:decode(address);
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


	local pool = assert(resources.new(policy, preferred));
	-- Whether the front end tracks the target's sessions itself (inside
	-- Prosody, for a local target) rather than through the subscription.
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
		prefix = deps.id_prefix,
	});
	local sweep_timer;

	-- Says once, when the last resource goes (or the first request finds
	-- none), that requests now fail, and once when one is back.
	local none_logged = false;
	local function log_availability()
		local available = pool:count() > 0;
		if not available and not none_logged then
			none_logged = true;
			log("warn", "No resource of %s is available: requests get service-unavailable until one is", target);
		elseif available and none_logged then
			none_logged = false;
			log("info", "%s is available again", target);
		end
	end

	-- An error to whoever sent the request of `record`, as if from the address
	-- the request was sent to.
	local function send_error(record, type_, condition, text)
		local request = st.iq({ type = record.stanza and "get" or "set", id = record.id, from = record.sender, to = record.via });
		send(st.error_reply(request, type_, condition, text));
	end

	local function finish(record)
		if inflight:finish(record) and per_resource and record.kind == "in" then
			pool:add_pending(record.resource, -1);
		end
	end

	-- Once a second while anything is in flight: O(requests in flight).
	local function expire()
		for _, record in ipairs(inflight:expire(now())) do
			if per_resource and record.kind == "in" then
				pool:add_pending(record.resource, -1);
			end
			count("timeouts");
			log("debug", "No reply from %s/%s to %s's %s in %gs", target, record.resource,
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
			sweep_timer = add_timer(1, expire);
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
		send(stanza);
	end

	local refusals = {
		overall = "Too many requests are in flight to this service";
		sender = "Too many of your requests are in flight to this service";
	};

	-- Holds `record`, or answers `stanza` with resource-constraint.
	local function hold(record, stanza, owner, at)
		local id, over = inflight:add(record, owner, at);
		if not id then
			count("refused");
			log("debug", "Refused %s's %s: %s", record.sender, record.id, refusals[over]);
			send(st.error_reply(stanza, "wait", "resource-constraint", refusals[over]));
			return false;
		end
		arm_timer();
		return true;
	end

	-- A request from a user (anyone but the target).
	-- Answers `stanza` with an error, unless it is one itself: the one
	-- bounce of requests and messages from users.
	local function bounce(stanza, type_, condition, text)
		if stanza.attr.type ~= "error" then
			send(st.error_reply(stanza, type_, condition, text));
		end
		return true;
	end

	-- The resource a user's stanza goes to, and the sender's address in
	-- component/ADDRESS; or nil, having bounced it.
	local function destination(stanza, sender, at)
		local resource = pool:choose(sender, at);
		if not resource then
			log_availability();
			return bounce(stanza, "cancel", "service-unavailable", "No implementing client is available") and nil;
		end
		local address = address_of(sender, at);
		if not address then
			return bounce(stanza, "modify", "jid-malformed", "The sender's address cannot be carried") and nil;
		end
		return resource, address;
	end

	local function route_request(stanza)
		local sender, id = stanza.attr.from, stanza.attr.id;
		if id == nil then -- s2s and components may send one
			return bounce(stanza, "modify", "bad-request", "An IQ request needs an id");
		end
		local at = now();
		local resource, address = destination(stanza, sender, at);
		if not resource then
			return true;
		end
		local record = take_record();
		record.sender, record.via, record.id, record.address = sender, stanza.attr.to, id, address;
		-- A get may be re-sent to another resource if this one goes away.
		record.stanza = stanza.attr.type == "get" and stanza or false;
		if not hold(record, stanza, match(sender, "^[^/]*"), at) then -- by bare JID
			return true;
		end
		dispatch(record, stanza, resource);
		count("routed");
		return true;
	end

	-- Re-sends a get to another resource, or fails the request: a set may have
	-- taken effect, so it is never repeated. The fresh id stays: a late reply
	-- from the resource that left no longer matches, as it comes from elsewhere.
	local function reroute(record, gone)
		if per_resource then
			pool:add_pending(gone, -1);
		end
		local other = record.stanza and pool:choose(record.sender, now(), record.tried or nil);
		if other then
			count("failovers");
			log("debug", "Re-sent %s's %s from %s to %s", record.sender, record.id, gone, other);
			dispatch(record, st.clone(record.stanza), other);
			return;
		end
		inflight:finish(record);
		log("debug", "%s went away with %s's %s %s", gone, record.sender, record.stanza and "get" or "set", record.id);
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
			log("debug", "%s/%s is unavailable", target, resource);
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
			log("debug", "%s/%s is available (priority %d)", target, resource, priority);
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
	local function ask()
		log("debug", "Subscribing to %s", target);
		send(st.presence({ type = "probe", from = host, to = target }));
		send(st.presence({ type = "subscribe", from = host, to = target }));
	end

	-- While no resource is known, the request is asked again, at growing
	-- intervals: a server may drop a subscription request to a target that
	-- is offline (ejabberd does), or the target's server may have been
	-- unreachable. Not when the front end sees the target's sessions.
	local ASK_FIRST, ASK_MAX = 5, 300;
	local asking, ask_every = false, ASK_FIRST;
	local function ask_again()
		if tracking_locally or pool:count() > 0 then
			asking, ask_every = false, ASK_FIRST;
			return nil;
		end
		ask();
		ask_every = ask_every * 2 < ASK_MAX and ask_every * 2 or ASK_MAX;
		return ask_every;
	end

	local function subscribe()
		ask();
		if not asking then
			asking, ask_every = true, ASK_FIRST;
			add_timer(ASK_FIRST, ask_again);
		end
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
			send(st.presence({ type = "subscribed", from = host, to = target }));
		elseif type_ == "subscribed" then
			log("info", "%s accepted the subscription", target);
			send(st.presence({ type = "probe", from = host, to = target }));
		elseif type_ == "unsubscribed" then
			log("warn", "%s has not accepted this component's subscription, and is not an account of this server"
				.. " whose sessions could be seen directly: no request can be routed until its roster has the"
				.. " subscription (lost with the roster entry, as after an upgrade or a failed mod_roster_command)", target);
			all_gone();
		elseif type_ == "probe" then
			send(st.presence({ from = host, to = stanza.attr.from }));
		end
		return true;
	end

	local function drop(stanza, why)
		count("dropped");
		log("debug", "Dropped %s %s from %s to %s: %s", stanza.name, stanza.attr.type or "", stanza.attr.from,
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
	local function is_bad_answer(stanza)
		if stanza.attr.type ~= "error" then
			return false;
		end
		local _, condition = stanza:get_error();
		return BAD_ANSWERS[condition] == true;
	end

	-- A bad answer to a user's request: counted against the resource, and a
	-- get is tried on another resource it has not been to (a set may have
	-- taken effect, so it is never repeated). Returns true if it was re-sent.
	local function retry_elsewhere(record)
		local at, resource = now(), record.resource;
		count("bad_answers");
		if pool:failed(resource, at) then
			log("warn", "%s/%s keeps answering with errors a working implementation would not send:"
				.. " it gets no requests for %d s", target, resource, resources.QUARANTINE_SECONDS);
		end
		if not record.stanza then
			return false;
		end
		local tried = record.tried or {};
		tried[resource] = true;
		record.tried = tried;
		local other = pool:choose(record.sender, at, tried);
		if not other then
			return false;
		end
		if per_resource then
			pool:add_pending(resource, -1);
		end
		count("failovers");
		log("debug", "Re-sent %s's %s from %s, which failed it, to %s", record.sender, record.id, resource, other);
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
		count("replies");
		stanza.attr.from, stanza.attr.to, stanza.attr.id = record.via, record.sender, record.id;
		give_back(record);
		send(stanza);
		return true;
	end

	-- An IQ request or a message from the target to component/ADDRESS.
	local function on_target_request(stanza, resource, address)
		local peer, err = peer_of(address);
		if not peer then
			if stanza.attr.type ~= "error" and stanza.attr.type ~= "result" then
				send(st.error_reply(stanza, "cancel", "item-not-found",
					err == "unknown" and "No one with this address has contacted this component lately" or "Not an address of this component"));
			end
			return drop(stanza, "the address is " .. err);
		end
		if stanza.name == "message" then
			count("messages");
			stanza.attr.from, stanza.attr.to = host, peer;
			send(stanza);
			return true;
		end
		if stanza.attr.id == nil then
			return bounce(stanza, "modify", "bad-request", "An IQ request needs an id");
		end
		local record = {
			kind = "out", resource = resource, id = stanza.attr.id, sender = stanza.attr.from, via = stanza.attr.to, peer = peer,
		};
		if not hold(record, stanza, nil, now()) then
			return true;
		end
		count("routed");
		stanza.attr.from, stanza.attr.to, stanza.attr.id = host, peer, record.fresh_id;
		send(stanza);
		return true;
	end

	-- A user's reply to a request the implementing client started.
	local function on_user_reply(stanza)
		local record = inflight:get(stanza.attr.id);
		if not record or record.kind ~= "out" or record.peer ~= stanza.attr.from then
			return drop(stanza, "not a reply to a pending request");
		end
		finish(record);
		count("replies");
		stanza.attr.from, stanza.attr.to, stanza.attr.id = record.via, record.sender, record.id;
		send(stanza);
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

	local function on_stanza(stanza)
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
				return bounce(stanza, "cancel", "feature-not-implemented",
					"Address component/ADDRESS, where ADDRESS is the resource requests came from");
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
		local resource, address = destination(stanza, from, now());
		if not resource then
			return true;
		end
		count("messages");
		stanza.attr.from, stanza.attr.to = host .. "/" .. address, target .. "/" .. resource;
		send(stanza);
		return true;
	end


	local router = { pool = pool, inflight = inflight, on_stanza = on_stanza, subscribe = subscribe,
		resource_available = resource_available, resource_gone = resource_gone, priority_of = priority_of };
	function router.track_locally()
		tracking_locally = true;
	end
	-- Fails every request in flight, telling its sender (at unload).
	function router.fail_all(type_, condition, text)
		for _, record in ipairs(inflight:drain()) do
			send_error(record, type_, condition, text);
		end
	end
	return router;
end

return M;
