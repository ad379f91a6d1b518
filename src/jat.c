/*
 * JAT tags: base64url(HMAC-SHA-256(key, payload)[0..12) || payload).
 * Decoding is strict (canonical base64url only) so that no two strings
 * decode to the same tag: every altered byte is rejected, not tolerated.
 * The MAC is libcrypto's; the comparison is constant-time.
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
static const char derive_label[] = "prosody-cproxy jat v1";

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
jat_mac(struct jat *j, const uint8_t *data, size_t len, uint8_t out[32])
{
	return hmac_run(j->mac, data, len, NULL, 0, out);
}

/* Unpadded base64url of in[0..len) into out; returns the length written. */
static size_t
b64url_encode(const uint8_t *in, size_t len, char *out)
{
	size_t i = 0, o = 0;

	for (; i + 3 <= len; i += 3) {
		uint32_t v = (uint32_t)in[i] << 16 | (uint32_t)in[i + 1] << 8 | in[i + 2];

		out[o++] = b64url[v >> 18];
		out[o++] = b64url[(v >> 12) & 63];
		out[o++] = b64url[(v >> 6) & 63];
		out[o++] = b64url[v & 63];
	}
	if (len - i == 1) {
		out[o++] = b64url[in[i] >> 2];
		out[o++] = b64url[(in[i] & 3) << 4];
	} else if (len - i == 2) {
		uint32_t v = (uint32_t)in[i] << 8 | in[i + 1];

		out[o++] = b64url[v >> 10];
		out[o++] = b64url[(v >> 4) & 63];
		out[o++] = b64url[(v & 15) << 2];
	}
	return o;
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

/*
 * Strict decode: rejects any byte outside the alphabet, a length of 1 mod 4,
 * and a last character whose unused low bits are not zero (otherwise four
 * different last characters would decode to the same bytes).
 * Returns the length written to out, or -1.
 */
static int
b64url_decode(const char *in, size_t len, uint8_t *out)
{
	uint32_t acc = 0;
	int bits = 0;
	size_t i, o = 0;

	if (len % 4 == 1) {
		return -1;
	}
	for (i = 0; i < len; i++) {
		int v = b64url_value((unsigned char)in[i]);

		if (v < 0) {
			return -1;
		}
		acc = (acc << 6 | (uint32_t)v) & 0xffffff;
		bits += 6;
		if (bits >= 8) {
			bits -= 8;
			out[o++] = (uint8_t)(acc >> bits);
		}
	}
	if (bits > 0 && (acc & ((1u << bits) - 1)) != 0) {
		return -1;
	}
	return (int)o;
}

size_t
jat_encode(struct jat *j, const uint8_t *payload, size_t len, char *out)
{
	uint8_t buf[JAT_MAC_LEN + JAT_PAYLOAD_MAX];
	uint8_t mac[32];

	if (len == 0 || len > JAT_PAYLOAD_MAX || jat_mac(j, payload, len, mac) != 0) {
		return 0;
	}
	memcpy(buf, mac, JAT_MAC_LEN);
	memcpy(buf + JAT_MAC_LEN, payload, len);
	return b64url_encode(buf, JAT_MAC_LEN + len, out);
}

int
jat_decode(struct jat *j, const char *tag, size_t len, uint8_t *out)
{
	/* 1023 base64 chars decode to at most 767 bytes. */
	uint8_t buf[(JAT_TAG_MAX * 6) / 8 + 1];
	uint8_t mac[32];
	int n;
	size_t payload_len;

	if (len > JAT_TAG_MAX) {
		return -1;
	}
	n = b64url_decode(tag, len, buf);
	if (n <= JAT_MAC_LEN) {
		return -1;	/* also rejects an empty payload */
	}
	payload_len = (size_t)n - JAT_MAC_LEN;
	if (jat_mac(j, buf + JAT_MAC_LEN, payload_len, mac) != 0
	    || CRYPTO_memcmp(mac, buf, JAT_MAC_LEN) != 0) {
		return -1;
	}
	memcpy(out, buf + JAT_MAC_LEN, payload_len);
	return (int)payload_len;
}
