/*
 * The remembered JIDs behind JAT tags: two generations, bounded in entries
 * and bytes (see jat_store.h).
 * SPDX-License-Identifier: MIT
 */
#include <assert.h>

#include "jat_store.h"

/* What one entry costs beyond the JID's bytes (the reference string, the
 * JID string's header, a table node), as measured: about 100 bytes. */
#define ENTRY_OVERHEAD 128

/* Uservalue slots: reference -> JID, for this generation and the previous one. */
enum { CURRENT = 1, PREVIOUS = 2 };

void
jat_store_init(lua_State *L, int ud, struct jat_store *s)
{
	ud = lua_absindex(L, ud);
	lua_newtable(L);
	lua_setiuservalue(L, ud, CURRENT);
	lua_newtable(L);
	lua_setiuservalue(L, ud, PREVIOUS);
	s->count = 0;
	s->bytes = 0;
}

void
jat_store_clear(lua_State *L, int ud, struct jat_store *s)
{
	ud = lua_absindex(L, ud);
	lua_pushnil(L);
	lua_setiuservalue(L, ud, CURRENT);
	lua_pushnil(L);
	lua_setiuservalue(L, ud, PREVIOUS);
	s->count = 0;
	s->bytes = 0;
}

/* Pushes the JID stored under ref in generation `slot`, or nil. */
static int
lookup(lua_State *L, int ud, const uint8_t ref[JAT_REF_LEN], int slot)
{
	int type;

	lua_getiuservalue(L, ud, slot);
	assert(lua_istable(L, -1));
	lua_pushlstring(L, (const char *)ref, JAT_REF_LEN);
	type = lua_rawget(L, -2);
	lua_remove(L, -2);
	return type;
}

static void
remember(lua_State *L, int ud, struct jat_store *s, const uint8_t ref[JAT_REF_LEN], int jid)
{
	size_t len;

	(void)lua_tolstring(L, jid, &len);
	if (s->count >= JAT_STORE_JIDS || s->bytes >= JAT_STORE_BYTES) {
		lua_getiuservalue(L, ud, CURRENT);
		lua_setiuservalue(L, ud, PREVIOUS);
		lua_newtable(L);
		lua_setiuservalue(L, ud, CURRENT);
		s->count = 0;
		s->bytes = 0;
	}
	lua_getiuservalue(L, ud, CURRENT);
	lua_pushlstring(L, (const char *)ref, JAT_REF_LEN);
	lua_pushvalue(L, jid);
	lua_rawset(L, -3);
	lua_pop(L, 1);
	s->count++;
	s->bytes += (lua_Integer)len + ENTRY_OVERHEAD;
}

int
jat_store_find(lua_State *L, int ud, struct jat_store *s, const uint8_t ref[JAT_REF_LEN])
{
	ud = lua_absindex(L, ud);
	if (lookup(L, ud, ref, CURRENT) != LUA_TNIL) {
		return 1;
	}
	lua_pop(L, 1);
	if (lookup(L, ud, ref, PREVIOUS) != LUA_TNIL) {
		remember(L, ud, s, ref, lua_gettop(L));
		return 1;
	}
	return 0;
}

void
jat_store_put(lua_State *L, int ud, struct jat_store *s, const uint8_t ref[JAT_REF_LEN], int jid)
{
	ud = lua_absindex(L, ud);
	jid = lua_absindex(L, jid);
	if (lookup(L, ud, ref, CURRENT) == LUA_TNIL) {
		remember(L, ud, s, ref, jid);
	}
	lua_pop(L, 1);
}
