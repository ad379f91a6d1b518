-- The relay engine of cproxy.core, on real loopback sockets without
-- Prosody: bytes, order, early data, half-close, reset and results.
local socket = require "socket";
local core = require "spec.helpers.core";
local s5 = require "spec.helpers.socks5_client";

-- Two client sockets whose server ends are relayed by the engine.
local function relayed_pair(engine, early_a, early_b)
	local server = assert(socket.bind("127.0.0.1", 0));
	local _, port = server:getsockname();
	local a = assert(socket.connect("127.0.0.1", port));
	local a_end = assert(server:accept());
	local b = assert(socket.connect("127.0.0.1", port));
	local b_end = assert(server:accept());
	server:close();
	local fd_a, fd_b = a_end:getfd(), b_end:getfd();
	a_end:setfd(-1); -- the engine owns them now
	b_end:setfd(-1);
	local id = assert(engine:add(core.own_fd(fd_a), core.own_fd(fd_b), early_a, early_b));
	return a, b, id;
end

local function await_results(engine, n, timeout)
	local results = {};
	local deadline = socket.gettime() + (timeout or 10);
	while #results < n and socket.gettime() < deadline do
		socket.select({ engine }, nil, 0.2);
		for _, r in ipairs(engine:reap()) do
			table.insert(results, r);
		end
	end
	return results;
end

