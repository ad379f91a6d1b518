-- proxy65 with a second third-party client library, in C++: gloox's
-- SOCKS5BytestreamManager (spec/clients/gloox_transfer.cpp, two clients)
-- streams 0 bytes, 1 MiB + 7 and 5 MiB + 13 from one client to another,
-- which must get every byte, in both relay modes. The same runs against
-- Prosody's built-in mod_proxy65, which must agree.
-- gloox cannot find a proxy itself (no disco in its bytestream manager):
-- the program does the disco#items, disco#info and streamhost queries a
-- gloox application has to, and gives gloox the streamhost.
-- gloox 1.0.24 says the initiator's stream is open once the proxy has
-- answered its SOCKS5 request (SOCKS5Bytestream::handleConnect), in the
-- call that sends the activation request: its bytes reach the proxy before
-- activation, which both proxies keep for the relay.
--
-- With 0 bytes gloox close()s the stream as soon as it is open, under a
-- millisecond after writing the activation <iq/> to its c2s socket
-- (strace: sendto(c2s), then close(socks5)). The FIN and the <iq/> reach
-- Prosody on two sockets, in no set order. Ours takes an initiator's FIN
-- before activation for the end of an empty stream and relays it once
-- activated, so it must pass every time. The built-in forgets the
-- transfer when the FIN comes first (its ondisconnect), closes the target
-- and refuses the activation with item-not-found (5 runs in 20): for it
-- alone, that outcome is reported pending, with what was seen; anything
-- else fails.
-- Where gloox's headers or g++ are missing, says so and skips.
local prosody = require "spec.helpers.prosody";
local library = require "spec.helpers.client_library";

local PROGRAM = prosody.root .. "/build/gloox_transfer";

-- Builds the program (make knows whether it is up to date); () -> true |
-- nil, why not. A build that fails where gloox is installed raises.
local function available()
	local ok, out = prosody.shell("pkg-config --modversion gloox");
	if not ok then
		return nil, ("gloox's headers are not installed (Debian: apt-get install libgloox-dev g++, or make deps-gloox): %s")
			:format(out:match("[^\n]*"));
	end
	if not prosody.shell("command -v ${CXX:-g++}") then
		return nil, "no C++ compiler (Debian: apt-get install g++, or make deps-gloox)";
	end
	local built, log = prosody.shell(("make --no-print-directory -s -C %q build/gloox_transfer"):format(prosody.root));
	assert(built, "building build/gloox_transfer failed:\n" .. log);
	return true;
end

local found, why = available();
if not found then
	return library.skip("gloox", why);
end

-- The built-in's 0-byte race above, lost: the activation refused after it
-- dropped the pair, the target's 0 bytes intact.
local function lost_race(server, out)
	return out:match("initiator: bytestream %S+ refused: <iq [^\n]*type='error'[^\n]*<item%-not%-found")
		and out:match("target: received 0 bytes, sha256 e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855")
		and server:log():match("Activation request has unknown session id");
end

library.describe("gloox's SOCKS5BytestreamManager", function (server, size, seed)
	return prosody.shell(("timeout 120 %q %d alice@localhost alice-pw bob@localhost bob-pw %d %d %d"):format(
		PROGRAM, server.ports.c2s, size, seed, 30 * prosody.slow));
end, function (server, out, size, proxy)
	if size == 0 and proxy.builtin and lost_race(server, out) then
		pending("gloox closed the 0-byte stream before the built-in activated it, and the built-in dropped the pair"
			.. " (the race in spec/gloox_spec.lua's header):\n" .. out);
	end
end);
