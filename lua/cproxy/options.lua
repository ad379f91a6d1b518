-- prosody-cproxy: reads the components' options from Prosody's config so
-- that a mistake costs one clear log line and the default, never the module.
-- Prosody 0.12's get_option_number returns nil for "5m" (and ignores any
-- bounds); a module doing arithmetic on that would fail to load, leaving the
-- server without the service. 13's enforces bounds, with warnings of its
-- own, and given bounds it raises on "5m" (it compares nil with the
-- minimum). So the raw value is read and checked here, alike on both.
-- Not here: what the options mean.
-- SPDX-License-Identifier: MIT

local type, tostring, tonumber, ipairs, require = type, tostring, tonumber, ipairs, require;
local concat = table.concat;
local floor, huge = math.floor, math.huge;

local M = {};

local function show(value)
	if type(value) == "string" then
		return ("%q"):format(value);
	elseif type(value) == "table" then -- a list, as written in the config
		local items = {};
		for i = 1, math.min(#value, 4) do
			items[i] = show(value[i]);
		end
		if #value > 4 then
			items[#items + 1] = "...";
		end
		return "{ " .. concat(items, ", ") .. " }";
	end
	return tostring(value);
end

local function describe(min, max, integer)
	local kind = integer and "an integer" or "a number";
	if max == huge then
		return ("%s of at least %s"):format(kind, show(min));
	end
	return ("%s from %s to %s"):format(kind, show(min), show(max));
end

-- (module, name, default, min, max[, integer]) -> number
-- Reads option `name` as a number in [min, max]. A value of the wrong type
-- logs an error naming the option, the value and what is expected, and
-- gives `default`; a value out of range is clamped, with a warning; with
-- `integer`, a fraction is rounded down. `default` itself is not checked.
function M.number(module, name, default, min, max, integer)
	local raw = module:get_option(name);
	if raw == nil then
		return default;
	end
	local value = type(raw) ~= "table" and tonumber(raw) or nil;
	if value == nil or value ~= value then -- not a number, or NaN
		module:log("error", "Config option '%s' = %s is not understood: expected %s; using the default, %s",
			name, show(raw), describe(min, max, integer), show(default));
		return default;
	end
	local wanted = value;
	if value < min then
		value = min;
	elseif value > max then
		value = max;
	end
	if integer then
		value = floor(value);
	end
	if value ~= wanted then
		module:log("warn", "Config option '%s' = %s is out of range: expected %s; using %s",
			name, show(raw), describe(min, max, integer), show(value));
	end
	return value;
end

-- (module, name, default, choices) -> string
-- Reads option `name` as one of the strings in `choices`; anything else
-- logs an error and gives `default`.
function M.choice(module, name, default, choices)
	local raw = module:get_option(name);
	if raw == nil then
		return default;
	end
	for _, choice in ipairs(choices) do
		if raw == choice then
			return raw;
		end
	end
	module:log("error", "Config option '%s' = %s is not understood: expected one of \"%s\"; using \"%s\"",
		name, show(raw), concat(choices, "\", \""), default);
	return default;
end

-- (module, names) -> nothing
-- For options read once for the whole server (a global module's): warns
-- about each one of `names` written under this host, where it has no effect.
function M.warn_host_level(module, names)
	local configmanager = require "core.configmanager";
	for _, name in ipairs(names) do
		if configmanager.rawget(module.host, name) ~= nil then
			module:log("warn", "Config option '%s' under %s is ignored: it applies to the whole server,"
				.. " so set it in the global section, before any VirtualHost or Component", name, module.host);
		end
	end
end

return M;
