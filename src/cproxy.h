/*
 * Internals shared by the Lua bindings of cproxy.core.
 * SPDX-License-Identifier: MIT
 */
#ifndef CPROXY_H
#define CPROXY_H

#include <lua.h>
#include <lauxlib.h>

#define CPROXY_SOCKS5_MT "cproxy.socks5"
#define CPROXY_ENGINE_MT "cproxy.engine"
#define CPROXY_JAT_MT "cproxy.jat"
#define CPROXY_FD_MT "cproxy.fd"
#define CPROXY_XMLSTREAM_MT "cproxy.xmlstream"
#define CPROXY_POLL_MT "cproxy.poll"

/*
 * Creates the metatable `name`: methods in __index, __tostring, and `close`
 * (if not NULL) as __gc and __close too (class.c).
 */
void class_define(lua_State *L, const char *name, const luaL_Reg *methods,
    lua_CFunction close, lua_CFunction tostring);

/* Pushes nil, strerror(err), err and returns 3 (errors.c). */
int errors_push(lua_State *L, int err);
/* Pushes nil, message, err and returns 3: for failures that are not a
 * system call's, such as libcrypto's, with the errno that fits best. */
int errors_push_message(lua_State *L, const char *message, int err);

/*
 * The fd a cproxy.fd handle at `idx` owns, or -1 if it has none; raises if
 * the value there is not a handle (fd_lua.c). fd_lua_take() then takes it
 * from the handle: call it only once nothing can raise any more, so that an
 * error leaves every fd with an owner that will close it.
 */
int fd_lua_peek(lua_State *L, int idx);
int fd_lua_take(lua_State *L, int idx);

/* Each adds its functions to the module table on the top of the stack. */
void socks5_lua_open(lua_State *L);
void engine_lua_open(lua_State *L);
void jat_lua_open(lua_State *L);
void fd_lua_open(lua_State *L);
void xmlstream_lua_open(lua_State *L);
void digest_lua_open(lua_State *L);
void poll_lua_open(lua_State *L);

#endif
