-- `make bench` for proxy65. In one run, with the same C load generator
-- (build/loadgen): a direct loopback pair (no relay), a minimal C relay
-- (build/relay, the ceiling a relay can reach here), Prosody's built-in
-- mod_proxy65 and ours, each in a real Prosody, and ejabberd's own
-- mod_proxy65 (when ejabberd is installed). Rounds run interleaved and
-- each figure is the median of the rounds. Prints MiB/s, CPU-seconds per
-- GiB relayed (of the relay's process, all threads, and of ours' relay
-- thread alone: the process also answers the bench's pings, which the
-- C relay never sees), and XEP-0199 ping round trips at rest and under
-- load, both from the same round.
--
-- Run from the checkout's root: lua5.4 bench/proxy65_bench.lua
-- Environment:
--   BENCH_ROUNDS=3            rounds, interleaved
--   BENCH_BYTES_1=4294967296  bytes of the 1-stream transfer
--   BENCH_BYTES_8=134217728   bytes of each of the 8 streams
--   BENCH_ROWS=direct,relay,builtin,ours,ejabberd   which contenders to run
--                             (ejabberd only where installed)
--   BENCH_OPTIONS='proxy65_relay_mode = "copy"'   global config lines for ours
--   BENCH_RIGS=idle,same,pinned   how the load generator runs, each a rig of
--                             its own, reported apart (a figure that holds in
--                             one rig only is not a result):
--                               idle: at nice BENCH_LOADGEN_NICE (19): it stands
--                                 in for remote peers, whose CPU is not the server's;
--                               same: at the proxy's own priority (nice 0), as
--                                 clients on a laptop-sized test machine compete;
--                               pinned: at nice 0, pinned with taskset to the
--                                 last core, leaving the others to the proxy
--                                 (skipped on a machine with one core).
local socket = require "socket";
local prosody = require "spec.helpers.prosody";
local ejabberd = require "spec.helpers.ejabberd";
local xmpp = require "spec.helpers.xmpp_client";
local s5 = require "spec.helpers.socks5_client";
local stats = require "bench.stats";
local percentile, median = stats.percentile, stats.median;

local MiB, GiB = 1048576, 1073741824;
local ROUNDS = tonumber(os.getenv("BENCH_ROUNDS")) or 3;
local scenarios = {
	{ name = "1 stream", streams = 1, bytes = tonumber(os.getenv("BENCH_BYTES_1")) or 4 * GiB },
	{ name = "8 streams", streams = 8, bytes = tonumber(os.getenv("BENCH_BYTES_8")) or 128 * MiB },
};
-- The built-in relays about 15 times slower: a gigabyte settles its rate.
-- The same bound holds for ejabberd's.
local BUILTIN_MAX_BYTES = GiB;
local LOADGEN, RELAY = "./build/loadgen", "./build/relay";
local LOADGEN_NICE = tonumber(os.getenv("BENCH_LOADGEN_NICE")) or 19;
local CORES = (function ()
	local h = io.popen("nproc");
	local n = tonumber(h:read("a"));
	h:close();
	return n or 1;
end)();
-- Each rig: its name, what it says, and the command prefix of the load generator.
local RIGS = {
	idle = { "load generator at nice " .. LOADGEN_NICE, ("nice -n %d"):format(LOADGEN_NICE) },
	same = { "load generator at the proxy's priority (nice 0)", "nice -n 0" },
	pinned = { ("load generator at nice 0, pinned to core %d of %d"):format(CORES - 1, CORES),
		("taskset -c %d nice -n 0"):format(CORES - 1) },
};
local rigs = {};
for name in (os.getenv("BENCH_RIGS") or "idle,same,pinned"):gmatch("[^,%s]+") do
	assert(RIGS[name], "unknown rig in BENCH_RIGS: " .. name);
	if name == "pinned" and CORES < 2 then
		print("pinned rig skipped: one core");
	else
		table.insert(rigs, name);
	end
end
local rig_prefix; -- the current rig's command prefix
local REST_PINGS = 300;
local ROW_NAMES = {
	direct = "direct loopback", relay = "C relay (ceiling)",
	builtin = "built-in", ours = "prosody-cproxy", ejabberd = "ejabberd",
};
local have_ejabberd, no_ejabberd = ejabberd.available();
local rows = {};
for name in (os.getenv("BENCH_ROWS") or "direct,relay,builtin,ours,ejabberd"):gmatch("[^,%s]+") do
	assert(ROW_NAMES[name], "unknown row in BENCH_ROWS: " .. name);
	if name == "ejabberd" and not have_ejabberd then
		print("ejabberd row skipped: " .. no_ejabberd);
	else
		table.insert(rows, name);
	end
