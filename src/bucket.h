/*
 * A token bucket: bytes per second, for proxy65's bandwidth limits. Pure C,
 * no clock of its own: the caller passes the time, in microseconds.
 * Its credit may go below zero: both directions of a relay may use one
 * turn's allowance, and that debt is paid by waiting before the next.
 * SPDX-License-Identifier: MIT
 */
#ifndef CPROXY_BUCKET_H
#define CPROXY_BUCKET_H

#include <stddef.h>
#include <stdint.h>

struct bucket {
	uint64_t rate;	/* bytes per second; 0: no limit */
	int64_t credit;	/* bytes times 10^6: accrues rate per microsecond */
	int64_t burst;	/* the most bytes it saves up */
	int64_t min_turn;	/* the least it hands out */
	int64_t last_us;	/* when credit was last added */
};

/* A bucket of `rate` bytes/s (0: unlimited), starting full. */
void bucket_init(struct bucket *b, uint64_t rate, int64_t now_us);

/* Changes the rate, keeping what is saved up (within the new burst). */
void bucket_set_rate(struct bucket *b, uint64_t rate, int64_t now_us);

/* Bytes that may move at now_us: 0 until a worthwhile turn has accrued. */
size_t bucket_allowance(struct bucket *b, int64_t now_us);

/* Takes n bytes that moved. */
void bucket_take(struct bucket *b, uint64_t n);

/* Microseconds from now_us until bucket_allowance() is positive again. */
int64_t bucket_wait_us(const struct bucket *b, int64_t now_us);

#endif
