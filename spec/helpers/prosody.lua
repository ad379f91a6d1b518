-- A throw-away Prosody for specs: config in a temp dir, free loopback
-- ports, accounts registered with prosodyctl, started in the background,
-- stopped (and its dir removed) by stop(). On failure, raises with the
-- tail of Prosody's log.
local socket = require "socket";

local M = {};

-- CPROXY_PROSODY_COMMAND replaces `prosody` in the `prosody -F` that starts
-- it, e.g. "valgrind --tool=memcheck ... lua5.4 /usr/bin/prosody" (see
-- tools/check-valgrind). Such a Prosody starts and stops much more slowly,
-- so the waits below grow with it. CPROXY_SLOW sets the factor itself
-- (tools/check-sanitize does, for processes under ASan's runtime). Specs
-- scale their own waits on a Prosody by M.slow; waits end early anyway.
local prosody_command = os.getenv("CPROXY_PROSODY_COMMAND") or "prosody";
local slow = tonumber(os.getenv("CPROXY_SLOW")) or (prosody_command ~= "prosody" and 20 or 1);
M.slow = slow;

M.root = (debug.getinfo(1, "S").source:match("^@(.*)/spec/helpers/[^/]*$") or ".");
if M.root:sub(1, 1) ~= "/" then
	M.root = os.getenv("PWD") .. "/" .. M.root:gsub("^%./?", "");
	M.root = M.root:gsub("/$", "");
end

-- The Prosody under test: Debian's package by default, or with
-- PROSODY_SRC=dir a source tree built in place, whose `prosody` and
-- `prosodyctl` run as `lua5.4 ./prosody` from that directory.
M.src = os.getenv("PROSODY_SRC");
if M.src == "" then
	M.src = nil;
elseif M.src and M.src:sub(1, 1) ~= "/" then
	M.src = os.getenv("PWD") .. "/" .. M.src;
end

-- (tool[, prefix]) -> a shell command starting Prosody's `prosody` or
-- `prosodyctl`, its arguments to follow; `prefix` goes before the program:
-- variable assignments, or a wrapper such as "timeout 20".
function M.command(tool, prefix)
	if tool == "prosody" and prosody_command ~= "prosody" then
		return ("%s %s"):format(prefix or "", prosody_command);
	end
	if M.src then
		return ("cd %q && %s lua5.4 ./%s"):format(M.src, prefix or "", tool);
	end
	return ("%s %s"):format(prefix or "", tool);
end

-- Runs a shell command; returns whether it succeeded, and its output.
local function shell(cmd)
	local h = io.popen(cmd .. " 2>&1");
	local out = h:read("a");
	local ok = h:close();
	return ok, out;
end
M.shell = shell;

-- A file's contents, or "" when it cannot be read.
local function read_file(path)
	local f = io.open(path);
	if not f then
		return "";
	end
	local data = f:read("a");
	f:close();
	return data;
end
M.read_file = read_file;

-- The kernel's ephemeral port range (Linux's default where it cannot be read).
local function ephemeral_range()
	local low, high = read_file("/proc/sys/net/ipv4/ip_local_port_range"):match("(%d+)%s+(%d+)");
	return tonumber(low) or 32768, tonumber(high) or 60999;
end

-- A port nothing listens on, outside the kernel's ephemeral range, so that
-- no client socket of this or another test takes it before Prosody binds
-- it (a port from bind(0) is an ephemeral one, and may be handed out again).
-- Below the range where there is room (the default, 32768 up), else above.
function M.free_port()
	local low, high = ephemeral_range();
	local from, to = 20000, math.min(32000, low - 1);
	if to - from < 1000 then
		from, to = math.max(high + 1, 1024), 65535;
	end
	for _ = 1, 100 do
		local port = from <= to and math.random(from, to) or math.random(20000, 32000);
		local s = socket.bind("127.0.0.1", port);
		if s then
			s:close();
			return port;
		end
	end
	local s = assert(socket.bind("127.0.0.1", 0));
	local _, port = s:getsockname();
	s:close();
	return tonumber(port);
