-- prosody-cproxy: client_proxy's options, one table for both front ends:
-- the Prosody module (mod_client_proxy.lua) reads them from the
-- Component's config, bin/client_proxy (cproxy/standalone/client_proxy.lua)
-- from its command line and config file, and spec/readme_spec.lua checks
-- the README's option table against it.
-- Not here: reading one value (cproxy/options.lua); what they do
-- (cproxy/client_proxy/router.lua).
-- SPDX-License-Identifier: MIT

local ipairs = ipairs;
local resources = require "cproxy.client_proxy.resources";

local M = {};

-- Each entry: option (its name in Prosody's config), flag (the
-- standalone's), kind ("jid", "choice", "list", "number", "integer",
-- "string"), bounds or choices, default (nil: none, or as `default_text`
-- says), field (its key in the settings), meaning.
local entries = {
	{ option = "target_address", flag = "target", kind = "jid", field = "target", default_text = "(required)",
		meaning = "bare JID (user@host) of the implementing client" },
	{ option = "client_proxy_addressing", kind = "choice", choices = { "jid", "tag" }, default = "jid",
		field = "addressing", meaning = "\"jid\" or \"tag\": what the resource of service.example.org/... holds" },
	{ option = "client_proxy_policy", kind = "choice", choices = resources.policies, default = "random",
		field = "policy", meaning = "\"random\", \"round_robin\", \"least_pending\" or \"sticky\"" },
	{ option = "client_proxy_resources", kind = "list", default = {}, default_text = "empty",
		field = "preferred", meaning = "preferred resources, in order: the first one available takes every request" },
	{ option = "client_proxy_timeout", kind = "number", min = 1, max = 86400, default = 30,
		field = "request_timeout", meaning = "seconds a request may wait for its reply" },
	{ option = "client_proxy_max_pending", kind = "integer", min = 1, max = 1000000, default = 10000,
		field = "max_pending", meaning = "requests in flight at once, both ways, for the whole component" },
	{ option = "client_proxy_max_pending_per_sender", kind = "integer", min = 1, max = 1000000, default = 100,
		field = "max_per_sender", meaning = "requests in flight at once from one bare JID" },
	{ option = "client_proxy_contact_window", kind = "number", min = 60, max = 604800, default = 3600,
		field = "contact_window", meaning = "seconds after a JID last wrote during which the implementing client"
			.. " may write to it, under \"jid\"" },
	-- The standalone's --secret is the component's, for the server.
	{ option = "client_proxy_secret", flag = "tag-secret", kind = "string", default_text = "random per start",
		field = "secret", meaning = "key for the tags; set it to keep tags valid across restarts" },
};

for _, entry in ipairs(entries) do
	entry.flag = entry.flag or entry.option:gsub("^client_proxy_", ""):gsub("_", "-");
end
M.entries = entries;

-- The settings from Prosody's config, each read with `readers`
-- (cproxy/options.lua): a mistake logged and replaced by the default.
-- target_address is returned as written; the caller checks it.
function M.from_prosody(module, readers)
	local settings = {};
	for _, entry in ipairs(entries) do
		local value;
		if entry.kind == "choice" then
			value = readers.choice(module, entry.option, entry.default, entry.choices);
		elseif entry.kind == "number" or entry.kind == "integer" then
			value = readers.number(module, entry.option, entry.default, entry.min, entry.max, entry.kind == "integer");
		elseif entry.kind == "list" then
			value = module:get_option_array(entry.option, entry.default);
		else
			value = module:get_option_string(entry.option, entry.default);
		end
		settings[entry.field] = value;
	end
	return settings;
end

return M;
