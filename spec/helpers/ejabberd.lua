-- A throw-away ejabberd for specs and the bench: Debian's package, its own
-- config, spool and logs in a temp dir, free loopback ports, accounts
-- registered with ejabberdctl; stop() ends every process it started and
-- removes the dir. It does not start Prosody (spec/helpers/prosody.lua).
--
-- Why no epmd: the Erlang node listens for ejabberdctl on a port of its
-- own (ERL_DIST_PORT, which ejabberdctl supports), so no port mapper
-- daemon is started, and none of another test or a system ejabberd is
-- shared. The node name and cookie are fresh each time.
local socket = require "socket";
local prosody = require "spec.helpers.prosody";

local M = {};

-- A free loopback port, picked as for Prosody.
M.free_port = prosody.free_port;

local shell, read_file = prosody.shell, prosody.read_file;

local function write_file(path, data)
	local f = assert(io.open(path, "w"));
	f:write(data);
	f:close();
end

-- ejabberdctl switches to the package's user, ejabberd, when run as root,
-- and refuses any other user.
local INSTALL_USER = "ejabberd";

-- () -> ejabberdctl's path | nil, why not
function M.available()
	local _, ctl = shell("command -v ejabberdctl || ls /usr/sbin/ejabberdctl");
	ctl = ctl:match("^(/%S+)");
	if not ctl then
		return nil, "ejabberd is not installed (Debian: apt-get install ejabberd)";
	end
	local _, user = shell("id -un");
	user = user:gsub("%s+$", "");
	if user ~= "root" and user ~= INSTALL_USER then
		return nil, ("ejabberdctl runs only as root or %s, not %s"):format(INSTALL_USER, user);
	end
	return ctl;
end

local handle_mt = {};
handle_mt.__index = handle_mt;

function handle_mt:log()
	return prosody.read_lines(self.dir .. "/console.log") .. prosody.read_lines(self.dir .. "/logs/ejabberd.log")
		.. prosody.read_lines(self.dir .. "/logs/error.log");
end

function handle_mt:log_tail(n)
	return prosody.tail(self:log(), n);
end

-- The pid of the Erlang VM (beam.smp), which ejabberd writes once up.
function handle_mt:beam_pid()
	self.pid = self.pid or tonumber(read_file(self.dir .. "/ejabberd.pid"):match("%d+"));
	return self.pid;
end

local function alive(pid)
	return pid and os.execute("kill -0 " .. pid .. " 2>/dev/null") == true;
end

function handle_mt:alive()
	return alive(self:beam_pid()) or alive(self.launcher);
end

-- CPU-seconds of the VM, all its threads.
function handle_mt:cpu_seconds()
	return prosody.cpu_seconds(self:beam_pid());
end

-- Runs an ejabberdctl command on this node; returns ok, output.
function handle_mt:ctl(args)
	return shell(("cd %q && env -u LD_PRELOAD timeout 60 %s %s %s"):format(self.dir, self.ctl_path, self.ctl_args, args));
end

-- Every process descended from `root`: the launcher's su, the VM and its
-- port programs (erl_child_setup, inet_gethost, memsup).
local function descendants(root)
	local children = {};
	-- ps stalls with ASan's runtime preloaded (make check-sanitize).
	local h = io.popen("env -u LD_PRELOAD ps -e -o pid= -o ppid=");
	for line in h:lines() do
		local pid, ppid = line:match("(%d+)%s+(%d+)");
		if pid then
			children[ppid] = children[ppid] or {};
			table.insert(children[ppid], pid);
		end
	end
	h:close();
	local found, queue = {}, { tostring(root) };
	while #queue > 0 do
		local pid = table.remove(queue);
		for _, child in ipairs(children[pid] or {}) do
			table.insert(found, child);
			table.insert(queue, child);
		end
	end
	return found;
end

-- Stops the VM (SIGTERM: a clean shutdown), then kills whatever it and its
-- launcher left, and removes the dir. Idempotent.
function handle_mt:stop()
	if self.stopped then
		return;
	end
	self.stopped = true;
	local left = self.launcher and descendants(self.launcher) or {};
	local beam = self:beam_pid();
	if beam then
		os.execute("kill -TERM " .. beam .. " 2>/dev/null");
		local deadline = socket.gettime() + 10;
		while alive(beam) and socket.gettime() < deadline do
			socket.sleep(0.05);
		end
	end
	if self.launcher then
		table.insert(left, tostring(self.launcher));
		os.execute("kill -KILL " .. table.concat(left, " ") .. " 2>/dev/null");
	end
	if os.getenv("CPROXY_KEEP_LOGS") then
		print("ejabberd log kept in " .. self.dir);
	else
		os.execute(("rm -rf %q"):format(self.dir));
	end
end

local port_open = prosody.port_open;

