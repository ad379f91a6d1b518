-- `make bench` for proxy65: Prosody's built-in mod_proxy65 and ours, each in
-- a real Prosody, and a direct loopback pair, measured in one run with the
-- same C load generator (build/loadgen). Prints MiB/s, Prosody's CPU-seconds
-- per GiB relayed, XMPP ping round trips while relaying and idle, and the
-- ratios. Run from the checkout's root: lua5.4 bench/proxy65_bench.lua
local socket = require "socket";
local prosody = require "spec.helpers.prosody";
local xmpp = require "spec.helpers.xmpp_client";
local s5 = require "spec.helpers.socks5_client";
local st = require "util.stanza";
local percentile = require "bench.stats".percentile;

local MiB, GiB = 1048576, 1073741824;
local scenarios = {
	{ name = "1 stream", streams = 1, bytes = tonumber(os.getenv("BENCH_BYTES_1")) or GiB },
	{ name = "8 streams", streams = 8, bytes = tonumber(os.getenv("BENCH_BYTES_8")) or 128 * MiB },
};
local LOADGEN = "./build/loadgen";

local hosts = [[
VirtualHost "localhost"

Component "proxy.localhost" "proxy65"
]];

local function read_file(path)
	local f = io.open(path);
	if not f then
		return "";
	end
	local data = f:read("a");
	f:close();
	return data;
end

local function ping_stats(pinger, count)
	local rtts = {};
	for _ = 1, count do
		local rtt = pinger:ping("localhost", 5);
		if rtt then
			table.insert(rtts, rtt * 1000);
		end
		socket.sleep(0.002);
	end
	return rtts;
end

local function login(server, user)
	return assert(xmpp.connect({ port = server.ports.c2s, domain = "localhost",
		username = user, password = user, resource = "bench" }));
end

-- One measurement through a Prosody's proxy65.
local function through_proxy(server, scenario)
	local alice, bob, carol = login(server, "alice"), login(server, "bob"), login(server, "carol");
	local hashes, sids = {}, {};
	for i = 1, scenario.streams do
		sids[i] = ("bench-%d-%d"):format(i, math.random(1e9));
		hashes[i] = s5.hash(sids[i], alice.jid, bob.jid);
	end
	local out = os.tmpname();
	os.execute(("%s socks5 %d %d %s >%s 2>&1 &"):format(LOADGEN, server.ports.proxy65,
		scenario.bytes, table.concat(hashes, " "), out));
	local deadline = socket.gettime() + 20;
	while not read_file(out):find("ready") and socket.gettime() < deadline do
		socket.sleep(0.01);
	end
	local cpu0 = server:cpu_seconds();
	for i = 1, scenario.streams do
		local reply = assert(alice:request(xmpp.iq({ type = "set", to = "proxy.localhost" })
			:tag("query", { xmlns = "http://jabber.org/protocol/bytestreams", sid = sids[i] })
			:tag("activate"):text(bob.jid)));
		assert(reply.attr.type == "result", tostring(reply));
	end
	local rtts = {};
	deadline = socket.gettime() + 600;
	while not read_file(out):find("result") and socket.gettime() < deadline do
		local text = read_file(out);
		if text:find("loadgen:") then
			error("load generator failed: " .. text);
		end
		local rtt = carol:ping("localhost", 5);
		if rtt then
			table.insert(rtts, rtt * 1000);
		end
		socket.sleep(0.002);
	end
	local cpu = server:cpu_seconds() - cpu0;
	local text = read_file(out);
	os.remove(out);
	alice:close(); bob:close(); carol:close();
	local mibps = tonumber(text:match("mibps=([%d.]+)"));
	assert(mibps, "no result from the load generator: " .. text);
	local bytes = scenario.bytes * scenario.streams;
	return { mibps = mibps, cpu_per_gib = cpu / (bytes / GiB),
		p50 = percentile(rtts, 0.5), p99 = percentile(rtts, 0.99), pings = #rtts };
end

local function direct(scenario)
	local handle = assert(io.popen(("%s direct %d %d"):format(LOADGEN, scenario.bytes, scenario.streams)));
	local text = handle:read("a");
	handle:close();
	return { mibps = assert(tonumber(text:match("mibps=([%d.]+)")), text) };
end

local function start(label, plugin_paths)
	io.stderr:write("starting Prosody with ", label, " mod_proxy65\n");
	return prosody.start({
		hosts = hosts;
		plugin_paths = plugin_paths;
		log_level = "info";
		accounts = { { "alice", "localhost", "alice" }, { "bob", "localhost", "bob" }, { "carol", "localhost", "carol" } };
		wait_ports = { "c2s", "proxy65" };
	});
end

local builtin = start("the built-in", {});
local ours = start("our", nil);
local ok, err = pcall(function ()
	local rows = {};
	local idle = {};
	for label, server in pairs({ builtin = builtin, ours = ours }) do
		local carol = login(server, "carol");
		idle[label] = ping_stats(carol, 300);
		carol:close();
	end
	for _, scenario in ipairs(scenarios) do
		io.stderr:write("measuring ", scenario.name, "\n");
		local row = { scenario = scenario };
		row.direct = direct(scenario);
		row.builtin = through_proxy(builtin, scenario);
		row.ours = through_proxy(ours, scenario);
		table.insert(rows, row);
	end

	print();
	print(("%-10s %-18s %10s %12s %18s"):format("streams", "relay", "MiB/s", "CPU-s/GiB", "ping p50/p99 ms"));
	for _, label in ipairs({ "builtin", "ours" }) do
		print(("%-10s %-18s %10s %12s %11.2f/%.2f"):format("idle", label == "ours" and "prosody-cproxy" or "built-in",
			"", "", percentile(idle[label], 0.5), percentile(idle[label], 0.99)));
	end
	for _, row in ipairs(rows) do
		print(("%-10s %-18s %10.0f %12s %18s"):format(row.scenario.name, "direct loopback", row.direct.mibps, "-", "-"));
		for _, label in ipairs({ "builtin", "ours" }) do
			local r = row[label];
			print(("%-10s %-18s %10.0f %12.2f %11.2f/%.2f"):format(row.scenario.name,
				label == "ours" and "prosody-cproxy" or "built-in", r.mibps, r.cpu_per_gib, r.p50, r.p99));
		end
		print(("%-10s ours/built-in %.1fx throughput, %.1fx less CPU per GiB; ours/direct %.2fx"):format(
			row.scenario.name, row.ours.mibps / row.builtin.mibps,
			row.builtin.cpu_per_gib / row.ours.cpu_per_gib, row.ours.mibps / row.direct.mibps));
	end
end);
builtin:stop();
ours:stop();
if not ok then
	error(err, 0);
end