end

local hosts = [[
VirtualHost "localhost"

Component "proxy.localhost" "proxy65"
]];

local read_file = prosody.read_file;

local cpu_seconds = prosody.cpu_seconds;
local RELAY_THREAD = "cproxy-relay"; -- ENGINE_THREAD_NAME

local function login(server, user)
	return assert(xmpp.connect({ port = server.ports.c2s, domain = "localhost",
		username = user, password = user, resource = "bench" }));
end

local function ping_once(pinger, rtts)
	local rtt = pinger:ping("localhost", 5);
	if rtt then
		table.insert(rtts, rtt * 1000);
	end
	socket.sleep(0.002);
end

-- Starts the load generator with `args`; pings through `pinger` until it
-- reports its result. Returns MiB/s.
local function run_load(args, pinger, rtts, on_ready)
	local out = os.tmpname();
	os.execute(("%s %s %s >%s 2>&1 &"):format(rig_prefix, LOADGEN, args, out));
	local deadline = socket.gettime() + 20;
	while not read_file(out):find("ready") and socket.gettime() < deadline do
		socket.sleep(0.01);
	end
	if on_ready then
		on_ready();
	end
	deadline = socket.gettime() + 600;
	while not read_file(out):find("result") and socket.gettime() < deadline do
		if read_file(out):find("loadgen:") then
			error("load generator failed: " .. read_file(out));
		end
		ping_once(pinger, rtts);
	end
	local text = read_file(out);
	os.remove(out);
	return assert(tonumber(text:match("mibps=([%d.]+)")), "no result from the load generator: " .. text);
end

local function start(label, plugin_paths, global)
	io.stderr:write("starting Prosody with ", label, " mod_proxy65\n");
	return prosody.start({
		hosts = hosts;
		plugin_paths = plugin_paths;
		global = global;
		log_level = "info";
		accounts = { { "alice", "localhost", "alice" }, { "bob", "localhost", "bob" }, { "carol", "localhost", "carol" } };
		wait_ports = { "c2s", "proxy65" };
	});
end

local servers = {};
local pingers = {};
local relay_pid, relay_port;

-- One measurement of `row` in `scenario`; appends its samples to `acc`.
local function measure(row, scenario, acc)
	local server = servers[row] or servers.ours or servers.builtin;
	local pinger = pingers[server];
	for _ = 1, REST_PINGS do
		ping_once(pinger, acc.rest);
	end
	local bytes = scenario.bytes;
	local mibps, cpu, thread_cpu;
	if row == "direct" then
		mibps = run_load(("direct %d %d"):format(bytes, scenario.streams), pinger, acc.load);
	elseif row == "relay" then
		local cpu0 = cpu_seconds(relay_pid);
		mibps = run_load(("pair %d %d %d"):format(relay_port, bytes, scenario.streams), pinger, acc.load);
		cpu = cpu_seconds(relay_pid) - cpu0;
		thread_cpu = cpu;
	else
		if row == "builtin" or row == "ejabberd" then
			bytes = math.min(bytes, BUILTIN_MAX_BYTES);
		end
		local alice, bob = login(server, "alice"), login(server, "bob");
		local hashes, sids = {}, {};
		for i = 1, scenario.streams do
			sids[i] = ("bench-%d-%d"):format(i, math.random(1e9));
			hashes[i] = s5.hash(sids[i], alice.jid, bob.jid);
		end
		local cpu0, thread0;
		mibps = run_load(("socks5 %d %d %s"):format(server.ports.proxy65, bytes, table.concat(hashes, " ")),
			pinger, acc.load, function ()
				cpu0 = server:cpu_seconds();
				thread0 = row == "ours" and prosody.thread_cpu_seconds(server.pid, RELAY_THREAD);
				for i = 1, scenario.streams do
					local reply = assert(alice:request(xmpp.iq({ type = "set", to = "proxy.localhost" })
						:tag("query", { xmlns = "http://jabber.org/protocol/bytestreams", sid = sids[i] })
						:tag("activate"):text(bob.jid)));
					assert(reply.attr.type == "result", tostring(reply));
				end
			end);
		cpu = server:cpu_seconds() - cpu0;
		if thread0 then
			thread_cpu = prosody.thread_cpu_seconds(server.pid, RELAY_THREAD) - thread0;
		end
		alice:close(); bob:close();
	end
	table.insert(acc.mibps, mibps);
	if cpu then
		table.insert(acc.cpu, cpu / (bytes * scenario.streams / GiB));
	end
	if thread_cpu then
		table.insert(acc.thread, thread_cpu / (bytes * scenario.streams / GiB));
	end
end

local function has_row(name)
	for _, row in ipairs(rows) do
		if row == name then
			return true;
		end
	end
	return false;
