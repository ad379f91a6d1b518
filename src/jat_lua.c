/*
 * Lua binding of JAT tags: cproxy.core.jat(secret, context).
 *
 * encode remembers each JID under its reference; decode looks a tag's
 * reference up, so only JIDs this key has tagged come back. The JIDs are
 * kept by jat_store.c, bounded whatever the senders do.
 * SPDX-License-Identifier: MIT
 */
#include <errno.h>
#include <stdint.h>
#include <string.h>

#include "cproxy.h"
#include "jat.h"
#include "jat_store.h"

struct jat_box {
	struct jat jat;
	struct jat_store store;
};

static struct jat_box *
check_box(lua_State *L)
{
	struct jat_box *box = luaL_checkudata(L, 1, CPROXY_JAT_MT);

	luaL_argcheck(L, box->jat.mac != NULL, 1, "JAT key is closed");
	return box;
}

/* A libcrypto failure is a runtime error, not the caller's. */
static int
crypto_failure(lua_State *L, const char *what)
{
	return errors_push_message(L, what, EIO);
}

/* (secret|nil, context) -> jat | nil, message, errno */
static int
l_new(lua_State *L)
{
	size_t secret_len = 0, context_len;
	const char *secret = luaL_optlstring(L, 1, NULL, &secret_len);
	const char *context = luaL_checklstring(L, 2, &context_len);
	struct jat_box *box;

	luaL_argcheck(L, secret == NULL || secret_len > 0, 1, "empty secret");
	box = lua_newuserdatauv(L, sizeof(*box), JAT_STORE_SLOTS);
	box->jat.mac = NULL;
	box->store.count = 0;
	box->store.bytes = 0;
	luaL_setmetatable(L, CPROXY_JAT_MT);
	if (jat_init(&box->jat, (const uint8_t *)secret, secret_len,
	    (const uint8_t *)context, context_len) != 0) {
		return crypto_failure(L, "cannot set up HMAC-SHA-256 (libcrypto)");
	}
	jat_store_init(L, -1, &box->store);
	return 1;
}

/* (jat, jid) -> tag | nil, "invalid" | nil, message, errno */
static int
l_encode(lua_State *L)
{
	struct jat_box *box = check_box(L);
	size_t len;
	const char *jid = luaL_checklstring(L, 2, &len);
	uint8_t ref[JAT_REF_LEN];
	char tag[JAT_TAG_LEN];

	if (!jat_jid_ok((const uint8_t *)jid, len)) {
		lua_pushnil(L);
		lua_pushliteral(L, "invalid");
		return 2;
	}
	if (jat_ref(&box->jat, (const uint8_t *)jid, len, ref) != 0) {
		return crypto_failure(L, "HMAC-SHA-256 failed (libcrypto)");
	}
	jat_store_put(L, 1, &box->store, ref, 2);
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
	if (jat_store_find(L, 1, &box->store, ref)) {
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
	jat_store_clear(L, 1, &box->store);
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

	class_define(L, CPROXY_JAT_MT, methods, l_close, l_tostring);
	lua_pushcfunction(L, l_new);
	lua_setfield(L, -2, "jat");
	lua_pushinteger(L, JAT_TAG_LEN);
	lua_setfield(L, -2, "jat_tag_length");
	lua_pushinteger(L, JAT_STORE_JIDS);
	lua_setfield(L, -2, "jat_generation_jids");
	lua_pushinteger(L, JAT_STORE_BYTES);
	lua_setfield(L, -2, "jat_generation_bytes");
}
