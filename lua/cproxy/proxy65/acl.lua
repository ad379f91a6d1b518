-- prosody-cproxy: proxy65_acl (the standalone's --acl): whether a JID is on
-- a list of JIDs and domains, as Prosody's util.jid.compare matches them:
-- an entry's missing parts match anything, so "example.org" admits all its
-- users and "alice@example.org" all of alice's resources. The Prosody
-- module and the standalone component both decide through it.
-- SPDX-License-Identifier: MIT

local ipairs = ipairs;

local M = {};

-- (acl, jid, split) -> boolean. split: a JID splitter (util.jid.split, or
-- the standalone's) -> node, host, resource.
function M.admits(acl, jid, split)
	local node, host, resource = split(jid);
	if not host then
		return false;
	end
	for _, entry in ipairs(acl) do
		local e_node, e_host, e_resource = split(entry);
		if (e_node == nil or e_node == node) and (e_host == nil or e_host == host)
			and (e_resource == nil or e_resource == resource) then
			return true;
		end
	end
	return false;
end

return M;
