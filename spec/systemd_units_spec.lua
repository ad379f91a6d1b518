-- The systemd units of the standalone components (dist/systemd/, #32):
-- systemd-analyze verify finds nothing to say about them (the checkout's
-- bin/ standing in for /usr/bin, where a package puts the commands), and
-- each keeps its hardening, its credential and its restart. Where
-- systemd-analyze is missing, says so and skips.
local prosody = require "spec.helpers.prosody";

local UNITS = { "proxy65", "client_proxy" };

local function read(path)
	local f = assert(io.open(path));
	local text = f:read("a");
	f:close();
	return text;
end

local have = os.execute("command -v systemd-analyze >/dev/null 2>&1");
if not have then
	print("systemd unit specs skipped: systemd-analyze is not installed (Debian: apt-get install systemd)");
	describe("dist/systemd", function ()
		pending("skipped: systemd-analyze is not installed");
	end);
	return;
end

describe("dist/systemd", function ()
	for _, program in ipairs(UNITS) do
		local path = ("dist/systemd/%s@.service"):format(program);

		it(program .. "@.service passes systemd-analyze verify without a word", function ()
			local dir = assert(io.popen("mktemp -d \"${TMPDIR:-/tmp}/cproxy-units.XXXXXX\"")):read("l");
			finally(function () os.execute(("rm -rf %q"):format(dir)); end);
			local unit = read(path):gsub("/usr/bin/" .. program, prosody.root .. "/bin/" .. program);
			local f = assert(io.open(("%s/%s@.service"):format(dir, program), "w"));
			f:write(unit);
			f:close();
			local h = io.popen(("systemd-analyze verify %q 2>&1; echo \"status=$?\""):format(
				("%s/%s@demo.service"):format(dir, program)));
			local out = h:read("a");
			h:close();
			assert.equal("status=0\n", out);
		end);

		it(program .. "@.service takes its secret as a credential, restarts, and is hardened", function ()
			local unit = read(path);
			for _, line in ipairs({
				"ExecStart=/usr/bin/" .. program .. " --config /etc/prosody-cproxy/%i.cfg.lua --secret-file %d/secret",
				"LoadCredential=secret:/etc/prosody-cproxy/%i.secret", "Restart=on-failure",
				"DynamicUser=yes", "NoNewPrivileges=yes", "ProtectSystem=strict", "ProtectHome=yes",
				"RestrictAddressFamilies=AF_INET AF_INET6 AF_UNIX AF_NETLINK", "CapabilityBoundingSet=\n",
			}) do
				assert.truthy(unit:find(line, 1, true), line);
			end
			assert.is_nil(unit:find("--secret ", 1, true), "a secret on the command line");
		end);
	end
end);
