-- prosody-cproxy: stanzas for the standalone component, in the shape of
-- Prosody's util.stanza ({ name=, attr=, tags=, children and text in the
-- array part }), which is also what cproxy.core.xmlstream produces: build,
-- query, copy, reply and serialize. Only what the components need.
-- SPDX-License-Identifier: MIT

local setmetatable, ipairs, pairs, type, tostring = setmetatable, ipairs, pairs, type, tostring;
local concat, sort, gsub, format = table.concat, table.sort, string.gsub, string.format;

local M = {};

local stanza_mt = {};
stanza_mt.__index = stanza_mt;

local xmlns_stanzas = "urn:ietf:params:xml:ns:xmpp-stanzas";

function M.new(name, attr)
	return setmetatable({ name = name, attr = attr or {}, tags = {} }, stanza_mt);
end

-- Gives a parsed element (and its children) the stanza methods.
function M.adopt(t)
	setmetatable(t, stanza_mt);
	for _, child in ipairs(t.tags) do
		M.adopt(child);
	end
	return t;
end

function M.iq(attr) return M.new("iq", attr); end
function M.presence(attr) return M.new("presence", attr); end
function M.message(attr) return M.new("message", attr); end

-- A deep copy, cursor aside.
function M.clone(stanza)
	local attr = {};
	for k, v in pairs(stanza.attr) do
		attr[k] = v;
	end
	local copy = M.new(stanza.name, attr);
	for _, node in ipairs(stanza) do
		if type(node) == "string" then
			copy[#copy + 1] = node;
		else
			local child = M.clone(node);
			copy[#copy + 1] = child;
			copy.tags[#copy.tags + 1] = child;
		end
	end
	return copy;
end

-- Adds a child and makes it current (until :up()).
function stanza_mt:tag(name, attr)
	local cursor = self.cursor or self;
	local child = M.new(name, attr);
	cursor[#cursor + 1] = child;
	cursor.tags[#cursor.tags + 1] = child;
	child.parent_cursor = cursor;
	self.cursor = child;
	return self;
end

function stanza_mt:text(text)
	local cursor = self.cursor or self;
	if text ~= nil and text ~= "" then
		cursor[#cursor + 1] = tostring(text);
	end
	return self;
end

function stanza_mt:up()
	local cursor = self.cursor;
	if cursor and cursor ~= self then
		self.cursor = cursor.parent_cursor ~= self and cursor.parent_cursor or nil;
	end
	return self;
end

-- The first child with this name and namespace (the stanza's own by default).
function stanza_mt:get_child(name, xmlns)
	for _, child in ipairs(self.tags) do
		if (not name or child.name == name) and (not xmlns or child.attr.xmlns == xmlns) then
			return child;
		end
	end
end

-- Iterates over the children with this name (any, if nil) and namespace.
function stanza_mt:childtags(name, xmlns)
	local i = 0;
	return function ()
		while true do
			i = i + 1;
			local child = self.tags[i];
			if not child then
				return nil;
			end
			if (not name or child.name == name) and (not xmlns or child.attr.xmlns == xmlns) then
				return child;
			end
		end
	end;
end

function stanza_mt:get_text()
	local parts = {};
	for _, node in ipairs(self) do
		if type(node) == "string" then
			parts[#parts + 1] = node;
		end
	end
	return concat(parts);
end

function stanza_mt:get_child_text(name, xmlns)
	local child = self:get_child(name, xmlns);
	return child and child:get_text();
end

-- An error stanza's type, condition and text, as util.stanza's get_error
-- gives them (nothing without an <error/>, "undefined-condition" for an
-- error with none), so that shared code reads errors one way.
function stanza_mt:get_error()
	local err = self:get_child("error");
	if not err then
		return nil;
	end
	local condition, text;
	for child in err:childtags(nil, xmlns_stanzas) do
		if child.name == "text" then
			text = text or child:get_text();
		else
			condition = condition or child.name;
		end
	end
	return err.attr.type, condition or "undefined-condition", text;
end

-- A result to an IQ (from and to swapped, the same id).
function M.reply(stanza)
	return M.new(stanza.name, {
		to = stanza.attr.from, from = stanza.attr.to, id = stanza.attr.id,
		type = stanza.name == "iq" and "result" or stanza.attr.type,
	});
end

-- An error reply: type is "cancel", "modify", "auth" or "wait".
function M.error_reply(stanza, type_, condition, text)
	local reply = M.reply(stanza);
	reply.attr.type = "error";
	reply:tag("error", { type = type_ }):tag(condition, { xmlns = xmlns_stanzas }):up();
	if text then
		reply:tag("text", { xmlns = xmlns_stanzas }):text(text):up();
	end
	return reply:up();
end

local escapes = { ["&"] = "&amp;", ["<"] = "&lt;", [">"] = "&gt;", ["'"] = "&apos;", ["\""] = "&quot;" };

function M.escape(text)
	return (gsub(text, "[&<>'\"]", escapes));
end

local function serialize(node, parent_ns, out)
	if type(node) == "string" then
		out[#out + 1] = M.escape(node);
		return;
	end
	local attrs, prefixes = {}, {};
	for key, value in pairs(node.attr) do
		if key ~= "xmlns" or value ~= parent_ns then
			local ns, local_name = key:match("^(.-)\1(.*)$");
			if ns then -- a namespaced attribute: declare a prefix for it
				prefixes[ns] = prefixes[ns] or ("ns" .. (#attrs + 1));
				key = prefixes[ns] .. ":" .. local_name;
			end
			attrs[#attrs + 1] = format(" %s='%s'", key, M.escape(tostring(value)));
		end
	end
	for ns, prefix in pairs(prefixes) do
		attrs[#attrs + 1] = format(" xmlns:%s='%s'", prefix, M.escape(ns));
	end
	sort(attrs); -- deterministic output
	out[#out + 1] = "<" .. node.name .. concat(attrs);
	if #node == 0 then
		out[#out + 1] = "/>";
		return;
	end
	out[#out + 1] = ">";
	local ns = node.attr.xmlns or parent_ns;
	for _, child in ipairs(node) do
		serialize(child, ns, out);
	end
	out[#out + 1] = "</" .. node.name .. ">";
end

-- The XML of a stanza; an xmlns equal to `stream_ns` is left implicit.
function M.serialize(stanza, stream_ns)
	local out = {};
	serialize(stanza, stream_ns, out);
	return concat(out);
end

stanza_mt.__tostring = function (self)
	return M.serialize(self);
end

return M;
