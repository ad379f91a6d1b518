-- `make try`'s JAT round trip: alice asks jat.localhost, the demo's
-- client_proxy, which hands the request to svc@localhost, the implementing
-- client, from jat.localhost/<alice's full JID>: the address jicofo reads.
-- svc answers, and the answer reaches alice. Usage: lua5.4 tools/try_jat.lua C2S_PORT
local xmpp = require "spec.helpers.xmpp_client";
local st = require "util.stanza";

local port = assert(tonumber(arg[1]), "usage: try_jat.lua C2S_PORT");
local function login(user, resource)
	return assert(xmpp.connect({ port = port, domain = "localhost", username = user, password = user,
		resource = resource }));
end

local svc = login("svc", "try");
local alice = login("alice", "try");
-- A local target needs no subscription; approve one anyway, as a remote
-- target's client would.
local sub = svc:await(function (s) return s.name == "presence" and s.attr.type == "subscribe"; end, 0.5);
if sub then
	svc:send(st.presence({ type = "subscribed", to = sub.attr.from }));
end
local query = "urn:example:try";
local _, req = xmpp.until_routed(alice, { svc }, function ()
	return xmpp.iq({ type = "get", to = "jat.localhost", id = "try-1" }):tag("query", { xmlns = query }):up();
end, function (s) return s.name == "iq" and s.attr.type == "get"; end);
assert(req, "the request never reached svc@localhost");
local address = req.attr.from:match("^jat%.localhost/(.+)$");
print(("  %s received a request from %s"):format(svc.jid, req.attr.from));
print(("  the resource jicofo would read as the requester: %s"):format(address));
svc:send(st.reply(req):tag("query", { xmlns = query }):tag("answer"):text("hello from svc"):up():up());
local reply = assert(alice:await_iq("result", 5), "no answer reached alice");
print(("  %s got the answer, from %s: %q"):format(alice.jid, reply.attr.from,
	reply:get_child("query", query):get_child_text("answer")));
svc:close();
alice:close();
