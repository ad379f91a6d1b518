-- prosody-cproxy: a small event loop for the standalone component, with
-- the part of Prosody's net.server and util.timer APIs that the proxy65
-- service (cproxy/proxy65/service.lua) and the component stream use: listen,
-- addclient, watchfd, connections with write/close/ip, timers. Sockets
-- are LuaSocket's, readiness comes from cproxy.core.poll (epoll).
-- Not here: anything XMPP (cproxy/standalone/component.lua).
-- SPDX-License-Identifier: MIT

local core = require "cproxy.core";
local socket = require "socket";

local setmetatable, pairs, type, tostring, max = setmetatable, pairs, type, tostring, math.max;
local concat = table.concat;

local M = {};

local READ_SIZE = 65536;

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

function M.new()
	local conn_mt = {};
	conn_mt.__index = conn_mt;
	local poll = assert(core.poll());
	local self = { poll = poll, handlers = {}, timers = {}, running = false };
	local handlers = self.handlers; -- fd -> function(readable, writable)

	local function watch(fd, handler, r, w)
		handlers[fd] = handler;
		return poll:add(fd, r, w);
	end

	local function unwatch(fd)
		if handlers[fd] then
			handlers[fd] = nil;
			poll:del(fd);
		end
	end

	local function wrap(sock, listener, server_port)
		local conn = setmetatable({ sock = sock, fd = sock:getfd(), listener = listener,
			out = {}, server_port = server_port, loop = self }, conn_mt);
		conn.want_write = false;
		conn.handler = function (readable, writable)
			if writable then
				conn:flush();
			end
			if readable and conn.fd then
				conn:read();
			end
		end;
		watch(conn.fd, conn.handler, true, false);
		return conn;
	end
	self.wrap = wrap;

	function conn_mt:read()
		local data, err, partial = self.sock:receive(READ_SIZE);
		data = data or partial;
		if data and #data > 0 and self.listener.onincoming then
			self.listener.onincoming(self, data, err == "closed" and err or nil);
		end
		if err and err ~= "timeout" and self.fd then
			self:close(err);
		end
	end

	function conn_mt:flush()
		while self.out[1] do
			local data = concat(self.out);
			local n, err, partial = self.sock:send(data);
			n = n or partial or 0;
			self.out = n < #data and { data:sub(n + 1) } or {};
			if err == "timeout" then
				break;
			elseif err then
				return self:close(err);
			end
		end
		local want = self.out[1] ~= nil;
		if want ~= self.want_write and self.fd then
			self.want_write = want;
			poll:set(self.fd, not self.paused, want);
		end
		if not want and self.closing then
			self:close();
		elseif not want and self.listener.ondrain then
			self.listener.ondrain(self);
		end
	end

	function conn_mt:write(data)
		if not self.fd or self.closing then
			return nil, "closed";
		end
		self.out[#self.out + 1] = data;
		self:flush();
		return true;
	end

	-- Closes once queued output is out (or at once with `now`).
	function conn_mt:close(err, now)
		if not self.fd and self.closed then
			return;
		end
		if self.fd and self.out[1] and not err and not now then
			self.closing = true;
			return;
		end
		self.closed = true;
		self:del();
		self.sock:close();
		if self.listener.ondisconnect then
			self.listener.ondisconnect(self, err);
		end
	end

	-- Leaves the loop without closing the socket.
	function conn_mt:del()
		if self.fd then
			unwatch(self.fd);
			self.fd = nil;
		end
	end

	function conn_mt:pause()
		self.paused = true;
		if self.fd then
			poll:set(self.fd, false, self.want_write);
		end
	end

	function conn_mt:resume()
		self.paused = false;
		if self.fd then
			poll:set(self.fd, true, self.want_write);
		end
	end

	function conn_mt:socket() return self.sock; end
	function conn_mt:ip() return (self.sock:getpeername()); end
	function conn_mt:serverport() return self.server_port; end
	function conn_mt:ssl() return false; end

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
					listener.onconnect(conn);
				end
			end
		end, true, false);
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
		local pending = { listener = listener };
		-- Until connected, writability means the connect finished.
		local handler = conn.handler;
		conn.listener = pending;
		handlers[conn.fd] = function (readable, writable)
			local cerr = sock:getoption("error");
			if cerr then
				conn.listener = listener;
				return conn:close(cerr);
			end
			if writable or readable then
				handlers[conn.fd] = handler;
				conn.listener = listener;
				poll:set(conn.fd, true, conn.out[1] ~= nil);
				if listener.onconnect then
					listener.onconnect(conn);
				end
				conn:flush();
				if readable and conn.fd then
					conn:read();
				end
			end
		end;
		poll:set(conn.fd, false, true);
		return conn;
	end

	function server.watchfd(fd, onreadable)
		local watcher = { fd = fd };
		watch(fd, function ()
			onreadable(watcher);
		end, true, false);
		function watcher:close()
			unwatch(fd);
		end
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
				local again = item.f(now);
				if type(again) == "number" and item.f then
					item.at = now + again;
					heap_push(timers, item);
				end
			end
		end
	end

	-- Runs until quit(); returns its reason.
	function self:run()
		self.running = true;
		while self.running do
			local now = socket.gettime();
			self:run_timers(now);
			local timeout = self.timers[1] and max(0, self.timers[1].at - socket.gettime()) or 3600;
			local fd, readable, writable = poll:wait(timeout);
			while fd do
				local handler = handlers[fd];
				if handler then
					handler(readable, writable);
				end
				fd, readable, writable = poll:wait(0);
			end
			if readable ~= "timeout" and not fd then
				return nil, "poll failed: " .. tostring(readable);
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
