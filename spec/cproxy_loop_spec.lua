-- The standalone's event loop (cproxy/standalone/loop.lua and
-- connection.lua) on real loopback sockets: a callback's error closes only
-- what it came from (#29), and a peer that does not read pauses reading
-- from it, with the output queue bounded (#33).
local socket = require "socket";
require "spec.helpers.core"; -- this checkout's C extension
package.path = "lua/?.lua;" .. package.path;
local loop_lib = require "cproxy.standalone.loop";

local function new_loop(opts)
	local logged = {};
	opts = opts or {};
	opts.log = function (level, fmt, ...)
		logged[#logged + 1] = level .. " " .. fmt:format(...);
	end;
	return loop_lib.new(opts), logged;
end

-- Turns the loop until `done()` or `seconds` pass; returns done().
local function turn_until(loop, done, seconds)
	local deadline = socket.gettime() + (seconds or 5);
	while not done() and socket.gettime() < deadline do
		assert(loop:step(0.02));
	end
	return done();
end

local function connect(port)
	local sock = assert(socket.connect("127.0.0.1", port));
	sock:settimeout(0);
	return sock;
end

describe("cproxy.standalone.loop", function ()
	it("closes only the connection whose handler raised, logs the traceback, and serves the others", function ()
		local loop, logged = new_loop();
		local server = assert(loop.server.listen("127.0.0.1", 0, {
			onincoming = function (conn, data)
				if data:find("boom", 1, true) then
					error("boom in a handler");
				end
				conn:write("echo:" .. data);
			end;
		}));
		local _, port = server:getsockname();
		local bad, good = connect(port), connect(port);
		finally(function () bad:close(); good:close(); loop.server.unlisten(server); end);
		bad:send("boom");
		local how;
		assert.truthy(turn_until(loop, function ()
			local _, err = bad:receive(1);
			how = err;
			return err == "closed";
		end), how);
		assert.truthy(logged[1]:match("^error Error in the handler of fd %d+[^\n]*boom in a handler"), logged[1]);
		assert.truthy(logged[1]:find("stack traceback", 1, true), logged[1]);
		assert.equal(1, loop.stats.errors);
		good:send("hi");
		local got = "";
		assert.truthy(turn_until(loop, function ()
			got = got .. (select(3, good:receive(100)) or "");
			return got == "echo:hi";
		end), got);
		-- And a new connection is still accepted.
		local again = connect(port);
		again:send("again");
		got = "";
		assert.truthy(turn_until(loop, function ()
			got = got .. (select(3, again:receive(100)) or "");
			return got == "echo:again";
		end), got);
		again:close();
	end);

	it("runs its timers while an fd stays ready", function ()
		local loop = new_loop();
		local server = assert(socket.bind("127.0.0.1", 0));
		local _, port = server:getsockname();
		local peer = connect(port);
		local busy = assert(server:accept());
		finally(function () peer:close(); busy:close(); server:close(); end);
		peer:send("never read"); -- so `busy` is readable at every wait
		local calls = 0;
		loop.server.watchfd(busy:getfd(), function () calls = calls + 1; end);
		local fired = false;
		loop.timer.add_task(0.05, function () fired = true; end);
		assert.truthy(turn_until(loop, function () return fired; end, 2));
		assert.truthy(calls > 0);
	end);

	it("drops a timer that raised, and runs the others", function ()
		local loop, logged = new_loop();
		local runs = 0;
		loop.timer.add_task(0, function () error("timer trouble"); end);
		loop.timer.add_task(0.01, function ()
			runs = runs + 1;
			return runs < 3 and 0.01 or nil;
		end);
		assert.truthy(turn_until(loop, function () return runs == 3; end));
		assert.truthy(logged[1]:match("^error Error in a timer[^\n]*timer trouble"), logged[1]);
	end);

	it("pauses reading from a peer that does not read, and resumes once half the queue is out", function ()
		local REPLY = 262144; -- bytes out per byte in
		local loop, logged = new_loop({ max_queued = 65536 });
		local conn;
		local server = assert(loop.server.listen("127.0.0.1", 0, {
			onconnect = function (c) conn = c; end;
			onincoming = function (c, data)
				c:write(("y"):rep(REPLY * #data)); -- much more out than in
			end;
		}));
		local _, port = server:getsockname();
		local peer = connect(port);
		finally(function () peer:close(); loop.server.unlisten(server); end);
		assert.truthy(turn_until(loop, function () return conn ~= nil; end));
		-- Write requests without reading the answers, until the loop stops
		-- taking them.
		peer:setoption("tcp-nodelay", true); -- each request goes at once
		local sent = 0;
		local deadline = socket.gettime() + 5;
		repeat
			peer:send("x");
			sent = sent + 1;
			loop:step(0.005);
		until conn.throttled or socket.gettime() > deadline;
		assert.is_true(conn.throttled);
		assert.truthy(conn.queued > 65536);
		assert.truthy(conn.queued <= 65536 + REPLY, conn.queued); -- at most one read's worth over
		-- The peer reads everything; the loop resumes, and answers the rest.
		local got = 0;
		assert.truthy(turn_until(loop, function ()
			local data, _, partial = peer:receive(1048576);
			got = got + #(data or partial or "");
			return got == sent * REPLY;
		end, 10), got);
		assert.is_false(conn.throttled);
		assert.equal(0, conn.queued);
		assert.equal(1, loop.stats.pauses);
		local resumed;
		for _, line in ipairs(logged) do
			resumed = resumed or line:match("^%a+ Resumed reading from 127%.0%.0%.1 port %d+ after [%d.]+ s paused");
		end
		assert.truthy(resumed, table.concat(logged, "\n"));
	end);
end);
