/*
 * JAT references and tags: HMAC-SHA-256 of the JID truncated to 96 bits,
 * written in base64url. The MAC is libcrypto's. A tag's 16 characters carry
 * exactly 96 bits, so parsing needs no padding rules: any other length or
 * any byte outside the alphabet is refused.
 * SPDX-License-Identifier: MIT
 */
#include <string.h>

#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/params.h>
#include <openssl/rand.h>

#include "jat.h"

static const char b64url[] =
	"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

/* The label keeps these keys apart from any other use of the same secret. */
static const char derive_label[] = "prosody-cproxy jat v2";

static EVP_MAC_CTX *
hmac_new(const uint8_t *key, size_t key_len)
{
	EVP_MAC *mac = EVP_MAC_fetch(NULL, "HMAC", NULL);
	EVP_MAC_CTX *ctx;
	OSSL_PARAM params[2];
	char digest[] = "SHA256";

	if (mac == NULL) {
		return NULL;
	}
	ctx = EVP_MAC_CTX_new(mac);
	EVP_MAC_free(mac);	/* the context holds its own reference */
	if (ctx == NULL) {
		return NULL;
	}
	params[0] = OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST, digest, 0);
	params[1] = OSSL_PARAM_construct_end();
	if (!EVP_MAC_init(ctx, key, key_len, params)) {
		EVP_MAC_CTX_free(ctx);
		return NULL;
	}
	return ctx;
}

/* One HMAC with the context's key; EVP_MAC_init with no key reuses it. */
static int
hmac_run(EVP_MAC_CTX *ctx, const uint8_t *a, size_t a_len,
	const uint8_t *b, size_t b_len, uint8_t out[32])
{
	size_t out_len = 0;

	if (!EVP_MAC_init(ctx, NULL, 0, NULL)
	    || !EVP_MAC_update(ctx, a, a_len)
	    || (b_len > 0 && !EVP_MAC_update(ctx, b, b_len))
	    || !EVP_MAC_final(ctx, out, &out_len, 32)
	    || out_len != 32) {
		return -1;
	}
	return 0;
}

int
jat_init(struct jat *j, const uint8_t *secret, size_t secret_len,
	const uint8_t *context, size_t context_len)
{
	uint8_t random_secret[JAT_KEY_LEN];
	uint8_t label[sizeof(derive_label)];	/* with its NUL, as a separator */
	uint8_t key[32];
	EVP_MAC_CTX *master;
	int rc;

	j->mac = NULL;
	if (secret == NULL) {
		if (RAND_bytes(random_secret, sizeof(random_secret)) != 1) {
			return -1;
		}
		secret = random_secret;
		secret_len = sizeof(random_secret);
	}
	master = hmac_new(secret, secret_len);
	OPENSSL_cleanse(random_secret, sizeof(random_secret));
	if (master == NULL) {
		return -1;
	}
	memcpy(label, derive_label, sizeof(label));
	rc = hmac_run(master, label, sizeof(label), context, context_len, key);
	EVP_MAC_CTX_free(master);
	if (rc == 0) {
		j->mac = hmac_new(key, sizeof(key));
	}
	OPENSSL_cleanse(key, sizeof(key));
	return j->mac != NULL ? 0 : -1;
}

void
jat_free(struct jat *j)
{
	EVP_MAC_CTX_free(j->mac);
	j->mac = NULL;
}

int
jat_jid_ok(const uint8_t *jid, size_t len)
{
	return len > 0 && len <= JAT_JID_MAX && memchr(jid, '\0', len) == NULL;
}

int
jat_ref(struct jat *j, const uint8_t *jid, size_t len, uint8_t ref[JAT_REF_LEN])
{
	uint8_t mac[32];

	if (hmac_run(j->mac, jid, len, NULL, 0, mac) != 0) {
		return -1;
	}
	memcpy(ref, mac, JAT_REF_LEN);
	return 0;
}

void
jat_tag_of(const uint8_t ref[JAT_REF_LEN], char tag[JAT_TAG_LEN])
{
	size_t i, o = 0;

	for (i = 0; i < JAT_REF_LEN; i += 3) {
		uint32_t v = (uint32_t)ref[i] << 16 | (uint32_t)ref[i + 1] << 8 | ref[i + 2];

		tag[o++] = b64url[v >> 18];
		tag[o++] = b64url[(v >> 12) & 63];
		tag[o++] = b64url[(v >> 6) & 63];
		tag[o++] = b64url[v & 63];
	}
}

static int
b64url_value(unsigned char c)
{
	if (c >= 'A' && c <= 'Z') {
		return c - 'A';
	}
	if (c >= 'a' && c <= 'z') {
		return c - 'a' + 26;
	}
	if (c >= '0' && c <= '9') {
		return c - '0' + 52;
	}
	if (c == '-') {
		return 62;
	}
	if (c == '_') {
		return 63;
	}
	return -1;
}

int
jat_ref_of(const char *tag, size_t len, uint8_t ref[JAT_REF_LEN])
{
	size_t i, o = 0;

	if (len != JAT_TAG_LEN) {
		return -1;
	}
	for (i = 0; i < JAT_TAG_LEN; i += 4) {
		uint32_t v = 0;
		int k;

		for (k = 0; k < 4; k++) {
			int c = b64url_value((unsigned char)tag[i + k]);

			if (c < 0) {
				return -1;
			}
			v = v << 6 | (uint32_t)c;
		}
		ref[o++] = (uint8_t)(v >> 16);
		ref[o++] = (uint8_t)(v >> 8);
		ref[o++] = (uint8_t)v;
	}
	return 0;
}
