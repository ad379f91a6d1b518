-- `make bench` for client_proxy: IQ round trips through our component,
-- under both addressings, and through prosody-modules' mod_client_proxy,
-- against direct user-to-implementing-client IQs, in the same Prosody and
-- the same run. One user keeps WINDOW requests outstanding; the
-- implementing client answers each at once. Rounds alternate the paths;
-- each path's rate is taken as a share of the direct rate of the same
-- round, and the medians over the rounds are printed, with p50/p99
-- latency and Prosody's CPU-seconds per 10,000 round trips. Run from the
-- checkout's root:
--   lua5.4 bench/client_proxy_bench.lua
-- BENCH_IQS (round trips per path and round), BENCH_ROUNDS and
-- BENCH_WINDOW change the load. BENCH_PLUGIN_PATH names prosody-modules'
-- mod_client_proxy.lua (or its directory), kept outside this project; it
-- is loaded beside ours under another name. Without it, that row is
-- skipped.
local socket = require "socket";
local prosody = require "spec.helpers.prosody";
local xmpp = require "spec.helpers.xmpp_client";
local st = require "util.stanza";
local percentile = require "bench.stats".percentile;

local IQS = tonumber(os.getenv("BENCH_IQS")) or 20000;
local ROUNDS = tonumber(os.getenv("BENCH_ROUNDS")) or 5;
local WINDOW = tonumber(os.getenv("BENCH_WINDOW")) or 64;
local WARMUP = 2000;

local function median(samples)
	local sorted = {};
	for i, v in ipairs(samples) do
		sorted[i] = v;
	end
	table.sort(sorted);
	local n = #sorted;
	if n == 0 then
		return 0 / 0;
	end
	if n % 2 == 1 then
		return sorted[(n + 1) / 2];
	end
	return (sorted[n / 2] + sorted[n / 2 + 1]) / 2;
end

-- prosody-modules' module, copied under another name into a scratch
-- plugin directory so that it loads beside ours.
local function old_module_dir()
	local path = os.getenv("BENCH_PLUGIN_PATH");
	if not path or path == "" then
		return nil, "BENCH_PLUGIN_PATH is not set";
	end
	if not path:match("%.lua$") then
		path = path .. "/mod_client_proxy.lua";
	end
	local f = io.open(path);
	if not f then
		return nil, "cannot read " .. path;
	end
	local code = f:read("a");
	f:close();
	local dir = os.tmpname();
	os.remove(dir);
	assert(os.execute(("mkdir -p %q"):format(dir)));
	local out = assert(io.open(dir .. "/mod_old_client_proxy.lua", "w"));
	out:write(code);
	out:close();
	return dir;
end

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

local old_dir, old_why = old_module_dir();
local hosts = {
	'VirtualHost "localhost"', "",
	'Component "jat.localhost" "client_proxy"', '\ttarget_address = "svc@localhost"', "",
	'Component "tag.localhost" "client_proxy"', '\ttarget_address = "svc@localhost"',
	'\tclient_proxy_addressing = "tag"', "",
};
if old_dir then
	table.insert(hosts, 'Component "old.localhost" "old_client_proxy"');
	table.insert(hosts, '\ttarget_address = "svc@localhost"');
else
	io.stderr:write("prosody-modules' mod_client_proxy is skipped: ", old_why,
		" (set BENCH_PLUGIN_PATH to its mod_client_proxy.lua)\n");
end

io.stderr:write("starting Prosody with client_proxy\n");
local server = prosody.start({
	hosts = table.concat(hosts, "\n");
	plugin_paths = { prosody.root .. "/lua", old_dir };
	log_level = os.getenv("BENCH_LOG_LEVEL") or "info";
	accounts = { { "alice", "localhost", "alice" }, { "svc", "localhost", "svc" } };
});
local ok, err = pcall(function ()
	local worker = login(server, "svc", "worker");
	local alice = login(server, "alice", "bench");
	local modes = {
		{ label = "direct (user to client)", to = worker.jid },
		{ label = "client_proxy, \"jid\"", to = "jat.localhost" },
		{ label = "client_proxy, \"tag\"", to = "tag.localhost" },
	};
	if old_dir then
		table.insert(modes, { label = "prosody-modules' module", to = "old.localhost", old = true });
	end
	-- Approve each component's subscription, then wait until each routes to us.
	for i = 2, #modes do
		local component = modes[i].to;
		if modes[i].old then
			-- It subscribes once at load, maybe before localhost is up: it
			-- learns the resource from directed presence just as well.
			worker:send(st.presence({ to = component }));
		end
		local routed = false;
		for _ = 1, 50 do
			for _, s in ipairs(worker.queue) do
				if s.name == "presence" and s.attr.type == "subscribe" then
					worker:send(st.presence({ type = "subscribed", to = s.attr.from }));
				end
			end
			worker.queue = {};
			alice:send(xmpp.iq({ type = "get", to = component }):tag("query", { xmlns = "urn:example:bench" }));
			local got = worker:await(function (s) return s.name == "iq" and s.attr.type == "get"; end, 0.2);
			if got then
				worker:send(st.reply(got));
				assert(alice:await_iq("result", 5));
				routed = true;
				break;
			end
			alice:await_iq("error", 1);
		end
		assert(routed, component .. " never routed to the implementing client");
	end
	alice.queue, worker.queue = {}, {};

	for _, mode in ipairs(modes) do
		mode.shares, mode.cpus, mode.rtts = {}, {}, {};
		io.stderr:write("warming up ", mode.label, "\n");
		run(alice, worker, mode.to, WARMUP);
	end
	for round = 1, ROUNDS do
		-- Alternate the order too, so that no path always follows another.
		local order = {};
		for i = 1, #modes do
			order[i] = modes[(round % 2 == 1) and i or (#modes - i + 1)];
		end
		for _, mode in ipairs(order) do
			io.stderr:write(("round %d/%d: %s, %d round trips\n"):format(round, ROUNDS, mode.label, IQS));
			local cpu0 = server:cpu_seconds();
			local seconds = run(alice, worker, mode.to, IQS, mode.rtts);
			mode.rate = IQS / seconds;
			table.insert(mode.cpus, (server:cpu_seconds() - cpu0) / IQS * 10000);
		end
		for _, mode in ipairs(modes) do
			table.insert(mode.shares, mode.rate / modes[1].rate);
		end
	end
	alice:close();
	worker:close();

	print();
	print(("%d round trips per path in each of %d alternating rounds, %d outstanding; medians over the rounds"):format(
		IQS, ROUNDS, WINDOW));
	print(("%-26s %10s %16s %14s  %s"):format("path", "of direct", "p50/p99 ms", "CPU-s per 10k", "shares per round"));
	for _, mode in ipairs(modes) do
		local shares = {};
		for i, v in ipairs(mode.shares) do
			shares[i] = ("%.2f"):format(v);
		end
		print(("%-26s %9.2fx %9.2f/%-6.2f %14.2f  %s"):format(mode.label, median(mode.shares),
			percentile(mode.rtts, 0.5), percentile(mode.rtts, 0.99), median(mode.cpus), table.concat(shares, " ")));
	end
	local old = modes[4];
	if old then
		for i = 2, 3 do
			print(("%s against prosody-modules' module: %.2fx its share of direct, %.2fx its CPU per round trip"):format(
				modes[i].label, median(modes[i].shares) / median(old.shares), median(modes[i].cpus) / median(old.cpus)));
		end
	end
end);
server:stop();
if old_dir then
	os.execute(("rm -rf %q"):format(old_dir));
end
if not ok then
	error(err, 0);
end
