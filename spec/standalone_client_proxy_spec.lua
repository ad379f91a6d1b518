-- bin/client_proxy (#28): client_proxy as an XEP-0114 external component,
-- joined to a real Prosody's component port and to a real ejabberd (where
-- installed), with real c2s clients: a jicofo-like implementing client
-- that approves the subscription (outside Prosody, presence is the only
-- way to learn its resources) and reads the requester's JID from the
-- resource; the bad-answer failover; the reply checks.
local socket = require "socket";
local prosody = require "spec.helpers.prosody";
local xmpp = require "spec.helpers.xmpp_client";
local standalone = require "spec.helpers.standalone";
local ejabberd = require "spec.helpers.ejabberd";
local st = require "util.stanza";
local jid = require "util.jid";

local SECRET = "jat-secret-" .. math.random(1e9);
local xmlns_test = "urn:example:client-proxy";

local condition = xmpp.error_condition;

local function request(type_, id)
	return xmpp.iq({ type = type_ or "get", to = "jat.localhost", id = id }):tag("query", { xmlns = xmlns_test }):up();
end

-- A request routed by the component (not, say, the server's roster push).
local function is_request(stanza)
	return stanza.name == "iq" and (stanza.attr.type == "get" or stanza.attr.type == "set")
		and (stanza.attr.from or ""):match("^jat%.localhost/") ~= nil;
end

-- Logs in a resource of the implementing client and approves the
-- component's subscription when it comes.
local function implementing(login, resource)
	local client = login("focus", resource);
	local sub = client:await(function (s)
		return s.name == "presence" and s.attr.type == "subscribe" and s.attr.from == "jat.localhost";
	end, 10 * prosody.slow);
	if sub then
		client:send(st.presence({ type = "subscribed", to = "jat.localhost" }));
	end
	return client;
end

-- Sends requests from `user` until one reaches `client`, answering those
-- that do not (the component may not know the resource yet).
local function until_routed(user, clients, id)
	return xmpp.until_routed(user, clients, function () return request("get", id); end, is_request, 10 * prosody.slow);
end

-- The real-client checks, whichever server: `server` has ports.c2s and
-- ports.component, and accounts alice and focus on "localhost".
local function checks(name, start_server, stop_server)
	describe("bin/client_proxy with " .. name .. " (#28)", function ()
		local server, component;

		setup(function ()
			server = start_server();
			component = standalone.start({ program = "client_proxy", jid = "jat.localhost", secret = SECRET,
				rport = server.ports.component, target = "focus@localhost",
				args = { "--policy", "round_robin" } });
			assert(component.wait_log("Connected to 127%.0%.0%.1 as jat%.localhost", 20), component.log());
		end);

		teardown(function ()
			if component then component.stop(); end
			if server then stop_server(server); end
		end);

		local function login(user, resource)
			return assert(xmpp.connect({ port = server.ports.c2s, domain = "localhost", username = user,
				password = user .. "-pw", resource = resource or ("r" .. math.random(1e6)) }));
		end

		it("routes a request to the implementing client, from the JID jicofo reads, and the reply back", function ()
			local focus = implementing(login, "focus");
			local alice = login("alice");
			finally(function () focus:close(); alice:close(); end);
			local client, req = until_routed(alice, { focus }, "conf-1");
			assert.equal(focus, client, component.log());
			local address = req.attr.from:match("^jat%.localhost/(.+)$");
			assert.equal(alice.jid, jid.prep(address or ""), tostring(req));
			client:send(st.reply(req):tag("served", { xmlns = xmlns_test }));
			local reply = assert(alice:await_iq("result", 5));
			assert.equal("conf-1", reply.attr.id);
			assert.equal("jat.localhost", reply.attr.from, tostring(reply));
			-- Only a reply to a request in flight goes back.
			focus:send(st.iq({ type = "result", id = "conf-1", to = req.attr.from }));
			assert.is_nil((alice:await_iq(nil, 0.5)));
		end);

		it("fails a get over from a resource that answers feature-not-implemented", function ()
			local good = implementing(login, "good");
			local bad = implementing(login, "bad");
			local alice = login("alice");
			finally(function () good:close(); bad:close(); alice:close(); end);
			-- Until the component knows both.
			local seen = {};
			local deadline = socket.gettime() + 10 * prosody.slow;
			local n = 0;
			while not (seen.good and seen.bad) and socket.gettime() < deadline do
				n = n + 1;
				alice:send(request("get", "w" .. n));
				for _, c in ipairs({ good, bad }) do
					local req = c:await(is_request, 0.2);
					if req then
						seen[c == good and "good" or "bad"] = true;
						c:send(st.reply(req));
					end
				end
				alice:await_iq(nil, 1);
			end
			assert.truthy(seen.good and seen.bad, component.log());
			for i = 1, 6 do
				alice:send(request("get", "g" .. i));
				local reply;
				local until_t = socket.gettime() + 5 * prosody.slow;
				repeat
					local breq = bad:await(is_request, 0.02);
					if breq then
						bad:send(st.error_reply(breq, "cancel", "feature-not-implemented"));
					end
					local greq = good:await(is_request, 0.02);
					if greq then
						good:send(st.reply(greq):tag("served", { xmlns = xmlns_test }));
					end
					reply = alice:await_iq(nil, 0.02);
				until reply or socket.gettime() > until_t;
				assert.truthy(reply, "no reply to g" .. i);
				assert.equal("result", reply.attr.type, tostring(reply));
			end
			-- A set is not repeated: the error reaches the sender.
			local got_set;
			for i = 1, 4 do
				alice:send(request("set", "s" .. i));
				local breq = bad:await(is_request, 0.5);
				if breq then
					bad:send(st.error_reply(breq, "cancel", "feature-not-implemented"));
					got_set = assert(alice:await_iq(nil, 5));
					break;
				end
				local greq = assert(good:await(is_request, 5));
				good:send(st.reply(greq));
				assert(alice:await_iq("result", 5));
			end
			if got_set then -- the bad one may be in quarantine by now
				assert.equal("cancel/feature-not-implemented", condition(got_set));
			end
		end);

		it("answers service-unavailable when no resource is available", function ()
			local alice = login("alice");
			finally(function () alice:close(); end);
			local deadline = socket.gettime() + 10 * prosody.slow;
			local reply;
			repeat
				reply = assert(alice:request(request("get")));
			until condition(reply) == "cancel/service-unavailable" or socket.gettime() > deadline;
			assert.equal("cancel/service-unavailable", condition(reply));
		end);
	end);
end

local accounts = { { "alice", "localhost", "alice-pw" }, { "focus", "localhost", "focus-pw" } };

checks("Prosody's component port #integration", function ()
	return prosody.start({
		hosts = ('VirtualHost "localhost"\n\nComponent "jat.localhost"\n\tcomponent_secret = %q\n'):format(SECRET),
		accounts = accounts,
		wait_ports = { "c2s", "component" },
	});
end, function (server)
	server:stop();
end);

local available, why = ejabberd.available();
if available then
	checks("ejabberd #ejabberd", function ()
		return ejabberd.start({ components = { ["jat.localhost"] = SECRET }, accounts = accounts, roster = true });
	end, function (server)
		server:stop();
	end);
else
	print("bin/client_proxy's ejabberd specs skipped: " .. why);
	describe("bin/client_proxy with ejabberd #ejabberd", function ()
		pending("skipped: " .. why);
	end);
end
