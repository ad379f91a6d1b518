/*
 * JAT (Jabber Address Translation) tags: a JID packed into an XMPP resource
 * that only this component can have produced. Pure C: no Lua, no I/O.
 *
 * A tag is base64url(MAC || payload), without padding, where MAC is
 * HMAC-SHA-256 truncated to JAT_MAC_LEN bytes under a key derived from the
 * secret and a context (the component's address), so that one secret shared
 * by two components gives them different tags. Base64url keeps the resource
 * ASCII, case-preserved and unchanged by resourceprep, whatever the script
 * or direction of the JID inside.
 * SPDX-License-Identifier: MIT
 */
#ifndef CPROXY_JAT_H
#define CPROXY_JAT_H

#include <stddef.h>
#include <stdint.h>

/* RFC 7622: a resourcepart is at most 1023 bytes. */
#define JAT_TAG_MAX 1023
/* 96 bits of MAC: forging one takes about 2^95 guesses. */
#define JAT_MAC_LEN 12
#define JAT_KEY_LEN 32
/* The longest payload whose tag still fits: 1023 base64 chars carry 767 bytes. */
#define JAT_PAYLOAD_MAX ((JAT_TAG_MAX * 6) / 8 - JAT_MAC_LEN)

struct evp_mac_ctx_st;

struct jat {
	struct evp_mac_ctx_st *mac;	/* HMAC-SHA-256 keyed with the derived key */
};

/*
 * Derive the key from secret[0..secret_len) and context. With secret NULL,
 * a random secret is drawn (tags then die with this struct).
 * Returns 0, or -1 when libcrypto fails (the struct then needs no jat_free).
 */
int jat_init(struct jat *j, const uint8_t *secret, size_t secret_len,
	const uint8_t *context, size_t context_len);
void jat_free(struct jat *j);

/* Full HMAC-SHA-256 of data under the derived key. Returns 0 or -1. */
int jat_mac(struct jat *j, const uint8_t *data, size_t len, uint8_t out[32]);

/*
 * Write the tag of payload[0..len) into out (JAT_TAG_MAX bytes, not
 * NUL-terminated). Returns its length, or 0 when len is 0, longer than
 * JAT_PAYLOAD_MAX, or libcrypto fails.
 */
size_t jat_encode(struct jat *j, const uint8_t *payload, size_t len, char *out);

/*
 * Check tag[0..len) and write its payload into out (JAT_PAYLOAD_MAX bytes).
 * Returns the payload length, or -1 for anything this key did not produce:
 * wrong length, a byte outside base64url, non-zero padding bits, a wrong MAC.
 * Only the first JAT_TAG_MAX bytes are ever looked at.
 */
int jat_decode(struct jat *j, const char *tag, size_t len, uint8_t *out);

#endif
