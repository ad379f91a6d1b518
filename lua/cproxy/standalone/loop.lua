-- prosody-cproxy: a small event loop for the standalone component, with
-- the part of Prosody's net.server and util.timer APIs that the proxy65
-- service (cproxy/proxy65/service.lua) and the component stream use:
-- listen, addclient, watchfd and timers. Sockets are LuaSocket's,
-- readiness comes from cproxy.core.poll (epoll). Every callback runs under
-- protection, as server_epoll's do: an error logs its traceback and closes
-- the connection (or watch, or timer) it came from, and the process and
-- its other connections and relays go on.
-- Not here: a connection's reading and writing (cproxy/standalone/
-- connection.lua); anything XMPP (cproxy/standalone/component.lua).
-- SPDX-License-Identifier: MIT

local core = require "cproxy.core";
local connection = require "cproxy.standalone.connection";
local socket = require "socket";

local type, tostring, max, xpcall = type, tostring, math.max, xpcall;
local traceback = debug.traceback;

local M = {};

-- Timers: a binary heap ordered by due time.
local function heap_push(heap, item)
	local i = #heap + 1;
	heap[i] = item;
	while i > 1 do
		local parent = i // 2;
		if heap[parent].at <= heap[i].at then
			break;
		end
		heap[parent], heap[i] = heap[i], heap[parent];
		i = parent;
	end
end

