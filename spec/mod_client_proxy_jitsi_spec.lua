-- mod_client_proxy where Jitsi runs it (#28), in a real Prosody with real
-- XMPP sessions: an implementing client whose roster lost the component's
-- subscription (jicofo #849, jitsi-meet #8388), a resource that answers
-- every request with an error (jitsi-meet #14049), and a target on another
-- server, learnt through the subscription. The remote server is a real
-- XEP-0114 connection that this spec speaks for.
local socket = require "socket";
local prosody = require "spec.helpers.prosody";
local xmpp = require "spec.helpers.xmpp_client";
local metrics = require "spec.helpers.metrics";
local st = require "util.stanza";
local jid = require "util.jid";

local xmlns_test = "urn:example:client-proxy";
-- cproxy.resources: bad answers in a row before a quarantine.
local QUARANTINE_AFTER = dofile("lua/cproxy/client_proxy/resources.lua").QUARANTINE_AFTER;

local hosts = [[
VirtualHost "localhost"
VirtualHost "auth.localhost"

Component "focus.localhost" "client_proxy"
	target_address = "focus@auth.localhost"

Component "flaky.localhost" "client_proxy"
	target_address = "flaky@auth.localhost"
	client_proxy_policy = "round_robin"

Component "remote.localhost" "client_proxy"
	target_address = "svc@ext.localhost"

Component "ext.localhost"
	component_secret = "ext-secret"
]];

local condition = xmpp.error_condition;

local function request(to, type_, id)
	return xmpp.iq({ type = type_ or "get", to = to, id = id }):tag("query", { xmlns = xmlns_test }):up();
end

local function is_request(stanza)
	return stanza.name == "iq" and (stanza.attr.type == "get" or stanza.attr.type == "set");
end

local function serve(client, req)
	client:send(st.reply(req):tag("served", { xmlns = xmlns_test, by = client.jid }));
end

describe("mod_client_proxy where Jitsi runs it (#28) #integration", function ()
	local server, metrics_port;

	setup(function ()
		metrics_port = prosody.free_port();
		server = prosody.start({
			hosts = hosts;
			-- Metrics, and the admin shell for a module reload.
			global = metrics.global(metrics_port):gsub("\"http_openmetrics\"", "%0, \"admin_shell\"");
			admin = true;
			accounts = {
				{ "alice", "localhost", "alice" }, { "focus", "auth.localhost", "focus" },
				{ "flaky", "auth.localhost", "flaky" },
			};
			wait_ports = { "c2s", "component" };
		});
		metrics.wait(metrics_port, 10 * prosody.slow);
	end);

	teardown(function ()
		if server then
			server:stop();
		end
	end);

	local function login(user, domain, resource)
		return assert(xmpp.connect({ port = server.ports.c2s, domain = domain or "localhost", username = user,
			password = user, resource = resource or ("r" .. math.random(1e6)) }));
	end

	-- A component's gauge.
	local function gauge(name, host)
		local prefix = "prosody_mod_client_proxy__" .. name;
		return metrics.fetch(metrics_port, prefix)[("%s{host=%q}"):format(prefix, host)];
	end

	-- Waits for a gauge to read `value`; returns what it read last.
	local function gauge_becomes(name, host, value)
		local deadline, got = socket.gettime() + 5 * prosody.slow;
		repeat
			got = gauge(name, host);
		until got == value or not socket.sleep(0.05) and socket.gettime() > deadline;
		return got;
	end

	it("serves a jicofo-like client that never approves the subscription, with the JID it reads", function ()
		assert.equal(0, gauge_becomes("targets_available", "focus.localhost", 0));
		local focus = login("focus", "auth.localhost", "focus");
		local alice = login("alice");
		finally(function () focus:close(); alice:close(); end);
		-- The component asks, as prosody-modules' module does; no answer.
		assert.truthy(focus:await(function (s) return s.name == "presence" and s.attr.type == "subscribe"; end));
		assert.equal(1, gauge_becomes("targets_available", "focus.localhost", 1));
		alice:send(request("focus.localhost", "set", "conf-1"));
		local req = assert(focus:await(is_request));
		-- jicofo takes what follows "focus.localhost/" and parses it as a JID.
		local address = req.attr.from:match("^focus%.localhost/(.+)$");
		assert.equal(alice.jid, jid.prep(address));
		serve(focus, req);
		assert.equal("conf-1", assert(alice:await_iq("result")).attr.id);
		-- Gone: service-unavailable, said once in the log and in the gauge.
		focus:close();
		assert.equal(0, gauge_becomes("targets_available", "focus.localhost", 0));
		assert.equal("cancel/service-unavailable", condition(assert(alice:request(request("focus.localhost")))));
		assert.equal("cancel/service-unavailable", condition(assert(alice:request(request("focus.localhost")))));
		local _, warnings = server:log():gsub("No resource of focus@auth%.localhost is available", "");
		assert.equal(1, warnings);
	end);

	-- Operators reload modules (prosodyctl shell, after an upgrade): the new
	-- instance must find the sessions already there, and the old one's
	-- hooks must be gone (or each request would be routed twice).
	it("finds the target's sessions again after a module reload", function ()
		local focus = login("focus", "auth.localhost", "reloaded");
		local alice = login("alice");
		finally(function () focus:close(); alice:close(); end);
		assert.equal(1, gauge_becomes("targets_available", "focus.localhost", 1));
		local ok, out = server:shell('module:reload("client_proxy", "focus.localhost")');
		assert.truthy(ok and out:match("OK"), out);
		alice:send(request("focus.localhost", "get", "after-reload"));
		local req = assert(focus:await(is_request, 5));
		serve(focus, req);
		assert.equal("after-reload", assert(alice:await_iq("result")).attr.id);
		assert.is_nil((focus:await(is_request, 0.5))); -- routed once
		-- And it still follows them.
		focus:close();
		assert.equal(0, gauge_becomes("targets_available", "focus.localhost", 0));
	end);

	it("fails a get over from a resource that answers feature-not-implemented, and quarantines it", function ()
		local good = login("flaky", "auth.localhost", "good");
		local bad = login("flaky", "auth.localhost", "bad");
		local alice = login("alice");
		finally(function () good:close(); bad:close(); alice:close(); end);
		assert.equal(2, gauge_becomes("targets_available", "flaky.localhost", 2));
		local to_bad = 0;
		for i = 1, 3 * QUARANTINE_AFTER + 2 do
			alice:send(request("flaky.localhost", "get", "g" .. i));
			-- The bad resource answers whatever reaches it, as a misconfigured
			-- session did for months; the good one serves.
			local deadline = socket.gettime() + 5 * prosody.slow;
			local reply;
			repeat
				local breq = bad:await(is_request, 0.02);
				if breq then
					to_bad = to_bad + 1;
					bad:send(st.error_reply(breq, "cancel", "feature-not-implemented"));
				end
				local greq = good:await(is_request, 0.02);
				if greq then
					serve(good, greq);
				end
				reply = alice:await_iq(nil, 0.02);
			until reply or socket.gettime() > deadline;
			assert.truthy(reply, "no reply to g" .. i);
			assert.equal("result", reply.attr.type, tostring(reply));
			assert.equal("g" .. i, reply.attr.id);
			assert.equal(good.jid, reply:get_child("served", xmlns_test).attr.by);
		end
		-- Round robin sent it every other request until the quarantine.
		assert.equal(QUARANTINE_AFTER, to_bad);
		assert.truthy(server:wait_log("flaky@auth%.localhost/bad keeps answering with errors"));
	end);

	it("never repeats a set: the resource's error reaches the sender", function ()
		local bad = login("flaky", "auth.localhost", "only");
		local alice = login("alice");
		finally(function () bad:close(); alice:close(); end);
		assert.equal(1, gauge_becomes("targets_available", "flaky.localhost", 1));
		alice:send(request("flaky.localhost", "set", "s1"));
		bad:send(st.error_reply(assert(bad:await(is_request)), "cancel", "service-unavailable"));
		local reply = assert(alice:await_iq("error"));
		assert.equal("s1", reply.attr.id);
		assert.equal("cancel/service-unavailable", condition(reply));
		assert.same({}, (function () local r = bad:await(is_request, 0.3); return r and { r } or {}; end)());
	end);

	it("gives a get the last error when every resource has failed it", function ()
		local one = login("flaky", "auth.localhost", "one");
		local two = login("flaky", "auth.localhost", "two");
		local alice = login("alice");
		finally(function () one:close(); two:close(); alice:close(); end);
		assert.equal(2, gauge_becomes("targets_available", "flaky.localhost", 2));
		alice:send(request("flaky.localhost", "get", "g-all"));
		local seen = {};
		local reply;
		local deadline = socket.gettime() + 5 * prosody.slow;
		repeat
			for _, c in ipairs({ one, two }) do
				local req = c:await(is_request, 0.02);
				if req then
					seen[#seen + 1] = c.jid;
					c:send(st.error_reply(req, "cancel", "recipient-unavailable"));
				end
			end
			reply = alice:await_iq(nil, 0.02);
		until reply or socket.gettime() > deadline;
		assert.equal("cancel/recipient-unavailable", condition(reply));
		assert.equal(2, #seen);
		assert.are_not.equal(seen[1], seen[2]);
	end);

	-- The remote target's server, played by this spec over XEP-0114.
	it("learns a remote target's resources through the subscription, and names the cause when it is refused", function ()
		local ext = assert(xmpp.component({ port = server.ports.component, domain = "ext.localhost", secret = "ext-secret" }));
		local alice = login("alice");
		finally(function () ext:close(); alice:close(); end);
		-- A target host that comes up after the component: reload, so
		-- that it asks again now that ext.localhost is there.
		local ok, out = server:shell('module:reload("client_proxy", "remote.localhost")');
		assert.truthy(ok, out);
		assert.truthy(ext:await(function (s)
			return s.name == "presence" and s.attr.type == "subscribe" and s.attr.to == "svc@ext.localhost";
		end, 5 * prosody.slow));
		ext:send(st.presence({ type = "subscribed", from = "svc@ext.localhost", to = "remote.localhost" }));
		ext:send(st.presence({ from = "svc@ext.localhost/r1", to = "remote.localhost" }));
		local req;
		local deadline = socket.gettime() + 5 * prosody.slow;
		repeat
			alice:send(request("remote.localhost", "get", "rq"));
			req = ext:await(is_request, 0.3);
			if not req then
				assert.truthy(alice:await_iq("error", 2));
			end
		until req or socket.gettime() > deadline;
		assert.truthy(req, "never routed to the remote target");
		assert.equal("svc@ext.localhost/r1", req.attr.to);
		ext:send(st.reply(req):tag("served", { xmlns = xmlns_test }));
		assert.equal("rq", assert(alice:await_iq("result")).attr.id);
		-- Its roster loses the subscription.
		ext:send(st.presence({ type = "unsubscribed", from = "svc@ext.localhost", to = "remote.localhost" }));
		assert.truthy(server:wait_log("svc@ext%.localhost has not accepted this component's subscription[^\n]*lost with the roster entry"));
		assert.equal("cancel/service-unavailable", condition(assert(alice:request(request("remote.localhost")))));
	end);
end);
