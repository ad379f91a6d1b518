-- mod_client_proxy in a real Prosody: users and an implementing client with
-- several resources, all real XMPP sessions over loopback. Each component
-- fronts its own account, so one spec's departing resources never reach
-- another's.
local socket = require "socket";
local prosody = require "spec.helpers.prosody";
local xmpp = require "spec.helpers.xmpp_client";
local st = require "util.stanza";
local jid = require "util.jid";

local xmlns_test = "urn:example:client-proxy";

local components = {
	{ "plain", {} },
	{ "tagged", { client_proxy_addressing = "tag" } },
	{ "focus", {} },
	{ "focustag", { client_proxy_addressing = "tag" } },
	{ "rrtag", { client_proxy_policy = "round_robin", client_proxy_addressing = "tag" } },
	{ "short", { client_proxy_timeout = 2 } },
	{ "rr", { client_proxy_policy = "round_robin" } },
	{ "sticky", { client_proxy_policy = "sticky" } },
	{ "least", { client_proxy_policy = "least_pending" } },
	{ "pinned", { client_proxy_policy = "round_robin", client_proxy_resources = { "second", "first" } } },
	{ "failover", { client_proxy_policy = "round_robin" } },
	{ "prio", { client_proxy_policy = "round_robin" } },
	{ "capped", { client_proxy_max_pending = 3, client_proxy_max_pending_per_sender = 2 } },
	{ "nodes", {} },
};

local function config()
	local lines = { 'VirtualHost "localhost"', "", 'VirtualHost "guest.localhost"', "",
		'Component "ext.localhost"', '\tcomponent_secret = "ext-secret"', "" };
	for _, c in ipairs(components) do
		table.insert(lines, ('Component "%s.localhost" "client_proxy"'):format(c[1]));
		table.insert(lines, ('\ttarget_address = "%s-svc@localhost"'):format(c[1]));
		for k, v in pairs(c[2]) do
			if type(v) == "table" then
				v = '{ "' .. table.concat(v, '", "') .. '" }';
			elseif type(v) == "string" then
				v = ("%q"):format(v);
			end
			table.insert(lines, ("\t%s = %s"):format(k, v));
		end
		table.insert(lines, "");
	end
	return table.concat(lines, "\n");
end

local function accounts()
	local list = {
		{ "alice", "localhost", "alice" }, { "bob", "localhost", "bob" },
		{ "ñandú", "localhost", "ñandú" }, { "visitor", "guest.localhost", "visitor" },
	};
	for _, c in ipairs(components) do
		table.insert(list, { c[1] .. "-svc", "localhost", c[1] .. "-svc" });
	end
	return list;
end

local function login(server, user, resource, opts)
	opts = opts or {};
	return assert(xmpp.connect({ port = server.ports.c2s, domain = opts.domain or "localhost", username = user,
		password = user, resource = resource or ("r" .. math.random(1e6)), priority = opts.priority }));
end

local condition = xmpp.error_condition;

local function request(to, type_, id)
	return xmpp.iq({ type = type_ or "get", to = to, id = id }):tag("query", { xmlns = xmlns_test }):up();
end

-- Pumps all `clients` until one holds a stanza matching `predicate`;
-- returns that client and the stanza.
local function await_any(clients, predicate, timeout)
	local deadline = socket.gettime() + (timeout or 5);
	repeat
		for _, client in ipairs(clients) do
			for i, stanza in ipairs(client.queue) do
				if predicate(stanza) then
					table.remove(client.queue, i);
					return client, stanza;
				end
			end
		end
		for _, client in ipairs(clients) do
			client:pump(0.01);
		end
	until socket.gettime() > deadline;
	return nil;
end

local function is_request(stanza)
	return stanza.name == "iq" and (stanza.attr.type == "get" or stanza.attr.type == "set");
end

local function answer(client, req)
	client:send(st.reply(req):tag("served", { xmlns = xmlns_test, by = client.jid }));
end

-- Approves the component's subscription request, if one comes within
-- `timeout` (0.5 s; 0: if one is already queued).
local function approve(client, component, timeout)
	local sub = client:await(function (s)
		return s.name == "presence" and s.attr.type == "subscribe" and s.attr.from == component;
	end, timeout or 0.5);
	if sub then
		client:send(st.presence({ type = "subscribed", to = component }));
	end
end

