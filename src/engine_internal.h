/*
 * The engine's insides, shared by its files and by nothing else (the
 * bindings use engine.h): engine.c, the owner's entry points;
 * engine_loop.c, the relay thread; engine_control.c, the requests the
 * owner makes of a running thread; engine_fork.c, the engine found in a
 * forked child.
 * SPDX-License-Identifier: MIT
 */
#ifndef CPROXY_ENGINE_INTERNAL_H
#define CPROXY_ENGINE_INTERNAL_H

#include <pthread.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>
#include <time.h>

#include "bucket.h"
#include "engine.h"
#include "relay.h"

#define CANCEL_MAX 64	/* cancellations waiting at once */

struct entry;

/* What an epoll event names: one side of one relay. */
struct side_ref {
	struct entry *entry;
	int side;
};

struct entry {
	struct relay relay;
	uint64_t id;
	struct side_ref refs[2];
	int64_t last_active_ms;
	uint64_t last_bytes;
	uint64_t counted;	/* bytes already added to engine.relayed */
	struct bucket bucket;	/* its own bandwidth limit */
	uint64_t max_bytes;	/* its size cap, 0: none */
	int64_t limited_since_us;	/* waiting for bandwidth since, or 0 */
	int cancelled;	/* engine_cancel() asked for its end */
	int queued;	/* on the run list */
	struct entry *run_next;
	struct entry *prev, *next;	/* active list (thread) or incoming list */
};

struct engine {
	struct engine_config cfg;
	int epfd, wakefd, notifyfd;
	pthread_t thread;
	int thread_started;
	pid_t thread_pid;	/* the process the thread runs in */

	pthread_mutex_t lock;	/* guards the fields down to `stats` */
	struct entry *incoming;
	struct relay_buffer next_buf;	/* from engine_configure, for the thread */
	int next_idle_timeout_ms;
	uint64_t next_total_rate;
	int next_nice;
	size_t next_relay_memory;
	int reconfigure;	/* the fields above are waiting to be taken */
	uint64_t cancel[CANCEL_MAX];	/* relays engine_cancel() asked to end */
	size_t n_cancel;
	/* engine_list(): the owner asks, the thread fills and signals. */
	struct engine_relay_info *list_out;
	size_t list_max, list_n;
	int list_wanted, list_done;
	pthread_cond_t list_cond;
	/*
	 * Results not yet reaped. done_cap >= done_len + stats.active +
	 * reserved at all times: each relay has room for its result from
	 * engine_add on, so the relay thread never allocates.
	 */
	struct engine_result *done;
	size_t done_len, done_cap;
	size_t reserved;	/* room promised to relays still being set up */
	int stopping;
	struct engine_stats stats;

	/* Bytes relayed so far, by running relays too; read without the lock. */
	_Atomic uint64_t relayed;
	_Atomic uint64_t limited_us;	/* see engine_stats */

	/* Owned by the engine thread. */
	struct entry *active;
	struct entry *run_head, *run_tail;
	struct relay_buffer buf;
	struct bucket total;	/* the limit of all relays together */
	int base_nice;	/* the process's nice value when the thread started */
	int limited;	/* relays waiting for bandwidth */
	int64_t unlimit_at_us;	/* when to give them another turn */
};

static inline int64_t
now_us(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

static inline int64_t
now_ms(void)
{
	return now_us() / 1000;
}

/* engine.c: room in e->done for `need` results. Returns 0 or ENOMEM. */
int engine_make_room(struct engine *e, size_t need);

/* engine_loop.c: the thread's epoll set and wake-up eventfd. 0 or an errno. */
int engine_loop_open(struct engine *e);
/* engine_loop.c: starts the relay thread. Returns 0 or an errno value. */
int engine_loop_start(struct engine *e);
/* engine_loop.c, on the thread: gives `en` a turn. */
void engine_loop_push(struct engine *e, struct entry *en);
/* engine_loop.c, on the thread: applies e->cfg.nice to the calling thread. */
void engine_loop_set_priority(struct engine *e);

/*
 * engine_control.c, on the thread with e->lock held: applies the owner's
 * waiting requests. Returns the copy buffer it replaced ({ NULL, 0 } if
 * none), for the caller to free once unlocked.
 */
struct relay_buffer engine_control_take(struct engine *e);

/*
 * engine_fork.c: called first by every entry point of the owner's thread.
 * Returns 0, or an errno value when the engine cannot run (EBADF).
 */
int engine_fork_check(struct engine *e);

#endif
