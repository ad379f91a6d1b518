/*
 * How cproxy.core answers Lua when it has no value to give:
 * - a runtime failure of the system (a call, an allocation, libcrypto):
 *   nil, message, errno, as Prosody's util-src does (these helpers);
 * - an answer that is not a failure, about input from the network: nil
 *   and a fixed token, no errno, as LuaSocket's "timeout" and "closed":
 *   "invalid" and "unknown" (jat), "timeout" (poll); and where a protocol
 *   needs more (socks5's reply, xmlstream's stream error), fixed slots
 *   documented at the function.
 * SPDX-License-Identifier: MIT
 */
#include <string.h>

#include "cproxy.h"

int
errors_push(lua_State *L, int err)
{
	lua_pushnil(L);
	lua_pushstring(L, strerror(err));
	lua_pushinteger(L, err);
	return 3;
}

int
errors_push_message(lua_State *L, const char *message, int err)
{
	lua_pushnil(L);
	lua_pushstring(L, message);
	lua_pushinteger(L, err);
	return 3;
}
