-- JAT tags of cproxy.core: round trips for any JID, tags that are short,
-- valid resources, rejection of every altered, truncated or foreign tag,
-- and bounded memory for the JIDs behind them.
local core = require "spec.helpers.core";
if not package.path:find("/usr/lib/prosody/", 1, true) then
	package.path = "/usr/lib/prosody/?.lua;" .. package.path;
	package.cpath = "/usr/lib/prosody/?.so;" .. package.cpath;
end
local jid = require "util.jid";

local COMPONENT = "jat.example";
local ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

-- Code points from several scripts, both directions, and outside the BMP.
local RANGES = {
	{ 0x61, 0x7a }, { 0x30, 0x39 }, { 0xe0, 0xff }, { 0x3b1, 0x3c9 },
	{ 0x5d0, 0x5ea }, { 0x627, 0x64a }, { 0x4e00, 0x4fff }, { 0x1f600, 0x1f64f },
};

local function random_text(max_bytes, extra)
	local out, len = {}, 0;
	local target = math.random(1, max_bytes);
	while true do
		local c;
		if extra and math.random(8) == 1 then
			c = extra:sub(math.random(#extra), math.random(#extra)):sub(1, 1);
		else
			local range = RANGES[math.random(#RANGES)];
			c = utf8.char(math.random(range[1], range[2]));
		end
		if len + #c > target then
			break;
		end
		table.insert(out, c);
		len = len + #c;
	end
	return #out > 0 and table.concat(out) or "x";
end

local function random_jid()
	local node = random_text(40);
	local host = ("h%d.example"):format(math.random(1e6));
	local resource = random_text(60, "/@ ");
	return node .. "@" .. host .. "/" .. resource;
end

local function is_valid_resource(tag)
	return #tag == core.jat_tag_length and not tag:find("[^%w%-_]")
		and jid.prep(COMPONENT .. "/" .. tag) == COMPONENT .. "/" .. tag;
end

-- How many of `tags` the key still turns back into a JID.
local function count_known(key, tags)
	local known = 0;
	for _, tag in ipairs(tags) do
		if key:decode(tag) then
			known = known + 1;
		end
	end
	return known;
end

describe("cproxy.core.jat", function ()
	local key;
	before_each(function ()
		key = assert(core.jat("a shared secret", COMPONENT));
	end);
	after_each(function ()
		key:close();
	end);

	describe(":encode and :decode", function ()
		it("round-trip random JIDs with Unicode, '/', '@' and spaces in resources", function ()
			for _ = 1, 500 do
				local full = random_jid();
				local tag = assert(key:encode(full));
				assert.is_true(is_valid_resource(tag), tag);
				assert.equal(full, key:decode(tag));
			end
		end);

		it("round-trip JIDs whose parts have the maximum length", function ()
			local node = ("n"):rep(1023);
			local host = ("d"):rep(63) .. "." .. ("e"):rep(63) .. ".example";
			local resource = ("\u{4e2d}"):rep(341); -- 1023 bytes
			for _, full in ipairs({
				node .. "@" .. host .. "/" .. resource,
				node .. "@" .. host,
				"u@" .. host .. "/" .. resource,
				"u@h/" .. ("/@"):rep(511) .. "x",
			}) do
				assert.truthy(jid.prep(full), "the fixture is a valid JID");
				local tag = assert(key:encode(full));
				assert.is_true(is_valid_resource(tag));
				assert.equal(full, key:decode(tag));
			end
		end);

		it("are stable for one secret and context, across instances", function ()
			-- a restart with client_proxy_secret gives the same tags, but an
			-- instance turns back only the JIDs it has tagged itself
			local other <close> = assert(core.jat("a shared secret", COMPONENT));
			local full = "alice@example.com/phone";
			local tag = key:encode(full);
			assert.same({ nil, "unknown" }, { other:decode(tag) });
			assert.equal(tag, other:encode(full));
			assert.equal(full, other:decode(tag));
		end);

		it("reject tags of another secret, another component or a random key", function ()
			local other_secret <close> = assert(core.jat("another secret", COMPONENT));
			local other_component <close> = assert(core.jat("a shared secret", "other.example"));
			local random_a <close> = assert(core.jat(nil, COMPONENT));
			local random_b <close> = assert(core.jat(nil, COMPONENT));
			local full = "alice@example.com/phone";
			local ours = key:encode(full);
			for _, foreign in ipairs({ other_secret, other_component, random_a }) do
				local tag = foreign:encode(full);
				assert.are_not.equal(ours, tag);
				assert.same({ nil, "unknown" }, { key:decode(tag) });
			end
			random_b:encode(full);
			assert.same({ nil, "unknown" }, { random_b:decode(random_a:encode(full)) });
			assert.equal(full, random_a:decode(random_a:encode(full)));
		end);

		it("reject every altered byte", function ()
			for _, full in ipairs({ "alice@example.com/phone", "a@b", ("x"):rep(2000) .. "@h/r" }) do
				local tag = key:encode(full);
				for i = 1, #tag do
					local original = tag:sub(i, i);
					for c in (ALPHABET .. "=+/. \0\255"):gmatch(".") do
						if c ~= original then
							local altered = tag:sub(1, i - 1) .. c .. tag:sub(i + 1);
							local got, err = key:decode(altered);
							assert.is_nil(got, ("byte %d -> %q"):format(i, c));
							assert.equal(ALPHABET:find(c, 1, true) and "unknown" or "invalid", err);
						end
					end
				end
			end
		end);

		it("reject truncated, extended and reordered tags", function ()
			local tag = key:encode("alice@example.com/phone");
			for len = 0, #tag - 1 do
				assert.is_nil(key:decode(tag:sub(1, len)), "truncated to " .. len);
			end
			for c in ALPHABET:gmatch(".") do
				assert.is_nil(key:decode(tag .. c));
				assert.is_nil(key:decode(c .. tag));
			end
			assert.is_nil(key:decode(tag:sub(2) .. tag:sub(1, 1)));
			assert.is_nil(key:decode(tag:reverse()));
			assert.is_nil(key:decode(tag .. ("A"):rep(2000)));
		end);

		it("reject random strings", function ()
			for _ = 1, 2000 do
				local len = math.random(0, 64);
				local chars = {};
				for i = 1, len do
					local k = math.random(#ALPHABET);
					chars[i] = ALPHABET:sub(k, k);
				end
				assert.is_nil(key:decode(table.concat(chars)));
			end
		end);

		it("refuse empty and NUL-led input", function ()
			assert.same({ nil, "invalid" }, { key:encode("") });
			assert.same({ nil, "invalid" }, { key:encode("\0a@b") });
			assert.same({ nil, "invalid" }, { key:encode(("x"):rep(5000)) });
		end);

		it("forget a JID only after two generations of others", function ()
			local per_generation = core.jat_generation_jids;
			local full = "alice@example.com/phone";
			local tag = key:encode(full);
			for i = 1, per_generation - 10 do
				key:encode("m" .. i .. "@example.com");
			end
			assert.equal(full, key:decode(tag), "kept, and moved up to the current generation");
			for i = 1, 2 * per_generation + 1 do
				key:encode("n" .. i .. "@example.com");
			end
			assert.same({ nil, "unknown" }, { key:decode(tag) });
			assert.equal(tag, key:encode(full), "encoding again gives the same tag");
			assert.equal(full, key:decode(tag));
		end);

		it("keep at most two generations, however often old JIDs are used", function ()
			local per_generation = core.jat_generation_jids;
			local tags = {};
			-- Decoding every earlier tag after each batch keeps moving old
			-- entries up; the total must still stay bounded.
			for batch = 1, 5 do
				for i = 1, per_generation // 2 do
					tags[#tags + 1] = key:encode(("u%d-%d@example.com"):format(batch, i));
				end
				for _, t in ipairs(tags) do
					key:decode(t);
				end
			end
			local remembered = count_known(key, tags);
			assert.truthy(remembered >= per_generation, remembered .. " JIDs remembered");
			assert.truthy(remembered <= 2 * per_generation, remembered .. " JIDs remembered");
		end);

		it("bound the bytes held, not only the number of JIDs", function ()
			local big = ("b"):rep(3000);
			local tags = {};
			for i = 1, 4000 do
				tags[i] = key:encode(big .. i .. "@example.com");
			end
			local remembered = count_known(key, tags);
			local per_generation = math.ceil(core.jat_generation_bytes / #big);
			assert.truthy(remembered > 0);
			assert.truthy(remembered <= 2 * per_generation, remembered .. " large JIDs remembered");
		end);
	end);

	describe(":close", function ()
		it("is idempotent and makes later use an error", function ()
			local k = assert(core.jat(nil, COMPONENT));
			k:close();
			k:close();
			assert.has_error(function () k:encode("a@b"); end);
			assert.matches("closed", tostring(k));
		end);

		it("rejects an empty secret and a missing context", function ()
			assert.has_error(function () core.jat("", COMPONENT); end);
			assert.has_error(function () core.jat("s"); end);
		end);
	end);
end);
