-- prosody-cproxy: one TCP connection of the standalone's event loop, with
-- the part of net.server's connection API that the proxy65 service and the
-- component stream use (write, close, pause, resume, ip, socket, ...).
--
-- Output: what write() is given waits in a queue, small writes joined into
-- chunks of about JOIN_SIZE, each byte joined once, and goes out from an
-- offset into the first chunk. While the socket is not writable nothing
-- is tried: so queuing and sending cost O(bytes) however the peer reads.
-- Backpressure: past max_queued bytes queued, reading stops, so that the
-- kernel's buffers push back on the peer (as server_epoll's pause and
-- resume do); it resumes once the queue is under half of that, and the
-- time spent so is logged and counted.
-- Not here: the loop, its timers and listeners (cproxy/standalone/loop.lua).
-- SPDX-License-Identifier: MIT

local setmetatable, concat = setmetatable, table.concat;

local M = {};

M.READ_SIZE = 65536;
M.MAX_QUEUED_DEFAULT = 1048576;
local JOIN_SIZE = 16384;

local conn_mt = {};
conn_mt.__index = conn_mt;

-- loop: what a connection needs of its loop: interest(fd, read, write),
-- unwatch(fd), now(), log(level, fmt, ...), stats (a table whose
-- paused_seconds and pauses it adds to) and max_queued (bytes).
function M.new(loop, sock, listener, server_port)
	return setmetatable({
		loop = loop, sock = sock, fd = sock:getfd(), listener = listener, server_port = server_port,
		chunks = {}, head = 1, tail = 0, offset = 0, -- the queue, and what of its first chunk is sent
		small = {}, small_n = 0, small_bytes = 0, -- small writes not yet joined into a chunk
		queued = 0, -- bytes queued and not yet sent
		want_write = false, paused = false, throttled = false,
	}, conn_mt);
end

-- Reading is on unless paused by the user of the connection (pause()) or
-- throttled by its own queue.
local function update_interest(self)
	if self.fd then
		self.loop.interest(self.fd, not (self.paused or self.throttled), self.want_write);
	end
end

local function join_small(self)
	if self.small_n > 0 then
		local tail = self.tail + 1;
		self.chunks[tail] = self.small_n == 1 and self.small[1] or concat(self.small, "", 1, self.small_n);
		self.tail = tail;
		for i = 1, self.small_n do
			self.small[i] = nil;
		end
		self.small_n, self.small_bytes = 0, 0;
	end
end

local function throttle(self)
	self.throttled, self.throttled_at = true, self.loop.now();
	self.loop.log("debug", "%d bytes queued for %s, which is not reading: paused reading from it",
		self.queued, self:describe());
	update_interest(self);
end

local function unthrottle(self)
	local seconds = self.loop.now() - self.throttled_at;
	self.throttled = false;
	local stats = self.loop.stats;
	stats.paused_seconds, stats.pauses = stats.paused_seconds + seconds, stats.pauses + 1;
	-- A pause a person would notice is worth a line; the short ones of a
	-- peer that reads a little slower than it writes are not.
	self.loop.log(seconds >= 1 and "info" or "debug",
		"Resumed reading from %s after %.3f s paused while it did not read what was sent", self:describe(), seconds);
	update_interest(self);
end

function conn_mt:describe()
	local ip, port = self.sock:getpeername();
	return ip and (ip .. " port " .. port) or "a connection";
end

function conn_mt:read()
	repeat
		local data, err, partial = self.sock:receive(M.READ_SIZE);
		data = data or partial;
		if data and #data > 0 and self.listener.onincoming then
			self.listener.onincoming(self, data, err == "closed" and err or nil);
		end
		if err and err ~= "timeout" and self.fd then
			return self:close(err);
		end
		-- LuaSocket reads the kernel in 8 KiB pieces and may keep bytes of
		-- the last in its own buffer, which epoll cannot see: take them now.
	until not (self.fd and not (self.paused or self.throttled) and self.sock:dirty());
end

-- Sets the poller's interest again from the connection's state.
function conn_mt:refresh_interest()
	update_interest(self);
end

-- Sends what the socket takes now; called when it is writable.
function conn_mt:flush()
	join_small(self);
	local chunks = self.chunks;
	while self.head <= self.tail do
		local chunk = chunks[self.head];
		local last, err, partial = self.sock:send(chunk, self.offset + 1);
		last = last or partial or self.offset;
		self.queued = self.queued - (last - self.offset);
		if last >= #chunk then
			chunks[self.head] = nil;
			self.head, self.offset = self.head + 1, 0;
		else
			self.offset = last;
		end
		if err == "timeout" then
			break;
		elseif err then
			return self:close(err, true);
		end
	end
	if self.head > self.tail then
		self.head, self.tail = 1, 0; -- keep the indices small
	end
	local want = self.head <= self.tail;
	if want ~= self.want_write then
		self.want_write = want;
		update_interest(self);
	end
	if self.throttled and self.queued <= self.loop.max_queued // 2 then
		unthrottle(self);
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
	local n = #data;
	if n == 0 then
		return true;
	end
	if n >= JOIN_SIZE then
		join_small(self); -- keeps the order
		self.tail = self.tail + 1;
		self.chunks[self.tail] = data;
	else
		self.small_n = self.small_n + 1;
		self.small[self.small_n] = data;
		self.small_bytes = self.small_bytes + n;
		if self.small_bytes >= JOIN_SIZE then
			join_small(self);
		end
	end
	self.queued = self.queued + n;
	-- While the socket is known not to be writable, the loop calls flush()
	-- once it is: trying now would only fail again.
	if not self.want_write then
		self:flush();
	end
	if self.fd and not self.throttled and self.queued > self.loop.max_queued then
		throttle(self);
	end
	return true;
end

-- Closes once queued output is out (or at once with `now`, or on an error).
function conn_mt:close(err, now)
	if not self.fd and self.closed then
		return;
	end
	if self.fd and self.queued > 0 and not err and not now then
		self.closing = true;
		return;
	end
	if self.throttled then
		unthrottle(self);
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
		self.loop.unwatch(self.fd);
		self.fd = nil;
	end
end

function conn_mt:pause()
	self.paused = true;
	update_interest(self);
end

function conn_mt:resume()
	self.paused = false;
	update_interest(self);
end

function conn_mt:socket() return self.sock; end
function conn_mt:ip() return (self.sock:getpeername()); end
function conn_mt:serverport() return self.server_port; end
function conn_mt:ssl() return false; end

return M;
