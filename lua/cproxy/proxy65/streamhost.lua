-- prosody-cproxy: the grammar of a streamhost address, as proxy65_address
-- entries, the standalone's --proxyips and --advertise write it: "host",
-- "host:port", "[IPv6]" or "[IPv6]:port", where host is a name or an
-- address, and a bare IPv6 address (several colons) is a host.
-- SPDX-License-Identifier: MIT

local select, tonumber = select, tonumber;

local M = {};

-- (entry) -> host, port | host (no port given) | nil when malformed, or
-- when the port is not from 1 to 65535.
function M.parse(entry)
	local v6, rest = entry:match("^%[([%x:.]+)%](.*)$");
	local address, port = v6, rest and rest:match("^:(%d+)$");
	if v6 then
		if rest ~= "" and not port then
			return nil;
		end
	elseif select(2, entry:gsub(":", "")) > 1 then
		address = entry:match("^[%x:.]+$");
	else
		address, port = entry:match("^([^:%s]+):(%d+)$");
		address = address or entry:match("^[^:%s]+$");
	end
	port = tonumber(port);
	if not address or (port and (port < 1 or port > 65535)) then
		return nil;
	end
	return address, port;
end

return M;