-- Logs in the implementing client's resources and waits until they are
-- routed to: requests are answered until `opts.wait_for` resources (all by
-- default) have served one. With `opts.fresh_senders`, each request comes
-- from a new session, for policies that keep a sender on one resource.
local function implementing(server, name, resources, opts)
	opts = opts or {};
	local component = name .. ".localhost";
	local clients = {};
	for _, resource in ipairs(resources) do
		local client = login(server, name .. "-svc", resource, opts);
		approve(client, component);
		table.insert(clients, client);
	end
	local wanted = opts.wait_for or #clients;
	local user = login(server, "bob");
	local seen, count, deadline = {}, 0, socket.gettime() + 10 * prosody.slow;
	while count < wanted and socket.gettime() < deadline do
		if opts.fresh_senders then
			user:close();
			user = login(server, "bob");
		end
		user:send(request(component));
		local client, req = await_any(clients, is_request, 0.5);
		if client then
			answer(client, req);
			assert(user:await_iq("result", 2 * prosody.slow));
			if not seen[client] then
				seen[client], count = true, count + 1;
			end
		else
			user:await_iq("error", 1);
			-- A slow Prosody may send the subscription request after
			-- approve() stopped waiting: until approved, nothing routes.
			for _, c in ipairs(clients) do
				approve(c, component, 0);
			end
			socket.sleep(0.1);
		end
	end
	user:close();
	assert(count == wanted, "not every resource of " .. name .. " became routable");
	return clients;
end

-- What reached `client` within `timeout`, other than presence.
local function delivered(client, timeout)
	local got = {};
	for _, stanza in ipairs(client:drain(timeout)) do
		if stanza.name ~= "presence" then
			table.insert(got, stanza);
		end
	end
	return got;
end

local function close_all(list)
	for _, client in pairs(list) do
		client:close();
	end
end

