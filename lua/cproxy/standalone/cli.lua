-- prosody-cproxy: the command line and config file of the standalone
-- components (bin/proxy65, bin/client_proxy): options with a kind, bounds
-- and a default, given as --name=value or --name value, or as name = value
-- lines (Lua syntax, underscores) in a --config file, where the command
-- line wins; the secret from a file, the environment or the command line;
-- --help and --version; and the log they write to stderr.
-- Not here: what the options mean (each component's main).
-- SPDX-License-Identifier: MIT

local ipairs, pairs, tonumber, tostring, type, setmetatable = ipairs, pairs, tonumber, tostring, type, setmetatable;
local format, concat = string.format, table.concat;

local jids = require "cproxy.standalone.jid";

local M = {};

local cli_mt = {};
cli_mt.__index = cli_mt;

-- The options every standalone component has, after its own.
local COMMON = {
	{ "secret", "string", nil, "the component secret; prefer --secret-file or the environment" },
	{ "secret-file", "string", nil, "a file whose first line is the secret" },
	{ "rhost", "string", "127.0.0.1", "the XMPP server's component host" },
	{ "rport", "integer", 5347, "the XMPP server's component port" },
	{ "max-queued-output", "integer", 1048576, "bytes of output queued for the server before reading from it pauses until half is sent" },
	{ "retry", "boolean", false, "keep trying when the server is unreachable or refuses at start" },
	{ "log-level", "string", "info", "debug, info, warn or error" },
	{ "config", "string", nil, "a file of option = value lines (Lua syntax, names with underscores)" },
	{ "help", "boolean", false, "show this help" },
	{ "version", "boolean", false, "show the version" },
};

-- spec: program (its name), version, synopsis (the usage's first lines),
-- secret_env (the environment variable the secret may come from), options
-- (the component's own: { flag, kind, default, meaning }), and entries (a
-- component's option table, cproxy/proxy65/options.lua or
-- cproxy/client_proxy/options.lua: each entry's flag, kind, bounds or
-- choices, default and meaning; a "jid" entry is taken as a string, a
-- "list" one as a comma-separated string and given as a list).
function M.new(spec)
	local options = {};
	for _, option in ipairs(spec.options) do
		options[#options + 1] = option;
	end
	for _, entry in ipairs(spec.entries or {}) do
		local list = entry.kind == "list";
		options[#options + 1] = { entry.flag, (list or entry.kind == "jid") and "string" or entry.kind,
			not list and entry.default or nil, entry.meaning .. (list and ", comma-separated" or ""), entry };
	end
	for _, option in ipairs(COMMON) do
		options[#options + 1] = option;
	end
	local by_name = {};
	for _, option in ipairs(options) do
		by_name[option[1]] = option;
	end
	return setmetatable({ spec = spec, options = options, by_name = by_name }, cli_mt);
end

function cli_mt:usage()
	local lines = {};
	for _, line in ipairs(self.spec.synopsis) do
		lines[#lines + 1] = line;
	end
	lines[#lines + 1] = "";
	for _, option in ipairs(self.options) do
		local default = option[3] ~= nil and option[2] ~= "boolean" and (" (default " .. tostring(option[3]) .. ")") or "";
		lines[#lines + 1] = format("  --%-24s %s%s", option[1] .. (option[2] ~= "boolean" and "=V" or ""), option[4], default);
	end
	lines[#lines + 1] = "";
	lines[#lines + 1] = "The secret may also come from the environment variable " .. self.spec.secret_env .. ".";
	return concat(lines, "\n");
end

-- What an option's value must be, in words.
local function expected(option)
	local kind, entry = option[2], option[5];
	if kind == "boolean" then
		return "true or false";
	elseif kind == "choice" then
		return "one of " .. concat(entry.choices, ", ");
	elseif kind == "string" then
		return "a string";
	elseif entry and (entry.min ~= 0 or entry.max ~= math.huge) then
		return format("%s from %s to %s", kind == "integer" and "an integer" or "a number",
			tostring(entry.min), tostring(entry.max));
	end
	return "a non-negative " .. kind;
end

-- A value as given (a string from the command line, anything from a config
-- file) -> the option's value | nil, message. Out of range is an error:
-- the command line has no log to warn in before it starts.
local function convert(option, value, where)
	local kind, entry = option[2], option[5];
	if kind == "boolean" then
		if value == true or value == "true" or value == "yes" or value == "1" then
			return true;
		elseif value == false or value == "false" or value == "no" or value == "0" then
			return false;
		end
	elseif kind == "integer" or kind == "number" then
		local n = tonumber(value);
		local min, max = entry and entry.min or 0, entry and entry.max or math.huge;
		if n and n >= min and n <= max and (kind == "number" or n == math.floor(n)) then
			return n;
		end
	elseif kind == "choice" then
		for _, choice in ipairs(entry.choices) do
			if value == choice then
				return value;
			end
		end
	elseif type(value) == "string" then
		-- A list entry's comma-separated items, as a list.
		return entry and entry.kind == "list" and M.split_list(value) or value;
	end
	return nil, format("%s: %s must be %s, not %q", where, option[1], expected(option), tostring(value));
end

-- Command-line arguments -> options | nil, message.
function cli_mt:parse_args(args)
	local opts = {};
	local i = 1;
	while i <= #args do
		local arg = args[i];
		local name, value = arg:match("^%-%-([%w-]+)=(.*)$");
		name = name or arg:match("^%-%-([%w-]+)$");
		local option = name and self.by_name[name];
		if not option then
			return nil, format("unknown argument %q (see --help)", arg);
		end
		if value == nil and option[2] ~= "boolean" then
			i = i + 1;
			value = args[i];
			if value == nil then
				return nil, format("--%s needs a value", name);
			end
		end
		local converted, err = convert(option, value == nil or value, "command line");
		if converted == nil then
			return nil, err;
		end
		opts[name] = converted;
		i = i + 1;
	end
	return opts;
end

-- A config file (Lua assignments) -> options | nil, message.
function cli_mt:read_config(path)
	local values = {};
	local chunk, err = loadfile(path, "t", values);
	if not chunk then
		return nil, "cannot read the config file: " .. tostring(err);
	end
	local ok, run_err = pcall(chunk);
	if not ok then
		return nil, "error in the config file: " .. tostring(run_err);
	end
	local opts = {};
	for key, value in pairs(values) do
		local name = tostring(key):gsub("_", "-");
		local option = self.by_name[name];
		if not option or name == "config" then
			return nil, format("%s: unknown option %q", path, tostring(key));
		end
		local converted, cerr = convert(option, value, path);
		if converted == nil then
			return nil, cerr;
		end
		opts[name] = converted;
	end
	return opts;
end

-- The command line, the config file and the defaults, merged; the secret
-- read. -> opts | nil, exit status, message (status 0 when --help or
-- --version has printed what was asked).
function cli_mt:resolve(args, env)
	local opts, err = self:parse_args(args);
	if not opts then
		return nil, 2, err;
	end
	if opts.help then
		print(self:usage());
		return nil, 0;
	elseif opts.version then
		print(self.spec.version);
		return nil, 0;
	end
	if opts.config then
		local from_file, ferr = self:read_config(opts.config);
		if not from_file then
			return nil, 2, ferr;
		end
		for name, value in pairs(from_file) do
			if opts[name] == nil then -- the command line wins
				opts[name] = value;
			end
		end
	end
	for _, option in ipairs(self.options) do
		if opts[option[1]] == nil then
			opts[option[1]] = option[3];
		end
	end
	local secret = opts.secret or (env and env[self.spec.secret_env]);
	if not secret and opts["secret-file"] then
		local f, ferr = io.open(opts["secret-file"]);
		if not f then
			return nil, 2, "cannot read the secret file: " .. tostring(ferr);
		end
		secret = f:read("l");
		f:close();
	end
	if not secret or secret == "" then
		return nil, 2, "no secret: give --secret-file, " .. self.spec.secret_env .. " or --secret";
	end
	opts.secret = secret;
	return opts;
end

-- resolve(), the error printed, and --jid checked: the component's domain
-- (example: a JID to show). -> opts, jid (normalised) | nil, exit status
function cli_mt:start(args, env, example)
	local program = self.spec.program;
	local opts, status, err = self:resolve(args, env);
	if not opts then
		if err then
			io.stderr:write(program, ": ", err, "\n");
		end
		return nil, status;
	end
	local jid = opts.jid and jids.prep(opts.jid);
	if not jid or jids.split(jid) then -- a node: not a domain
		io.stderr:write(format("%s: --jid must be the component's domain JID, e.g. %s\n", program, example));
		return nil, 2;
	end
	return opts, jid;
end

-- A comma- or space-separated list -> its items.
function M.split_list(text)
	local list = {};
	for item in (text or ""):gmatch("[^,%s]+") do
		list[#list + 1] = item;
	end
	return list;
end

local levels = { debug = 1, info = 2, warn = 3, error = 4 };

-- A log function (level, fmt, ...) writing to stderr from `level` on.
function M.logger(level)
	local threshold = levels[level] or 2;
	return function (lvl, fmt, ...)
		if (levels[lvl] or 4) >= threshold then
			local ok, text = pcall(format, fmt, ...);
			io.stderr:write(format("%s %-5s %s\n", os.date("!%Y-%m-%dT%H:%M:%SZ"), lvl, ok and text or fmt));
		end
	end;
end

return M;
