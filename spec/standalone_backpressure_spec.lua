-- bin/proxy65 against a server that writes faster than it reads (#33): a
-- scripted XEP-0114 server accepts the component, writes 100,000 requests
-- and reads nothing for a while, as a server's loop does while it waits on
-- a blocking call, then reads. Every reply must arrive, the component must
-- have stopped reading meanwhile (its log says for how long), and its
-- memory must stay bounded.
local prosody = require "spec.helpers.prosody";
local standalone = require "spec.helpers.standalone";
local scripted = require "spec.helpers.component_server";

local SECRET = "backpressure-secret";
local REQUESTS = 100000;
local STALL = 2 * prosody.slow; -- seconds the server reads nothing
-- Peak RSS allowed: the queue is bounded at 1 MiB; the rest is Lua, the
-- C extension and the relay engine's buffer, allocated at start.
local MAX_RSS_KIB = 32 * 1024; -- measured: about 11 MiB
-- Under make check-sanitize every process preloads ASan's runtime, whose
-- shadow memory and quarantine (hundreds of MiB) count in RSS: the bound
-- is then not checked.
local SANITIZED = (os.getenv("LD_PRELOAD") or ""):find("asan", 1, true) ~= nil;

local function peak_rss_kib(pid)
	local f = io.open("/proc/" .. pid .. "/status");
	local status = f and f:read("a") or "";
	if f then f:close(); end
	return tonumber(status:match("VmHWM:%s*(%d+)"));
end

describe("standalone proxy65 with a server that stalls its reading (#33) #integration", function ()
	it("answers every request, pausing its reading meanwhile, in bounded memory", function ()
		local listener, port = scripted.listen();
		local component = standalone.start({ rport = port, secret = SECRET });
		local peer;
		finally(function ()
			if peer then peer:close(); end
			listener:close();
			component.stop();
		end);
		peer = scripted.accept(listener, SECRET, "bp1");
		local replies = scripted.exchange(peer, scripted.requests(REQUESTS, "proxy.localhost"), REQUESTS, STALL,
			120 * prosody.slow);
		assert.equal(REQUESTS, replies);
		assert.truthy(component.wait_log("Resumed reading from [^\n]* after [%d.]+ s paused"), component.log());
		local rss = peak_rss_kib(component.pid);
		assert.truthy(rss, "no VmHWM for " .. component.pid);
		assert.truthy(SANITIZED or rss < MAX_RSS_KIB, ("peak RSS %d KiB"):format(rss));
		assert.truthy(component.alive());
	end);
end);
