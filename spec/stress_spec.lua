-- `make stress`: proxy65 under load, floods and faults, in a real Prosody
-- on loopback (#21). Each check is bounded in time; the load comes from
-- build/stressgen (bench/stressgen.c), which checks every byte it receives.
local socket = require "socket";
local prosody = require "spec.helpers.prosody";
local s5 = require "spec.helpers.socks5_client";
local bs = require "spec.helpers.bytestreams";
local percentile = require "bench.stats".percentile;

local STRESSGEN = prosody.root .. "/build/stressgen";
local LOADGEN = prosody.root .. "/build/loadgen";

local read_file, read_lines = prosody.read_file, prosody.read_lines;

-- Starts a load tool in the background with a raised fd limit; returns
-- its output file and a function that waits for a pattern in it.
local function spawn(command, input)
	local out = os.tmpname();
	-- `ulimit -n hard` is bash's; Debian's sh (dash) wants a number.
	os.execute(("ulimit -n \"$(ulimit -Hn)\" 2>/dev/null; %s %s >%q 2>&1 &"):format(
		command, input and ("<" .. input) or "</dev/null", out));
	local function wait(pattern, timeout)
		local deadline = socket.gettime() + timeout;
		repeat
			-- Whole lines only: the result line is matched once complete.
			local text = read_lines(out);
			local found = text:match(pattern);
			if found then
				return found, text;
			end
			if text:match("stressgen: ") or text:match("loadgen: ") then
				error("load tool failed: " .. text);
			end
			socket.sleep(0.05);
		until socket.gettime() > deadline;
		error("timed out waiting for " .. pattern .. " in: " .. read_file(out));
	end
	return out, wait;
end

local function activate_all(client, sids, peer)
	for _, sid in ipairs(sids) do
		local reply = assert(client:request(bs.activation(sid, peer.jid), 30));
		assert(reply.attr.type == "result", tostring(reply));
	end
end

-- The kernel's TCP counters (TcpExt in /proc/net/netstat), by name.
local function tcp_counters()
	local netstat = read_file("/proc/net/netstat");
	local names, values = netstat:match("TcpExt: ([^\n]+)\nTcpExt: ([^\n]+)");
	local list, counters = {}, {};
	for name in (names or ""):gmatch("%S+") do
		table.insert(list, name);
	end
	local i = 0;
	for value in (values or ""):gmatch("%S+") do
		i = i + 1;
		counters[list[i] or i] = tonumber(value);
	end
	return counters;
end

-- Orphaned sockets the kernel aborted for lack of memory.
local function aborts_on_memory()
	return tcp_counters().TCPAbortOnMemory or 0;
end

local function settle_fds(server, baseline, timeout)
	local deadline = socket.gettime() + (timeout or 10);
	while server:fd_count() > baseline and socket.gettime() < deadline do
		socket.sleep(0.1);
	end
	return server:fd_count();
end

-- Runs `n` bytestreams through stressgen; returns its result line fields.
local function transfers(server, alice, bob, n, seed, during)
	local sids, hashes = {}, {};
	for i = 1, n do
		sids[i] = ("stress-%d-%d"):format(seed, i);
		hashes[i] = s5.hash(sids[i], alice.jid, bob.jid);
	end
	local before = tcp_counters();
	local out, wait = spawn(("%s transfers %d %d %s"):format(STRESSGEN, server.ports.proxy65, seed,
		table.concat(hashes, " ")));
	wait("ready", 60);
	activate_all(alice, sids, bob);
	if during then
		during();
	end
	-- stressgen gives up after 200 s without progress (20 minutes at most).
	local _, text = wait("result [^\n]+", 1300);
	os.remove(out);
	for line in text:gmatch("[^\n]*stream %d+:[^\n]*") do
		print(line);
	end
	for line in text:gmatch("progress [^\n]*") do
		print(line);
	end
	-- Under TCP memory pressure loopback drops segments and senders back
	-- off, up to 2 minutes each time: a round then takes longer.
	local after = tcp_counters();
	local function delta(name)
		return (after[name] or 0) - (before[name] or 0);
	end
	print(("kernel: %d memory pressure events, %d retransmission timeouts, %d receive queue drops"):format(
		delta("TCPMemoryPressures"), delta("TCPTimeouts"), delta("TCPRcvQDrop")));
	local result = {};
	for key, value in text:match("result ([^\n]+)"):gmatch("([%w_]+)=([%d.]+)") do
		result[key] = tonumber(value);
	end
	return result;
end

describe("proxy65 stress #slow #integration", function ()
	local server, alice, bob, carol;

	setup(function ()
		server, alice, bob = bs.start({
			hosts = "VirtualHost \"localhost\"\nComponent \"proxy.localhost\" \"proxy65\"";
			accounts = { { "alice", "localhost", "alice-pw" }, { "bob", "localhost", "bob-pw" },
				{ "carol", "localhost", "carol-pw" } };
			admin = true;
			max_fds = 65536;
			-- A backlog for thousands of connects at once (see README).
			-- Loopback drops segments under this load (its backlog overflows),
			-- and a reset is sent once: a relay whose reset was lost is ended by
			-- the idle timeout, set above TCP's longest backoff (2 minutes).
			global = "proxy65_activation_timeout = 300\nproxy65_handshake_timeout = 3\n"
				.. "proxy65_idle_timeout = 150\nnetwork_settings = { tcp_backlog = 4096 }";
		});
		carol = bs.login(server, "carol");
	end);

	teardown(function ()
		bs.stop(server, alice, bob, carol);
	end);

	it("relays 1,000 concurrent transfers of 0-8 MiB intact, with half-closes, closes and resets", function ()
		-- A first round of the same size warms Prosody up (its allocator keeps
		-- what it once needed), so that the second shows any growth.
		local warm = transfers(server, alice, bob, 1000, 7);
		assert.equal(0, warm.corrupt + warm.stalled);
		server:shell("collectgarbage('collect')");
		local fds, rss = server:fd_count(), server:rss_kib();
		local kernel_aborts = aborts_on_memory();
		local result = transfers(server, alice, bob, 1000, 42);
		kernel_aborts = aborts_on_memory() - kernel_aborts;
		print(("\n1,000 transfers: %d intact, %d aborted (peer closed: %d), %d closed senders reset by their"
			.. " kernel (%d aborts on memory), %.0f MiB in %.1f s"):format(result.intact, result.aborted,
			result.aborted_closed, result.close_reset, kernel_aborts, result.bytes / 1048576, result.seconds));
		assert.equal(1000, result.streams);
		assert.equal(0, result.corrupt);
		assert.equal(0, result.stalled);
		-- A sender that closes with bytes unsent may be reset by its own
		-- kernel under memory pressure; the proxy rightly passes that on.
		assert.truthy(result.close_reset <= kernel_aborts, "resets the kernel did not make");
		assert.equal(1000, result.intact + result.aborted + result.close_reset);
		assert.equal(result.aborted, result.aborted_closed);
		assert.truthy(result.aborted > 50, "too few aborted streams to mean anything");
		assert.truthy(settle_fds(server, fds) <= fds, "Prosody holds more fds than before");
		server:shell("collectgarbage('collect')");
		local after = server:rss_kib();
		print(("RSS %d KiB before, %d KiB after"):format(rss, after));
		assert.truthy(after <= rss * 1.1, ("RSS grew from %d to %d KiB"):format(rss, after));
	end);

	it("keeps relaying through a module reload during 50 transfers", function ()
		local result = transfers(server, alice, bob, 50, 9, function ()
			local ok, out = server:shell("module:reload(\"proxy65\")");
			assert.truthy(ok and out:match("OK"), out);
		end);
		assert.equal(0, result.corrupt);
		assert.equal(0, result.stalled);
		assert.equal(50, result.intact + result.aborted + result.close_reset);
	end);

	it("holds 10,000 connections while XMPP pings stay under 50 ms (p99)", function ()
		local fds = server:fd_count();
		local stdin = os.tmpname();
		os.execute(("mkfifo %q.fifo"):format(stdin));
		-- The fifo's writer, held open until the end, keeps stressgen waiting.
		local out, wait = spawn(("%s hold %d 10000"):format(STRESSGEN, server.ports.proxy65), stdin .. ".fifo");
		local writer = assert(io.open(stdin .. ".fifo", "w"));
		wait("ready", 120);
		-- Each got its SOCKS5 reply; the proxy counts them all as waiting.
		local ok, status = server:shell("proxy65:status()");
		assert.truthy(ok and status:match("Connections awaiting activation: 10000\n"), status);
		local rtts = {};
		for _ = 1, 300 do
			local rtt = carol:ping("localhost", 5);
			table.insert(rtts, rtt and rtt * 1000 or 5000);
			socket.sleep(0.005);
		end
		local p99 = percentile(rtts, 0.99);
		print(("\n10,000 connections held: ping p50 %.2f ms, p99 %.2f ms"):format(percentile(rtts, 0.5), p99));
		assert.truthy(p99 < 50, ("ping p99 %.1f ms"):format(p99));
		writer:close();
		local open = wait("result open=(%d+)", 30);
		assert.equal(10000, tonumber(open));
		os.remove(out); os.remove(stdin); os.remove(stdin .. ".fifo");
		assert.truthy(settle_fds(server, fds, 30) <= fds, "Prosody holds more fds than before");
	end);

	it("cuts 2,000 slowloris connections at the handshake timeout, at little cost to a transfer", function ()
		local function throughput()
			local sid = "beside-" .. math.random(1e9);
			local hash = s5.hash(sid, alice.jid, bob.jid);
			local out, wait = spawn(("%s socks5 %d %d %s"):format(LOADGEN, server.ports.proxy65, 512 * 1048576, hash));
			wait("ready", 20);
			activate_all(alice, { sid }, bob);
			local mibps = tonumber((wait("mibps=([%d.]+)", 120)));
			os.remove(out);
			return mibps;
		end
		-- Loopback's speed varies by a fifth from one transfer to the next:
		-- the best of five on each side compares like with like. The five
		-- beside the flood take about a second and a half, within its 3 s.
		local function best_of_five()
			return math.max(throughput(), throughput(), throughput(), throughput(), throughput());
		end
		local alone = best_of_five();
		local out, wait = spawn(("%s slow %d 2000 8"):format(STRESSGEN, server.ports.proxy65));
		wait("ready", 60);
		local flooded = socket.gettime();
		local beside = best_of_five();
		flooded = socket.gettime() - flooded;
		local closed = tonumber((wait("closed=(%d+)", 30)));
		os.remove(out);
		print(("\n2,000 slowloris: %d closed by the handshake timeout; a transfer beside them %.0f MiB/s"
			.. " (best of 5, in %.1f s), alone %.0f MiB/s"):format(closed, beside, flooded, alone));
		assert.equal(2000, closed);
		assert.truthy(beside >= 0.8 * alone, ("%.0f MiB/s beside against %.0f alone"):format(beside, alone));
	end);
end);
