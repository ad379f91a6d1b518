/*
 * cproxy.core.sha1(data) -> lowercase hex. For the XEP-0114 handshake
 * (SHA-1 of stream id and secret), on libcrypto as Prosody's own hashes.
 * SPDX-License-Identifier: MIT
 */
#include <errno.h>

#include <openssl/evp.h>

#include "cproxy.h"

/* (data) -> hex | nil, message, errno */
static int
l_sha1(lua_State *L)
{
	static const char hex[] = "0123456789abcdef";
	size_t len;
	const char *data = luaL_checklstring(L, 1, &len);
	unsigned char md[EVP_MAX_MD_SIZE];
	unsigned int md_len = 0;
	char out[2 * EVP_MAX_MD_SIZE];

	if (!EVP_Digest(data, len, md, &md_len, EVP_sha1(), NULL)) {
		return errors_push_message(L, "libcrypto failed to compute SHA-1", EIO);
	}
	for (unsigned int i = 0; i < md_len; i++) {
		out[2 * i] = hex[md[i] >> 4];
		out[2 * i + 1] = hex[md[i] & 15];
	}
	lua_pushlstring(L, out, 2 * (size_t)md_len);
	return 1;
}

void
digest_lua_open(lua_State *L)
{
	lua_pushcfunction(L, l_sha1);
	lua_setfield(L, -2, "sha1");
}
