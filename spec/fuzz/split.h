/*
 * Shared by the fuzz targets: a seed taken from the input itself and a
 * small PRNG, so that the "random" chunking of an input is the same each
 * time it is replayed. Not a library: each target includes it once.
 * SPDX-License-Identifier: MIT
 */
#ifndef CPROXY_FUZZ_SPLIT_H
#define CPROXY_FUZZ_SPLIT_H

#include <stddef.h>
#include <stdint.h>

/* FNV-1a of the input: the seed of its chunking. */
static uint64_t
split_seed(const uint8_t *data, size_t len)
{
	uint64_t h = 0xcbf29ce484222325u;

	for (size_t i = 0; i < len; i++) {
		h = (h ^ data[i]) * 0x100000001b3u;
	}
	return h | 1;
}

/* xorshift64: the next chunk length, 1..max. */
static size_t
split_next(uint64_t *state, size_t max)
{
	uint64_t x = *state;

	x ^= x << 13;
	x ^= x >> 7;
	x ^= x << 17;
	*state = x;
	return max <= 1 ? 1 : 1 + (size_t)(x % max);
}

/* The three ways each target feeds an input: whole, byte by byte, chunks. */
enum split_mode { SPLIT_WHOLE, SPLIT_BYTES, SPLIT_RANDOM, SPLIT_MODES };

/* The length of the next piece of `left` bytes in `mode`. */
static size_t
split_piece(enum split_mode mode, uint64_t *state, size_t left)
{
	switch (mode) {
	case SPLIT_WHOLE:
		return left;
	case SPLIT_BYTES:
		return left > 0 ? 1 : 0;
	default:
		break;
	}
	/* Mostly short pieces, now and then a long one. */
	return split_next(state, (*state & 7) == 0 ? left : 16) % (left + 1);
}

#endif
