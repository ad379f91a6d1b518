-- Prosody's statistics as mod_http_openmetrics serves them, for specs: a
-- Prosody started with global() below collects them on each GET /metrics.
local http = require "socket.http";
local ltn12 = require "ltn12";

local M = {};

-- Global config lines that serve /metrics on `port`.
function M.global(port)
	return ("statistics = \"internal\"\nstatistics_interval = \"manual\"\nhttp_ports = { %d }\n"
		.. "http_interfaces = { \"127.0.0.1\" }\n"
		.. "modules_enabled = { \"roster\", \"saslauth\", \"disco\", \"ping\", \"http_openmetrics\" }"):format(port);
end

-- The samples whose names start with `prefix`, as "name{labels}" (or
-- "name", for a metric without labels) -> number.
function M.fetch(port, prefix)
	local body = {};
	local ok, code = http.request({ url = ("http://127.0.0.1:%d/metrics"):format(port),
		headers = { host = "localhost" }, sink = ltn12.sink.table(body) });
	assert(ok and code == 200, "GET /metrics: " .. tostring(code));
	local samples = {};
	local prefix_pattern = "^" .. prefix:gsub("%p", "%%%0");
	for line in table.concat(body):gmatch("[^\n]+") do
		if line:match(prefix_pattern) then
			local name, value = line:match("^(%S+) (%S+)$"); -- name{labels} or name
			if name then
				samples[name] = tonumber(value);
			end
		end
	end
	return samples;
end

-- Waits until /metrics on `port` answers: Prosody may open its HTTP port
-- after the ports a spec waits for.
function M.wait(port, timeout)
	local socket = require "socket";
	local deadline = socket.gettime() + (timeout or 10);
	while not pcall(M.fetch, port, "prosody") and socket.gettime() < deadline do
		socket.sleep(0.05);
	end
end

return M;
