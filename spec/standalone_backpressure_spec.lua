-- bin/proxy65 against a server that writes faster than it reads (#33): a
-- scripted XEP-0114 server accepts the component, writes 100,000 requests
-- and reads nothing for a while, as a server's loop does while it waits on
-- a blocking call, then reads. Every reply must arrive, the component must
-- have stopped reading meanwhile (its log says for how long), and its
-- memory must stay bounded.
local socket = require "socket";
local prosody = require "spec.helpers.prosody";
local standalone = require "spec.helpers.standalone";
local sha1 = require "spec.helpers.core".sha1;

local SECRET = "backpressure-secret";
local REQUESTS = 100000;
local STALL = 2 * prosody.slow; -- seconds the server reads nothing
-- Peak RSS allowed: the queue is bounded at 1 MiB; the rest is Lua, the
-- C extension and the relay engine's buffer, allocated at start.
local MAX_RSS_KIB = 32 * 1024; -- measured: about 11 MiB

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

local function peak_rss_kib(pid)
	local f = io.open("/proc/" .. pid .. "/status");
	local status = f and f:read("a") or "";
	if f then f:close(); end
	return tonumber(status:match("VmHWM:%s*(%d+)"));
end

describe("standalone proxy65 with a server that stalls its reading (#33) #integration", function ()
	it("answers every request, pausing its reading meanwhile, in bounded memory", function ()
		local listener = assert(socket.bind("127.0.0.1", 0));
		local _, port = listener:getsockname();
		listener:settimeout(10);
		local component = standalone.start({ rport = tonumber(port), secret = SECRET });
		local peer;
		finally(function ()
			if peer then peer:close(); end
			listener:close();
			component.stop();
		end);
		peer = assert(listener:accept());
		peer:settimeout(5);
		read_until(peer, "<stream:stream[^>]*>");
		peer:send("<stream:stream xmlns='jabber:component:accept' xmlns:stream='http://etherx.jabber.org/streams' id='bp1'>");
		local handshake = read_until(peer, "</handshake>");
		assert.truthy(handshake:find("<handshake>" .. sha1("bp1" .. SECRET) .. "</handshake>", 1, true), handshake);
		peer:send("<handshake/>");

		local requests = {};
		for i = 1, REQUESTS do
			requests[i] = ("<iq type='get' id='q%d' from='user@localhost/r' to='proxy.localhost'>"
				.. "<query xmlns='http://jabber.org/protocol/disco#info'/></iq>"):format(i);
		end
		local out, sent = table.concat(requests), 0;
		peer:settimeout(0);
		local function send_some()
			local last, err, partial = peer:send(out, sent + 1);
			sent = last or partial or sent;
			assert(err == nil or err == "timeout", err);
		end

		-- The stall: write what the kernel takes, read nothing.
		local stall_end = socket.gettime() + STALL;
		while socket.gettime() < stall_end do
			if sent < #out then
				send_some();
			end
			socket.sleep(0.01);
		end

		-- Then read every reply, writing the rest as the component takes it.
		local replies, carry = 0, "";
		local deadline = socket.gettime() + 120 * prosody.slow;
		while replies < REQUESTS and socket.gettime() < deadline do
			local readable, writable = socket.select({ peer }, sent < #out and { peer } or nil, 0.5);
			if writable and writable[1] then
				send_some();
			end
			if readable and readable[1] then
				local data, err, partial = peer:receive(1048576);
				data = data or partial;
				local text = carry .. data;
				local _, n = text:gsub("</iq>", "");
				replies = replies + n;
				carry = text:sub(-4);
				assert(err == nil or err == "timeout", err);
			end
		end
		assert.equal(REQUESTS, replies);
		assert.truthy(component.wait_log("Resumed reading from [^\n]* after [%d.]+ s paused"), component.log());
		local rss = peak_rss_kib(component.pid);
		assert.truthy(rss, "no VmHWM for " .. component.pid);
		assert.truthy(rss < MAX_RSS_KIB, ("peak RSS %d KiB"):format(rss));
		assert.truthy(component.alive());
	end);
end);