local function yaml_config(self, opts)
	local lines = {
		"hosts:";
		"  - localhost";
		("loglevel: %s"):format(opts.log_level or "info");
		"log_rotate_count: 0";
		"auth_method: internal";
		"auth_password_format: plain";
		"default_db: mnesia";
		"s2s_access: none";
		"listen:";
		"  -";
		("    port: %d"):format(self.ports.c2s);
		"    ip: \"127.0.0.1\"";
		"    module: ejabberd_c2s";
	};
	-- ejabberd_service gives a connection the routes of every host of its
	-- listener, whichever it authenticated as: components that must be
	-- told apart need a listener each (opts.listener_per_component).
	local function listener(port, hosts)
		table.insert(lines, "  -");
		table.insert(lines, ("    port: %d"):format(port));
		table.insert(lines, "    ip: \"127.0.0.1\"");
		table.insert(lines, "    module: ejabberd_service");
		table.insert(lines, "    hosts:");
		for host, secret in pairs(hosts) do
			table.insert(lines, ("      %q:"):format(host));
			table.insert(lines, ("        password: %q"):format(secret));
		end
	end
	if opts.components and opts.listener_per_component then
		for host, secret in pairs(opts.components) do
			listener(self.ports["component:" .. host], { [host] = secret });
		end
	elseif opts.components then
		listener(self.ports.component, opts.components);
	end
	table.insert(lines, "modules:");
	table.insert(lines, "  mod_disco: {}");
	table.insert(lines, "  mod_ping: {}");
	if opts.roster then
		-- Presence subscriptions, as ejabberd's default configuration has.
		table.insert(lines, "  mod_roster: {}");
	end
	if opts.proxy65 then
		-- Its socket buffers, 64 KiB by default, at 1 MiB.
		table.insert(lines, "  mod_proxy65:");
		table.insert(lines, ("    host: %q"):format(opts.proxy65.host or "proxy.localhost"));
		table.insert(lines, "    ip: \"127.0.0.1\"");
		table.insert(lines, "    hostname: \"127.0.0.1\"");
		table.insert(lines, ("    port: %d"):format(self.ports.proxy65));
		table.insert(lines, ("    recbuf: %d"):format(opts.proxy65.buffer or 1048576));
		table.insert(lines, ("    sndbuf: %d"):format(opts.proxy65.buffer or 1048576));
	end
	return table.concat(lines, "\n") .. "\n";
end

-- opts: components ({ [host] = secret }, for the ejabberd_service
-- listener), listener_per_component (a listener for each component, on
-- ports["component:" .. host], rather than one for all), proxy65 (true or { host, buffer }: enables mod_proxy65),
-- roster (enables mod_roster: presence subscriptions),
-- accounts ({ { user, host, password }, ... }), log_level ("info"),
-- wait_ports (default: c2s, and the component and proxy65 ports when
-- enabled). Raises with the log's tail when
-- ejabberd does not come up; check available() first.
function M.start(opts)
	opts = opts or {};
	if opts.proxy65 == true then
		opts.proxy65 = {};
	end
	local ctl = assert(M.available());
	local _, dir = shell("mktemp -d \"${TMPDIR:-/tmp}/cproxy-ejabberd.XXXXXX\"");
	dir = dir:gsub("%s+$", "");
	local self = setmetatable({ dir = dir, ctl_path = ctl, ports = {} }, handle_mt);
	for _, name in ipairs({ "c2s", "component", "proxy65", "dist" }) do
		self.ports[name] = prosody.free_port();
	end
	local component_ports = { "component" };
	if opts.components and opts.listener_per_component then
		component_ports = {};
		for host in pairs(opts.components) do
			self.ports["component:" .. host] = prosody.free_port();
			table.insert(component_ports, "component:" .. host);
		end
	end
	local tag = ("%d%06d"):format(os.time() % 100000, math.random(1e6) - 1);
	local cookie = ("cproxy%d%d"):format(math.random(1e9), math.random(1e9));
	assert(os.execute(("mkdir -p %q %q"):format(dir .. "/spool", dir .. "/logs")));
	write_file(dir .. "/ejabberd.yml", yaml_config(self, opts));
	write_file(dir .. "/inetrc", "{lookup, [file, native]}.\n");
	write_file(dir .. "/ejabberdctl.cfg", table.concat({
		("ERLANG_NODE=cproxy%s@127.0.0.1"):format(tag);
		("ERL_DIST_PORT=%d"):format(self.ports.dist);
		-- Distribution on loopback only (what INET_DIST_INTERFACE sets, but
		-- without the extra VM ejabberdctl starts to parse it).
		("ERL_OPTIONS=\"-setcookie %s -kernel inet_dist_use_interface {127,0,0,1}\""):format(cookie);
		("EJABBERD_PID_PATH=%q"):format(dir .. "/ejabberd.pid");
		"EJABBERD_BYPASS_WARNINGS=true";
	}, "\n") .. "\n");
	local _, user = shell("id -un");
	if user:match("^root%s*$") then
		assert(os.execute(("chown -R %s %q"):format(INSTALL_USER, dir)));
	end
	self.ctl_args = ("--config-dir %q --spool %q --logs %q"):format(dir, dir .. "/spool", dir .. "/logs");

	-- ASan's runtime, preloaded by make check-sanitize, is for our code,
	-- not for the Erlang VM.
	local _, pid = shell(("cd %q && env -u LD_PRELOAD %s %s foreground >%q 2>&1 & echo $!"):format(
		dir, ctl, self.ctl_args, dir .. "/console.log"));
	self.launcher = tonumber(pid:match("%d+"));

	local wait_ports = opts.wait_ports or { "c2s" };
	if not opts.wait_ports and opts.components then
		for _, name in ipairs(component_ports) do
			table.insert(wait_ports, name);
		end
	end
	if not opts.wait_ports and opts.proxy65 then
		table.insert(wait_ports, "proxy65");
	end
	-- The VM takes a second or two to start, more on a loaded machine.
	local deadline = socket.gettime() + 60;
	local ready = false;
	while not ready and socket.gettime() < deadline and self:alive() do
		ready = self:beam_pid() ~= nil;
		for _, name in ipairs(wait_ports) do
			ready = ready and port_open(self.ports[name]);
		end
		if not ready then
			socket.sleep(0.1);
		end
	end
	if not ready then
		local tail = self:log_tail(40);
		self:stop();
		error("ejabberd did not start:\n" .. tail, 2);
	end
	for _, account in ipairs(opts.accounts or {}) do
		local ok, out = self:ctl(("register %q %q %q"):format(account[1], account[2], account[3]));
		if not ok then
			self:stop();
			error("ejabberdctl register failed: " .. out, 2);
		end
	end
	return self;
end

return M;
