-- The standalone proxy65 (bin/proxy65) for specs, whichever server it
-- joins: started in the background with a secret file, or run to its end.
local socket = require "socket";
local prosody = require "spec.helpers.prosody";

local M = {};

-- Starts bin/proxy65 (or, with opts.program = "client_proxy",
-- bin/client_proxy) in the background; opts: rport, secret, jid
-- ("proxy.localhost"), socks_port and socks_host (proxy65's, on
-- 127.0.0.1 by default), target (client_proxy's),
-- args (more arguments). Returns a handle with pid, the SOCKS5 port,
-- log(), wait_log(), alive(), wait_exit() and stop().
function M.start(opts)
	local dir = assert(io.popen("mktemp -d \"${TMPDIR:-/tmp}/cproxy-standalone.XXXXXX\"")):read("l");
	local port = opts.socks_port or prosody.free_port();
	local secret_file = dir .. "/secret";
	local f = assert(io.open(secret_file, "w"));
	f:write(opts.secret, "\n");
	f:close();
	local program = opts.program or "proxy65";
	local args = {
		"--jid", opts.jid or "proxy.localhost", "--secret-file", secret_file, "--rhost", "127.0.0.1",
		"--rport", tostring(opts.rport), "--log-level", "debug",
	};
	if program == "proxy65" then
		table.insert(args, "--proxyips");
		table.insert(args, (opts.socks_host or "127.0.0.1") .. ":" .. port);
	else
		table.insert(args, "--target");
		table.insert(args, opts.target);
	end
	for _, extra in ipairs(opts.args or {}) do
		table.insert(args, extra);
	end
	local pid = assert(io.popen(("%s/bin/%s %s >%q 2>&1 & echo $!"):format(prosody.root, program,
		table.concat(args, " "), dir .. "/log")):read("l"));
	local handle = { pid = tonumber(pid), port = port, dir = dir };
	function handle.log()
		return prosody.read_lines(dir .. "/log");
	end
	function handle.wait_log(pattern, timeout)
		local deadline = socket.gettime() + (timeout or 10) * prosody.slow;
		repeat
			if handle.log():match(pattern) then
				return true;
			end
			socket.sleep(0.05);
		until socket.gettime() > deadline;
		return false;
	end
	function handle.alive()
		return os.execute("kill -0 " .. handle.pid .. " 2>/dev/null") == true;
	end
	-- Waits for it to exit by itself; returns its status or nil.
	function handle.wait_exit(timeout)
		local deadline = socket.gettime() + (timeout or 10) * prosody.slow;
		while handle.alive() and socket.gettime() < deadline do
			socket.sleep(0.05);
		end
		return not handle.alive();
	end
	function handle.stop()
		os.execute("kill -TERM " .. handle.pid .. " 2>/dev/null");
		handle.wait_exit(5);
		os.execute("kill -KILL " .. handle.pid .. " 2>/dev/null");
		os.execute(("rm -rf %q"):format(dir));
	end
	return handle;
end

-- Runs bin/proxy65 with `args` to its end; returns its exit status and
-- output.
function M.run(args)
	local h = io.popen(("%s/bin/proxy65 %s 2>&1; echo \"status=$?\""):format(prosody.root, args));
	local out = h:read("a");
	h:close();
	return tonumber(out:match("status=(%d+)")), out;
end

return M;
