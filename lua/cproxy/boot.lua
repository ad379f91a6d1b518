-- prosody-cproxy: puts this package on Lua's search paths, once, relative
-- to the file that loads it: in a checkout (lua/, build/) or in a luarocks
-- tree (share/lua/5.4/prosody_cproxy/, lib/lua/5.4/). Its Lua files are
-- then plain modules under "cproxy." (cproxy.proxy65.service,
-- cproxy.client_proxy.resources, cproxy.standalone.loop, ...), loaded with
-- Lua's own require, so that editors and other tools follow the graph.
--
-- One thing require does not do: a Prosody module reload must run the Lua
-- files as they are now (an operator upgrades, then reloads), not the
-- copies require cached at the first load. So each boot drops this
-- package's Lua modules from package.loaded; the module being loaded then
-- requires fresh copies, and one loaded before keeps those it holds. The
-- C extension, which cannot be unloaded, is kept.
-- SPDX-License-Identifier: MIT

local lua_version = _VERSION:match("%d+%.%d+");

-- Puts `entry` first on `path` unless it is there already.
local function prepend(path, entry)
	if (";" .. path .. ";"):find(";" .. entry .. ";", 1, true) then
		return path;
	end
	return entry .. ";" .. path;
end

return function (here)
	package.path = prepend(package.path, here .. "/?.lua");
	-- The copy beside the module wins over one elsewhere on package.cpath,
	-- so that a checkout never picks up an older installed build.
	package.cpath = prepend(package.cpath, here .. "/../../../../lib/lua/" .. lua_version .. "/?.so"); -- a luarocks tree
	package.cpath = prepend(package.cpath, here .. "/../build/?.so"); -- a checkout: lua/../build/cproxy/core.so
	for name in pairs(package.loaded) do
		if name:match("^cproxy%.") and name ~= "cproxy.core" then
			package.loaded[name] = nil;
		end
	end
	local ok, core = pcall(require, "cproxy.core");
	if not ok then
		error("prosody-cproxy: cannot find its C extension cproxy.core (run 'make'?): " .. tostring(core), 0);
	end
	return { core = core, core_path = package.searchpath("cproxy.core", package.cpath), dir = here };
end
