-- The SOCKS5 handshake parser of cproxy.core, fed in every way a network
-- can deliver bytes: whole, split at each point, byte by byte, pipelined.
local core = require "spec.helpers.core";

local GREETING = "\5\1\0";
local HASH = ("0123456789abcdef"):rep(3):sub(1, 40);
local REQUEST = "\5\1\0\3\40" .. HASH .. "\0\0";
local SUCCESS = "\5\0\0\3\40" .. HASH .. "\0\0";

local function failure(rep)
	return "\5" .. string.char(rep) .. "\0\1\0\0\0\0\0\0";
end

-- Feeds chunks; returns state (or nil), reason, all replies, total used,
-- and the hash once done.
local function run(chunks)
	local parser = core.socks5();
	local replies, used_total = {}, 0;
	for _, chunk in ipairs(chunks) do
		local state, reply, used, reason, hash = parser:feed(chunk);
		if state == "failed" then
			assert.is_nil(hash);
			table.insert(replies, reply);
			return nil, reason, table.concat(replies), used_total + used;
		end
		assert.is_nil(reason);
		table.insert(replies, reply);
		used_total = used_total + used;
		if state == "done" then
			table.insert(replies, parser:accept());
			return state, nil, table.concat(replies), used_total, hash;
		end
		assert.is_nil(hash);
	end
	return parser:state(), nil, table.concat(replies), used_total;
end

-- Every way to cut `input` in two, plus one byte at a time.
local function splittings(input)
	local all = { { input } };
	for i = 1, #input - 1 do
		table.insert(all, { input:sub(1, i), input:sub(i + 1) });
	end
	local bytes = {};
	for i = 1, #input do
		bytes[i] = input:sub(i, i);
	end
	table.insert(all, bytes);
	return all;
end

describe("cproxy.core.socks5", function ()
	it("runs under Lua 5.4", function ()
		assert.equal("Lua 5.4", _VERSION);
	end);

	describe(":feed", function ()
		it("accepts a greeting and request split at any byte", function ()
			for _, chunks in ipairs(splittings(GREETING .. REQUEST)) do
				local state, reason, replies, used, hash = run(chunks);
				assert.equal("done", state, reason);
				assert.equal("\5\0" .. SUCCESS, replies);
				assert.equal(#GREETING + #REQUEST, used);
				assert.equal(HASH, hash);
			end
		end);

		it("leaves pipelined stream bytes to the caller", function ()
			local parser = core.socks5();
			local state, reply, used, reason, hash = parser:feed(GREETING .. REQUEST .. "early data");
			assert.equal("done", state);
			assert.equal("\5\0", reply);
			assert.equal(#GREETING + #REQUEST, used);
			assert.is_nil(reason);
			assert.equal(HASH, hash);
		end);

		it("accepts several methods when one is 'no authentication'", function ()
			local state, _, replies = run({ "\5\3\2\1\0" .. REQUEST });
			assert.equal("done", state);
			assert.equal("\5\0" .. SUCCESS, replies);
		end);

		it("reports the stage it waits in", function ()
			local parser = core.socks5();
			assert.equal("greeting", (parser:feed("\5")));
			assert.equal("request", (parser:feed("\1\0\5\1")));
			assert.equal("request", parser:state());
		end);

		it("normalises an uppercase hash to lowercase", function ()
			local state, _, replies, _, hash = run({ GREETING .. "\5\1\0\3\40" .. HASH:upper() .. "\0\0" });
			assert.equal("done", state);
			assert.equal(HASH, hash);
			assert.equal("\5\0" .. SUCCESS, replies);
		end);

		local bad_greetings = {
			{ "a version other than 5", "\4\1\0", "bad-version" },
			{ "no methods", "\5\0", "no-methods" },
			{ "no acceptable method", "\5\2\1\2", "no-acceptable-method" },
		};
		for _, case in ipairs(bad_greetings) do
			it("answers 05 FF to a greeting with " .. case[1], function ()
				for _, chunks in ipairs(splittings(case[2])) do
					local state, reason, replies = run(chunks);
					assert.is_nil(state);
					assert.equal(case[3], reason);
					assert.equal("\5\255", replies);
				end
			end);
		end

		local function request_with(at, byte)
			return REQUEST:sub(1, at - 1) .. byte .. REQUEST:sub(at + 1);
		end
		local bad_requests = {
			{ "version 4", request_with(1, "\4"), "bad-version", 1 },
			{ "command BIND", request_with(2, "\2"), "command-not-supported", 7 },
			{ "command UDP ASSOCIATE", request_with(2, "\3"), "command-not-supported", 7 },
			{ "a non-zero reserved byte", request_with(3, "\1"), "bad-reserved", 1 },
			{ "an IPv4 address", request_with(4, "\1"), "address-type-not-supported", 8 },
			{ "an IPv6 address", request_with(4, "\4"), "address-type-not-supported", 8 },
			{ "an unknown address type", request_with(4, "\9"), "address-type-not-supported", 8 },
			{ "a 39-byte address", request_with(5, "\39"), "bad-address-length", 1 },
			{ "a 41-byte address", request_with(5, "\41"), "bad-address-length", 1 },
			{ "a non-hex address", request_with(20, "g"), "bad-hash", 1 },
			{ "a NUL in the address", request_with(6, "\0"), "bad-hash", 1 },
			{ "a non-zero port (high byte)", request_with(46, "\1"), "bad-port", 1 },
			{ "a non-zero port (low byte)", request_with(47, "\80"), "bad-port", 1 },
		};
		for _, case in ipairs(bad_requests) do
			it(("rejects a request with %s with REP %d"):format(case[1], case[4]), function ()
				for _, chunks in ipairs(splittings(GREETING .. case[2])) do
					local state, reason, replies = run(chunks);
					assert.is_nil(state);
					assert.equal(case[3], reason);
					assert.equal("\5\0" .. failure(case[4]), replies);
				end
			end);
		end

		it("stops consuming at the first bad byte", function ()
			local parser = core.socks5();
			local state, _, used, reason, hash = parser:feed(GREETING .. "\5\2" .. "more bytes");
			assert.equal("failed", state);
			assert.equal("command-not-supported", reason);
			assert.equal(#GREETING + 2, used);
			assert.is_nil(hash);
		end);

		it("raises when fed after a failure", function ()
			local parser = core.socks5();
			parser:feed("\4");
			assert.has_error(function () parser:feed("\5") end);
		end);

		it("raises for a non-string argument", function ()
			assert.has_error(function () core.socks5():feed({}) end);
		end);
	end);

	describe(":refuse", function ()
		it("answers 'connection not allowed' (REP 2)", function ()
			local parser = core.socks5();
			assert.equal("done", (parser:feed(GREETING .. REQUEST)));
			assert.equal(failure(2), parser:refuse());
			assert.equal("failed", parser:state());
		end);

		it("answers 'general failure' (REP 1) when over a limit", function ()
			local parser = core.socks5();
			assert.equal("done", (parser:feed(GREETING .. REQUEST)));
			assert.equal(failure(1), parser:refuse("over-limit"));
			assert.equal("failed", parser:state());
		end);

		it("raises for an unknown reason", function ()
			local parser = core.socks5();
			parser:feed(GREETING .. REQUEST);
			assert.has_error(function () parser:refuse("busy") end);
		end);

		it("raises before the request is complete", function ()
			assert.has_error(function () core.socks5():refuse() end);
			assert.has_error(function () core.socks5():accept() end);
		end);
	end);
end);
