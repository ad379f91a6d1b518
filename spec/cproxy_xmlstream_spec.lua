-- The XMPP stream parser of cproxy.core (libexpat), without any I/O:
-- stanzas, namespaces, splits at every byte, bounds and restricted XML.
local core = require "spec.helpers.core";

-- A canonical text of parser events, to compare runs.
local function show(node)
	if type(node) == "string" then
		return ("%q"):format(node);
	end
	local attrs = {};
	for k, v in pairs(node.attr or {}) do
		table.insert(attrs, ("%s=%q"):format(k:gsub("\1", "|"), v));
	end
	table.sort(attrs);
	local out = { (node.event or "") .. "<" .. tostring(node.name) .. " " .. table.concat(attrs, " ") .. ">" };
	for _, child in ipairs(node) do
		table.insert(out, show(child));
	end
	return table.concat(out, "") .. "</>";
end

-- Feeds chunks; returns the events' texts, or nil, reason, condition.
local function parse(chunks, opts)
	local parser = core.xmlstream(opts);
	local shown = {};
	for _, chunk in ipairs(chunks) do
		local events, reason, condition = parser:feed(chunk);
		if not events then
			return nil, reason, condition;
		end
		for _, event in ipairs(events) do
			table.insert(shown, show(event));
		end
	end
	return table.concat(shown, "\n");
end

local STREAM = "<?xml version='1.0'?><stream:stream xmlns='jabber:component:accept'"
	.. " xmlns:stream='http://etherx.jabber.org/streams' id='s1' from='proxy.example'>";
local STANZAS = "<handshake/><iq type='get' id='1' from='a@b/c'>"
	.. "<query xmlns='http://jabber.org/protocol/disco#info' xml:lang='en' xmlns:x='urn:x' x:y='z'>"
	.. "te&amp;xt<x:child/>more</query></iq>\n<message><body>h\195\169</body></message>";
local DOC = STREAM .. STANZAS .. "</stream:stream>";

