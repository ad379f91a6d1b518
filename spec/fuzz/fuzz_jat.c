/*
 * libFuzzer target for JAT tags (src/jat.c), on libcrypto alone. The
 * lookup from references to JIDs lives in Lua (jat_store.c); here a small
 * table of minted JIDs stands in for it. Properties:
 * - an arbitrary string parses as a tag only if it is 16 base64url
 *   characters, and then it is the one spelling of its reference;
 * - a tag names a minted JID only if it is exactly the tag minted for it;
 * - every JID jat_jid_ok accepts, up to JAT_JID_MAX bytes, round-trips;
 * - another context gives another tag.
 * The input is split at '\n' into pieces, each tried both as a JID and as
 * a tag; a piece repeated up to JAT_JID_MAX bytes is tried as a JID too.
 * SPDX-License-Identifier: MIT
 */
#include <stdlib.h>
#include <string.h>

#include "../../src/jat.h"

#define MINTED_MAX 64

static const char alphabet[] =
	"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

struct minted {
	uint8_t ref[JAT_REF_LEN];
	char tag[JAT_TAG_LEN];
	const uint8_t *jid;
	size_t len;
};

static struct jat key, other;
static struct minted minted[MINTED_MAX];
static int n_minted;

#define CHECK(cond) do { if (!(cond)) { abort(); } } while (0)

static const struct minted *
lookup(const uint8_t ref[JAT_REF_LEN])
{
	for (int i = 0; i < n_minted; i++) {
		if (memcmp(minted[i].ref, ref, JAT_REF_LEN) == 0) {
			return &minted[i];
		}
	}
	return NULL;
}

/* Mints jid (already checked) and tests its round trip. */
static void
mint(const uint8_t *jid, size_t len, int keep)
{
	uint8_t ref[JAT_REF_LEN], back[JAT_REF_LEN], ref2[JAT_REF_LEN];
	char tag[JAT_TAG_LEN], tag2[JAT_TAG_LEN];

	CHECK(jat_ref(&key, jid, len, ref) == 0);
	jat_tag_of(ref, tag);
	for (size_t i = 0; i < JAT_TAG_LEN; i++) {
		CHECK(tag[i] != '\0' && strchr(alphabet, tag[i]) != NULL);
	}
	CHECK(jat_ref_of(tag, JAT_TAG_LEN, back) == 0);
	CHECK(memcmp(ref, back, JAT_REF_LEN) == 0);
	/* Deterministic under one key; different under another context. */
	CHECK(jat_ref(&key, jid, len, ref2) == 0 && memcmp(ref, ref2, JAT_REF_LEN) == 0);
	CHECK(jat_ref(&other, jid, len, ref2) == 0);
	jat_tag_of(ref2, tag2);
	CHECK(memcmp(tag, tag2, JAT_TAG_LEN) != 0);
	if (keep && n_minted < MINTED_MAX && lookup(ref) == NULL) {
		memcpy(minted[n_minted].ref, ref, JAT_REF_LEN);
		memcpy(minted[n_minted].tag, tag, JAT_TAG_LEN);
		minted[n_minted].jid = jid;
		minted[n_minted].len = len;
		n_minted++;
	}
}

/* Decodes s[0..len) as a tag, as jat_lua.c's decode does. */
static void
decode(const char *s, size_t len)
{
	uint8_t ref[JAT_REF_LEN];
	char again[JAT_TAG_LEN];
	int valid = len == JAT_TAG_LEN;
	const struct minted *m;

	for (size_t i = 0; valid && i < len; i++) {
		valid = s[i] != '\0' && strchr(alphabet, s[i]) != NULL;
	}
	if (jat_ref_of(s, len, ref) != 0) {
		CHECK(!valid);
		return;
	}
	CHECK(valid);
	jat_tag_of(ref, again);
	CHECK(memcmp(again, s, JAT_TAG_LEN) == 0);	/* one spelling only */
	m = lookup(ref);
	if (m != NULL) {
		CHECK(memcmp(m->tag, s, JAT_TAG_LEN) == 0);
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t len);

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t len)
{
	static const uint8_t secret[] = "fuzzing secret";
	static const uint8_t ctx1[] = "proxy.example", ctx2[] = "other.example";
	static uint8_t long_jid[JAT_JID_MAX + 1];
	size_t start = 0;

	if (key.mac == NULL) {
		CHECK(jat_init(&key, secret, sizeof(secret) - 1, ctx1, sizeof(ctx1) - 1) == 0);
		CHECK(jat_init(&other, secret, sizeof(secret) - 1, ctx2, sizeof(ctx2) - 1) == 0);
	}
	n_minted = 0;
	/* Even pieces become JIDs (minted), all of them are decoded. */
	for (int pass = 0; pass < 2; pass++) {
		int index = 0;

		start = 0;
		for (size_t i = 0; i <= len; i++) {
			const uint8_t *piece = data + start;
			size_t n = i - start;

			if (i < len && data[i] != '\n') {
				continue;
			}
			if (pass == 0 && index % 2 == 0 && jat_jid_ok(piece, n)) {
				mint(piece, n, 1);
			} else if (pass == 0 && index % 2 == 0) {
				CHECK(n == 0 || n > JAT_JID_MAX || memchr(piece, '\0', n) != NULL);
			}
			if (pass == 1) {
				decode((const char *)piece, n);
			}
			index++;
			start = i + 1;
		}
	}
	/* Minted tags decode to their own JIDs. */
	for (int i = 0; i < n_minted; i++) {
		uint8_t ref[JAT_REF_LEN];

		CHECK(jat_ref_of(minted[i].tag, JAT_TAG_LEN, ref) == 0);
		CHECK(lookup(ref) == &minted[i]);
	}
	/* The input repeated up to the limit and one past it. */
	if (len > 0 && memchr(data, '\0', len) == NULL) {
		for (size_t i = 0; i < sizeof(long_jid); i++) {
			long_jid[i] = data[i % len];
		}
		CHECK(jat_jid_ok(long_jid, JAT_JID_MAX));
		CHECK(!jat_jid_ok(long_jid, JAT_JID_MAX + 1));
		mint(long_jid, JAT_JID_MAX, 0);
		mint(long_jid, 1 + data[0] % JAT_JID_MAX, 0);
	}
	return 0;
}
