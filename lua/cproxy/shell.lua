-- prosody-cproxy: adds a command to Prosody's admin shell (`prosodyctl
-- shell`, mod_admin_shell) on 0.12 and 13 alike. Not here: the commands.
--
-- COMPAT: the two shells find commands differently. 13's takes
-- "shell-command" items (module:add_item) and puts each handler into its
-- environment table itself, with help and the `section name` syntax.
-- 0.12's only reads that table, module:shared("/*/admin_shell/env"), where
-- a command is env[section][name]. Either shell may be loaded before or
-- after this module, so neither can be probed at load: both ways are done.
-- An item no shell handles is inert on 0.12; on 13 the table slot is the
-- one the shell fills, with the same function. Both are called as
-- `section:name(...)`, with `self.session.print` for output, and print a
-- returned `true, message` as "OK: message".
-- SPDX-License-Identifier: MIT

local next, type = next, type;
local _ENV = nil;

local M = {};

-- (module, command) -> remove()
-- command: { section = "proxy65", name = "status", desc = "...",
-- section_desc = "..."?, args = { { name = "..." }, ... }?, handler = f }.
-- The item goes with the module; call remove() from module.unload for the
-- table entry, which outlives the module.
function M.add(module, command)
	local section, name, handler = command.section, command.name, command.handler;
	module:add_item("shell-command", {
		section = section;
		section_desc = command.section_desc;
		name = name;
		desc = command.desc;
		args = command.args or {};
		handler = handler;
	});

	local env = module:shared("/*/admin_shell/env");
	local commands = env[section];
	if type(commands) ~= "table" then
		commands = {};
		env[section] = commands;
	end
	commands[name] = handler;

	return function ()
		local current = env[section];
		if current and current[name] == handler then
			current[name] = nil;
			if next(current) == nil then
				env[section] = nil;
			end
		end
	end;
end

return M;
