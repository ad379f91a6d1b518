-- proxy65's options as operators get them wrong, and as they change them:
-- a bad value costs one clear log line and the default, never the module;
-- a reload applies new relay settings (#16).
local socket = require "socket";
local prosody = require "spec.helpers.prosody";
local s5 = require "spec.helpers.socks5_client";
local bs = require "spec.helpers.bytestreams";

local hosts = [[
VirtualHost "localhost"

Component "proxy.localhost" "proxy65"
	proxy65_idle_timeout = 5
]];

-- True when `sock` sees the proxy close it within `timeout` seconds.
local function closed_within(sock, timeout)
	sock:settimeout(timeout);
	local _, err = sock:receive(1);
	return err == "closed";
end

local function transfer_works(server, alice, bob)
	local t_sock, i_sock = bs.open_stream(server, alice, bob);
	local data = s5.random_bytes(200001, 3);
	local got = s5.run({ { from = i_sock, to = t_sock, data = data } });
	t_sock:close(); i_sock:close();
	return s5.sha256(data) == s5.sha256(got[1]);
end

describe("mod_proxy65 with wrong-typed options #integration", function ()
	local server, alice, bob;
	-- Each option's value, as written in the config and shown in the log.
	local wrong = {
		proxy65_activation_timeout = "\"1m\"";
		proxy65_idle_timeout = "\"5m\"";
		proxy65_buffer_size = "\"4 MiB\"";
		proxy65_socket_buffer = "{ 65536, 131072 }";
		proxy65_relay_mode = "\"fast\"";
	};

	setup(function ()
		local lines = {};
		for option, value in pairs(wrong) do
			table.insert(lines, option .. " = " .. value);
		end
		server, alice, bob = bs.start({ hosts = hosts; global = table.concat(lines, "\n") });
	end);

	teardown(function ()
		bs.stop(server, alice, bob);
	end);

	for option, shown in pairs(wrong) do
		it("logs one error naming " .. option .. ", its value and what is expected", function ()
			local line = server:log():match("\terror\tConfig option '" .. option .. "' = ([^\n]*)");
			assert.truthy(line, "no error line for " .. option);
			assert.equal(shown, line:sub(1, #shown));
			assert.truthy(line:match("expected .*; using"), line);
		end);
	end

	it("warns that a global option under a Component has no effect", function ()
		assert.truthy(server:log():match("Config option 'proxy65_idle_timeout' under proxy.localhost is ignored"));
	end);

	it("still relays, with the defaults", function ()
		assert.is_true(transfer_works(server, alice, bob));
	end);
end);

-- 0.12's get_option_number ignores bounds and 13's enforces them with its
-- own warning: options.lua checks them itself, so both log alike (#23).
describe("mod_proxy65 with out-of-range options #integration", function ()
	local server, alice, bob;

	setup(function ()
		server, alice, bob = bs.start({
			hosts = hosts;
			global = table.concat({
				"proxy65_activation_timeout = 0";
				"proxy65_buffer_size = 1024.5";
				"proxy65_idle_timeout = 9999999";
			}, "\n");
		});
	end);

	teardown(function ()
		bs.stop(server, alice, bob);
	end);

	for option, clamped in pairs({
		proxy65_activation_timeout = "0 is out of range: expected a number from 1 to 86400; using 1";
		-- The engine's bounds, defined in C (cproxy.core.engine_limits).
		proxy65_buffer_size = "1024.5 is out of range: expected an integer from 4096 to 1073741824; using 4096";
		proxy65_idle_timeout = "9999999 is out of range: expected an integer from 0 to 2073600; using 2073600";
	}) do
		it("warns once that " .. option .. " is clamped, and how", function ()
			local log = server:log();
			local line = log:match("\twarn\tConfig option '" .. option .. "' = ([^\n]*)");
			assert.equal(clamped, line);
			assert.is_nil(log:match("'" .. option .. "' out of bounds"));
		end);
	end

	it("still relays", function ()
		assert.is_true(transfer_works(server, alice, bob));
	end);
end);

describe("mod_proxy65 reloaded with new options #integration", function ()
	local server, alice, bob;

	setup(function ()
		server, alice, bob = bs.start({
			hosts = "VirtualHost \"localhost\"\nComponent \"proxy.localhost\" \"proxy65\"";
			admin = true;
			global = "proxy65_idle_timeout = 300";
		});
	end);

	teardown(function ()
		bs.stop(server, alice, bob);
	end);

	it("applies a new idle timeout, relay mode and buffer sizes to the relays after it", function ()
		local old_t, old_i = bs.open_stream(server, alice, bob);
		assert.equal("x", s5.run({ { from = old_i, to = old_t, data = "x", finish = "keep" } })[1]);
		server:add_global(table.concat({
			"proxy65_idle_timeout = 1";
			"proxy65_relay_mode = \"copy\"";
			"proxy65_buffer_size = 65536";
			"proxy65_socket_buffer = 262144";
		}, "\n"));
		assert.truthy(server:shell("config:reload()"));
		local ok, out = server:shell("module:reload(\"proxy65\")");
		assert.truthy(ok and out:match("OK"), out);
		-- The relay from before the reload is idle too: it goes as well.
		assert.is_true(closed_within(old_t, 10));
		local t_sock, i_sock = bs.open_stream(server, alice, bob);
		assert.is_true(closed_within(t_sock, 10));
		t_sock:close(); i_sock:close(); old_t:close(); old_i:close();
		assert.is_true(transfer_works(server, alice, bob));
		assert.is_nil(server:log():match("Could not apply"));
	end);

	it("keeps transfers running through a reload, and leaks no fd (#19)", function ()
		server:add_global("proxy65_idle_timeout = 300");
		assert.truthy(server:shell("config:reload()"));
		assert.truthy(server:shell("module:reload(\"proxy65\")"));
		-- The shell's own connection may still be closing: count once it has.
		local fds = server:fd_count();
		local settle = socket.gettime() + 2;
		repeat
			socket.sleep(0.2);
			local now = server:fd_count();
			local stable = now == fds;
			fds = now;
		until stable or socket.gettime() > settle;
		local flows, socks = {}, {};
		for i = 1, 3 do
			local t_sock, i_sock = bs.open_stream(server, alice, bob);
			flows[i] = { from = i_sock, to = t_sock, data = s5.random_bytes(3 * 1048576 + i, i), chunk = 4096 };
			socks[#socks + 1], socks[#socks + 2] = t_sock, i_sock;
			-- Half-way through when the module reloads.
			i_sock:send(flows[i].data:sub(1, 1048576));
			flows[i].data = flows[i].data:sub(1048577);
			flows[i].head = 1048576;
		end
		local ok, out = server:shell("module:reload(\"proxy65\")");
		assert.truthy(ok and out:match("OK"), out);
		local got = s5.run(flows, 60);
		for i = 1, 3 do
			assert.equal(#flows[i].data + flows[i].head, #got[i]);
		end
		for _, sock in ipairs(socks) do
			sock:close();
		end
		assert.is_true(transfer_works(server, alice, bob));
		local deadline = socket.gettime() + 5 * prosody.slow;
		while server:fd_count() > fds and socket.gettime() < deadline do
			socket.sleep(0.05);
		end
		-- More would be a leak; fewer is a connection from before closing.
		assert.truthy(server:fd_count() <= fds, ("%d fds, %d before"):format(server:fd_count(), fds));
	end);

	it("resets live transfers when unloaded, and closes its port (#19)", function ()
		local t_sock, i_sock = bs.open_stream(server, alice, bob);
		assert(i_sock:send("x"));
		t_sock:settimeout(5);
		assert.equal("x", t_sock:receive(1));
		local ok, out = server:shell("module:unload(\"proxy65\")");
		assert.truthy(ok and out:match("OK"), out);
		assert.equal("reset", (s5.await_end(t_sock, 5)));
		assert.equal("reset", (s5.await_end(i_sock, 5)));
		t_sock:close(); i_sock:close();
		local sock = socket.tcp();
		sock:settimeout(2);
		assert.is_nil(sock:connect("127.0.0.1", server.ports.proxy65));
		sock:close();
		assert.is_nil(server:log():match("[Tt]raceback"));
	end);
end);
