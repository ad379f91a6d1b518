/*
 * Lua binding of JAT tags: cproxy.core.jat(secret, context).
 *
 * encode remembers each JID under its reference; decode looks a tag's
 * reference up, so only JIDs this key has tagged come back. The JIDs are
 * kept in two generations: when the current one reaches GENERATION_JIDS
 * entries or GENERATION_BYTES bytes it becomes the previous one and the old
 * previous one is dropped. A JID in use is moved up on each encode or
 * decode, so it stays; memory stays bounded whatever the senders do.
 * SPDX-License-Identifier: MIT
 */
#include <stdint.h>
#include <string.h>

#include "cproxy.h"
#include "jat.h"

#define GENERATION_JIDS 16384
#define GENERATION_BYTES (4 * 1024 * 1024)
/* What one entry costs beyond the JID's bytes (the reference string, the
 * JID string's header, a table node), as measured: about 100 bytes. */
#define ENTRY_OVERHEAD 128
/* Three parts of 1023 bytes, '@' and '/'. */
#define JID_MAX (3 * 1023 + 2)

/* Uservalue slots: reference -> JID, for this generation and the previous one. */
enum { CURRENT = 1, PREVIOUS = 2 };

struct jat_box {
	struct jat jat;
	lua_Integer count;	/* entries in CURRENT */
	lua_Integer bytes;	/* their approximate size */
};

static struct jat_box *
check_box(lua_State *L)
{
	struct jat_box *box = luaL_checkudata(L, 1, CPROXY_JAT_MT);

	luaL_argcheck(L, box->jat.mac != NULL, 1, "JAT key is closed");
	return box;
}

/* (secret|nil, context) -> jat | nil, message */
static int
l_new(lua_State *L)
{
	size_t secret_len = 0, context_len;
	const char *secret = luaL_optlstring(L, 1, NULL, &secret_len);
	const char *context = luaL_checklstring(L, 2, &context_len);
	struct jat_box *box;

	luaL_argcheck(L, secret == NULL || secret_len > 0, 1, "empty secret");
	box = lua_newuserdatauv(L, sizeof(*box), 2);
	box->jat.mac = NULL;
	box->count = 0;
	box->bytes = 0;
	luaL_setmetatable(L, CPROXY_JAT_MT);
	if (jat_init(&box->jat, (const uint8_t *)secret, secret_len,
	    (const uint8_t *)context, context_len) != 0) {
		lua_pushnil(L);
		lua_pushliteral(L, "cannot set up HMAC-SHA-256 (libcrypto)");
		return 2;
	}
	lua_newtable(L);
	lua_setiuservalue(L, -2, CURRENT);
	lua_newtable(L);
	lua_setiuservalue(L, -2, PREVIOUS);
	return 1;
}

/* Pushes the JID stored under ref in generation `slot`, or nil. */
static int
lookup(lua_State *L, const uint8_t ref[JAT_REF_LEN], int slot)
{
	int type;

	lua_getiuservalue(L, 1, slot);
	lua_pushlstring(L, (const char *)ref, JAT_REF_LEN);
	type = lua_rawget(L, -2);
	lua_remove(L, -2);
	return type;
}

/* Stores ref -> the JID at stack index `jid` in the current generation. */
static void
remember(lua_State *L, struct jat_box *box, const uint8_t ref[JAT_REF_LEN], int jid)
{
	size_t len;

	(void)lua_tolstring(L, jid, &len);
	if (box->count >= GENERATION_JIDS || box->bytes >= GENERATION_BYTES) {
		lua_getiuservalue(L, 1, CURRENT);
		lua_setiuservalue(L, 1, PREVIOUS);
		lua_newtable(L);
		lua_setiuservalue(L, 1, CURRENT);
		box->count = 0;
		box->bytes = 0;
	}
	lua_getiuservalue(L, 1, CURRENT);
	lua_pushlstring(L, (const char *)ref, JAT_REF_LEN);
	lua_pushvalue(L, jid);
	lua_rawset(L, -3);
	lua_pop(L, 1);
	box->count++;
	box->bytes += (lua_Integer)len + ENTRY_OVERHEAD;
}

