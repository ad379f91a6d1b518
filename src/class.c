/*
 * The one way cproxy.core defines a class of userdata: a named metatable
 * with methods in __index, __tostring, and (for objects that own a
 * resource) one idempotent close function as close, __gc and __close.
 * SPDX-License-Identifier: MIT
 */
#include "cproxy.h"

void
class_define(lua_State *L, const char *name, const luaL_Reg *methods,
    lua_CFunction close, lua_CFunction tostring)
{
	luaL_newmetatable(L, name);
	lua_newtable(L);	/* luaL_newlib needs the array itself, not a pointer */
	luaL_setfuncs(L, methods, 0);
	lua_setfield(L, -2, "__index");
	if (close) {
		lua_pushcfunction(L, close);
		lua_setfield(L, -2, "__gc");
		lua_pushcfunction(L, close);
		lua_setfield(L, -2, "__close");
	}
	lua_pushcfunction(L, tostring);
	lua_setfield(L, -2, "__tostring");
	lua_pop(L, 1);
}
