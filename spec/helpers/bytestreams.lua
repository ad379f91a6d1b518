-- XEP-0065 from the clients' side, for specs that drive proxy65 in a real
-- Prosody: accounts, log-in, activation requests and the whole negotiation.
local prosody = require "spec.helpers.prosody";
local xmpp = require "spec.helpers.xmpp_client";
local s5 = require "spec.helpers.socks5_client";

local M = {};

M.xmlns = "http://jabber.org/protocol/bytestreams";

-- Two accounts on "localhost", for prosody.start{ accounts = ... }.
function M.accounts()
	return { { "alice", "localhost", "alice-pw" }, { "bob", "localhost", "bob-pw" } };
end

function M.login(server, user)
	return assert(xmpp.connect({ port = server.ports.c2s, domain = "localhost",
		username = user, password = user .. "-pw", resource = "r" .. math.random(1e6) }));
end

function M.activation(sid, target_jid, to)
	local query = xmpp.iq({ type = "set", to = to or "proxy.localhost" })
		:tag("query", { xmlns = M.xmlns, sid = sid });
	if target_jid then
		query:tag("activate"):text(target_jid):up();
	end
	return query;
end

-- Starts Prosody with prosody.start(opts) and logs alice and bob in;
-- returns server, alice, bob. opts.accounts defaults to M.accounts(),
-- opts.wait_ports to c2s and proxy65. When a log-in fails, it stops what it
-- started before raising.
function M.start(opts)
	opts.accounts = opts.accounts or M.accounts();
	opts.wait_ports = opts.wait_ports or { "c2s", "proxy65" };
	local server = prosody.start(opts);
	local clients = {};
	local ok, err = pcall(function ()
		clients[1] = M.login(server, "alice");
		clients[2] = M.login(server, "bob");
	end);
	if not ok then
		M.stop(server, clients[1], clients[2]);
		error(err, 0);
	end
	return server, clients[1], clients[2];
end

-- Closes the clients given, then stops the server (each may be nil: a
-- setup that failed half-way leaves some unset).
function M.stop(server, ...)
	for i = 1, select("#", ...) do
		local client = select(i, ...);
		if client then
			client:close();
		end
	end
	if server then
		server:stop();
	end
end

-- The JIDs of the server's disco items that are bytestream proxies
-- (identity proxy/bytestreams), sorted: what a client finds as Dino,
-- Smack and slixmpp look.
function M.find_proxies(client, domain)
	local DISCO_ITEMS, DISCO_INFO = "http://jabber.org/protocol/disco#items", "http://jabber.org/protocol/disco#info";
	local items = assert(client:request(xmpp.iq({ type = "get", to = domain or "localhost" })
		:tag("query", { xmlns = DISCO_ITEMS }), 10));
	assert(items.attr.type == "result", tostring(items));
	local proxies = {};
	for item in items:get_child("query", DISCO_ITEMS):childtags("item") do
		local info = assert(client:request(xmpp.iq({ type = "get", to = item.attr.jid })
			:tag("query", { xmlns = DISCO_INFO }), 10));
		local query = info.attr.type == "result" and info:get_child("query", DISCO_INFO);
		local identity = query and query:get_child("identity");
		if identity and identity.attr.category == "proxy" and identity.attr.type == "bytestreams" then
			table.insert(proxies, item.attr.jid);
		end
	end
	table.sort(proxies);
	return proxies;
end

-- The type and condition of an error reply.
function M.error_of(reply)
	assert(reply.attr.type == "error", tostring(reply));
	local err = reply:get_child("error");
	local condition = err.tags[1] and err.tags[1].name;
	return err.attr.type, condition;
end

-- Runs the XEP-0065 negotiation; returns target and initiator sockets,
-- the sid and the hash. opts: mode (of socks5_client.connect), early
-- (bytes pipelined behind the initiator's request), connect (the
-- initiator's options for socks5_client.connect), before_activation
-- (function(target_sock, initiator_sock)), port.
local sid_counter = 0;
function M.open_stream(server, initiator, target, opts)
	opts = opts or {};
	sid_counter = sid_counter + 1;
	local sid = "sid-" .. sid_counter .. "-" .. math.random(1e9);
	local hash = s5.hash(sid, initiator.jid, target.jid);
	local port = opts.port or server.ports.proxy65;
	local t_sock = assert(s5.connect(port, hash, { mode = opts.mode }));
	local connect = opts.connect or { early = opts.early };
	connect.mode = connect.early and "pipelined" or opts.mode;
	local i_sock = assert(s5.connect(port, hash, connect));
	if opts.before_activation then
		opts.before_activation(t_sock, i_sock);
	end
	local reply = assert(initiator:request(M.activation(sid, target.jid), 10));
	assert(reply.attr.type == "result", tostring(reply));
	return t_sock, i_sock, sid, hash;
end

return M;
