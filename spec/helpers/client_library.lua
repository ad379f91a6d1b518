-- Transfers made by a third-party client library's own XEP-0065 code, as
-- users run it: spec/slixmpp_spec.lua and spec/gloox_spec.lua. Each has a
-- program (spec/clients/) that logs two clients in, sends a given number
-- of bytes from one to the other through the proxy, and prints
--
--   streamhost JID HOST PORT
--   initiator: sent N bytes, sha256 HEX
--   target: received N bytes, sha256 HEX
--
-- The same transfers run through ours in both relay modes and through
-- Prosody's built-in mod_proxy65, which must agree.
local prosody = require "spec.helpers.prosody";
local bs = require "spec.helpers.bytestreams";
-- A spec file's globals are not a module's: busted's API and luassert.
local busted = require "busted";
local assert = require "luassert";
local describe, it, setup, teardown, pending = busted.describe, busted.it, busted.setup, busted.teardown,
	busted.pending;

local M = {};

local MiB = 1048576;

-- Sizes that are multiples of no buffer size, and nothing at all.
M.SIZES = { 0, MiB + 7, 5 * MiB + 13 };

-- The streamhost is given as an address: "proxy.localhost" need not resolve.
local HOSTS = [[
VirtualHost "localhost"

Component "proxy.localhost" "proxy65"
	proxy65_address = "127.0.0.1"
]];

local PROXIES = {
	{ name = "mod_proxy65 in copy mode", global = "proxy65_relay_mode = \"copy\"" };
	{ name = "mod_proxy65 in splice mode", global = "proxy65_relay_mode = \"splice\"" };
	-- No plugin path of ours: Prosody loads its own module.
	{ name = "Prosody's built-in mod_proxy65", builtin = true, plugin_paths = {} };
};

-- The program's output -> { streamhost = { jid, host, port }, sent =
-- { bytes, sha256 }, received = { bytes, sha256 } }; raises without them.
local function parse(out)
	local result = { streamhost = { out:match("streamhost (%S+) (%S+) (%d+)") } };
	for who, verb in pairs({ sent = "initiator: sent", received = "target: received" }) do
		local bytes, hash = out:match(verb .. " (%d+) bytes, sha256 (%x+)");
		assert(bytes, "no \"" .. verb .. "\" line:\n" .. out);
		result[who] = { tonumber(bytes), hash };
	end
	return result;
end

-- Describes the transfers of one library. `library` is the describe
-- blocks' wording ("slixmpp's XEP-0065 plugin"); `run(server, size, seed,
-- proxy)` runs the program and returns ok, its output (proxy.builtin says
-- which proxy); `on_failure(server, out, size, proxy)`, if given, may mark
-- a known failure pending before it is raised.
function M.describe(library, run, on_failure)
	for _, proxy in ipairs(PROXIES) do
		describe(proxy.name .. " with " .. library .. " #integration", function ()
			-- alice and bob are logged in here too, as other resources.
			local server, alice, bob;

			setup(function ()
				server, alice, bob = bs.start({ hosts = HOSTS, plugin_paths = proxy.plugin_paths, global = proxy.global });
			end);

			teardown(function ()
				bs.stop(server, alice, bob);
			end);

			for i, size in ipairs(M.SIZES) do
				it(("relays %d bytes from the initiator to the target intact"):format(size), function ()
					local ok, out = run(server, size, i, proxy);
					if not ok and on_failure then
						on_failure(server, out, size, proxy);
					end
					assert(ok, "the transfer program failed:\n" .. out .. "\n" .. server:log_tail(20));
					local result = parse(out);
					assert.same({ "proxy.localhost", "127.0.0.1", tostring(server.ports.proxy65) }, result.streamhost);
					assert.equal(size, result.sent[1]);
					assert.same(result.sent, result.received);
					if not proxy.builtin then
						-- The relay saw the initiator's end of stream, then the target's.
						assert.truthy(server:wait_log(("ended %%(completed%%): %d bytes %%(%d to the target, 0 back%%)")
							:format(size, size), 5), server:log_tail(20));
					end
				end);
			end
		end);
	end
end

-- Says why a library's specs are skipped, and reports them pending.
function M.skip(name, why)
	print(name .. " specs skipped: " .. why);
	describe("proxy65 with " .. name .. " #integration", function ()
		pending("skipped: " .. why);
	end);
end


return M;
