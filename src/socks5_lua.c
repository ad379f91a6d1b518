/*
 * Lua binding of the SOCKS5 handshake parser: cproxy.core.socks5().
 * SPDX-License-Identifier: MIT
 */
#include <stdint.h>

#include "cproxy.h"
#include "socks5.h"

static struct socks5 *
check_socks5(lua_State *L)
{
	return luaL_checkudata(L, 1, CPROXY_SOCKS5_MT);
}

/* socks5() -> parser */
static int
l_new(lua_State *L)
{
	struct socks5 *s = lua_newuserdatauv(L, sizeof(*s), 0);

	socks5_init(s);
	luaL_setmetatable(L, CPROXY_SOCKS5_MT);
	return 1;
}

static const char *const state_names[] = { "greeting", "request", "done", "failed" };

/*
 * (parser, data) -> state, reply, used, reason, hash
 * Fixed slots, whatever the outcome: state is "greeting" or "request" (more
 * input needed), "done" (answer with :accept() or :refuse()) or "failed"
 * (send reply, then close); reply is the bytes to send (possibly "");
 * data[used+1..] is not handshake data; reason is a fixed token saying why
 * it failed (see socks5_reason_name()), nil unless failed; hash is the 40
 * lowercase hex characters of the request, nil unless done. So the end of
 * a handshake takes one crossing to read, and one to answer.
 */
static int
l_feed(lua_State *L)
{
	struct socks5 *s = check_socks5(L);
	size_t len;
	const char *data = luaL_checklstring(L, 2, &len);
	size_t used;

	luaL_argcheck(L, s->state != SOCKS5_FAILED, 1, "handshake already failed");
	used = socks5_feed(s, (const uint8_t *)data, len);
	lua_pushstring(L, state_names[s->state]);
	lua_pushlstring(L, (const char *)s->reply, s->reply_len);
	s->reply_len = 0;
	lua_pushinteger(L, (lua_Integer)used);
	if (s->state == SOCKS5_FAILED) {
		lua_pushstring(L, socks5_reason_name(s->reason));
	} else {
		lua_pushnil(L);
	}
	if (s->state == SOCKS5_DONE) {
		lua_pushlstring(L, s->hash, SOCKS5_HASH_LEN);
	} else {
		lua_pushnil(L);
	}
	return 5;
}

/* (parser) -> reply   the success reply; only in state "done" */
static int
l_accept(lua_State *L)
{
	struct socks5 *s = check_socks5(L);

	luaL_argcheck(L, s->state == SOCKS5_DONE, 1, "request not complete");
	socks5_accept(s);
	lua_pushlstring(L, (const char *)s->reply, s->reply_len);
	s->reply_len = 0;
	return 1;
}

/*
 * (parser[, why]) -> reply   only in state "done"
 * why: "not-allowed" (the default: REP 2, connection not allowed by
 * ruleset) or "over-limit" (REP 1, general failure: a limit of the proxy).
 */
static int
l_refuse(lua_State *L)
{
	static const char *const whys[] = { "not-allowed", "over-limit", NULL };
	static const enum socks5_reason reasons[] = { SOCKS5_REFUSED, SOCKS5_OVER_LIMIT };
	struct socks5 *s = check_socks5(L);
	int why = luaL_checkoption(L, 2, "not-allowed", whys);

	luaL_argcheck(L, s->state == SOCKS5_DONE, 1, "request not complete");
	socks5_refuse(s, reasons[why]);
	lua_pushlstring(L, (const char *)s->reply, s->reply_len);
	s->reply_len = 0;
	return 1;
}

/* (parser) -> state */
static int
l_state(lua_State *L)
{
	struct socks5 *s = check_socks5(L);

	lua_pushstring(L, state_names[s->state]);
	return 1;
}

static int
l_tostring(lua_State *L)
{
	struct socks5 *s = check_socks5(L);

	lua_pushfstring(L, "socks5 handshake (%s): %p", state_names[s->state], (void *)s);
	return 1;
}

void
socks5_lua_open(lua_State *L)
{
	static const luaL_Reg methods[] = {
		{ "feed", l_feed },
		{ "accept", l_accept },
		{ "refuse", l_refuse },
		{ "state", l_state },
		{ NULL, NULL }
	};

	class_define(L, CPROXY_SOCKS5_MT, methods, NULL, l_tostring);	/* owns nothing */
	lua_pushcfunction(L, l_new);
	lua_setfield(L, -2, "socks5");
}
