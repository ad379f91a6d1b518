/*
 * Token bucket (see bucket.h). Credit is kept in byte-microseconds, so no
 * rounding ever adds or loses bandwidth. The burst is a tenth of a
 * second's worth: small enough that the rate holds within a few percent
 * over any second. A relay gets a turn only once a chunk worth a wake-up
 * has accrued, rather than spinning on a few bytes at a time.
 * SPDX-License-Identifier: MIT
 */
#include <stdint.h>

#include "bucket.h"

#define US 1000000LL
#define BURST_DIVISOR 10	/* burst = rate / 10: 100 ms worth */
#define MIN_BURST 1500	/* about a packet, for very low rates */
#define MIN_TURN 16384	/* the least a turn moves, unless the burst is less */
/* Past this, elapsed * rate could overflow 64 bits (rates up to 2^34). */
#define MAX_ELAPSED_US (60 * US)

static void
set_rate(struct bucket *b, uint64_t rate)
{
	uint64_t burst = rate / BURST_DIVISOR;

	b->rate = rate;
	b->burst = burst < MIN_BURST ? MIN_BURST : (int64_t)burst;
	b->min_turn = b->burst < MIN_TURN ? b->burst : MIN_TURN;
}

void
bucket_init(struct bucket *b, uint64_t rate, int64_t now_us)
{
	set_rate(b, rate);
	b->credit = b->burst * US;
	b->last_us = now_us;
}

void
bucket_set_rate(struct bucket *b, uint64_t rate, int64_t now_us)
{
	(void)bucket_allowance(b, now_us);	/* settle what accrued at the old rate */
	set_rate(b, rate);
	if (b->credit > b->burst * US) {
		b->credit = b->burst * US;
	}
}

size_t
bucket_allowance(struct bucket *b, int64_t now_us)
{
	int64_t elapsed = now_us - b->last_us;

	if (b->rate == 0) {
		return SIZE_MAX;
	}
	if (elapsed > MAX_ELAPSED_US) {
		b->credit = b->burst * US;	/* more than any debt a turn leaves */
	} else if (elapsed > 0) {
		b->credit += elapsed * (int64_t)b->rate;
		if (b->credit > b->burst * US) {
			b->credit = b->burst * US;
		}
	}
	b->last_us = now_us > b->last_us ? now_us : b->last_us;
	return b->credit >= b->min_turn * US ? (size_t)(b->credit / US) : 0;
}

void
bucket_take(struct bucket *b, uint64_t n)
{
	if (b->rate == 0) {
		return;
	}
	/* A turn moves at most its budget: the debt stays far from overflow. */
	b->credit -= (int64_t)n * US;
}

int64_t
bucket_wait_us(const struct bucket *b, int64_t now_us)
{
	int64_t need = b->min_turn * US - b->credit;

	if (b->rate == 0 || need <= 0) {
		return 0;
	}
	int64_t at = b->last_us + (need + (int64_t)b->rate - 1) / (int64_t)b->rate;
	return at > now_us ? at - now_us : 0;
}
