/*
 * Lua binding of JAT tags: cproxy.core.jat(secret, context).
 *
 * A JID whose tag would not fit in a resource (JIDs can reach 3 KiB, a
 * resource 1023 bytes) is tagged by reference: the payload is a NUL byte and
 * a keyed digest of the JID, and the JID itself is remembered here, in two
 * generations of at most LONG_JIDS_PER_GENERATION entries each, so memory
 * stays bounded and the JIDs in use stay known. No real JID starts with NUL,
 * so the two kinds of payload cannot be confused.
 * SPDX-License-Identifier: MIT
 */
#include <stdint.h>
#include <string.h>

#include "cproxy.h"
#include "jat.h"

#define LONG_JIDS_PER_GENERATION 4096
#define REFERENCE_LEN 17	/* NUL + 16 bytes of digest */
/* Three parts of 1023 bytes, '@' and '/'. */
#define JID_MAX (3 * 1023 + 2)

/* Uservalue slots: the long JIDs of this generation and of the previous one. */
enum { LONG_CURRENT = 1, LONG_PREVIOUS = 2 };

struct jat_box {
	struct jat jat;
	lua_Integer long_count;	/* entries in LONG_CURRENT */
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
	struct jat_box *box = lua_newuserdatauv(L, sizeof(*box), 2);

	box->jat.mac = NULL;
	box->long_count = 0;
	luaL_setmetatable(L, CPROXY_JAT_MT);
	luaL_argcheck(L, secret == NULL || secret_len > 0, 1, "empty secret");
	if (jat_init(&box->jat, (const uint8_t *)secret, secret_len,
	    (const uint8_t *)context, context_len) != 0) {
		lua_pushnil(L);
		lua_pushliteral(L, "cannot set up HMAC-SHA-256 (libcrypto)");
		return 2;
	}
	lua_newtable(L);
	lua_setiuservalue(L, -2, LONG_CURRENT);
	lua_newtable(L);
	lua_setiuservalue(L, -2, LONG_PREVIOUS);
	return 1;
}

/* Remembers ref -> jid (both on the stack top: ref, jid), pops both. */
static void
long_store(lua_State *L, struct jat_box *box, int box_index)
{
	if (box->long_count >= LONG_JIDS_PER_GENERATION) {
		lua_getiuservalue(L, box_index, LONG_CURRENT);
		lua_setiuservalue(L, box_index, LONG_PREVIOUS);
		lua_newtable(L);
		lua_setiuservalue(L, box_index, LONG_CURRENT);
		box->long_count = 0;
	}
	lua_getiuservalue(L, box_index, LONG_CURRENT);
	lua_insert(L, -3);
	lua_rawset(L, -3);
	lua_pop(L, 1);
	box->long_count++;
}

/*
 * Looks the reference at the top of the stack up in both generations,
 * moving a hit from the previous one into the current one. Replaces the
 * reference with the JID or nil.
 */
static void
long_lookup(lua_State *L, struct jat_box *box, int box_index)
{
	lua_getiuservalue(L, box_index, LONG_CURRENT);
	lua_pushvalue(L, -2);
	if (lua_rawget(L, -2) != LUA_TNIL) {
		lua_replace(L, -3);
		lua_pop(L, 1);
		return;
	}
	lua_pop(L, 2);
	lua_getiuservalue(L, box_index, LONG_PREVIOUS);
	lua_pushvalue(L, -2);
	if (lua_rawget(L, -2) == LUA_TNIL) {
		lua_replace(L, -3);
		lua_pop(L, 1);
		return;
	}
	/* stack: ref, previous, jid. Storing it again counts against the
	 * current generation, so the two together never hold more than twice
	 * LONG_JIDS_PER_GENERATION. */
	lua_replace(L, -2);
	lua_pushvalue(L, -2);
	lua_pushvalue(L, -2);
	long_store(L, box, box_index);
	lua_replace(L, -2);
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
	char tag[JAT_TAG_MAX];
	uint8_t reference[REFERENCE_LEN];
	size_t tag_len;

	if (len == 0 || jid[0] == '\0' || len > JID_MAX) {
		lua_pushnil(L);
		lua_pushliteral(L, "invalid");
		return 2;
	}
	if (len <= JAT_PAYLOAD_MAX) {
		tag_len = jat_encode(&box->jat, (const uint8_t *)jid, len, tag);
	} else {
		uint8_t buf[1 + JID_MAX];
		uint8_t digest[32];

		buf[0] = '\0';
		memcpy(buf + 1, jid, len);
		if (jat_mac(&box->jat, buf, len + 1, digest) != 0) {
			return crypto_failure(L);
		}
		reference[0] = '\0';
		memcpy(reference + 1, digest, REFERENCE_LEN - 1);
		lua_pushlstring(L, (const char *)reference, REFERENCE_LEN);
		long_lookup(L, box, 1);
		if (lua_isnil(L, -1)) {
			lua_pop(L, 1);
			lua_pushlstring(L, (const char *)reference, REFERENCE_LEN);
			lua_pushvalue(L, 2);
			long_store(L, box, 1);
		} else {
			lua_pop(L, 1);
		}
		tag_len = jat_encode(&box->jat, reference, REFERENCE_LEN, tag);
	}
	if (tag_len == 0) {
		return crypto_failure(L);
	}
	lua_pushlstring(L, tag, tag_len);
	return 1;
}

/* (jat, tag) -> jid | nil, "invalid" | nil, "expired" */
static int
l_decode(lua_State *L)
{
	struct jat_box *box = check_box(L);
	size_t len;
	const char *tag = luaL_checklstring(L, 2, &len);
	uint8_t payload[JAT_PAYLOAD_MAX];
	int n = jat_decode(&box->jat, tag, len, payload);

	if (n < 0 || (payload[0] == '\0' && n != REFERENCE_LEN)) {
		lua_pushnil(L);
		lua_pushliteral(L, "invalid");
		return 2;
	}
	lua_pushlstring(L, (const char *)payload, (size_t)n);
	if (payload[0] != '\0') {
		return 1;
	}
	long_lookup(L, box, 1);
	if (lua_isnil(L, -1)) {
		lua_pushliteral(L, "expired");
		return 2;
	}
	return 1;
}

/* (jat) -> ()   frees the key; idempotent, also __gc and __close */
static int
l_close(lua_State *L)
{
	struct jat_box *box = luaL_checkudata(L, 1, CPROXY_JAT_MT);

	jat_free(&box->jat);
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
	lua_pushinteger(L, JAT_PAYLOAD_MAX);
	lua_setfield(L, -2, "jat_inline_max");
}
