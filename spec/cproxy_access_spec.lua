-- proxy65's streamhost grammar and ACL, one of each for the Prosody module
-- and the standalone component (cproxy.proxy65.streamhost and .acl, #29).
package.path = "lua/?.lua;" .. package.path;
local streamhost = require "cproxy.proxy65.streamhost";
local acl = require "cproxy.proxy65.acl";
local jids = require "cproxy.standalone.jid";
require "spec.helpers.xmpp_client"; -- puts Debian's Prosody libraries on the path
local util_jid = require "util.jid";

describe("cproxy.proxy65.streamhost", function ()
	describe(".parse", function ()
		it("reads a host, with or without a port, for names, IPv4 and IPv6", function ()
			assert.same({ "proxy.example.org" }, { streamhost.parse("proxy.example.org") });
			assert.same({ "proxy.example.org", 7777 }, { streamhost.parse("proxy.example.org:7777") });
			assert.same({ "192.0.2.1", 5000 }, { streamhost.parse("192.0.2.1:5000") });
			assert.same({ "2001:db8::1" }, { streamhost.parse("[2001:db8::1]") });
			assert.same({ "2001:db8::1", 1 }, { streamhost.parse("[2001:db8::1]:1") });
			assert.same({ "2001:db8::1" }, { streamhost.parse("2001:db8::1") }); -- a bare IPv6 address
		end);

		it("refuses what is not one, and ports out of range", function ()
			for _, bad in ipairs({ "", "not a host:", "host:0", "host:65536", "host:port", "[2001:db8::1]:",
				"[2001:db8::1]x", "a b", "host:1:2" }) do
				assert.is_nil(streamhost.parse(bad), bad);
			end
		end);
	end);
end);

describe("cproxy.proxy65.acl", function ()
	describe(".admits", function ()
		local list = { "example.org", "alice@example.com", "bob@example.net/phone" };

		it("admits a domain's users, a user's resources, and one resource, as util.jid.compare does", function ()
			for _, split in ipairs({ jids.split, util_jid.split }) do
				assert.is_true(acl.admits(list, "carol@example.org/x", split));
				assert.is_true(acl.admits(list, "example.org", split));
				assert.is_true(acl.admits(list, "alice@example.com/laptop", split));
				assert.is_true(acl.admits(list, "bob@example.net/phone", split));
				assert.is_false(acl.admits(list, "bob@example.net/tablet", split));
				assert.is_false(acl.admits(list, "mallory@example.com/x", split));
				assert.is_false(acl.admits(list, "carol@sub.example.org/x", split));
				assert.is_false(acl.admits({}, "carol@example.org/x", split));
			end
			-- The same answers as Prosody's own comparison.
			for _, jid in ipairs({ "carol@example.org/x", "alice@example.com/laptop", "bob@example.net/tablet" }) do
				local any = false;
				for _, entry in ipairs(list) do
					any = any or util_jid.compare(jid, entry);
				end
				assert.equal(any, acl.admits(list, jid, util_jid.split), jid);
			end
		end);
	end);
end);
