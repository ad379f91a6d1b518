/*
 * JAT (Jabber Address Translation) tags: a short, unforgeable name for a
 * JID, used as an XMPP resource. Pure C: no Lua, no I/O.
 *
 * A JID's reference is HMAC-SHA-256 of the JID, truncated to JAT_REF_LEN
 * bytes, under a key derived from the secret and a context (the component's
 * address), so that one secret shared by two components gives them
 * different references. Its tag is the reference in base64url: JAT_TAG_LEN
 * characters, ASCII, unchanged by resourceprep, whatever the JID. Turning a
 * tag back into its JID is a lookup among the JIDs this key has tagged
 * (see jat_store.c): without the key nobody can name a JID that was not.
 * SPDX-License-Identifier: MIT
 */
#ifndef CPROXY_JAT_H
#define CPROXY_JAT_H

#include <stddef.h>
#include <stdint.h>

/* 96 bits: guessing a reference in use takes about 2^96 / (JIDs held) tries. */
#define JAT_REF_LEN 12
/* Base64url of JAT_REF_LEN bytes: 96 bits are exactly 16 characters. */
#define JAT_TAG_LEN 16
#define JAT_KEY_LEN 32
/* The longest JID: three parts of 1023 bytes, '@' and '/'. */
#define JAT_JID_MAX (3 * 1023 + 2)

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

/*
 * Whether jid[0..len) may be tagged: 1 to JAT_JID_MAX bytes, no NUL (no JID
 * holds one; refusing it keeps one JID per string).
 */
int jat_jid_ok(const uint8_t *jid, size_t len);

/* The reference of jid[0..len). Returns 0, or -1 when libcrypto fails. */
int jat_ref(struct jat *j, const uint8_t *jid, size_t len, uint8_t ref[JAT_REF_LEN]);

/* The tag of a reference: JAT_TAG_LEN characters, not NUL-terminated. */
void jat_tag_of(const uint8_t ref[JAT_REF_LEN], char tag[JAT_TAG_LEN]);

/*
 * The reference a tag names. Returns 0, or -1 unless tag[0..len) is exactly
 * JAT_TAG_LEN base64url characters (each such string is the tag of exactly
 * one reference, so a tag has no other spelling). Reads at most
 * JAT_TAG_LEN bytes.
 */
int jat_ref_of(const char *tag, size_t len, uint8_t ref[JAT_REF_LEN]);

#endif