describe("mod_client_proxy #integration", function ()
	local server;

	lazy_setup(function ()
		server = prosody.start({ hosts = config(), accounts = accounts() });
	end);

	lazy_teardown(function ()
		if server then
			server:stop();
		end
	end);

	it("routes a request to the implementing client from component/JID, and its reply back with the sender's id", function ()
		local svc = implementing(server, "plain", { "a" });
		local alice = login(server, "alice", "desk");
		finally(function () close_all({ svc[1], alice }); end);

		alice:send(request("plain.localhost", "get", "q-1"));
		local req = assert(svc[1]:await(is_request));
		assert.not_equal("q-1", req.attr.id, "a fresh id, unique across reloads");
		assert.equal("plain-svc@localhost/a", req.attr.to);
		assert.equal("plain.localhost/alice@localhost/desk", req.attr.from, "the sender's full JID, unescaped");
		assert.truthy(req:get_child("query", xmlns_test), "the payload is forwarded");

		answer(svc[1], req);
		local reply = assert(alice:await_iq("result"));
		assert.equal("q-1", reply.attr.id);
		assert.equal("plain.localhost", reply.attr.from);
		assert.equal("plain-svc@localhost/a", reply:get_child("served", xmlns_test).attr.by);

		alice:send(request("plain.localhost", "set", "q-2"));
		req = assert(svc[1]:await(is_request));
		assert.equal("set", req.attr.type);
		svc[1]:send(st.error_reply(req, "cancel", "not-allowed"));
		reply = assert(alice:await_iq("error"));
		assert.equal("q-2", reply.attr.id);
		assert.equal("cancel/not-allowed", condition(reply));
	end);

	it("gives each sender its own tag under \"tag\", and the same one every time", function ()
		local svc = implementing(server, "tagged", { "a" });
		local alice1, alice2 = login(server, "alice", "one"), login(server, "alice", "two");
		finally(function () close_all({ svc[1], alice1, alice2 }); end);
		local tags = {};
		for _, user in ipairs({ alice1, alice2, alice1 }) do
			user:send(request("tagged.localhost", "get", "t-1"));
			local req = assert(svc[1]:await(is_request));
			local tag = req.attr.from:match("^tagged%.localhost/(.+)$");
			assert.truthy(tag, req.attr.from);
			assert.equal(16, #tag);
			assert.is_nil(tag:find("alice", 1, true), "the tag is not the raw JID");
			table.insert(tags, tag);
			answer(svc[1], req);
			assert.equal("t-1", assert(user:await_iq("result")).attr.id);
		end
		assert.not_equal(tags[1], tags[2]);
		assert.equal(tags[1], tags[3]);
	end);

	-- An implementing client like Jitsi's jicofo: it takes the resource of
	-- `from` (after the first '/'), parses it as a JID and lets in only
	-- users of the authenticated domain, answering with their bare JID.
	local function jicofo_like(client, req)
		local resource = req.attr.from:match("^[^/]*/(.+)$");
		local node, domain = jid.split(resource);
		if not node or domain ~= "localhost" then
			client:send(st.error_reply(req, "auth", "not-authorized", "only authenticated users are allowed to create new rooms"));
			return;
		end
		client:send(st.reply(req):tag("conference", { xmlns = xmlns_test, requester = node .. "@" .. domain }));
	end

	it("lets an implementing client that parses the requester from the resource, as jicofo does, find the sender", function ()
		local svc = implementing(server, "focus", { "focus" });
		local alice = login(server, "alice", "meet");
		local visitor = login(server, "visitor", "meet", { domain = "guest.localhost" });
		finally(function () close_all({ svc[1], alice, visitor }); end);

		alice:send(request("focus.localhost", "set", "conf-1"));
		jicofo_like(svc[1], assert(svc[1]:await(is_request)));
		local reply = assert(alice:await_iq());
		assert.equal("result", reply.attr.type, tostring(reply));
		assert.equal("alice@localhost", reply:get_child("conference", xmlns_test).attr.requester);

		visitor:send(request("focus.localhost", "set", "conf-2"));
		jicofo_like(svc[1], assert(svc[1]:await(is_request)));
		reply = assert(visitor:await_iq());
		assert.equal("auth/not-authorized", condition(reply));
	end);

	it("hides the requester from such a client under \"tag\"", function ()
		local svc = implementing(server, "focustag", { "focus" });
		local alice = login(server, "alice", "meet");
		finally(function () close_all({ svc[1], alice }); end);
		alice:send(request("focustag.localhost", "set", "conf-1"));
		local req = assert(svc[1]:await(is_request));
		assert.is_nil(req.attr.from:find("alice", 1, true));
		jicofo_like(svc[1], req);
		assert.equal("auth/not-authorized", condition(assert(alice:await_iq())));
	end);

	-- A resource holds 1,023 bytes, a full JID up to 3,071 (#28).
	it("carries a sender whose full JID is too long for a resource as a tag, both ways", function ()
		local svc = implementing(server, "plain", { "a" });
		local long = login(server, "alice", ("r"):rep(1020)); -- 1036 bytes in all
		finally(function () close_all({ svc[1], long }); end);
		long:send(request("plain.localhost", "get", "long-1"));
		local req = assert(svc[1]:await(is_request));
		local tag = req.attr.from:match("^plain%.localhost/(.+)$");
		assert.equal(16, #tag); -- an opaque tag, not a JID
		answer(svc[1], req);
		assert.equal("long-1", assert(long:await_iq("result")).attr.id);
		-- A message, and the implementing client's own request, reach it.
		long:send(st.message({ to = "plain.localhost", type = "chat" }):tag("body"):text("hi"):up());
		local message = assert(svc[1]:await_message());
		assert.equal("plain.localhost/" .. tag, message.attr.from);
		svc[1]:send(st.message({ to = "plain.localhost/" .. tag, type = "chat" }):tag("body"):text("back"):up());
		assert.equal("back", assert(long:await_message()):get_child_text("body"));
	end);

	it("answers an IQ request without an id, as s2s and components may send, with bad-request (#17)", function ()
		local svc = implementing(server, "plain", { "a" });
		local ext = assert(xmpp.component({ port = server.ports.component, domain = "ext.localhost", secret = "ext-secret" }));
		finally(function () close_all({ svc[1], ext }); end);
		ext:send(st.stanza("iq", { type = "get", from = "u@ext.localhost/r", to = "plain.localhost" }):tag("query", { xmlns = xmlns_test }):up());
		local reply = assert(ext:await_iq("error"));
		assert.equal("modify/bad-request", condition(reply));
		assert.same({}, delivered(svc[1], 0.2));
		-- the same with an id goes through
		ext:send(st.iq({ type = "get", id = "x1", from = "u@ext.localhost/r", to = "plain.localhost" }):tag("query", { xmlns = xmlns_test }):up());
		answer(svc[1], assert(svc[1]:await(is_request)));
		assert.equal("x1", assert(ext:await_iq("result")).attr.id);
	end);

	it("caps requests in flight per sender and overall with wait/resource-constraint (#17)", function ()
		local svc = implementing(server, "capped", { "a" });
		local alice, bob = login(server, "alice"), login(server, "bob");
		finally(function () close_all({ svc[1], alice, bob }); end);
		local held = {};
		for i = 1, 2 do
			alice:send(request("capped.localhost", "get", "a" .. i));
			held[#held + 1] = assert(svc[1]:await(is_request));
		end
		local refused = assert(alice:request(request("capped.localhost", "get", "a3")));
		assert.equal("wait/resource-constraint", condition(refused));
		bob:send(request("capped.localhost", "get", "b1"));
		held[#held + 1] = assert(svc[1]:await(is_request));
		refused = assert(bob:request(request("capped.localhost", "get", "b2")));
		assert.equal("wait/resource-constraint", condition(refused), "over the overall cap");
		-- one answer makes room again
		answer(svc[1], held[1]);
		assert.equal("a1", assert(alice:await_iq("result")).attr.id);
		alice:send(request("capped.localhost", "get", "a4"));
		held[#held + 1] = assert(svc[1]:await(is_request));
		for i = 2, #held do
			answer(svc[1], held[i]);
		end
		assert(alice:await_iq("result"));
		assert(alice:await_iq("result"));
		assert(bob:await_iq("result"));
	end);

	it("holds no more than the cap for a flood of fresh ids from many JIDs of one remote domain (#17)", function ()
		local svc = implementing(server, "capped", { "a" });
		local ext = assert(xmpp.component({ port = server.ports.component, domain = "ext.localhost", secret = "ext-secret" }));
		finally(function () close_all({ svc[1], ext }); end);
		local out = {};
		for i = 1, 200 do
			out[i] = tostring(st.iq({ type = "set", id = "f" .. i, from = ("u%d@ext.localhost/r"):format(i), to = "capped.localhost" })
				:tag("query", { xmlns = xmlns_test }));
		end
		ext.sock:send(table.concat(out));
		local refused = 0;
		for _ = 1, 197 do
			local reply = assert(ext:await_iq("error"));
			assert.equal("wait/resource-constraint", condition(reply));
			refused = refused + 1;
		end
		assert.equal(197, refused);
		local forwarded = delivered(svc[1], 0.3);
		assert.equal(3, #forwarded);
		for _, req in ipairs(forwarded) do
			answer(svc[1], req);
		end
		for _ = 1, 3 do
			assert.equal("result", assert(ext:await_iq()).attr.type);
		end
	end);

	it("serves node@component and node@component/res like the component (#17)", function ()
		local svc = implementing(server, "nodes", { "a" });
		local alice = login(server, "alice", "n");
		finally(function () close_all({ svc[1], alice }); end);
		for _, to in ipairs({ "room@nodes.localhost", "room@nodes.localhost/nick" }) do
			alice:send(request(to, "get", "n1"));
			local req = assert(svc[1]:await(is_request));
			assert.equal("nodes.localhost/alice@localhost/n", req.attr.from);
			answer(svc[1], req);
			local reply = assert(alice:await_iq("result"));
			assert.equal("n1", reply.attr.id);
			assert.equal(to, reply.attr.from);
		end
		-- the implementing client may write to node@component/JID too
		svc[1]:send(st.message({ to = "room@nodes.localhost/alice@localhost/n", type = "chat" }):tag("body"):text("via node"):up());
		local msg = assert(alice:await_message());
		assert.equal("via node", msg:get_child_text("body"));
		assert.equal("nodes.localhost", msg.attr.from);
	end);

	it("does not take the target's presence directed at component/X for its availability (#17)", function ()
		local svc = implementing(server, "nodes", { "a" });
		local alice = login(server, "alice");
		finally(function () close_all({ svc[1], alice }); end);
		svc[1]:send(st.presence({ type = "unavailable", to = "nodes.localhost/" .. alice.jid }));
		svc[1]:send(st.presence({ type = "unavailable", to = "room@nodes.localhost" }));
		alice:send(request("nodes.localhost", "get", "still"));
		answer(svc[1], assert(svc[1]:await(is_request)));
		assert.equal("still", assert(alice:await_iq("result")).attr.id);
	end);

	it("answers service-unavailable when no resource is available", function ()
		local alice = login(server, "alice");
		finally(function () alice:close(); end);
		local reply = assert(alice:request(request("short.localhost")));
		assert.equal("cancel/service-unavailable", condition(reply));
		alice:send(st.message({ to = "short.localhost", type = "chat" }):tag("body"):text("hi"):up());
		local bounced = assert(alice:await_message());
		assert.equal("error", bounced.attr.type);
		assert.equal("cancel/service-unavailable", condition(bounced));
	end);

	it("routes with Unicode JIDs and '/' and '@' in resources", function ()
		local svc = implementing(server, "plain", { "a" });
		local nandu = login(server, "ñandú", "电话/@home");
		finally(function () close_all({ svc[1], nandu }); end);
		assert.equal("ñandú@localhost/电话/@home", nandu.jid);
		nandu:send(request("plain.localhost", "get", "ü-1"));
		local req = assert(svc[1]:await(is_request));
		answer(svc[1], req);
		local reply = assert(nandu:await_iq("result"));
		assert.equal("ü-1", reply.attr.id);
		-- and the implementing client reaches that JID through the tag
		svc[1]:send(st.message({ to = req.attr.from, type = "chat" }):tag("body"):text("¿qué tal?"):up());
		local msg = assert(nandu:await_message());
		assert.equal("plain.localhost", msg.attr.from);
		assert.equal("¿qué tal?", msg:get_child_text("body"));
	end);

	for _, case in ipairs({ { "jid", "rr" }, { "tag", "rrtag" } }) do
	local name = case[2];
	local component = name .. ".localhost";
	it("never delivers forged, altered or unsolicited replies under \"" .. case[1] .. "\"", function ()
		local svc = implementing(server, name, { "first", "second" });
		local alice, bob = login(server, "alice"), login(server, "bob");
		finally(function () close_all({ svc[1], svc[2], alice, bob }); end);

		alice:send(request(component, "get", "real"));
		local owner, req = await_any(svc, is_request);
		assert.truthy(owner);
		local other = owner == svc[1] and svc[2] or svc[1];
		local tag_address = req.attr.from;

		-- the other resource, with the right tag and id
		other:send(st.reply(req):tag("forged", { xmlns = xmlns_test }));
		-- the right resource, the wrong id
		owner:send(st.iq({ type = "result", id = "not-real", to = tag_address }));
		-- the right resource and id, an altered tag (every position tried)
		local address = tag_address:match("^[^/]*/(.*)$");
		for i = 1, #address, 3 do
			local c = address:sub(i, i) == "A" and "B" or "A";
			owner:send(st.iq({ type = "result", id = "real", to = component .. "/" .. address:sub(1, i - 1) .. c .. address:sub(i + 1) }));
		end
		-- someone else's address: bob's, whom the implementing client may know
		owner:send(st.iq({ type = "result", id = "real", to = component .. "/" .. bob.jid }));
		-- someone else entirely, to the address and to the bare component
		bob:send(st.iq({ type = "result", id = "real", to = tag_address }));
		bob:send(st.iq({ type = "result", id = "real", to = component }));
		-- a request from the implementing client to an address no one wrote from is refused
		for _, made_up in ipairs({ "AAAAAAAAAAAAAAAAAAAAAAAAAAA", "AAAAAAAAAAAAAAAA", "carol@localhost/x", bob.jid }) do
			local refused = assert(owner:request(xmpp.iq({ type = "get", to = component .. "/" .. made_up })
				:tag("query", { xmlns = xmlns_test }):up()));
			assert.equal("cancel/item-not-found", condition(refused));
		end

		local leaked = delivered(alice, 0.5);
		assert.same({}, leaked, "nothing reached alice before the genuine reply");

		owner:send(st.reply(req):tag("genuine", { xmlns = xmlns_test }));
		local reply = assert(alice:await_iq("result"));
		assert.truthy(reply:get_child("genuine", xmlns_test));
		-- a second reply to the same request is unsolicited
		owner:send(st.reply(req):tag("again", { xmlns = xmlns_test }));
		assert.same({}, delivered(alice, 0.5));
		assert.same({}, delivered(bob, 0.1));
	end);
	end

	it("sends messages both ways, and lets the implementing client start IQs", function ()
		local svc = implementing(server, "plain", { "a" });
		local alice = login(server, "alice", "chat");
		finally(function () close_all({ svc[1], alice }); end);

		alice:send(st.message({ to = "plain.localhost", type = "chat", id = "m1" }):tag("body"):text("hello"):up());
		local msg = assert(svc[1]:await_message());
		assert.equal("hello", msg:get_child_text("body"));
		local tag_address = msg.attr.from;
		assert.truthy(tag_address:match("^plain%.localhost/"));

		svc[1]:send(st.message({ to = tag_address, type = "chat" }):tag("body"):text("hello back"):up());
		local back = assert(alice:await_message());
		assert.equal("plain.localhost", back.attr.from);
		assert.equal("alice@localhost/chat", back.attr.to);
		assert.equal("hello back", back:get_child_text("body"));

		-- an IQ started by the implementing client, and its reply routed back
		svc[1]:send(st.iq({ type = "get", id = "from-svc", to = tag_address }):tag("query", { xmlns = xmlns_test }):up());
		local req = assert(alice:await(is_request));
		assert.equal("plain.localhost", req.attr.from);
		alice:send(st.reply(req):tag("ok", { xmlns = xmlns_test }));
		local reply = assert(svc[1]:await_iq("result"));
		assert.equal("from-svc", reply.attr.id);
		assert.equal(tag_address, reply.attr.from);
		assert.truthy(reply:get_child("ok", xmlns_test));
	end);

	it("alternates strictly under round_robin", function ()
		local svc = implementing(server, "rr", { "first", "second" });
		local alice = login(server, "alice");
		finally(function () close_all({ svc[1], svc[2], alice }); end);
		local order = {};
		for i = 1, 10 do
			alice:send(request("rr.localhost", "get", "rr" .. i));
			local client, req = await_any(svc, is_request);
			assert.truthy(client);
			answer(client, req);
			assert(alice:await_iq("result"));
			table.insert(order, client == svc[1] and 1 or 2);
		end
		for i = 3, 10 do
			assert.equal(order[i - 2], order[i]);
			assert.not_equal(order[i - 1], order[i]);
		end
	end);

	it("keeps each sender on one resource under sticky", function ()
		local svc = implementing(server, "sticky", { "first", "second", "third" }, { fresh_senders = true });
		local alice, bob = login(server, "alice"), login(server, "bob");
		finally(function () close_all({ svc[1], svc[2], svc[3], alice, bob }); end);
		for _, user in ipairs({ alice, bob }) do
			local used = {};
			for _ = 1, 8 do
				user:send(request("sticky.localhost"));
				local client, req = await_any(svc, is_request);
				answer(client, req);
				assert(user:await_iq("result"));
				used[client] = true;
			end
			local n = 0;
			for _ in pairs(used) do
				n = n + 1;
			end
			assert.equal(1, n);
		end
	end);

	it("prefers the resource with fewer pending requests under least_pending", function ()
		local svc = implementing(server, "least", { "first", "second" });
		local alice = login(server, "alice");
		finally(function () close_all({ svc[1], svc[2], alice }); end);
		-- four requests, none answered: two each
		local held = {};
		for i = 1, 4 do
			alice:send(request("least.localhost", "get", "l" .. i));
			local client, req = await_any(svc, is_request);
			held[client] = (held[client] or 0) + 1;
			table.insert(held, { client, req });
		end
		assert.equal(2, held[svc[1]]);
		assert.equal(2, held[svc[2]]);
		-- the first resource answers its two: the next two go there
		for _, pair in ipairs(held) do
			if pair[1] == svc[1] then
				answer(pair[1], pair[2]);
			end
		end
		assert(alice:await_iq("result"));
		assert(alice:await_iq("result"));
		for i = 5, 6 do
			alice:send(request("least.localhost", "get", "l" .. i));
			local client = await_any(svc, is_request);
			assert.equal(svc[1], client);
		end
	end);

	it("pins requests to the first available preferred resource", function ()
		local svc = implementing(server, "pinned", { "first", "other" }, { wait_for = 1 });
		local alice = login(server, "alice");
		local second; -- logged in below
		-- One finally: busted keeps only the last one a test registers.
		finally(function () close_all({ svc[1], svc[2], alice, second }); end);
		-- "second" is preferred but absent: "first" is next in the list
		for _ = 1, 4 do
			alice:send(request("pinned.localhost"));
			local client, req = await_any(svc, is_request);
			assert.equal(svc[1], client);
			answer(client, req);
			assert(alice:await_iq("result"));
		end
		second = login(server, "pinned-svc", "second");
		local all = { svc[1], svc[2], second };
		local got;
		for _ = 1, 50 do -- until the component has seen "second" arrive
			alice:send(request("pinned.localhost"));
			local client, req = await_any(all, is_request);
			answer(client, req);
			assert(alice:await_iq("result"));
			got = client;
			if got == second then
				break;
			end
			socket.sleep(0.05);
		end
		assert.equal(second, got);
	end);

	it("routes only to the highest priority", function ()
		local svc = implementing(server, "prio", { "low" }, { priority = 1 });
		local high = login(server, "prio-svc", "high", { priority = 5 });
		local alice = login(server, "alice");
		-- One finally: busted keeps only the last one a test registers.
		finally(function () close_all({ svc[1], high, alice }); end);
		local client;
		for _ = 1, 50 do
			alice:send(request("prio.localhost"));
			local req;
			client, req = await_any({ svc[1], high }, is_request);
			answer(client, req);
			assert(alice:await_iq("result"));
			if client == high then
				break;
			end
			socket.sleep(0.05);
		end
		assert.equal(high, client);
		for _ = 1, 4 do
			alice:send(request("prio.localhost"));
			local c, req = await_any({ svc[1], high }, is_request);
			assert.equal(high, c);
			answer(c, req);
			assert(alice:await_iq("result"));
		end
	end);

	it("re-sends a pending get and fails a pending set when their resource leaves", function ()
		local svc = implementing(server, "failover", { "first", "second" });
		local alice = login(server, "alice");
		local third; -- logged in below
		-- One finally: busted keeps only the last one a test registers.
		finally(function () close_all({ svc[1], svc[2], alice, third }); end);

		alice:send(request("failover.localhost", "get", "g1"));
		local owner, req = await_any(svc, is_request);
		local other = owner == svc[1] and svc[2] or svc[1];
		local tag_address = req.attr.from;
		owner:close();

		local again = assert(other:await(is_request));
		assert.equal(req.attr.id, again.attr.id);
		assert.equal(tag_address, again.attr.from);
		answer(other, again);
		local reply = assert(alice:await_iq("result"));
		assert.equal("g1", reply.attr.id);
		assert.equal(other.jid, reply:get_child("served", xmlns_test).attr.by);

		-- a set is not repeated: it may have taken effect
		third = login(server, "failover-svc", "third");
		local target;
		for _ = 1, 50 do
			alice:send(request("failover.localhost", "set", "s1"));
			target, req = await_any({ other, third }, is_request);
			if target == third then
				break;
			end
			answer(target, req);
			assert(alice:await_iq("result"));
			socket.sleep(0.05);
		end
		assert.equal(third, target);
		third:close();
		reply = assert(alice:await_iq("error"));
		assert.equal("s1", reply.attr.id);
		assert.equal("cancel/recipient-unavailable", condition(reply));
		assert.same({}, delivered(other, 0.3), "the set was not re-sent");
	end);

	it("times a request out with remote-server-timeout", function ()
		local svc = implementing(server, "short", { "slow" });
		local alice = login(server, "alice");
		finally(function () close_all({ svc[1], alice }); end);
		alice:send(request("short.localhost", "get", "t1"));
		local req = assert(svc[1]:await(is_request));
		local reply = assert(alice:await_iq(nil, 6));
		assert.equal("error", reply.attr.type);
		assert.equal("t1", reply.attr.id);
		assert.equal("wait/remote-server-timeout", condition(reply));
		-- a reply after the timeout is unsolicited
		answer(svc[1], req);
		assert.same({}, delivered(alice, 0.5));
	end);

end);

describe("mod_client_proxy start-up order #integration", function ()
	it("routes once the target's host activates after the component, and its account logs in late", function ()
		local server = prosody.start({
			plugin_paths = { prosody.root .. "/lua", prosody.root .. "/spec/fixtures" };
			global = 'modules_enabled = { "roster", "saslauth", "disco", "ping", "late_host" }\n'
				.. 'late_host = "late.localhost"\nlate_host_delay = 1';
			hosts = 'VirtualHost "localhost"\n\nVirtualHost "late.localhost"\n\tenabled = false\n\n'
				.. 'Component "jat.localhost" "client_proxy"\n\ttarget_address = "svc@late.localhost"\n';
			accounts = { { "alice", "localhost", "alice" } };
		});
		-- busted keeps one finally per test: it closes everything this test opens.
		local alice, svc;
		finally(function ()
			close_all({ alice, svc });
			server:stop();
		end);
		assert.truthy(server:wait_log("Activated late%.localhost late", 10), server:log_tail(30));
		alice = login(server, "alice");
		local early = assert(alice:request(request("jat.localhost")));
		assert.equal("cancel/service-unavailable", condition(early));

		socket.sleep(0.5);
		svc = login(server, "svc", "late", { domain = "late.localhost" });
		approve(svc, "jat.localhost");
		local served;
		for _ = 1, 50 do
			alice:send(request("jat.localhost"));
			local req = svc:await(is_request, 0.2);
			if req then
				answer(svc, req);
				served = alice:await_iq("result");
				break;
			end
			approve(svc, "jat.localhost", 0); -- in case it came late
			delivered(alice, 0.1);
		end
		assert.truthy(served, server:log_tail(30));
	end);
end);

describe("mod_client_proxy metrics #integration", function ()
	local http = require "socket.http";
	local ltn12 = require "ltn12";

	-- The component's samples from mod_http_openmetrics, as name{labels} -> number.
	local function metrics(port)
		local body = {};
		local ok, code = http.request({ url = ("http://127.0.0.1:%d/metrics"):format(port),
			headers = { host = "localhost" }, sink = ltn12.sink.table(body) });
		assert(ok and code == 200, "GET /metrics: " .. tostring(code));
		local samples = {};
		for name, labels, value in table.concat(body):gmatch("\n(prosody_mod_client_proxy__[%w_]+)(%b{}) (%S+)") do
			samples[name .. labels] = tonumber(value);
		end
		return samples;
	end

	local function counter(samples, name)
		return samples[("prosody_mod_client_proxy__%s_total{host=\"metrics.localhost\"}"):format(name)] or 0;
	end

	local function pending(samples)
		return samples["prosody_mod_client_proxy__pending{host=\"metrics.localhost\"}"];
	end

	it("count requests, replies, drops, timeouts and messages, and requests in flight in one series", function ()
		local port = prosody.free_port();
		local server = prosody.start({
			global = ("statistics = \"internal\"\nstatistics_interval = \"manual\"\nhttp_ports = { %d }\n"
				.. "http_interfaces = { \"127.0.0.1\" }\n"
				.. "modules_enabled = { \"roster\", \"saslauth\", \"disco\", \"ping\", \"http_openmetrics\" }"):format(port);
			hosts = 'VirtualHost "localhost"\n\nComponent "metrics.localhost" "client_proxy"\n'
				.. '\ttarget_address = "metrics-svc@localhost"\n\tclient_proxy_timeout = 1\n';
			accounts = { { "alice", "localhost", "alice" }, { "bob", "localhost", "bob" },
				{ "metrics-svc", "localhost", "metrics-svc" } };
		});
		local svc, alice;
		finally(function ()
			close_all({ svc and svc[1], alice });
			server:stop();
		end);
		svc = implementing(server, "metrics", { "a" });
		alice = login(server, "alice");
		local before = metrics(port);

		alice:send(request("metrics.localhost", "get", "m1"));
		local req = assert(svc[1]:await(is_request));
		local during = metrics(port);
		assert.equal(counter(before, "routed") + 1, counter(during, "routed"));
		assert.equal(1, pending(during));

		answer(svc[1], req);
		assert(alice:await_iq("result"));
		svc[1]:send(st.iq({ type = "result", id = "never-asked", to = req.attr.from }));
		alice:send(st.message({ to = "metrics.localhost", type = "chat" }):tag("body"):text("hi"));
		assert(svc[1]:await_message());
		alice:send(request("metrics.localhost", "get", "m2"));
		assert(svc[1]:await(is_request));
		local timed_out = assert(alice:await_iq("error", 5));
		assert.equal("wait/remote-server-timeout", condition(timed_out));

		local after = metrics(port);
		assert.equal(counter(before, "routed") + 2, counter(after, "routed"));
		assert.equal(counter(before, "replies") + 1, counter(after, "replies"));
		assert.equal(counter(before, "dropped") + 1, counter(after, "dropped"));
		assert.equal(counter(before, "timeouts") + 1, counter(after, "timeouts"));
		assert.equal(counter(before, "messages") + 1, counter(after, "messages"));
		assert.equal(0, pending(after));
		for name in pairs(after) do
			assert.is_nil(name:find("resource=", 1, true), "no series per resource: " .. name);
		end
	end);
end);

describe("mod_client_proxy reload #integration", function ()
	-- Runs one command in Prosody's admin console (mod_admin_telnet).
	local function console(port, command)
		local sock = assert(socket.connect("127.0.0.1", port));
		-- A reload under valgrind takes seconds; the read ends at "| OK".
		sock:settimeout(10 * prosody.slow);
		assert(sock:send(command .. "\n"));
		local out = {};
		repeat
			local line = sock:receive("*l");
			out[#out + 1] = line;
		until not line or line:find("^| OK") or line:find("^! ")
		sock:close();
		return table.concat(out, "\n");
	end

	it("fails requests in flight on unload, and a late reply to them never matches a new request (#17)", function ()
		local port = prosody.free_port();
		local server = prosody.start({
			global = ("console_ports = { %d }\nconsole_interfaces = { \"127.0.0.1\" }\n"
				.. "modules_enabled = { \"roster\", \"saslauth\", \"disco\", \"ping\", \"admin_telnet\" }"):format(port);
			hosts = 'VirtualHost "localhost"\n\nComponent "reload.localhost" "client_proxy"\n'
				.. '\ttarget_address = "reload-svc@localhost"\n';
			accounts = { { "alice", "localhost", "alice" }, { "bob", "localhost", "bob" },
				{ "reload-svc", "localhost", "reload-svc" } };
		});
		local svc, alice;
		finally(function ()
			close_all({ svc and svc[1], alice });
			server:stop();
		end);
		svc = implementing(server, "reload", { "a" });
		alice = login(server, "alice", "r");
		alice:send(request("reload.localhost", "get", "same"));
		local old = assert(svc[1]:await(is_request));

		local out = console(port, 'module:reload("client_proxy", "reload.localhost")');
		assert.truthy(out:find("OK", 1, true), out);
		local failed = assert(alice:await_iq("error"));
		assert.equal("same", failed.attr.id);
		assert.equal("cancel/service-unavailable", condition(failed));

		-- the same sender sends the same id again, once the new load routes
		local new;
		for _ = 1, 50 do
			alice:send(request("reload.localhost", "get", "same"));
			new = svc[1]:await(is_request, 0.2);
			if new then
				break;
			end
			assert(alice:await_iq("error", 1));
		end
		assert.truthy(new, server:log_tail(30));
		assert.equal(old.attr.from, new.attr.from);
		assert.not_equal(old.attr.id, new.attr.id);
		svc[1]:send(st.reply(old):tag("late", { xmlns = xmlns_test }));
		assert.same({}, delivered(alice, 0.5), "the late reply matched nothing");
		svc[1]:send(st.reply(new):tag("current", { xmlns = xmlns_test }));
		local reply = assert(alice:await_iq("result"));
		assert.equal("same", reply.attr.id);
		assert.truthy(reply:get_child("current", xmlns_test));
	end);
end);

describe("mod_client_proxy options #integration", function ()
	it("logs a wrong-typed option and uses its default instead of failing to load (#22)", function ()
		local server = prosody.start({
			hosts = 'VirtualHost "localhost"\n\nComponent "opts.localhost" "client_proxy"\n'
				.. '\ttarget_address = "opts-svc@localhost"\n'
				.. '\tclient_proxy_timeout = "5m"\n'
				.. '\tclient_proxy_max_pending = "many"\n'
				.. '\tclient_proxy_max_pending_per_sender = { 5 }\n'
				.. '\tclient_proxy_contact_window = "1h"\n'
				.. '\tclient_proxy_policy = "fastest"\n'
				.. '\tclient_proxy_addressing = "hidden"\n';
			accounts = { { "alice", "localhost", "alice" }, { "bob", "localhost", "bob" },
				{ "opts-svc", "localhost", "opts-svc" } };
		});
		local svc, alice;
		finally(function ()
			close_all({ svc and svc[1], alice });
			server:stop();
		end);
		for _, line in ipairs({
			"Config option 'client_proxy_timeout' = \"5m\" is not understood: expected a number from 1 to 86400; using the default, 30",
			"Config option 'client_proxy_max_pending' = \"many\" is not understood: expected an integer from 1 to 1000000; using the default, 10000",
			"Config option 'client_proxy_max_pending_per_sender' = { ",
			"Config option 'client_proxy_contact_window' = \"1h\" is not understood: expected a number from 60 to 604800; using the default, 3600",
			"Config option 'client_proxy_policy' = \"fastest\" is not understood",
			"Config option 'client_proxy_addressing' = \"hidden\" is not understood",
		}) do
			-- The component may load after c2s listens (slowly, under valgrind).
			assert.truthy(server:wait_log((line:gsub("%p", "%%%0"))), line .. "\n" .. server:log_tail(30));
		end
		assert.is_nil(server:log():find("Error initializing module", 1, true));
		svc = implementing(server, "opts", { "a" });
		alice = login(server, "alice", "o");
		alice:send(request("opts.localhost", "get", "o1"));
		local req = assert(svc[1]:await(is_request));
		assert.equal("opts.localhost/alice@localhost/o", req.attr.from, "the default addressing");
		answer(svc[1], req);
		assert.equal("o1", assert(alice:await_iq("result")).attr.id);
	end);
end);
