-- Prosody loads both components, from this checkout and from a
-- luarocks-installed tree, and refuses them on a VirtualHost.
local prosody = require "spec.helpers.prosody";
local xmpp = require "spec.helpers.xmpp_client";
local st = require "util.stanza";

local hosts = [[
VirtualHost "localhost"

Component "proxy.localhost" "proxy65"

Component "jat.localhost" "client_proxy"
	target_address = "svc@localhost"
]];

local function disco_info(client, to)
	local reply = assert(client:request(xmpp.iq({ type = "get", to = to })
		:tag("query", { xmlns = "http://jabber.org/protocol/disco#info" })));
	assert.equal("result", reply.attr.type, tostring(reply));
	return reply:get_child("query", "http://jabber.org/protocol/disco#info");
end

local function has_feature(query, var)
	for feature in query:childtags("feature") do
		if feature.attr.var == var then
			return true;
		end
	end
	return false;
end

local function check_components(server)
	local client = assert(xmpp.connect({ port = server.ports.c2s, domain = "localhost",
		username = "alice", password = "pw" }));
	local info = disco_info(client, "proxy.localhost");
	local identity = info:get_child("identity");
	assert.equal("proxy", identity.attr.category);
	assert.equal("bytestreams", identity.attr.type);
	assert.is_true(has_feature(info, "http://jabber.org/protocol/bytestreams"));
	-- client_proxy is up: with no implementing client online, it says so
	local reply = assert(client:request(xmpp.iq({ type = "get", to = "jat.localhost" })
		:tag("query", { xmlns = "http://jabber.org/protocol/disco#info" })));
	assert.equal("error", reply.attr.type);
	assert.truthy(reply:get_child("error"):get_child("service-unavailable", "urn:ietf:params:xml:ns:xmpp-stanzas"));
	client:close();
	local log = server:log();
	assert.is_nil(log:match("Unable to load module[^\n]*"));
	assert.is_nil(log:match("Error initializing module[^\n]*"));
	return log;
end

describe("prosody-cproxy modules #integration", function ()
	it("load from this checkout", function ()
		local server = prosody.start({ hosts = hosts, accounts = { { "alice", "localhost", "pw" } } });
		finally(function () server:stop(); end);
		local log = check_components(server);
		assert.truthy(log:find(prosody.root .. "/lua/../build/cproxy/core.so", 1, true));
	end);

	it("load from a luarocks-installed tree", function ()
		-- Under build/, not /tmp: a /tmp mounted noexec (a common hardening)
		-- could not load the installed core.so or run bin/proxy65.
		local tree = ("%s/build/spec-tree-%d"):format(prosody.root, math.random(1e9));
		local server;
		-- One finally: busted keeps only the last one a test registers.
		finally(function ()
			if server then
				server:stop();
			end
			os.execute("rm -rf '" .. tree .. "'");
		end);
		local cmd = ("cd '%s' && luarocks --lua-version 5.4 --tree '%s' make --deps-mode none >'%s.log' 2>&1")
			:format(prosody.root, tree, tree);
		local ok = os.execute(cmd);
		local f = io.open(tree .. ".log");
		local output = f and f:read("a") or "";
		if f then f:close(); end
		os.remove(tree .. ".log");
		assert.truthy(ok, output);
		-- The standalone commands are installed too, and run.
		local h = io.popen(("'%s/bin/proxy65' --version 2>&1"):format(tree));
		local version = h:read("a");
		h:close();
		assert.truthy(version:match("^prosody%-cproxy proxy65"), version);
		h = io.popen(("'%s/bin/client_proxy' --version 2>&1"):format(tree));
		version = h:read("a");
		h:close();
		assert.truthy(version:match("^prosody%-cproxy client_proxy"), version);
		local plugins = tree .. "/share/lua/5.4/prosody_cproxy";
		server = prosody.start({ hosts = hosts, plugin_paths = { plugins },
			accounts = { { "alice", "localhost", "pw" } } });
		local log = check_components(server);
		assert.truthy(log:find(plugins .. "/../../../../lib/lua/5.4/cproxy/core.so", 1, true),
			"the C extension did not come from the installed tree");
	end);

	for _, name in ipairs({ "proxy65", "client_proxy" }) do
		it("refuse to load " .. name .. " on a VirtualHost, with a clear error", function ()
			local server = prosody.start({
				hosts = ('VirtualHost "localhost"\n\tmodules_enabled = { "%s" }\n\ttarget_address = "svc@localhost"\n'):format(name);
				accounts = { { "alice", "localhost", "pw" } };
			});
			finally(function () server:stop(); end);
			local line = server:wait_log("Error initializing module '" .. name .. "'[^\n]*", 5);
			assert.truthy(line, "no error in the log");
			assert.truthy(line:find("Component", 1, true), line);
		end);
	end
end);

describe("mod_client_proxy configuration #integration", function ()
	it("refuses to load without a bare target_address, with a clear error", function ()
		for _, target in ipairs({ "", 'target_address = "svc@localhost/res"', 'target_address = "localhost"' }) do
			local server = prosody.start({
				hosts = 'VirtualHost "localhost"\n\nComponent "jat.localhost" "client_proxy"\n\t' .. target .. "\n";
				accounts = { { "alice", "localhost", "pw" } };
			});
			finally(function () server:stop(); end);
			local line = server:wait_log("Error initializing module 'client_proxy'[^\n]*", 5);
			assert.truthy(line and line:find("target_address", 1, true), line);
			server:stop();
		end
	end);
end);
