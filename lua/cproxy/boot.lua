-- prosody-cproxy: finds this package's files relative to the module that
-- loads it, in a checkout (lua/, build/) or in a luarocks tree
-- (share/lua/5.4/prosody_cproxy/, lib/lua/5.4/), and loads them without
-- touching the process-wide package.path or package.cpath.
-- SPDX-License-Identifier: MIT

local lua_version = _VERSION:match("%d+%.%d+");

-- The copy beside the module wins over one on package.cpath, so that a
-- checkout never picks up an older installed build.
local function load_core(here)
	local candidates = table.concat({
		here .. "/../build/?.so"; -- a checkout: lua/../build/cproxy/core.so
		here .. "/../../../../lib/lua/" .. lua_version .. "/?.so"; -- a luarocks tree
	}, ";");
	local path, err = package.searchpath("cproxy.core", candidates);
	if not path then
		local ok, core = pcall(require, "cproxy.core");
		if ok then
			return core, package.searchpath("cproxy.core", package.cpath);
		end
		error("prosody-cproxy: cannot find its C extension cproxy.core (run 'make'?)" .. err, 0);
	end
	local open = assert(package.loadlib(path, "luaopen_cproxy_core"));
	return open(), path;
end

return function (here)
	local loaded = {};
	local core, core_path = load_core(here);
	local cproxy = { core = core, core_path = core_path, dir = here };

	-- Loads lua/cproxy/<name>.lua once per boot (so once per module load:
	-- a reloaded module gets fresh copies, nothing stale is kept).
	function cproxy.require(name)
		if loaded[name] == nil then
			local chunk = assert(loadfile(here .. "/cproxy/" .. name .. ".lua"));
			loaded[name] = chunk(cproxy) or true;
		end
		return loaded[name];
	end

	return cproxy;
end
