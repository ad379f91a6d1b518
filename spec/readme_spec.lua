-- The README's table of proxy65's own options against the one table both
-- front ends read (cproxy/proxy65/options.lua, #29): the same options, the
-- same defaults, so that the documentation cannot drift from the code.
require "spec.helpers.core"; -- this checkout's C extension
package.path = "lua/?.lua;" .. package.path;
local option_table = require "cproxy.proxy65.options";

-- The README's option rows "| `PREFIXx` | default | meaning |" -> { x = default text }.
local function readme_rows(prefix)
	local f = assert(io.open("README.markdown"));
	local text = f:read("a");
	f:close();
	local rows = {};
	for name, default in text:gmatch("\n| `" .. prefix .. "([%w_]+)` | ([^|]-) | [^|\n]+ |") do
		rows[name] = default;
	end
	return rows;
end

-- A default as the README writes it: its first word, quotes kept.
local function shown(default)
	return type(default) == "string" and ("%q"):format(default) or ("%d"):format(default);
end

describe("README.markdown", function ()
	it("documents each of proxy65's own options with the default the code uses", function ()
		local rows = readme_rows("proxy65_");
		for _, entry in ipairs(option_table.entries) do
			local row = rows[entry.name];
			assert.truthy(row, "no row for proxy65_" .. entry.name);
			assert.equal(shown(entry.default), row:match("^%S+"), "proxy65_" .. entry.name);
		end
		for _, entry in ipairs(option_table.cluster_entries) do
			local row = rows[entry.name];
			assert.truthy(row, "no row for proxy65_" .. entry.name);
			assert.equal(entry.default_text or shown(entry.default), row, "proxy65_" .. entry.name);
		end
	end);

	it("documents no option of ours that the code does not have", function ()
		local known = {};
		for _, entry in ipairs(option_table.entries) do
			known[entry.name] = true;
		end
		for _, entry in ipairs(option_table.cluster_entries) do
			known[entry.name] = true;
		end
		-- The built-in's options, in the README's first table.
		for _, name in ipairs({ "ports", "interfaces", "address", "acl", "open_access" }) do
			known[name] = true;
		end
		for name in pairs(readme_rows("proxy65_")) do
			assert.truthy(known[name], "proxy65_" .. name .. " is in the README, not in the code");
		end
	end);

	it("documents each of client_proxy's options with the default the code uses", function ()
		local client_options = require "cproxy.client_proxy.options";
		local rows = readme_rows("");
		for _, entry in ipairs(client_options.entries) do
			local row = rows[entry.option];
			assert.truthy(row, "no row for " .. entry.option);
			local expected = entry.default_text
				or (type(entry.default) == "string" and ("%q"):format(entry.default) or tostring(entry.default));
			assert.equal(expected, row, entry.option);
		end
	end);
end);