local function heap_pop(heap)
	local top, last = heap[1], heap[#heap];
	heap[#heap] = nil;
	if #heap > 0 then
		heap[1] = last;
		local i = 1;
		while true do
			local l, r, smallest = 2 * i, 2 * i + 1, i;
			if heap[l] and heap[l].at < heap[smallest].at then
				smallest = l;
			end
			if heap[r] and heap[r].at < heap[smallest].at then
				smallest = r;
			end
			if smallest == i then
				break;
			end
			heap[i], heap[smallest] = heap[smallest], heap[i];
			i = smallest;
		end
	end
	return top;
end

local function noop() end

-- Events handled in one step before timers run again.
local MAX_EVENTS_PER_STEP = 256;

-- opts: log (function(level, fmt, ...)), max_queued (bytes of output a
-- connection may queue before reading from it stops; see connection.lua).
function M.new(opts)
	opts = opts or {};
	local poll = assert(core.poll());
	local handlers = {}; -- fd -> { run = function(readable, writable), fail = function(err) }
	local self = {
		poll = poll, timers = {}, running = false,
		stats = { paused_seconds = 0, pauses = 0, errors = 0 },
	};
	local log = opts.log or noop;

	-- What connections need of the loop (connection.lua).
	local for_connections = {
		interest = function (fd, r, w) poll:set(fd, r, w); end;
		unwatch = function (fd)
			if handlers[fd] then
				handlers[fd] = nil;
				poll:del(fd);
			end
		end;
		now = socket.gettime;
		log = log;
		stats = self.stats;
		max_queued = opts.max_queued or connection.MAX_QUEUED_DEFAULT;
	};
	local unwatch = for_connections.unwatch;

	-- Logs a callback's error with its traceback, and counts it.
	local function failed(what, err)
		self.stats.errors = self.stats.errors + 1;
		log("error", "Error in %s, which is closed; the rest goes on: %s", what, tostring(err));
	end
	self.failed = failed;

	-- run(readable, writable) handles the fd's events; fail(err) closes
	-- what they belong to when run raises.
	local function watch(fd, run, fail, r, w)
		handlers[fd] = { run = run, fail = fail };
		return poll:add(fd, r, w);
	end

	local function wrap(sock, listener, server_port)
		local conn = connection.new(for_connections, sock, listener, server_port);
		watch(conn.fd, function (readable, writable)
			if writable then
				conn:flush();
			end
			if readable and conn.fd then
				conn:read();
			end
		end, function (err)
			conn:close(err, true);
		end, true, false);
		return conn;
	end
	self.wrap = wrap;

	-- net.server's API, for the proxy65 service.
	local server = {};
	self.server = server;

	-- Listens on address:port; returns the server socket or nil, err.
	function server.listen(address, port, listener)
		local sock, err = socket.bind(address, port, 128);
		if not sock then
			return nil, err;
		end
		sock:settimeout(0);
		local _, bound_port = sock:getsockname();
		watch(sock:getfd(), function ()
			for _ = 1, 64 do -- bounded: other fds get their turn
				local client = sock:accept();
				if not client then
					break;
				end
				client:settimeout(0);
				client:setoption("tcp-nodelay", true);
				local conn = wrap(client, listener, tonumber(bound_port));
				if listener.onconnect then
					-- A failing onconnect fails its own connection only.
					local ok, err = xpcall(listener.onconnect, traceback, conn);
					if not ok then
						failed("the new connection's handler", err);
						conn:close(err, true);
					end
				end
			end
		end, noop, true, false);
		return sock;
	end

	function server.unlisten(sock)
		unwatch(sock:getfd());
		sock:close();
	end

	-- Connects to host:port in the background: listener.onconnect(conn)
	-- once connected, ondisconnect(conn, err) if it fails.
	function server.addclient(host, port, listener)
		local sock = host:find(":", 1, true) and socket.tcp6() or socket.tcp();
		sock:settimeout(0);
		local ok, err = sock:connect(host, port);
		if not ok and err ~= "timeout" and err ~= "Operation already in progress" then
			sock:close();
			return nil, err;
		end
		local conn = wrap(sock, listener);
		local handler = handlers[conn.fd];
		local run = handler.run;
		-- Until connected, writability means the connect finished; a close
		-- meanwhile still reaches the listener's ondisconnect.
		handler.run = function (readable, writable)
			local cerr = sock:getoption("error");
			if cerr then
				return conn:close(cerr);
			end
			if writable or readable then
				handler.run = run;
				conn.want_write = conn.head <= conn.tail;
				conn:refresh_interest();
				if listener.onconnect then
					listener.onconnect(conn);
				end
				if conn.fd then
					conn:flush();
				end
				if readable and conn.fd then
					conn:read();
				end
			end
		end;
		conn.want_write = true; -- nothing is sent before the connect completes
		poll:set(conn.fd, false, true);
		return conn;
	end

	function server.watchfd(fd, onreadable)
		local watcher = { fd = fd };
		function watcher:close()
			unwatch(fd);
		end
		watch(fd, function ()
			onreadable(watcher);
		end, function ()
			watcher:close();
		end, true, false);
		return watcher;
	end

	-- util.timer's API: f() may return seconds to run again.
	local timer = {};
	self.timer = timer;

	function timer.add_task(delay, f)
		local item = { at = socket.gettime() + delay, f = f };
		heap_push(self.timers, item);
		return item;
	end

	function timer.stop(item)
		item.f = nil;
	end


	function self:run_timers(now)
		local timers = self.timers;
		while timers[1] and timers[1].at <= now do
			local item = heap_pop(timers);
			if item.f then
				local ok, again = xpcall(item.f, traceback, now);
				if not ok then
					failed("a timer", again);
				elseif type(again) == "number" and item.f then
					item.at = now + again;
					heap_push(timers, item);
				end
			end
		end
	end

	local function dispatch(fd, readable, writable)
		local handler = handlers[fd];
		if handler then
			local ok, err = xpcall(handler.run, traceback, readable, writable);
			if not ok then
				failed("the handler of fd " .. tostring(fd), err);
				local closed, cerr = xpcall(handler.fail, traceback, err);
				if not closed then
					failed("closing fd " .. tostring(fd), cerr);
					unwatch(fd);
				end
			end
		end
	end

	-- One turn: due timers, then what is ready within `limit` seconds (or
	-- until the next timer). Returns true, or nil, err if polling failed.
	function self:step(limit)
		self:run_timers(socket.gettime());
		local timeout = self.timers[1] and max(0, self.timers[1].at - socket.gettime()) or 3600;
		if limit and limit < timeout then
			timeout = limit;
		end
		local fd, readable, writable = poll:wait(timeout);
		-- Bounded: epoll is level-triggered, so a busy fd would be ready again
		-- at every wait(0), and timers (and quit()) must get their turn.
		for _ = 1, MAX_EVENTS_PER_STEP do
			if not fd then
				break;
			end
			dispatch(fd, readable, writable);
			fd, readable, writable = poll:wait(0);
		end
		if fd then
			dispatch(fd, readable, writable); -- taken from the poller: not dropped
		elseif readable ~= "timeout" then
			return nil, "poll failed: " .. tostring(readable);
		end
		return true;
	end

	-- Runs until quit(); returns its reason.
	function self:run()
		self.running = true;
		while self.running do
			local ok, err = self:step();
			if not ok then
				return nil, err;
			end
		end
		return self.quit_reason;
	end

	function self:quit(reason)
		self.running = false;
		self.quit_reason = reason;
	end

	return self;
end

return M;
