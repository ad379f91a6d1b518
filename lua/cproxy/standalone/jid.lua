-- prosody-cproxy: JIDs for the standalone components, which run without
-- Prosody's util.jid: split, bare and prep (without stringprep: addresses
-- must come normalised, as servers send them).
-- SPDX-License-Identifier: MIT

local type = type;

local M = {};

-- A JID's parts; nil when it is not one (the standalone has no
-- stringprep: addresses must come normalised, as clients send them).
function M.split(jid)
	if type(jid) ~= "string" or #jid == 0 or #jid > 3071 then
		return nil;
	end
	local node, rest = jid:match("^([^@/]+)@(.*)$");
	rest = rest or jid;
	local host, resource = rest:match("^([^/]+)/(.+)$");
	host = host or rest:match("^([^/@]+)$");
	if not host or host:find("[%s@]") or (node and node:find("%s")) then
		return nil;
	end
	return node, host:lower(), resource;
end

function M.bare(jid)
	local node, host = M.split(jid);
	return host and (node and (node .. "@" .. host) or host);
end

function M.prep(jid)
	local node, host, resource = M.split(jid);
	if not host then
		return nil;
	end
	return (node and (node .. "@") or "") .. host .. (resource and ("/" .. resource) or "");
end

return M;
