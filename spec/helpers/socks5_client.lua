-- A SOCKS5 (XEP-0065) client on LuaSocket for specs and benchmarks, and a
-- select() loop that moves test data through pairs of sockets.
local socket = require "socket";

if not package.cpath:find("/usr/lib/prosody/", 1, true) then
	package.cpath = "/usr/lib/prosody/?.so;" .. package.cpath;
end
local hashes = require "util.hashes";

local M = {};

local GREETING = "\5\1\0";

-- XEP-0065 section 5.3.2: SHA-1(SID + Requester JID + Target JID), hex.
function M.hash(sid, requester, target)
	return hashes.sha1(sid .. requester .. target, true);
end

function M.sha256(data)
	return hashes.sha256(data, true);
end

function M.request(hash)
	return "\5\1\0\3" .. string.char(#hash) .. hash .. "\0\0";
end

local function receive_exactly(sock, n)
	local data, err, partial = sock:receive(n);
	if not data then
		return nil, err, partial;
	end
	return data;
end

-- Connects and negotiates. opts.mode: "steps" (greeting, wait, request,
-- wait: what the built-in needs), "pipelined" (both in one write, with
-- opts.early behind them), "bytewise" (one byte per send). With
-- opts.shutdown, a pipelined write is followed at once by a FIN.
-- Returns the socket, or nil, err, reply. Of opts.early, what the kernel
-- would not take without blocking is left in opts.unsent.
function M.connect(port, hash, opts)
	opts = opts or {};
	local sock = socket.tcp();
	sock:settimeout(opts.timeout or 5);
	local ok, err = sock:connect(opts.host or "127.0.0.1", port);
	if not ok then
		return nil, err;
	end
	local request = opts.request or M.request(hash);
	local mode = opts.mode or "steps";
	if mode == "pipelined" then
		local all = GREETING .. request .. (opts.early or "");
		-- The proxy reads no stream byte before activation, so a large
		-- write cannot complete here: send what fits, keep the rest.
		sock:settimeout(0);
		local n, _, partial = sock:send(all);
		n = n or partial;
		sock:settimeout(opts.timeout or 5);
		if n < #GREETING + #request then
			n = assert(sock:send(all, n + 1, #GREETING + #request));
		end
		opts.unsent = all:sub(n + 1);
		if opts.shutdown then
			assert(opts.unsent == "", "the early bytes did not fit in one write");
			sock:shutdown("send");
		end
	elseif mode == "bytewise" then
		local all = GREETING .. request;
		for i = 1, #all do
			sock:send(all:sub(i, i));
			socket.sleep(0.001);
		end
	else
		sock:send(GREETING);
	end
	local method, merr = receive_exactly(sock, 2);
	if method ~= "\5\0" then
		sock:close();
		return nil, merr or "method refused", method;
	end
	if mode == "steps" then
		sock:send(request);
	end
	local head, herr, partial = receive_exactly(sock, 5);
	if not head then
		sock:close();
		return nil, herr, partial;
	end
	if head:byte(2) ~= 0 then
		local rest = sock:receive(5) or "";
		sock:close();
		return nil, "refused", head .. rest;
	end
	local rest = receive_exactly(sock, head:byte(5) + 2);
	if not rest then
		sock:close();
		return nil, "short reply";
	end
	return sock, nil, head .. rest;
end

-- Moves data through pairs of connected sockets, all at once.
-- flows: list of { from = sock, to = sock, data = string,
--   finish = "shutdown" (default) | "close" | "keep", chunk = send size }
-- Each flow's receiver reads until EOF; with "keep" the sender never ends
-- the stream, and the receiver closes once it has every byte. Returns the list of received
-- strings, or raises on timeout.
function M.run(flows, timeout)
	local deadline = socket.gettime() + (timeout or 60);
	local readers, writers, by_sock = {}, {}, {};
	local received, done = {}, 0;
	for i, flow in ipairs(flows) do
		flow.sent, flow.parts, flow.id, flow.got = 0, {}, i, 0;
		flow.from:settimeout(0);
		flow.to:settimeout(0);
		by_sock[flow.from] = by_sock[flow.from] or {};
		by_sock[flow.to] = by_sock[flow.to] or {};
		by_sock[flow.from].sending = flow;
		by_sock[flow.to].receiving = flow;
		table.insert(readers, flow.to);
		table.insert(writers, flow.from);
	end
	local function remove(list, sock)
		for i = #list, 1, -1 do
			if list[i] == sock then
				table.remove(list, i);
			end
		end
	end
	local function finish_sending(flow)
		remove(writers, flow.from);
		if flow.finish == "close" then
			flow.from:close();
			remove(readers, flow.from);
		elseif flow.finish ~= "keep" then
			flow.from:shutdown("send");
		end
	end
	for _, flow in ipairs(flows) do
		if #flow.data == 0 then
			finish_sending(flow);
		end
	end
	while done < #flows do
		if socket.gettime() > deadline then
			error(("transfer timed out: %d of %d flows done"):format(done, #flows));
		end
		local readable, writable = socket.select(readers, writers, 0.5);
		for _, sock in ipairs(writable or {}) do
			local flow = by_sock[sock].sending;
			if flow and flow.sent < #flow.data then
				local chunk = flow.chunk or 65536;
				local last = math.min(flow.sent + chunk, #flow.data);
				local n, err, partial = sock:send(flow.data, flow.sent + 1, last);
				n = n or partial;
				if not n or (n == flow.sent and err and err ~= "timeout") then
					error("send failed: " .. tostring(err));
				end
				flow.sent = n;
				if flow.sent >= #flow.data then
					finish_sending(flow);
				end
			end
		end
		for _, sock in ipairs(readable or {}) do
			local flow = by_sock[sock].receiving;
			if flow and not received[flow.id] then
				local data, err, partial = sock:receive(1048576);
				local got = data or partial;
				if got and #got > 0 then
					table.insert(flow.parts, got);
					flow.got = flow.got + #got;
				end
				local complete = flow.finish == "keep" and flow.got >= #flow.data;
				if err == "closed" or complete then
					received[flow.id] = table.concat(flow.parts);
					remove(readers, sock);
					done = done + 1;
					if complete then
						sock:close();
					end
				elseif err and err ~= "timeout" then
					error("receive failed: " .. tostring(err));
				end
			end
		end
	end
	return received;
end

-- A slow receiver: `from` sends data as fast as it is taken, then shuts
-- down its sending side; `to` reads at most `rate` bytes a second until
-- EOF. Returns what `to` received, or nil, err and the bytes received up
-- to the error. Raises on timeout.
function M.run_paced(from, to, data, rate, timeout)
	local start = socket.gettime();
	local deadline = start + (timeout or 60);
	local sent, got, parts = 0, 0, {};
	from:settimeout(0);
	to:settimeout(0);
	if #data == 0 then
		from:shutdown("send");
	end
	while socket.gettime() < deadline do
		local allowed = math.floor(rate * (socket.gettime() - start)) - got;
		local readers = allowed > 0 and { to } or {};
		local writers = sent < #data and { from } or {};
		-- The short timeout paces the reader while it has used its share.
		local readable, writable = socket.select(readers, writers, 0.01);
		if writable and writable[1] then
			local n, err, partial = from:send(data, sent + 1, math.min(sent + 65536, #data));
			n = n or partial;
			if not n or (n == sent and err and err ~= "timeout") then
				error("send failed: " .. tostring(err));
			end
			sent = n;
			if sent == #data then
				from:shutdown("send");
			end
		end
		if readable and readable[1] then
			local chunk, err, partial = to:receive(math.min(allowed, 65536));
			chunk = chunk or partial;
			if chunk and #chunk > 0 then
				table.insert(parts, chunk);
				got = got + #chunk;
			end
			if err == "closed" then
				return table.concat(parts);
			elseif err and err ~= "timeout" then
				return nil, err, table.concat(parts);
			end
		end
	end
	error(("paced transfer timed out: %d of %d bytes sent, %d received"):format(sent, #data, got));
end

-- Reads sock until its stream ends, for up to `timeout` seconds. Returns
-- how it ended, "reset" or "closed" (a clean EOF) or "timeout", and the
-- bytes read until then. LuaSocket reports a reset as "closed" once recv()
-- has taken the error, so the pending error (SO_ERROR) is checked first,
-- each time the socket turns readable.
function M.await_end(sock, timeout)
	local deadline = socket.gettime() + (timeout or 2);
	local parts = {};
	sock:settimeout(0);
	while socket.gettime() < deadline do
		local readable = socket.select({ sock }, nil, math.max(0, deadline - socket.gettime()));
		if readable and readable[1] then
			if sock:getoption("error") then
				return "reset", table.concat(parts);
			end
			local data, err, partial = sock:receive(65536);
			data = data or partial;
			if data and #data > 0 then
				table.insert(parts, data);
			end
			if err == "closed" then
				return "closed", table.concat(parts);
			end
		end
	end
	return "timeout", table.concat(parts);
end

-- Deterministic pseudo-random bytes, fast enough for tens of MiB.
function M.random_bytes(n, seed)
	local rng_state = seed or 1;
	local block = {};
	for i = 1, 4096 do
		rng_state = (rng_state * 1103515245 + 12345) % 2147483648;
		block[i] = string.char(rng_state % 256);
	end
	local unit = table.concat(block);
	-- Vary each 4 KiB block so that reordering would show.
	local parts, total, k = {}, 0, 0;
	while total < n do
		k = k + 1;
		local piece = string.pack(">I4", k) .. unit:sub(5);
		table.insert(parts, piece);
		total = total + #piece;
	end
	return table.concat(parts):sub(1, n);
end

return M;