/* A libcrypto failure is a runtime error, not the caller's: nil, message. */
static int
crypto_failure(lua_State *L)
{
	lua_pushnil(L);
	lua_pushliteral(L, "HMAC-SHA-256 failed (libcrypto)");
	return 2;
}

/* (jat, jid) -> tag | nil, "invalid" */
static int
l_encode(lua_State *L)
{
	struct jat_box *box = check_box(L);
	size_t len;
	const char *jid = luaL_checklstring(L, 2, &len);
	uint8_t ref[JAT_REF_LEN];
	char tag[JAT_TAG_LEN];

	/* No JID holds a NUL; refusing one keeps one JID per string. */
	if (len == 0 || len > JID_MAX || memchr(jid, '\0', len) != NULL) {
		lua_pushnil(L);
		lua_pushliteral(L, "invalid");
		return 2;
	}
	if (jat_ref(&box->jat, (const uint8_t *)jid, len, ref) != 0) {
		return crypto_failure(L);
	}
	if (lookup(L, ref, CURRENT) == LUA_TNIL) {
		remember(L, box, ref, 2);
	}
	lua_pop(L, 1);
	jat_tag_of(ref, tag);
	lua_pushlstring(L, tag, JAT_TAG_LEN);
	return 1;
}

/* (jat, tag) -> jid | nil, "invalid" | nil, "unknown" */
static int
l_decode(lua_State *L)
{
	struct jat_box *box = check_box(L);
	size_t len;
	const char *tag = luaL_checklstring(L, 2, &len);
	uint8_t ref[JAT_REF_LEN];

	if (jat_ref_of(tag, len, ref) != 0) {
		lua_pushnil(L);
		lua_pushliteral(L, "invalid");
		return 2;
	}
	if (lookup(L, ref, CURRENT) != LUA_TNIL) {
		return 1;
	}
	lua_pop(L, 1);
	if (lookup(L, ref, PREVIOUS) != LUA_TNIL) {
		remember(L, box, ref, lua_gettop(L));
		return 1;
	}
	/* Altered, from another key, or not tagged for two generations. */
	lua_pushliteral(L, "unknown");
	return 2;
}

/* (jat) -> ()   frees the key; idempotent, also __gc and __close */
static int
l_close(lua_State *L)
{
	struct jat_box *box = luaL_checkudata(L, 1, CPROXY_JAT_MT);

	jat_free(&box->jat);
	/* The JIDs go with the key, not at the next GC of the userdata. */
	lua_pushnil(L);
	lua_setiuservalue(L, 1, CURRENT);
	lua_pushnil(L);
	lua_setiuservalue(L, 1, PREVIOUS);
	box->count = 0;
	box->bytes = 0;
	return 0;
}

static int
l_tostring(lua_State *L)
{
	struct jat_box *box = luaL_checkudata(L, 1, CPROXY_JAT_MT);

	lua_pushfstring(L, "jat key (%s): %p", box->jat.mac ? "open" : "closed", (void *)box);
	return 1;
}

void
jat_lua_open(lua_State *L)
{
	static const luaL_Reg methods[] = {
		{ "encode", l_encode },
		{ "decode", l_decode },
		{ "close", l_close },
		{ NULL, NULL }
	};

	luaL_newmetatable(L, CPROXY_JAT_MT);
	luaL_newlib(L, methods);
	lua_setfield(L, -2, "__index");
	lua_pushcfunction(L, l_close);
	lua_setfield(L, -2, "__gc");
	lua_pushcfunction(L, l_close);
	lua_setfield(L, -2, "__close");
	lua_pushcfunction(L, l_tostring);
	lua_setfield(L, -2, "__tostring");
	lua_pop(L, 1);
	lua_pushcfunction(L, l_new);
	lua_setfield(L, -2, "jat");
	lua_pushinteger(L, JAT_TAG_LEN);
	lua_setfield(L, -2, "jat_tag_length");
	lua_pushinteger(L, GENERATION_JIDS);
	lua_setfield(L, -2, "jat_generation_jids");
	lua_pushinteger(L, GENERATION_BYTES);
	lua_setfield(L, -2, "jat_generation_bytes");
}
