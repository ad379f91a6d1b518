-- proxy65 with a third-party client library, as users run it: slixmpp's
-- XEP-0065 plugin (spec/clients/slixmpp_transfer.py) finds the proxy
-- through disco, offers it, activates and streams 0 bytes, 1 MiB + 7 and
-- 5 MiB + 13 from one client to another, which must get every byte, in
-- both relay modes. The same runs against Prosody's built-in mod_proxy65,
-- which must agree.
-- Where slixmpp is missing, says so and skips.
local prosody = require "spec.helpers.prosody";
local library = require "spec.helpers.client_library";

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
	return library.skip("slixmpp", why);
end

library.describe("slixmpp's XEP-0065 plugin", function (server, size, seed)
	return prosody.shell(("timeout 120 %q %q %d alice@localhost alice-pw bob@localhost bob-pw %d %d 60"):format(
		PYTHON, PROGRAM, server.ports.c2s, size, seed));
end);
