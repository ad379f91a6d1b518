-- prosody-cproxy: checks proxy65's advertised streamhosts the way a client
-- would use them. A transfer that works on one network and fails across
-- NAT is the commonest proxy65 complaint, and the cause, an advertised
-- address clients cannot reach, shows nowhere else. For each streamhost:
-- does it resolve, is its port ours, is it an address only this network
-- can reach, and does a SOCKS5 greeting through it reach this proxy
-- (hairpin). Not here: the metrics of half-connected pairs (proxy65.lua).
-- SPDX-License-Identifier: MIT

local ipairs, tostring, byte, format, concat = ipairs, tostring, string.byte, string.format, table.concat;

local M = {};

local GREETING, CHOSEN = "\5\1\0", "\5\0";
local HAIRPIN_TIMEOUT = 5;

-- The scope of an address in network byte order (4 or 16 bytes), as
-- util.net.pton returns it: "loopback", "private", "link-local",
-- "shared" (carrier-grade NAT), "unspecified" or "public".
function M.scope(packed)
	if #packed == 16 then
		local b1, b2 = byte(packed, 1, 2);
		if packed == ("\0"):rep(15) .. "\1" then
			return "loopback";
		elseif packed == ("\0"):rep(16) then
			return "unspecified";
		elseif packed:sub(1, 12) == ("\0"):rep(10) .. "\255\255" then
			return M.scope(packed:sub(13)); -- IPv4-mapped
		elseif b1 == 0xfe and b2 >= 0x80 and b2 <= 0xbf then
			return "link-local";
		elseif b1 == 0xfc or b1 == 0xfd then
			return "private";
		end
		return "public";
	end
	local a, b = byte(packed, 1, 2);
	if a == 127 then
		return "loopback";
	elseif a == 0 then
		return "unspecified";
	elseif a == 10 or (a == 172 and b >= 16 and b <= 31) or (a == 192 and b == 168) then
		return "private";
	elseif a == 169 and b == 254 then
		return "link-local";
	elseif a == 100 and b >= 64 and b <= 127 then
		return "shared";
	end
	return "public";
end

-- Whether a component's host looks like a test or a LAN deployment, where
-- private streamhosts are expected.
function M.is_local_domain(host)
	return host == "localhost" or host:match("%.localhost$") or host:match("%.local$")
		or host:match("%.lan$") or host:match("%.internal$") or host:match("%.home%.arpa$")
		or host:match("^[%d.]+$") ~= nil;
end

-- RFC 6761's special names, answered here rather than by the resolver, so
-- that the check says the same whichever resolver this Prosody has:
-- libunbound answers every localhost name with loopback, as the RFC asks,
-- while Prosody's own resolver asks the nameserver, which may say NXDOMAIN.
-- -> true, addresses | true, nil, reason | false
function M.special_name(host)
	local name = host:lower():gsub("%.$", "");
	if name == "invalid" or name:match("%.invalid$") then
		return true, nil, "a name reserved never to resolve, RFC 6761";
	elseif name == "localhost" or name:match("%.localhost$") then
		return true, { "127.0.0.1", "::1" };
	end
	return false;
end

-- Checks each streamhost and calls done(report) once all are checked.
-- deps: resolve (function(host, port, callback(addresses|nil, err))),
-- connect (net.server.addclient), timer (util.timer), pton (util.net.pton).
-- streamhosts: list of { host=, port= }; ports: the ports we listen on;
-- domain: the component's host. report: one entry per streamhost,
-- { streamhost = "host:port", addresses = { ... }, problems = { ... } }.
function M.check(deps, domain, streamhosts, ports, done)
	local report, waiting = {}, 1;
	local function finished()
		waiting = waiting - 1;
		if waiting == 0 then
			done(report);
		end
	end
	local listening = {};
	for _, port in ipairs(ports) do
		listening[port] = true;
	end
	for i, streamhost in ipairs(streamhosts) do
		local port = streamhost.port or ports[1];
		local entry = { streamhost = format("%s:%s", streamhost.host, tostring(port)), addresses = {}, problems = {} };
		report[i] = entry;
		local function problem(fmt, ...)
			entry.problems[#entry.problems + 1] = format(fmt, ...);
		end
		if not port then
			problem("proxy65 listens on no port");
		elseif streamhost.port and not listening[port] then
			problem("port %d is not one proxy65 listens on (%s): right only if a NAT forwards it to one of them",
				port, concat(ports, ", "));
		end
		waiting = waiting + 1;
		local function resolved(addresses, err)
			if not addresses or #addresses == 0 then
				problem("%s does not resolve (%s): clients cannot connect", streamhost.host, err or "no address");
				return finished();
			end
			entry.addresses = addresses;
			for _, address in ipairs(addresses) do
				local scope = M.scope(deps.pton(address) or "");
				if scope ~= "public" and not M.is_local_domain(domain) then
					problem("%s is a %s address: clients on other networks cannot reach it;"
						.. " set proxy65_address to an address they can", address, scope);
				end
			end
			if not port then
				return finished();
			end
			-- Hairpin: a SOCKS5 greeting through the first address, as a client.
			local answered, ended = "", false;
			local function conclude(err2)
				if ended then
					return;
				end
				ended = true;
				if err2 then
					problem("could not reach this proxy through %s port %d (%s): clients probably cannot either"
						.. " (unless a NAT does not loop back); check proxy65_address, firewalls and port forwarding",
						addresses[1], port, err2);
				else
					entry.reachable = true;
				end
				finished();
			end
			local listener = {};
			function listener.onconnect(conn)
				conn:write(GREETING);
			end
			function listener.onincoming(conn, data)
				answered = answered .. data;
				if #answered >= 2 then
					conclude(answered:sub(1, 2) ~= CHOSEN and ("not a SOCKS5 proxy: %q"):format(answered:sub(1, 8)) or nil);
					conn:close();
				end
			end
			function listener.ondisconnect(_, err3)
				conclude(err3 or "closed");
			end
			local conn, connect_err = deps.connect(addresses[1], port, listener);
			if not conn then
				return conclude(connect_err or "cannot connect");
			end
			deps.timer.add_task(HAIRPIN_TIMEOUT, function ()
				if not ended then
					conclude("no answer in " .. HAIRPIN_TIMEOUT .. " s");
					conn:close();
				end
			end);
		end
		local special, addresses, err = M.special_name(streamhost.host);
		if special then
			resolved(addresses, err);
		else
			deps.resolve(streamhost.host, port, resolved);
		end
	end
	finished();
end

return M;
