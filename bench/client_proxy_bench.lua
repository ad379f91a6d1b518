-- `make bench` for client_proxy: IQ round trips through our component
-- against direct user-to-implementing-client IQs, in the same Prosody and
-- the same run. One user keeps WINDOW requests outstanding; the
-- implementing client answers each at once. Prints round trips per second,
-- p50/p99 latency, Prosody's CPU-seconds per 10,000 round trips and the
-- ratio to direct. Run from the checkout's root:
--   lua5.4 bench/client_proxy_bench.lua
-- BENCH_IQS (round trips per mode and round), BENCH_ROUNDS and
-- BENCH_WINDOW change the load; BENCH_PLUGIN_PATH loads another
-- mod_client_proxy (prosody-modules' one, say) in place of ours.
local socket = require "socket";
local prosody = require "spec.helpers.prosody";
local xmpp = require "spec.helpers.xmpp_client";
local st = require "util.stanza";
local percentile = require "bench.stats".percentile;

local IQS = tonumber(os.getenv("BENCH_IQS")) or 20000;
local ROUNDS = tonumber(os.getenv("BENCH_ROUNDS")) or 3;
local WINDOW = tonumber(os.getenv("BENCH_WINDOW")) or 64;
local WARMUP = 2000;

local hosts = [[
VirtualHost "localhost"

Component "jat.localhost" "client_proxy"
	target_address = "svc@localhost"
]];

-- Reads what has arrived on `client` without blocking; false once closed.
local function take(client)
	local data, err, partial = client.sock:receive(1048576);
	data = data or partial;
	if data and #data > 0 then
		assert(client.stream:feed(data));
	end
	return err ~= "closed";
end

-- `count` round trips from `user` to `to`, answered by `worker`, with
-- WINDOW outstanding. Returns the elapsed seconds and the latencies (ms)
-- appended to `rtts` (when given).
local function run(user, worker, to, count, rtts)
	user.sock:settimeout(0);
	worker.sock:settimeout(0);
	local sent_at, sent, done = {}, 0, 0;
	local request = "<iq type='get' id='%d' to='" .. to .. "'><query xmlns='urn:example:bench'/></iq>";
	local function send_more(out)
		local now = socket.gettime();
		while sent < count and sent - done < WINDOW do
			sent = sent + 1;
			sent_at[sent] = now;
			out[#out + 1] = request:format(sent);
		end
	end
	local t0 = socket.gettime();
	local out = {};
	send_more(out);
	assert(user.sock:send(table.concat(out)));
	local deadline = t0 + 60 + count / 100;
	while done < count do
		assert(socket.gettime() < deadline, "the bench stalled: " .. done .. " of " .. count .. " answered");
		local readable = socket.select({ user.sock, worker.sock }, nil, 1);
		for _, sock in ipairs(readable) do
			local client = sock == user.sock and user or worker;
			assert(take(client), "a session closed");
		end
		if #worker.queue > 0 then
			local replies = {};
			for _, stanza in ipairs(worker.queue) do
				if stanza.name == "iq" and stanza.attr.type == "get" then
					replies[#replies + 1] = ("<iq type='result' id='%s' to='%s'/>"):format(stanza.attr.id, stanza.attr.from);
				end
			end
			worker.queue = {};
			assert(worker.sock:send(table.concat(replies)));
		end
		if #user.queue > 0 then
			local now = socket.gettime();
			for _, stanza in ipairs(user.queue) do
				if stanza.name == "iq" then
					assert(stanza.attr.type == "result", tostring(stanza));
					local n = tonumber(stanza.attr.id);
					if rtts then
						rtts[#rtts + 1] = (now - sent_at[n]) * 1000;
					end
					sent_at[n] = nil;
					done = done + 1;
				end
			end
			user.queue = {};
			out = {};
			send_more(out);
			if #out > 0 then
				assert(user.sock:send(table.concat(out)));
			end
		end
	end
	return socket.gettime() - t0;
end

local function login(server, user, resource)
	return assert(xmpp.connect({ port = server.ports.c2s, domain = "localhost",
		username = user, password = user, resource = resource }));
end

io.stderr:write("starting Prosody with client_proxy\n");
local server = prosody.start({
	hosts = hosts;
	plugin_paths = os.getenv("BENCH_PLUGIN_PATH") and { os.getenv("BENCH_PLUGIN_PATH") } or nil;
	log_level = "info";
	accounts = { { "alice", "localhost", "alice" }, { "svc", "localhost", "svc" } };
});
local ok, err = pcall(function ()
	local worker = login(server, "svc", "worker");
	-- Approve the component's subscription, then wait until it routes to us.
	local sub = worker:await(function (s)
		return s.name == "presence" and s.attr.type == "subscribe" and s.attr.from == "jat.localhost";
	end, 5);
	if sub then
		worker:send(st.presence({ type = "subscribed", to = "jat.localhost" }));
	end
	local alice = login(server, "alice", "bench");
	local routed = false;
	for _ = 1, 50 do
		alice:send(xmpp.iq({ type = "get", to = "jat.localhost" }):tag("query", { xmlns = "urn:example:bench" }));
		local got = worker:await(function (s) return s.name == "iq" and s.attr.type == "get"; end, 0.2);
		if got then
			worker:send(st.reply(got));
			assert(alice:await_iq("result", 5));
			routed = true;
			break;
		end
		alice:await_iq("error", 1);
	end
	assert(routed, "the component never routed to the implementing client");
	alice.queue, worker.queue = {}, {};

	local modes = {
		{ label = "direct", to = worker.jid },
		{ label = "client_proxy", to = "jat.localhost" },
	};
	for _, mode in ipairs(modes) do
		mode.seconds, mode.cpu, mode.count, mode.rtts = 0, 0, 0, {};
		io.stderr:write("warming up ", mode.label, "\n");
		run(alice, worker, mode.to, WARMUP);
	end
	for round = 1, ROUNDS do
		for _, mode in ipairs(modes) do
			io.stderr:write(("round %d/%d: %s, %d round trips\n"):format(round, ROUNDS, mode.label, IQS));
			local cpu0 = server:cpu_seconds();
			mode.seconds = mode.seconds + run(alice, worker, mode.to, IQS, mode.rtts);
			mode.cpu = mode.cpu + server:cpu_seconds() - cpu0;
			mode.count = mode.count + IQS;
		end
	end
	alice:close();
	worker:close();

	print();
	print(("%d round trips per mode in %d rounds, %d outstanding"):format(IQS * ROUNDS, ROUNDS, WINDOW));
	print(("%-24s %12s %16s %16s"):format("path", "round trips/s", "p50/p99 ms", "CPU-s per 10k"));
	for _, mode in ipairs(modes) do
		mode.rate = mode.count / mode.seconds;
		print(("%-24s %12.0f %9.2f/%-6.2f %16.2f"):format(
			mode.label == "direct" and "direct (user to client)" or "through client_proxy",
			mode.rate, percentile(mode.rtts, 0.5), percentile(mode.rtts, 0.99), mode.cpu / mode.count * 10000));
	end
	print(("client_proxy/direct %.2fx round trips per second, %.2fx the CPU per round trip"):format(
		modes[2].rate / modes[1].rate, (modes[2].cpu / modes[2].count) / (modes[1].cpu / modes[1].count)));
end);
server:stop();
if not ok then
	error(err, 0);
end
