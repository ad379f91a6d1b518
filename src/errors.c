/*
 * The one way cproxy.core reports a runtime failure to Lua:
 * nil, message, errno (as Prosody's util-src and LuaSocket do).
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
