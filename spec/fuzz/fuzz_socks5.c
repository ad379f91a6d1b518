/*
 * libFuzzer target for the SOCKS5 handshake parser (src/socks5.c), on its
 * own. Each input is fed whole, byte by byte and in pseudo-random chunks;
 * the three runs must agree on the bytes consumed, the state, the reason,
 * the hash and every reply byte. Also checked: the parser stops at DONE
 * or FAILED and consumes everything before, and a handshake never takes
 * more than a greeting of 257 bytes plus a 47-byte request.
 * SPDX-License-Identifier: MIT
 */
#include <assert.h>
#include <stdlib.h>
#include <string.h>

#include "../../src/socks5.h"
#include "split.h"

/* Greeting: VER NMETHODS and up to 255 methods; request: 47 bytes. */
#define HANDSHAKE_MAX (2 + 255 + 47)

struct outcome {
	struct socks5 s;
	size_t used;
	uint8_t sent[2 * SOCKS5_REPLY_MAX];	/* every reply, in order */
	size_t sent_len;
};

/* Takes the queued replies as a caller would: send, then clear. */
static void
drain(struct outcome *o)
{
	assert(o->s.reply_len <= SOCKS5_REPLY_MAX);
	assert(o->s.reply_len <= sizeof(o->sent) - o->sent_len);
	memcpy(o->sent + o->sent_len, o->s.reply, o->s.reply_len);
	o->sent_len += o->s.reply_len;
	o->s.reply_len = 0;
}

static void
run(struct outcome *o, enum split_mode mode, uint64_t seed, const uint8_t *data, size_t len)
{
	uint64_t state = seed;
	size_t at = 0;

	memset(o, 0, sizeof(*o));
	socks5_init(&o->s);
	while (at < len) {
		size_t piece = split_piece(mode, &state, len - at);
		size_t used;

		if (piece == 0) {	/* an empty read must change nothing */
			assert(socks5_feed(&o->s, data + at, 0) == 0);
			continue;
		}
		used = socks5_feed(&o->s, data + at, piece);
		assert(used <= piece);
		at += used;
		drain(o);
		if (o->s.state == SOCKS5_DONE || o->s.state == SOCKS5_FAILED) {
			break;
		}
		/* Still in the handshake: it must have taken every byte. */
		assert(used == piece);
	}
	o->used = at;
	assert(o->used <= HANDSHAKE_MAX);
	if (o->s.state == SOCKS5_DONE) {
		for (size_t i = 0; i < SOCKS5_HASH_LEN; i++) {
			char c = o->s.hash[i];
			assert((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'));
		}
		assert(o->s.hash[SOCKS5_HASH_LEN] == '\0');
		assert(o->s.reason == SOCKS5_OK);
		/* Answer it as the seed says: accept, or refuse either way. */
		if (seed & 2) {
			socks5_accept(&o->s);
			assert(o->s.state == SOCKS5_DONE);
		} else {
			socks5_refuse(&o->s, (seed & 4) ? SOCKS5_REFUSED : SOCKS5_OVER_LIMIT);
			assert(o->s.state == SOCKS5_FAILED);
		}
		drain(o);
	}
	if (o->s.state == SOCKS5_FAILED) {
		assert(o->s.reason != SOCKS5_OK);
		assert(strcmp(socks5_reason_name(o->s.reason), "unknown") != 0);
	} else if (o->s.state != SOCKS5_DONE) {
		assert(o->used == len);
	}
	/* Further bytes are the caller's: a finished parser takes none. */
	if (o->s.state == SOCKS5_DONE || o->s.state == SOCKS5_FAILED) {
		static const uint8_t more[4] = { 5, 1, 0, 3 };
		assert(socks5_feed(&o->s, more, sizeof(more)) == 0);
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t len);

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t len)
{
	static struct outcome o[SPLIT_MODES];
	uint64_t seed = split_seed(data, len);

	for (int m = 0; m < SPLIT_MODES; m++) {
		run(&o[m], (enum split_mode)m, seed, data, len);
	}
	for (int m = 1; m < SPLIT_MODES; m++) {
		if (o[m].used != o[0].used || o[m].s.state != o[0].s.state
		    || o[m].s.reason != o[0].s.reason
		    || strcmp(o[m].s.hash, o[0].s.hash) != 0
		    || o[m].sent_len != o[0].sent_len
		    || memcmp(o[m].sent, o[0].sent, o[0].sent_len) != 0) {
			abort();	/* the split changed the outcome */
		}
	}
	return 0;
}
