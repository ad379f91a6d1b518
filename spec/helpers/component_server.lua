-- A scripted XEP-0114 server for specs and benches: accepts one
-- component on a socket it listens on, runs the handshake, then lets the
-- caller write requests and count replies as it pleases (a server that
-- reads promptly, or one that stalls).
local socket = require "socket";
local sha1 = require "spec.helpers.core".sha1;

local M = {};

-- Reads from `sock` (blocking) until `pattern` matches what was read.
local function read_until(sock, pattern)
	local got = "";
	repeat
		local byte, err = sock:receive(1);
		assert(byte, err);
		got = got .. byte;
	until got:match(pattern);
	return got;
end

-- A listening socket on loopback and its port.
function M.listen()
	local listener = assert(socket.bind("127.0.0.1", 0));
	local _, port = listener:getsockname();
	listener:settimeout(10);
	return listener, tonumber(port);
end

-- Accepts the component and completes its handshake with `secret`;
-- returns the peer socket, non-blocking.
function M.accept(listener, secret, stream_id)
	local peer = assert(listener:accept());
	peer:settimeout(5);
	stream_id = stream_id or "s1";
	read_until(peer, "<stream:stream[^>]*>");
	peer:send(("<stream:stream xmlns='jabber:component:accept' xmlns:stream='http://etherx.jabber.org/streams' id='%s'>")
		:format(stream_id));
	local handshake = read_until(peer, "</handshake>");
	assert(handshake:find("<handshake>" .. sha1(stream_id .. secret) .. "</handshake>", 1, true), handshake);
	peer:send("<handshake/>");
	peer:settimeout(0);
	return peer;
end

-- `n` disco#info requests to `to`, as one string.
function M.requests(n, to)
	local parts = {};
	for i = 1, n do
		parts[i] = ("<iq type='get' id='q%d' from='user@localhost/r' to='%s'>"
			.. "<query xmlns='http://jabber.org/protocol/disco#info'/></iq>"):format(i, to);
	end
	return table.concat(parts);
end

-- Writes `out` to `peer` and counts the IQ replies until `n` have come
-- (or `timeout` passes); with `stall`, reads nothing for that many
-- seconds first, writing what the kernel takes. Returns the replies seen.
function M.exchange(peer, out, n, stall, timeout)
	local sent = 0;
	local function send_some()
		local last, err, partial = peer:send(out, sent + 1);
		sent = last or partial or sent;
		assert(err == nil or err == "timeout", err);
	end
	local stall_end = socket.gettime() + (stall or 0);
	while socket.gettime() < stall_end do
		if sent < #out then
			send_some();
		end
		socket.sleep(0.01);
	end
	local replies, carry = 0, "";
	local deadline = socket.gettime() + (timeout or 120);
	while replies < n and socket.gettime() < deadline do
		local readable, writable = socket.select({ peer }, sent < #out and { peer } or nil, 0.5);
		if writable and writable[1] then
			send_some();
		end
		if readable and readable[1] then
			local data, err, partial = peer:receive(1048576);
			local text = carry .. (data or partial);
			local _, count = text:gsub("</iq>", "");
			replies = replies + count;
			carry = text:sub(-4);
			assert(err == nil or err == "timeout", err);
		end
	end
	return replies;
end

return M;