-- Copy mode three ways: reads that a pump keeps when the destination takes
-- part (the default), peeks only (relay_memory 0), and one buffer to hold
-- for the whole thread, so that one direction holds while the other peeks.
local variants = {
	{ name = "copy mode", mode = "copy" },
	{ name = "copy mode, peeking only", mode = "copy", relay_memory = 0 },
	{ name = "copy mode, one buffer to hold", mode = "copy", relay_memory = 65536 },
	{ name = "splice mode", mode = "splice" },
};
for _, variant in ipairs(variants) do
	local mode = variant.mode;
	-- The variant's engine options, with `options` added.
	local function with(options)
		options.mode, options.relay_memory = mode, variant.relay_memory;
		return options;
	end
	describe("cproxy.core.engine (" .. variant.name .. ")", function ()
		local engine;
		before_each(function ()
			engine = assert(core.engine(with({ buffer_size = 65536 })));
		end);
		after_each(function ()
			engine:close();
		end);

		it("relays both directions intact, with early bytes first", function ()
			local a, b, id = relayed_pair(engine, "early-from-a|", "early-from-b|");
			local up = s5.random_bytes(3 * 1048576 + 17, 1);
			local down = s5.random_bytes(1048576 + 3, 2);
			local got = s5.run({
				{ from = a, to = b, data = up },
				{ from = b, to = a, data = down },
			});
			assert.equal(s5.sha256("early-from-a|" .. up), s5.sha256(got[1]));
			assert.equal(s5.sha256("early-from-b|" .. down), s5.sha256(got[2]));
			a:close(); b:close();
			local results = await_results(engine, 1);
			assert.equal(1, #results);
			assert.equal(id, results[1].id);
			assert.equal(#up + 13, results[1].target_bytes);
			assert.equal(#down + 13, results[1].initiator_bytes);
			assert.is_nil(results[1].error);
		end);

		it("passes a half-close on and keeps the other direction open", function ()
			local a, b = relayed_pair(engine);
			a:send("question");
			a:shutdown("send");
			b:settimeout(5);
			assert.equal("question", b:receive(8));
			local _, err = b:receive(1);
			assert.equal("closed", err); -- EOF relayed as EOF
			b:send("answer after the half-close");
			b:shutdown("send");
			a:settimeout(5);
			assert.equal("answer after the half-close", (a:receive("*a")));
			assert.equal(1, #await_results(engine, 1));
			a:close(); b:close();
		end);

		it("delivers every byte when the sender closes right after the last one", function ()
			local a, b = relayed_pair(engine);
			local data = s5.random_bytes(2 * 1048576 + 1, 3);
			local got = s5.run({ { from = a, to = b, data = data, finish = "close" } });
			assert.equal(#data, #got[1]);
			assert.equal(s5.sha256(data), s5.sha256(got[1]));
			b:close();
		end);

		it("relays an empty stream", function ()
			local a, b = relayed_pair(engine);
			local got = s5.run({ { from = a, to = b, data = "" }, { from = b, to = a, data = "" } });
			assert.equal("", got[1]);
			assert.equal("", got[2]);
			local results = await_results(engine, 1);
			assert.equal(0, results[1].target_bytes + results[1].initiator_bytes);
			a:close(); b:close();
		end);

		it("closes the other side when one is reset", function ()
			local a, b = relayed_pair(engine);
			a:setoption("linger", { on = true, timeout = 0 });
			a:close(); -- RST
			b:settimeout(5);
			local _, err = b:receive(1);
			assert.truthy(err == "closed" or err == "connection reset by peer", err);
			local results = await_results(engine, 1);
			assert.equal(1, #results);
			assert.truthy(results[1].error);
			assert.equal("target", results[1].failed);
			b:close();
		end);

		-- A reset used to be lost when the reset side's pump waited to read:
		-- it then read EOF, passed it on as a clean end and left the relay
		-- half-open. A truncated stream must not look complete.
		describe("on a reset", function ()
			local function reset(sock)
				sock:setoption("linger", { on = true, timeout = 0 });
				sock:close();
			end

			-- A message each way: both pumps then wait to read.
			local function settle(a, b)
				a:settimeout(2);
				b:settimeout(2);
				assert(a:send("ping"));
				assert.equal("ping", b:receive(4));
				assert(b:send("pong"));
				assert.equal("pong", a:receive(4));
			end

			local function assert_failed(side)
				local results = await_results(engine, 1, 2);
				assert.equal(1, #results);
				assert.truthy(results[1].error); -- ECONNRESET, or EPIPE once it sent FIN
				assert.equal(side, results[1].failed);
				return results[1];
			end

			it("resets the initiator when the target resets while both wait to read", function ()
				local a, b = relayed_pair(engine);
				settle(a, b);
				reset(a);
				assert.equal("reset", (s5.await_end(b, 2)));
				local result = assert_failed("target");
				assert.equal(4, result.target_bytes);
				assert.equal(4, result.initiator_bytes);
				b:close();
			end);

			it("resets the target when the initiator resets while both wait to read", function ()
				local a, b = relayed_pair(engine);
				settle(a, b);
				reset(b);
				assert.equal("reset", (s5.await_end(a, 2)));
				assert_failed("initiator");
				a:close();
			end);

			it("resets the initiator when the target resets after the initiator's half-close", function ()
				local a, b = relayed_pair(engine);
				b:send("file");
				b:shutdown("send");
				a:settimeout(2);
				assert.equal("file", (a:receive("*a")));
				reset(a);
				assert.equal("reset", (s5.await_end(b, 2)));
				assert_failed("target");
				b:close();
			end);

			it("resets the initiator when the target resets after its own half-close", function ()
				local a, b = relayed_pair(engine);
				a:send("done");
				a:shutdown("send");
				b:settimeout(2);
				assert.equal("done", (b:receive("*a")));
				reset(a);
				assert_failed("target");
				-- b has read its EOF already: the reset shows on sending.
				local err;
				local deadline = socket.gettime() + 2;
				repeat
					socket.sleep(0.01);
					_, err = b:send("more");
				until err or socket.gettime() > deadline;
				assert.truthy(err == "connection reset by peer" or err == "closed", err);
				b:close();
			end);
		end);

		-- Copy mode used to drop the count of a partial send (a slow but
		-- moving transfer then looked idle).
		it("counts the bytes of partial sends, so a slow transfer is not idle", function ()
			local slow = assert(core.engine(with({ buffer_size = 65536,
				idle_timeout = 1, sockbuf = 32768 })));
			local a, b, id = relayed_pair(slow);
			-- Small buffers: sends are partial, and the kernel holds well
			-- under the idle timeout's worth of bytes past the relay.
			b:setoption("recv-buffer-size", 32768);
			local data = s5.random_bytes(1048576 + 5, 4);
			local got, err = s5.run_paced(a, b, data, 400 * 1024, 30);
			assert.is_nil(err);
			assert.equal(s5.sha256(data), s5.sha256(got));
			b:close();
			local results = await_results(slow, 1);
			slow:close();
			a:close();
			assert.equal(1, #results);
			assert.equal(id, results[1].id);
			assert.is_false(results[1].timed_out);
			assert.equal(#data, results[1].target_bytes);
			assert.equal(0, results[1].initiator_bytes);
		end);

		it("counts relays in its stats", function ()
			local a, b = relayed_pair(engine);
			assert.equal(1, engine:stats().active);
			a:close(); b:close();
			await_results(engine, 1);
			local stats = engine:stats();
			assert.equal(0, stats.active);
			assert.equal(1, stats.started);
			assert.equal(1, stats.finished);
		end);
	end);
end

describe("cproxy.core.engine", function ()
	-- An idle relay did not end, and its peers must not take what they got
	-- for the whole stream; a reset also lost on its way ends this way.
	it("times out an idle relay, resetting both sides", function ()
		local engine = assert(core.engine({ idle_timeout = 1 }));
		local a, b = relayed_pair(engine);
		a:send("partial");
		b:settimeout(5);
		assert.equal("partial", b:receive(7));
		local results = await_results(engine, 1);
		assert.equal(1, #results);
		assert.is_true(results[1].timed_out);
		assert.equal("reset", (s5.await_end(a, 5)));
		assert.equal("reset", (s5.await_end(b, 5)));
		a:close(); b:close();
		engine:close();
	end);

	it("closes the sockets it holds when closed, and is idempotent", function ()
		local engine = assert(core.engine());
		local a, b = relayed_pair(engine);
		engine:close();
		engine:close();
		a:settimeout(5);
		local _, err = a:receive(1);
		assert.equal("closed", err);
		b:close(); a:close();
		assert.has_error(function () engine:add(1, 2) end);
	end);

	-- Handles, not integers (#29): an fd in flight always has an owner.
	it("takes fd handles, and leaves their fds to them when it raises", function ()
		local engine = assert(core.engine());
		engine:close();
		local server = assert(socket.bind("127.0.0.1", 0));
		local _, port = server:getsockname();
		local a = assert(socket.connect("127.0.0.1", port));
		local a_end = assert(server:accept());
		server:close();
		local fd = a_end:getfd();
		a_end:setfd(-1);
		local handle, other = core.own_fd(fd), core.own_fd(fd);
		assert.has_error(function () engine:add(handle, other) end); -- closed engine, and the same fd twice
		assert.equal(fd, handle:getfd()); -- still the handle's
		other:release(); -- one owner is enough
		handle:close();
		a:settimeout(5);
		assert.equal("closed", select(2, a:receive(1)));
		a:close();
		-- A closed handle cannot be handed over.
		local live = assert(core.engine());
		assert.has_error(function () live:add(handle, handle) end);
		live:close();
	end);

	it("keeps the result of every relay that ends before the owner reaps", function ()
		local engine = assert(core.engine());
		local socks, ids = {}, {};
		for i = 1, 40 do -- past the first allocation of 16 results
			local a, b, id = relayed_pair(engine);
			socks[#socks + 1], socks[#socks + 2] = a, b;
			ids[id] = true;
		end
		for _, sock in ipairs(socks) do
			sock:close();
		end
		local deadline = socket.gettime() + 5;
		while engine:stats().active > 0 and socket.gettime() < deadline do
			socket.sleep(0.01);
		end
		local results = engine:reap();
		assert.equal(40, #results);
		for _, result in ipairs(results) do
			assert.is_true(ids[result.id]);
			ids[result.id] = nil;
		end
		engine:close();
	end);

	-- Under UBSan this used to report memcpy from a NULL results array.
	it("reaps an empty list before any relay has ended", function ()
		local engine = assert(core.engine());
		assert.same({}, engine:reap());
		engine:close();
	end);

	it("rejects bad options", function ()
		assert.has_error(function () core.engine({ mode = "teleport" }) end);
		assert.has_error(function () core.engine({ buffer_size = 1 }) end);
		assert.has_error(function () core.engine({ rate_limit = -1 }) end);
		assert.has_error(function () core.engine({ relay_memory = -1 }) end);
		assert.has_error(function () core.engine({ max_bytes = "lots" }) end);
	end);

	-- The nice value of each thread of this process, from /proc.
	local function thread_nices()
		local pid = io.open("/proc/self/stat"):read("a"):match("^%d+");
		local nices = {};
		local ls = io.popen("ls /proc/" .. pid .. "/task");
		for tid in ls:lines() do
			local f = io.open("/proc/" .. pid .. "/task/" .. tid .. "/stat");
			if f then
				local fields = {};
				for field in f:read("a"):gsub("^.*%) ", ""):gmatch("%S+") do
					table.insert(fields, field);
				end
				f:close();
				nices[tonumber(tid)] = tonumber(fields[17]);
			end
		end
		ls:close();
		return nices, nices[tonumber(pid)];
	end

	it("runs its thread nicer than the process by `nice`, and applies a new value (#18)", function ()
		local engine = assert(core.engine({ nice = 3 }));
		local a, b = relayed_pair(engine); -- starts the thread
		local function engine_thread_has(value)
			local deadline = socket.gettime() + 5;
			repeat
				local nices = thread_nices();
				for _, nice in pairs(nices) do
					if nice == value then
						return true;
					end
				end
				socket.sleep(0.02);
			until socket.gettime() > deadline;
			return false;
		end
		local _, base = thread_nices();
		assert.is_true(engine_thread_has(math.min(19, base + 3)));
		assert.is_true(engine:configure({ nice = 5 }));
		assert.is_true(engine_thread_has(math.min(19, base + 5)));
		local _, after = thread_nices();
		assert.equal(base, after); -- the process's own thread is untouched
		a:close(); b:close();
		engine:close();
		assert.has_error(function () core.engine({ nice = 20 }) end);
	end);

	it("applies new settings to running relays and those added after", function ()
		local engine = assert(core.engine({ idle_timeout = 0 }));
		local a, b = relayed_pair(engine);
		assert.is_true(engine:configure({ idle_timeout = 1, max_bytes = 10 }));
		-- The relay from before is now idle for too long...
		local results = await_results(engine, 1);
		assert.is_true(results[1].timed_out);
		a:close(); b:close();
		-- ...and a new one gets the size cap.
		a, b = relayed_pair(engine);
		local got = s5.run({ { from = a, to = b, data = ("x"):rep(100), finish = "keep" } }, 10);
		assert.truthy(#got[1] <= 11);
		a:close(); b:close();
		engine:close();
		assert.has_error(function () engine:configure({}) end);
	end);
end);

for _, mode in ipairs({ "copy", "splice" }) do
	describe("cproxy.core.engine limits (" .. mode .. " mode)", function ()
		it("aborts a relay that moves more than max_bytes, resetting both sides", function ()
			local engine = assert(core.engine({ mode = mode, max_bytes = 100000 }));
			local a, b = relayed_pair(engine);
			local data = s5.random_bytes(300000, 4);
			a:settimeout(5);
			a:send(data);
			local results = await_results(engine, 1);
			assert.equal(1, #results);
			assert.equal("File too large", results[1].error);
			assert.is_nil(results[1].failed);
			assert.truthy(results[1].target_bytes <= 100002, results[1].target_bytes);
			assert.equal("reset", (s5.await_end(b, 2)));
			a:close(); b:close();
			engine:close();
		end);

		-- A slow receiver makes copy mode hold part of each read: what it
		-- sends from there counts against the turn's budget as well.
		it("stops at max_bytes with a slow receiver, partial sends and all", function ()
			local engine = assert(core.engine({ mode = mode, max_bytes = 100000, sockbuf = 16384 }));
			local a, b = relayed_pair(engine);
			b:setoption("recv-buffer-size", 4096);
			local data = s5.random_bytes(400000, 6);
			a:settimeout(0);
			b:settimeout(0);
			local sent, got, ended = 0, 0, nil;
			local deadline = socket.gettime() + 20;
			repeat -- the sender pushes all it can, the receiver takes 4 KiB a turn
				local n, _, partial = a:send(data, sent + 1);
				sent = n or (partial and partial > sent and partial) or sent;
				local chunk, err, part = b:receive(4096);
				got = got + #(chunk or part or "");
				ended = err ~= "timeout" and err or nil;
				socket.sleep(0.005);
			until ended or socket.gettime() > deadline;
			assert.truthy(ended, "the transfer was not cut");
			assert.truthy(got <= 100001, got);
			local results = await_results(engine, 1);
			assert.equal("File too large", results[1].error);
			assert.truthy(results[1].target_bytes <= 100001, results[1].target_bytes);
			a:close(); b:close();
			engine:close();
		end);

		it("relays exactly max_bytes intact", function ()
			local engine = assert(core.engine({ mode = mode, max_bytes = 100000 }));
			local a, b = relayed_pair(engine);
			local data = s5.random_bytes(100000, 5);
			local got = s5.run({ { from = a, to = b, data = data } }, 10);
			assert.equal(s5.sha256(data), s5.sha256(got[1]));
			a:close(); b:close();
			local results = await_results(engine, 1);
			assert.is_nil(results[1].error);
			engine:close();
		end);

		it("relays intact under a rate limit, and counts the time limited", function ()
			local engine = assert(core.engine({ mode = mode, rate_limit = 4 * 1048576 }));
			local a, b = relayed_pair(engine);
			local data = s5.random_bytes(2 * 1048576 + 3, 6);
			local got = s5.run({ { from = a, to = b, data = data } }, 30);
			assert.equal(s5.sha256(data), s5.sha256(got[1]));
			assert.truthy(engine:stats().limited_us > 0);
			a:close(); b:close();
			engine:close();
		end);

		-- The rate itself is a measurement, so it runs with `make stress`.
		it("holds a rate limit within 10% over 5 s, per relay and in total #slow", function ()
			local rate = 2 * 1048576;
			for _, opts in ipairs({ { rate_limit = rate }, { total_rate_limit = rate } }) do
				opts.mode = mode;
				local engine = assert(core.engine(opts));
				local flows, socks = {}, {};
				local streams = opts.total_rate_limit and 2 or 1;
				for i = 1, streams do
					local a, b = relayed_pair(engine);
					flows[i] = { from = a, to = b, data = s5.random_bytes(6 * rate / streams, i) };
					socks[#socks + 1], socks[#socks + 2] = a, b;
				end
				local t0 = socket.gettime();
				s5.run(flows, 60);
				local measured = 6 * rate / (socket.gettime() - t0);
				assert.truthy(math.abs(measured / rate - 1) <= 0.1,
					("%.0f bytes/s against a limit of %d"):format(measured, rate));
				for _, sock in ipairs(socks) do
					sock:close();
				end
				engine:close();
			end
		end);
	end);
end
