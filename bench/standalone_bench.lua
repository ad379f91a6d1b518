-- `make bench` for the standalone component's event loop (#33): bin/proxy65
-- answers BENCH_REQUESTS disco#info requests from a scripted XEP-0114
-- server that reads its replies as they come, and from one that reads
-- nothing for BENCH_STALL seconds first, as a server's loop does while it
-- waits on a blocking call. Prints the component's CPU-seconds per 1,000
-- requests for each (medians of BENCH_ROUNDS, interleaved): a loop whose
-- output costs O(bytes) spends the same on both.
--
-- Run from the checkout's root: lua5.4 bench/standalone_bench.lua
-- Environment: BENCH_REQUESTS=50000, BENCH_STALL=10, BENCH_ROUNDS=3
local socket = require "socket";
local prosody = require "spec.helpers.prosody";
local standalone = require "spec.helpers.standalone";
local scripted = require "spec.helpers.component_server";
local median = require "bench.stats".median;

local REQUESTS = tonumber(os.getenv("BENCH_REQUESTS")) or 50000;
local STALL = tonumber(os.getenv("BENCH_STALL")) or 10;
local ROUNDS = tonumber(os.getenv("BENCH_ROUNDS")) or 3;
local SECRET = "bench-secret";

local cpu_seconds = prosody.cpu_seconds;

-- One run: a fresh component, the requests, the replies; -> CPU-s per
-- 1,000 requests, seconds.
local function run(stall)
	local listener, port = scripted.listen();
	local component = standalone.start({ rport = port, secret = SECRET, args = { "--log-level", "info" } });
	local ok, result, seconds = pcall(function ()
		local peer = scripted.accept(listener, SECRET);
		local out = scripted.requests(REQUESTS, "proxy.localhost");
		local cpu0, t0 = cpu_seconds(component.pid), socket.gettime();
		local replies = scripted.exchange(peer, out, REQUESTS, stall, 600);
		local cpu = cpu_seconds(component.pid) - cpu0;
		peer:close();
		assert(replies == REQUESTS, ("%d replies of %d"):format(replies, REQUESTS));
		return cpu / REQUESTS * 1000, socket.gettime() - t0;
	end);
	listener:close();
	component.stop();
	assert(ok, result);
	return result, seconds;
end

local prompt, stalled = {}, {};
for round = 1, ROUNDS do
	io.stderr:write(("round %d/%d\n"):format(round, ROUNDS));
	local order = round % 2 == 1 and { false, true } or { true, false };
	for _, stalls in ipairs(order) do
		table.insert(stalls and stalled or prompt, (run(stalls and STALL or 0)));
	end
end
print();
print(("%d requests per run, %d rounds, medians; component CPU-seconds per 1,000 requests"):format(REQUESTS, ROUNDS));
print(("  server reads promptly:          %.3f"):format(median(prompt)));
print(("  server reads nothing for %g s:  %.3f"):format(STALL, median(stalled)));
print(("  stalled / prompt: %.2fx"):format(median(stalled) / median(prompt)));
