-- Measures the relay engine alone, without Prosody or XMPP: a minimal
-- SOCKS5 server pairs loadgen's connections and hands them to the engine
-- at once. For choosing engine options; `make bench` measures the module.
--   lua5.4 bench/engine_bench.lua [mode] [buffer_size] [streams] [MiB per stream] [sockbuf]
--     [relay_memory]
-- Prints the load generator's result and this process's CPU-seconds (the
-- relay thread's, mostly) per GiB relayed.
package.cpath = "./build/?.so;" .. package.cpath;
local socket = require "socket";
local core = require "cproxy.core";

local mode = arg[1] or "copy";
local buffer_size = tonumber(arg[2]) or 4 * 1048576;
local streams = tonumber(arg[3]) or 1;
local mib = tonumber(arg[4]) or 2048;
local sockbuf = tonumber(arg[5]) or 0;
local relay_memory = tonumber(arg[6]);

local engine = assert(core.engine({ mode = mode, buffer_size = buffer_size, sockbuf = sockbuf,
	relay_memory = relay_memory }));
local server = assert(socket.bind("127.0.0.1", 0));
local _, port = server:getsockname();

local hashes = {};
for i = 1, streams do
	hashes[i] = ("%040x"):format(i);
end
local cmd = ("./build/loadgen socks5 %d %d %s"):format(port, mib * 1048576, table.concat(hashes, " "));
local loadgen = assert(io.popen(cmd, "r"));

local function handshake(conn)
	local parser = core.socks5();
	conn:settimeout(5);
	while parser:state() ~= "done" do
		local data, err, partial = conn:receive(1);
		data = data or partial;
		assert(data and #data > 0, err);
		local state, reply, _, reason = parser:feed(data);
		assert(state ~= "failed", reason);
		conn:send(reply);
	end
	conn:send(parser:accept());
end

local function take_fd(conn)
	local fd = conn:getfd();
	conn:setfd(-1);
	return fd;
end

local cpu0 = os.clock();
for _ = 1, streams do
	local target = assert(server:accept());
	handshake(target);
	local initiator = assert(server:accept());
	handshake(initiator);
	assert(engine:add(core.own_fd(take_fd(target)), core.own_fd(take_fd(initiator))));
end
local output = loadgen:read("a");
loadgen:close();
local result = output:match("result[^\n]*") or output;
local gib = streams * mib / 1024;
print(("%-6s buffer=%-8d sockbuf=%-8d relay_memory=%-9s streams=%d  %s  CPU-s/GiB %.3f"):format(mode,
	buffer_size, sockbuf, tostring(relay_memory or "default"), streams, result, (os.clock() - cpu0) / gib));
engine:close();