end

local function fmt(v, pattern)
	return (v and v == v) and pattern:format(v) or "-";
end

local ok, err = pcall(function ()
	if has_row("builtin") then
		servers.builtin = start("the built-in", {});
	end
	if has_row("ours") or not servers.builtin then
		servers.ours = start("our", nil, os.getenv("BENCH_OPTIONS"));
	end
	if has_row("ejabberd") then
		-- Its mod_proxy65's socket buffers at 1 MiB (64 KiB by default).
		io.stderr:write("starting ejabberd with its mod_proxy65\n");
		servers.ejabberd = ejabberd.start({
			proxy65 = { buffer = MiB };
			log_level = "warning";
			accounts = { { "alice", "localhost", "alice" }, { "bob", "localhost", "bob" }, { "carol", "localhost", "carol" } };
		});
	end
	for _, server in pairs(servers) do
		pingers[server] = login(server, "carol");
	end
	if has_row("relay") then
		relay_port = prosody.free_port();
		local h = io.popen(("%s %d >/dev/null 2>&1 & echo $!"):format(RELAY, relay_port));
		relay_pid = tonumber(h:read("a"):match("%d+"));
		h:close();
		socket.sleep(0.2);
	end
	for _, rig in ipairs(rigs) do
		rig_prefix = RIGS[rig][2];
		local results = {};
		for _, scenario in ipairs(scenarios) do
			results[scenario] = {};
			for _, row in ipairs(rows) do
				results[scenario][row] = { mibps = {}, cpu = {}, thread = {}, rest = {}, load = {} };
			end
		end
		io.stderr:write(("rig %s: %s\n"):format(rig, RIGS[rig][1]));
		for round = 1, ROUNDS do
			for _, scenario in ipairs(scenarios) do
				io.stderr:write(("round %d/%d: %s:"):format(round, ROUNDS, scenario.name));
				-- Rotate the order, so that no contender always runs first.
				for i = 0, #rows - 1 do
					local row = rows[(i + round - 1) % #rows + 1];
					local acc = results[scenario][row];
					measure(row, scenario, acc);
					io.stderr:write((" %s %.0f"):format(row, acc.mibps[#acc.mibps]));
				end
				io.stderr:write("\n");
			end
		end

		print();
		print(("Rig %s: %s. %d rounds, medians; pings pooled over the rounds, at rest just before each"
			.. " transfer and during it"):format(rig, RIGS[rig][1], ROUNDS));
		print(("%-10s %-18s %8s %10s %10s %16s %16s"):format("streams", "relay", "MiB/s", "CPU-s/GiB",
			"relay thr", "rest p50/p99 ms", "load p50/p99 ms"));
		for _, scenario in ipairs(scenarios) do
			local med = {};
			for _, row in ipairs(rows) do
				local r = results[scenario][row];
				med[row] = { mibps = median(r.mibps), cpu = median(r.cpu), thread = median(r.thread) };
				print(("%-10s %-18s %8.0f %10s %10s %16s %16s"):format(scenario.name, ROW_NAMES[row], med[row].mibps,
					fmt(med[row].cpu, "%.2f"), fmt(med[row].thread, "%.2f"),
					fmt(percentile(r.rest, 0.5), "%.2f") .. "/" .. fmt(percentile(r.rest, 0.99), "%.2f"),
					fmt(percentile(r.load, 0.5), "%.2f") .. "/" .. fmt(percentile(r.load, 0.99), "%.2f")));
			end
			if med.ours then
				local parts = {};
				for _, other in ipairs({ "relay", "builtin", "ejabberd", "direct" }) do
					if med[other] then
						table.insert(parts, ("%.2fx %s"):format(med.ours.mibps / med[other].mibps, other));
					end
				end
				local r = results[scenario].ours;
				table.insert(parts, ("ping p99 load/rest %.2fx"):format(percentile(r.load, 0.99) / percentile(r.rest, 0.99)));
				if med.relay and med.relay.cpu and med.ours.cpu then
					table.insert(parts, ("CPU-s/GiB %.2fx relay's"):format(med.ours.cpu / med.relay.cpu));
					if med.ours.thread == med.ours.thread then
						table.insert(parts, ("relay thread alone %.2fx"):format(med.ours.thread / med.relay.cpu));
					end
				end
				print(("%-10s ours: %s"):format(scenario.name, table.concat(parts, ", ")));
			end
		end
	end
end);
for _, pinger in pairs(pingers) do
	pinger:close();
end
for _, server in pairs(servers) do
	server:stop();
end
if relay_pid then
	os.execute("kill " .. relay_pid);
end
if not ok then
	error(err, 0);
end
