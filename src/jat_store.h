/*
 * The JIDs behind the JAT tags a key has given out: reference -> JID, in
 * two generations held as Lua tables in the uservalues of the key's
 * userdata. When the current generation reaches JAT_STORE_JIDS entries or
 * JAT_STORE_BYTES bytes it becomes the previous one and the old previous
 * one is dropped. A JID in use is moved up, so it stays; memory stays
 * bounded whatever the senders do. Not here: the MAC (jat.c), the Lua
 * methods (jat_lua.c).
 * SPDX-License-Identifier: MIT
 */
#ifndef CPROXY_JAT_STORE_H
#define CPROXY_JAT_STORE_H

#include <lua.h>

#include "jat.h"

#define JAT_STORE_JIDS 16384
#define JAT_STORE_BYTES (4 * 1024 * 1024)

/* Uservalue slots of the userdata the store lives in; it needs both. */
#define JAT_STORE_SLOTS 2

struct jat_store {
	lua_Integer count;	/* entries in the current generation */
	lua_Integer bytes;	/* their approximate size */
};

/* Gives the userdata at `ud` two empty generations. */
void jat_store_init(lua_State *L, int ud, struct jat_store *s);

/* Drops both generations (the userdata keeps no JID). */
void jat_store_clear(lua_State *L, int ud, struct jat_store *s);

/*
 * Pushes the JID stored under ref, or nil, and returns 1 or 0 accordingly.
 * One found only in the previous generation is moved up to the current one.
 */
int jat_store_find(lua_State *L, int ud, struct jat_store *s, const uint8_t ref[JAT_REF_LEN]);

/* Stores ref -> the string at stack index `jid`, unless already current. */
void jat_store_put(lua_State *L, int ud, struct jat_store *s, const uint8_t ref[JAT_REF_LEN], int jid);

#endif