describe("cproxy.core.xmlstream", function ()
	describe(":feed", function ()
		it("gives the header, each stanza whole, and the end", function ()
			local parser = core.xmlstream();
			local events = assert(parser:feed(DOC));
			assert.equal(5, #events);
			assert.equal("header", events[1].event);
			assert.equal("s1", events[1].attr.id);
			assert.equal("http://etherx.jabber.org/streams", events[1].attr.xmlns);
			assert.equal("handshake", events[2].name);
			local iq = events[3];
			assert.equal("stanza", iq.event);
			assert.equal("jabber:component:accept", iq.attr.xmlns);
			local query = iq.tags[1];
			assert.equal("http://jabber.org/protocol/disco#info", query.attr.xmlns);
			assert.equal("en", query.attr["xml:lang"]);
			assert.equal("z", query.attr["urn:x\1y"]);
			assert.same({ "te&xt", query.tags[1], "more" }, { query[1], query[2], query[3] });
			assert.equal("urn:x", query.tags[1].attr.xmlns);
			assert.equal("h\195\169", events[4].tags[1][1]);
			assert.equal("end", events[5].event);
		end);

		it("gives the same events at every split point, and byte by byte", function ()
			local whole = assert(parse({ DOC }));
			for at = 1, #DOC - 1 do
				assert.equal(whole, parse({ DOC:sub(1, at), DOC:sub(at + 1) }), "split at " .. at);
			end
			local bytes = {};
			for i = 1, #DOC do
				bytes[i] = DOC:sub(i, i);
			end
			assert.equal(whole, parse(bytes));
		end);

		-- libexpat 2.6.0 and Debian 12's security updates of 2.5.0 defer
		-- re-parsing an unfinished token until about twice its bytes have
		-- come; a stanza cut by the network then waited for the next one.
		it("gives a stanza whose start tag spans two feeds from the second feed (#26)", function ()
			local stanza = ("<iq type='get' id='big' to='proxy.example' from='a@b/c' x='%s'>"
				.. "<query xmlns='http://jabber.org/protocol/disco#info'/></iq>"):format(("x"):rep(3072));
			local parser = core.xmlstream();
			-- Earlier traffic has grown expat's buffer, as on a live stream:
			-- otherwise the second feed would not fit and expat would parse.
			local earlier = ("<message><body>%s</body></message>"):format(("e"):rep(16384));
			local events = assert(parser:feed(STREAM .. earlier));
			assert.same({ "header", "message" }, { events[1].event, events[2].name:match("message") });
			events = assert(parser:feed(stanza:sub(1, 2500)));
			assert.same({}, events);
			events = assert(parser:feed(stanza:sub(2501)));
			assert.equal(1, #events);
			assert.equal("big", events[1].attr.id);
			assert.equal(3072, #events[1].attr.x);
			-- A long text run cut the same way.
			events = assert(parser:feed("<message id='m'><body>" .. ("t"):rep(2500)));
			assert.same({}, events);
			events = assert(parser:feed(("t"):rep(635) .. "</body></message>"));
			assert.equal(3135, #events[1].tags[1][1]);
		end);

		it("refuses malformed XML as not-well-formed", function ()
			assert.same({ nil, "not-well-formed", "not-well-formed" }, { parse({ STREAM .. "<iq><a></iq>" }) });
			assert.same({ nil, "not-well-formed", "not-well-formed" }, { parse({ STREAM .. "<iq \0/>" }) });
		end);

		-- Found by spec/fuzz/fuzz_xmlstream.c (#21): how much of a broken
		-- stanza expat passed on before the error depended on the split; what
		-- a reader gets must not.
		it("gives, with an error, the stanzas complete before it, however split (#21)", function ()
			local input = STREAM .. "<message id='1'/><message id='2'><body>a]]]]W]]]>2</body></message>";
			for at = 1, #input - 1 do
				local parser = core.xmlstream();
				local got = {};
				for _, chunk in ipairs({ input:sub(1, at), input:sub(at + 1) }) do
					local events, reason, condition, before = parser:feed(chunk);
					for _, event in ipairs(events or before) do
						table.insert(got, event.event == "header" and "header" or event.attr.id);
					end
					if not events then
						assert.same({ "not-well-formed", "not-well-formed" }, { reason, condition });
						break;
					end
				end
				assert.same({ "header", "1" }, got, "split at " .. at);
			end
		end);

		it("refuses comments, processing instructions and DTDs as restricted-xml", function ()
			for _, bad in ipairs({ STREAM .. "<!-- hi -->", STREAM .. "<?pi x?>",
				"<!DOCTYPE s [<!ENTITY a 'aaaa'>]>" .. STREAM }) do
				assert.same({ nil, "restricted-xml", "restricted-xml" }, { parse({ bad }) });
			end
		end);

		it("bounds a stanza's size, however it is split, as policy-violation", function ()
			local big = STREAM .. "<message>" .. ("x"):rep(3000) .. "</message>";
			assert.same({ nil, "stanza-too-big", "policy-violation" }, { parse({ big }, { max_stanza = 2048 }) });
			local pieces = {};
			for i = 1, #big, 100 do
				pieces[#pieces + 1] = big:sub(i, i + 99);
			end
			assert.same({ nil, "stanza-too-big", "policy-violation" }, { parse(pieces, { max_stanza = 2048 }) });
			-- A huge start tag, never completed, is bounded too.
			assert.same({ nil, "stanza-too-big", "policy-violation" },
				{ parse({ STREAM, "<message a='" .. ("y"):rep(5000) }, { max_stanza = 2048 }) });
			-- Many stanzas, each within the bound, are fine.
			local many = { STREAM };
			for i = 1, 100 do
				many[#many + 1] = "<message>" .. ("z"):rep(1500) .. "</message>";
			end
			assert.truthy(parse(many, { max_stanza = 2048 }));
		end);

		-- Found by spec/fuzz/fuzz_xmlstream.c (#21): fed whole, a stream
		-- header past max_stanza, or that much whitespace before a stanza,
		-- was accepted, and refused only when it came in pieces.
		it("bounds the stream header and the bytes between stanzas at every split (#21)", function ()
			local header = STREAM:gsub(" id='s1'", " id='" .. ("h"):rep(1500) .. "'");
			local gap = STREAM .. (" "):rep(1500) .. "<message/>";
			local fine = STREAM .. (" "):rep(500) .. "<message>" .. ("z"):rep(900) .. "</message>";
			for _, case in ipairs({ { header, false }, { gap, false }, { fine, true } }) do
				local input, ok = case[1], case[2];
				local whole = { parse({ input }, { max_stanza = 1024 }) };
				assert.equal(ok, whole[1] ~= nil);
				if not ok then
					assert.same({ nil, "stanza-too-big", "policy-violation" }, whole);
				end
				for at = 1, #input - 1, 7 do
					assert.same(whole, { parse({ input:sub(1, at), input:sub(at + 1) }, { max_stanza = 1024 }) });
				end
			end
		end);

		-- The same fuzz input, through the binding: spec/fuzz/corpus/xmlstream/big-header.
		it("refuses the fuzzers' over-long header input (#21)", function ()
			local f = assert(io.open("spec/fuzz/corpus/xmlstream/big-header", "rb"));
			local input = f:read("a");
			f:close();
			assert.same({ nil, "stanza-too-big", "policy-violation" }, { parse({ input }, { max_stanza = 1024 }) });
			assert.same({ nil, "stanza-too-big", "policy-violation" }, { parse({ input:sub(1, 300), input:sub(301) }, { max_stanza = 1024 }) });
		end);

		-- Found by spec/fuzz/fuzz_xmlstream.c in CI (#21): junk after the
		-- stream's end tag was refused byte by byte but, fed whole, held by
		-- expat as a partial token. Nothing after the end is parsed now.
		it("parses nothing after the stream's end tag, however it is split (#21)", function ()
			local f = assert(io.open("spec/fuzz/corpus/xmlstream/junk-after-end", "rb"));
			local input = f:read("a");
			f:close();
			local whole = assert(parse({ input }));
			for at = 1, #input - 1 do
				assert.equal(whole, parse({ input:sub(1, at), input:sub(at + 1) }), "split at " .. at);
			end
			local parser = core.xmlstream();
			local events = assert(parser:feed(DOC .. "<junk>\0 & more"));
			assert.equal("end", events[#events].event);
			assert.same({}, assert(parser:feed("<message/>")));
		end);

		it("bounds depth and attribute count as policy-violation", function ()
			assert.same({ nil, "too-deep", "policy-violation" },
				{ parse({ STREAM .. ("<a>"):rep(10) }, { max_depth = 8 }) });
			local attrs = {};
			for i = 1, 20 do
				attrs[i] = ("a%d='v'"):format(i);
			end
			assert.same({ nil, "too-many-attributes", "policy-violation" },
				{ parse({ STREAM .. "<iq " .. table.concat(attrs, " ") .. "/>" }, { max_attributes = 16 }) });
		end);

		it("refuses to be fed after a failure, and raises for bad arguments", function ()
			local parser = core.xmlstream();
			assert.is_nil(parser:feed("<a></b>"));
			assert.has_error(function () parser:feed("<c/>") end);
			assert.has_error(function () core.xmlstream():feed({}) end);
			assert.has_error(function () core.xmlstream({ max_depth = 1 }) end);
		end);

		it("closes idempotently", function ()
			local parser = core.xmlstream();
			assert.is_true(parser:close());
			assert.is_true(parser:close());
			assert.has_error(function () parser:feed("<a/>") end);
		end);
	end);
end);

describe("cproxy.core.sha1", function ()
	it("gives the lowercase hex digest, as XEP-0114's handshake needs", function ()
		assert.equal("a9993e364706816aba3e25717850c26c9cd0d89d", core.sha1("abc"));
		assert.equal("da39a3ee5e6b4b0d3255bfef95601890afd80709", core.sha1(""));
	end);
end);