end

local function is_root()
	local _, out = shell("id -u");
	return out:match("^0%s*$") ~= nil;
end

local function lua_list(list)
	local quoted = {};
	for i, v in ipairs(list) do
		quoted[i] = ("%q"):format(v);
	end
	return "{ " .. table.concat(quoted, ", ") .. " }";
end

local handle_mt = {};
handle_mt.__index = handle_mt;

-- The whole lines of a log file: a line still being written is left for
-- the next read, so a pattern never matches half of one.
local function read_lines(path)
	return read_file(path):match("^.*\n") or "";
end
M.read_lines = read_lines;

function handle_mt:log()
	return read_lines(self.dir .. "/prosody.log") .. read_lines(self.dir .. "/console.log");
end

-- The last n (40) lines of a text.
local function tail(text, n)
	local lines = {};
	for line in text:gmatch("[^\n]+") do
		table.insert(lines, line);
	end
	return table.concat(lines, "\n", math.max(1, #lines - (n or 40) + 1));
end
M.tail = tail;

function handle_mt:log_tail(n)
	return tail(self:log(), n);
end

function handle_mt:wait_log(pattern, timeout)
	local deadline = socket.gettime() + (timeout or 5) * slow;
	repeat
		local found = self:log():match(pattern);
		if found then
			return found;
		end
		socket.sleep(0.05);
	until socket.gettime() > deadline;
	return nil;
end

function handle_mt:alive()
	return self.pid and os.execute("kill -0 " .. self.pid .. " 2>/dev/null") == true;
end

-- The CPU time a process has used so far, all threads, in seconds.
local clk_tck;
function M.cpu_seconds(pid)
	if not clk_tck then
		local _, tck = shell("getconf CLK_TCK");
		clk_tck = tonumber(tck) or 100;
	end
	local stat = read_file("/proc/" .. pid .. "/stat");
	local fields = {};
	for field in stat:gsub("^.*%) ", ""):gmatch("%S+") do
		table.insert(fields, field);
	end
	-- After the ")" field 1 is state; utime and stime are fields 12 and 13.
	local ticks = (tonumber(fields[12]) or 0) + (tonumber(fields[13]) or 0);
	return ticks / clk_tck;
end

-- CPU-seconds of the threads of `pid` named `name` (/proc/PID/task/*/comm).
function M.thread_cpu_seconds(pid, name)
	local total = 0;
	local h = io.popen("ls /proc/" .. pid .. "/task 2>/dev/null");
	for tid in h:lines() do
		local dir = "/proc/" .. pid .. "/task/" .. tid;
		if (read_file(dir .. "/comm") or ""):match("^(.-)%s*$") == name then
			total = total + M.cpu_seconds(pid .. "/task/" .. tid);
		end
	end
	h:close();
	return total;
end

function handle_mt:cpu_seconds()
	return M.cpu_seconds(self.pid);
end

-- Runs `prosodyctl shell` commands (needs the admin_shell module and
-- admin_socket, see start's opts.admin). Returns ok, output.
function handle_mt:shell(command)
	return shell(("%s --config %q shell %q"):format(M.command("prosodyctl", "timeout 20"), self.config_path, command));
end

local function write_config(self)
	local f = assert(io.open(self.config_path, "w"));
	f:write(table.concat(self.config_global, "\n"), "\n\n", self.config_hosts, "\n");
	f:close();
end

-- Adds lines to the config's global section (later assignments win);
-- Prosody sees them at its next config reload.
function handle_mt:add_global(text)
	table.insert(self.config_global, text);
	write_config(self);
end

-- The Prosody process's resident memory, in KiB.
function handle_mt:rss_kib()
	return tonumber(read_file("/proc/" .. self.pid .. "/status"):match("VmRSS:%s*(%d+)")) or 0;
end

-- Open fds of the Prosody process.
function handle_mt:fd_count()
	local h = io.popen("ls /proc/" .. self.pid .. "/fd 2>/dev/null");
	local n = 0;
	for _ in h:lines() do
		n = n + 1;
	end
	h:close();
	return n;
end

-- Sends the Prosody process `signal`; waits (5 s) until it has exited.
local function kill(self, signal)
	os.execute(("kill -%s %d 2>/dev/null"):format(signal, self.pid));
	local deadline = socket.gettime() + 5 * slow;
	while self:alive() and socket.gettime() < deadline do
		socket.sleep(0.05);
	end
end

-- Ends the Prosody process: SIGTERM, and SIGKILL if it lingers, so that it
-- is gone before anything starts on its ports again.
local function terminate(self)
	kill(self, "TERM");
	if self:alive() then
		kill(self, "KILL");
	end
end

function handle_mt:stop()
	if self.stopped then
		return;
	end
	self.stopped = true;
	if self.pid then
		terminate(self);
	end
	if os.getenv("CPROXY_KEEP_LOGS") then
		print("Prosody log kept in " .. self.dir);
	else
		os.execute("rm -rf '" .. self.dir .. "'");
	end
end

-- Whether something accepts connections on the loopback port.
local function port_open(port)
	local s = socket.tcp();
	s:settimeout(0.2);
	local ok = s:connect("127.0.0.1", port);
	s:close();
	return ok ~= nil;
end
M.port_open = port_open;

-- Starts the Prosody process of handle `self` and waits for its ports;
-- raises (at `level`) when it does not come up, unless expected.
local function launch(self, opts, level)
	local dir = self.dir;
	local env = {};
	for k, v in pairs(opts.env or {}) do
		table.insert(env, ("%s=%q"):format(k, v));
	end
	if opts.daemonize then
		-- As operators start it: `prosodyctl start` runs `prosody -D`, which
		-- forks once its modules are loaded (so do init scripts).
		local ok, out = shell(("cd %q && %s --config %q start >%q 2>&1"):format(
			dir, M.command("prosodyctl", table.concat(env, " ")), self.config_path, dir .. "/console.log"));
		self.pid = tonumber(read_file(dir .. "/prosody.pid"):match("%d+"));
		if not ok or not self.pid then
			local tail = self:log_tail(40);
			self:stop();
			error("prosodyctl start failed: " .. tostring(out) .. "\n" .. tail, level + 1);
		end
	else
		-- opts.max_fds raises the fd limit (as far as the hard limit allows).
		-- (`ulimit -n hard` is bash's; Debian's sh, dash, wants a number.)
		local limit = opts.max_fds and ("ulimit -n %d 2>/dev/null || ulimit -n \"$(ulimit -Hn)\" 2>/dev/null; ")
			:format(opts.max_fds) or "";
		-- opts.user runs it as that user, as Debian's unit does (the
		-- prosody user), rather than as root.
		local prefix = table.concat(env, " ");
		if opts.user then
			prefix = ("setpriv --reuid=%s --regid=%s --init-groups env %s"):format(opts.user, opts.user, prefix);
		end
		local _, pid = shell(("cd %q && %s%s -F --config %q >%q 2>&1 & echo $!"):format(
			dir, limit, M.command("prosody", prefix), self.config_path, dir .. "/console.log"));
		self.pid = tonumber(pid:match("%d+"));
	end

	local deadline = socket.gettime() + 15 * slow;
	local waiting = opts.wait_ports or { "c2s" };
	local ready = false;
	while socket.gettime() < deadline and self:alive() do
		ready = true;
		for _, name in ipairs(waiting) do
			if not port_open(self.ports[name]) then
				ready = false;
				break;
			end
		end
		if ready then
			break;
		end
		socket.sleep(0.05);
	end
	self.started = ready;
	if not ready and not opts.expect_failure then
		local tail = self:log_tail(40);
		self:stop();
		error("Prosody did not start:\n" .. tail, level + 1);
	end
end

-- Stops Prosody and starts it again with the same config, data and ports.
-- A Prosody still shutting down would hold the ports, and the port check
-- would take it for the new one: it is killed if it lingers.
function handle_mt:restart()
	terminate(self);
	launch(self, self.opts, 2);
end

-- opts: plugin_paths, global, hosts, accounts, backend, log_level,
-- wait_ports, expect_failure, env, daemonize (start with `prosodyctl start`
-- instead of `prosody -F`), admin (enable `prosodyctl shell`), max_fds,
-- user (run `prosody -F` as this user, its files chowned to it: needs root).
function M.start(opts)
	opts = opts or {};
	local _, dir = shell("mktemp -d \"${TMPDIR:-/tmp}/cproxy-spec.XXXXXX\"");
	dir = dir:gsub("%s+$", "");
	local self = setmetatable({ dir = dir, ports = {}, started = false }, handle_mt);
	for _, name in ipairs({ "c2s", "s2s", "component", "proxy65" }) do
		self.ports[name] = M.free_port();
	end
	local config = {
		("data_path = %q"):format(dir);
		("pidfile = %q"):format(dir .. "/prosody.pid");
		-- How long `prosodyctl start` and `stop` wait for it (5 s by default).
		("prosodyctl_timeout = %g"):format(15 * slow);
		("certificates = %q"):format(dir);
		("plugin_paths = %s"):format(lua_list(opts.plugin_paths or { M.root .. "/lua" }));
		("log = { { levels = { min = %q }, to = \"file\", filename = %q } }"):format(opts.log_level or "debug", dir .. "/prosody.log");
		("network_backend = %q"):format(opts.backend or "epoll");
		"authentication = \"internal_plain\"";
		"c2s_require_encryption = false";
		"s2s_require_encryption = false";
		"allow_unencrypted_plain_auth = true";
		"modules_enabled = { \"roster\", \"saslauth\", \"disco\", \"ping\" }";
		"modules_disabled = { \"tls\" }";
		"interfaces = { \"127.0.0.1\" }";
		"local_interfaces = { \"127.0.0.1\" }";
		("c2s_ports = { %d }"):format(self.ports.c2s);
		("s2s_ports = { %d }"):format(self.ports.s2s);
		("component_ports = { %d }"):format(self.ports.component);
		("proxy65_ports = { %d }"):format(self.ports.proxy65);
		"proxy65_interfaces = { \"127.0.0.1\" }";
		"c2s_direct_tls_ports = {}";
		"legacy_ssl_ports = {}";
		"http_ports = {}";
		"https_ports = {}";
	};
	if is_root() and not opts.user then
		table.insert(config, "run_as_root = true");
	end
	if opts.admin then
		table.insert(config, "modules_enabled = { \"roster\", \"saslauth\", \"disco\", \"ping\", \"admin_shell\" }");
		table.insert(config, ("admin_socket = %q"):format(dir .. "/admin.sock"));
	end
	table.insert(config, opts.global or "");
	self.config_global = config;
	self.config_hosts = opts.hosts or "VirtualHost \"localhost\"";
	self.config_path = dir .. "/prosody.cfg.lua";
	write_config(self);
	if opts.user then
		shell(("chown -R %s: %q"):format(opts.user, dir)); -- prosodyctl checks it can read the config
	end

	for _, account in ipairs(opts.accounts or {}) do
		local ok, out = shell(("%s --config %q register %q %q %q"):format(
			M.command("prosodyctl"), self.config_path, account[1], account[2], account[3]));
		if not ok then
			self:stop();
			error("prosodyctl register failed: " .. out);
		end
	end

	if opts.user then
		shell(("chown -R %s: %q"):format(opts.user, dir)); -- the accounts' files too
	end
	self.opts = opts;
	launch(self, opts, 2);
	return self;
end

return M;
