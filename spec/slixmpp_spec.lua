-- proxy65 with a third-party client library, as users run it: slixmpp's
-- XEP-0065 plugin (spec/clients/slixmpp_transfer.py) finds the proxy
-- through disco, offers it, activates and streams 0 bytes, 1 MiB + 7 and
-- 5 MiB + 13 from one client to another, which must get every byte, in
-- both relay modes. The same runs against Prosody's built-in mod_proxy65,
-- which must agree.
-- Where slixmpp is missing, says so and skips.
local prosody = require "spec.helpers.prosody";
local bs = require "spec.helpers.bytestreams";

local MiB = 1048576;

-- Debian's python3: python3-slixmpp installs for it alone, and a python3
-- earlier on PATH (a virtualenv's, say) would not see the package.
local PYTHON = os.getenv("CPROXY_PYTHON") or "/usr/bin/python3";
local PROGRAM = prosody.root .. "/spec/clients/slixmpp_transfer.py";

-- () -> true | nil, why not
local function available()
	local ok, out = prosody.shell(("%q -c 'import slixmpp; print(slixmpp.__version__)'"):format(PYTHON));
	if not ok then
		return nil, ("slixmpp cannot be imported by %s (Debian: apt-get install python3-slixmpp, or make deps-slixmpp): %s")
			:format(PYTHON, out:match("[^\n]*Error[^\n]*") or out:gsub("%s+$", ""));
	end
	return true;
end

local found, why = available();
if not found then
	print("slixmpp specs skipped: " .. why);
	describe("proxy65 with slixmpp #integration", function ()
		pending("skipped: " .. why);
	end);
	return;
end

-- The streamhost is given as an address: "proxy.localhost" need not resolve.
local hosts = [[
VirtualHost "localhost"

Component "proxy.localhost" "proxy65"
	proxy65_address = "127.0.0.1"
]];

-- (server, bytes, seed) -> what the program printed: streamhost, sent and
-- received, each { bytes, sha256 }; raises with its output when it fails.
local function transfer(server, size, seed)
	local ok, out = prosody.shell(("timeout 120 %q %q %d alice@localhost alice-pw bob@localhost bob-pw %d %d 60"):format(
		PYTHON, PROGRAM, server.ports.c2s, size, seed));
	assert(ok, "slixmpp_transfer failed:\n" .. out .. "\n" .. server:log_tail(20));
	local result = { streamhost = { out:match("streamhost (%S+) (%S+) (%d+)") } };
	for who, verb in pairs({ sent = "initiator: sent", received = "target: received" }) do
		local bytes, hash = out:match(verb .. " (%d+) bytes, sha256 (%x+)");
		assert(bytes, "no \"" .. verb .. "\" line:\n" .. out);
		result[who] = { tonumber(bytes), hash };
	end
	return result;
end

local SIZES = { 0, MiB + 7, 5 * MiB + 13 };

for _, proxy in ipairs({
	{ name = "mod_proxy65 in copy mode", global = "proxy65_relay_mode = \"copy\"" };
	{ name = "mod_proxy65 in splice mode", global = "proxy65_relay_mode = \"splice\"" };
	-- No plugin path of ours: Prosody loads its own module.
	{ name = "Prosody's built-in mod_proxy65", builtin = true, plugin_paths = {} };
}) do
	describe(proxy.name .. " with slixmpp's XEP-0065 plugin #integration", function ()
		-- alice and bob are logged in here too, as other resources.
		local server, alice, bob;

		setup(function ()
			server, alice, bob = bs.start({ hosts = hosts, plugin_paths = proxy.plugin_paths, global = proxy.global });
		end);

		teardown(function ()
			bs.stop(server, alice, bob);
		end);

		for i, size in ipairs(SIZES) do
			it(("relays %d bytes from the initiator to the target intact"):format(size), function ()
				local result = transfer(server, size, i);
				assert.same({ "proxy.localhost", "127.0.0.1", tostring(server.ports.proxy65) }, result.streamhost);
				assert.equal(size, result.sent[1]);
				assert.same(result.sent, result.received);
				if not proxy.builtin then
					-- The relay saw the initiator's half-close, then the target's.
					assert.truthy(server:wait_log(("ended %%(completed%%): %d bytes %%(%d to the target, 0 back%%)")
						:format(size, size), 5), server:log_tail(20));
				end
			end);
		end
	end);
end
