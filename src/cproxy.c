/*
 * cproxy.core: the C half of prosody-cproxy. This file only assembles the
 * module; each capability lives in its own file (socks5, engine, jat, fd, xmlstream, digest, poll).
 * SPDX-License-Identifier: MIT
 */
#include "cproxy.h"

LUA_API int luaopen_cproxy_core(lua_State *L);

__attribute__((visibility("default"))) int
luaopen_cproxy_core(lua_State *L)
{
	lua_newtable(L);
	socks5_lua_open(L);
	engine_lua_open(L);
	jat_lua_open(L);
	fd_lua_open(L);
	xmlstream_lua_open(L);
	digest_lua_open(L);
	poll_lua_open(L);
	lua_pushliteral(L, "0.1.0");
	lua_setfield(L, -2, "version");
	return 1;
}
