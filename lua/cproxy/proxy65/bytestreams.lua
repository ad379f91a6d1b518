-- prosody-cproxy: proxy65's XMPP side, shared by the Prosody module and
-- the standalone component so that both answer alike: the streamhost
-- query and the activation (XEP-0065 sections 6.3 and 6.3.3). Each takes a
-- request and returns the reply to send; the caller brings the stanza
-- library, JID functions, access rule and service.
-- SPDX-License-Identifier: MIT

local ipairs, next, format = ipairs, next, string.format;
local sort = table.sort;

local M = {};

M.xmlns = "http://jabber.org/protocol/bytestreams";

-- ctx: st (util.stanza or cproxy/standalone/stanza.lua), host (the component's
-- JID), permitted (function(stanza) -> boolean), log (module:log-like).
-- Returns the refusal to send, or nil when the requester may use the proxy.
local function denied(ctx, stanza)
	if ctx.permitted(stanza) then
		return nil;
	end
	ctx.log("warn", "Denying use of proxy for %s", stanza.attr.from);
	return ctx.st.error_reply(stanza, "auth", "forbidden");
end
M.denied = denied;

-- "4" or "6" for an IP address, nil for a name.
local function family(address)
	if address:match("^::[fF][fF][fF][fF]:%d+%.%d+%.%d+%.%d+$") or address:match("^%d+%.%d+%.%d+%.%d+$") then
		return "4";
	elseif address:find(":", 1, true) then
		return "6";
	end
end
M.family = family;

-- The streamhosts in the order this requester should try them. Most
-- clients (Conversations, Dino, Gajim, iris) try only the first, so it
-- must be one this requester can use: of its address family, and not
-- found unusable by the last check. streamhosts: list of { host=, port= };
-- report: the check's entries, one per streamhost, in the same order (or
-- nil); requester_ip: the requester's address, if known. Stable: the
-- configured order decides among equals.
function M.order(streamhosts, report, requester_ip)
	local want = requester_ip and family(requester_ip);
	local ranked = {};
	for i, streamhost in ipairs(streamhosts) do
		local entry = report and report[i];
		local families = {};
		if family(streamhost.host) then
			families[family(streamhost.host)] = true;
		elseif entry then
			for _, address in ipairs(entry.addresses) do
				families[family(address) or "?"] = true;
			end
		end
		-- 0: of the requester's family (or its family unknown); 1: a name
		-- not yet resolved; 2: of the other family only.
		local fits = 0;
		if want and not families[want] then
			fits = next(families) == nil and 1 or 2;
		end
		ranked[i] = { streamhost = streamhost, fits = fits, index = i,
			unusable = (entry and not entry.reachable) and 1 or 0 };
	end
	sort(ranked, function (a, b)
		if a.unusable ~= b.unusable then
			return a.unusable < b.unusable;
		elseif a.fits ~= b.fits then
			return a.fits < b.fits;
		end
		return a.index < b.index;
	end);
	local ordered = {};
	for i, rank in ipairs(ranked) do
		ordered[i] = rank.streamhost;
	end
	return ordered;
end

-- An <iq type='get'> query: the streamhosts. ctx.streamhosts: list of
-- { host=, port= } (port nil: the first port we listen on, ctx.port());
-- ctx.report (function() -> the last check's report, or nil) and
-- ctx.origin_ip (the requester's address, if known) order them (M.order).
function M.query(ctx, stanza)
	local refusal = denied(ctx, stanza);
	if refusal then
		return refusal;
	end
	local port = ctx.port();
	if not port then
		ctx.log("warn", "Not listening on any port");
		return ctx.st.error_reply(stanza, "wait", "item-not-found", "Not listening on any port");
	end
	local ours = {};
	for i, streamhost in ipairs(M.order(ctx.streamhosts, ctx.report and ctx.report(), ctx.origin_ip)) do
		ours[i] = { jid = ctx.host, host = streamhost.host, port = streamhost.port or port };
	end
	return M.answer(ctx, stanza, ours);
end

-- The result of a streamhost query: `streamhosts` (each { jid=, host=,
-- port= }) in order. A cluster's front (cproxy/proxy65/cluster.lua)
-- answers with its nodes' this way.
function M.answer(ctx, stanza, streamhosts)
	local reply = ctx.st.reply(stanza):tag("query", { xmlns = M.xmlns, sid = stanza.tags[1].attr.sid });
	for _, streamhost in ipairs(streamhosts) do
		reply:tag("streamhost", { jid = streamhost.jid, host = streamhost.host,
			port = format("%d", streamhost.port) }):up();
	end
	return reply;
end

-- The error each refusal of service:activate() gets.
local refusals = {
	["item-not-found"] = { "modify", "item-not-found" };
	["not-allowed"] = { "cancel", "not-allowed" };
	["resource-constraint"] = { "wait", "resource-constraint" };
};

-- An activation of the bytestream `sid` by `from` towards `to` (as
-- written). Returns nil once active, else { type, condition, text } of
-- the error to send. ctx also has service (cproxy/proxy65/service.lua),
-- sha1 (function(s) -> hex), jid_prep and jid_bare, and refused
-- (function(condition), for metrics). The cluster's nodes
-- (cproxy/proxy65/cluster.lua) take activations forwarded by a front here.
function M.activation(ctx, sid, from, to, origin_ip)
	local prepped_to = ctx.jid_prep(to);
	if not prepped_to then
		return { "modify", "jid-malformed" };
	end
	local hash = ctx.sha1(sid .. from .. prepped_to);
	local ok, condition, text = ctx.service:activate(hash, {
		sid = sid, initiator = from, user = ctx.jid_bare(from), target = prepped_to,
		initiator_ip = origin_ip,
	});
	if ok then
		ctx.log("debug", "Activated %s (sid %q, initiator %s, target %s)", hash, sid, from, prepped_to);
		return nil;
	end
	ctx.refused(condition);
	ctx.log("debug", "Refused to activate %s (sid %q, initiator %s, target %s): %s", hash, sid, from,
		prepped_to, text or condition);
	local error_type = refusals[condition];
	if not error_type then
		ctx.log("error", "Activation of %s failed: %s", hash, text or condition);
		return { "wait", "internal-server-error" };
	end
	return { error_type[1], error_type[2], condition ~= "item-not-found" and text or nil };
end

-- What an <iq type='set'> activation asks: sid, target (as written), or
-- nil and the refusal to send (access denied, or no sid or target).
function M.activation_request(ctx, stanza)
	local refusal = denied(ctx, stanza);
	if refusal then
		return nil, refusal;
	end
	local query = stanza.tags[1];
	local sid, to = query.attr.sid, query:get_child_text("activate");
	if not sid or sid == "" or not to then
		return nil, ctx.st.error_reply(stanza, "modify", "bad-request", "A sid and an activate element are required");
	end
	return sid, to;
end

-- An <iq type='set'> activation (ctx as for M.activation).
function M.activate(ctx, stanza)
	local sid, to = M.activation_request(ctx, stanza);
	if not sid then
		return to;
	end
	local failure = M.activation(ctx, sid, stanza.attr.from, to, ctx.origin_ip);
	if failure then
		return ctx.st.error_reply(stanza, failure[1], failure[2], failure[3]);
	end
	return ctx.st.reply(stanza);
end

return M;
