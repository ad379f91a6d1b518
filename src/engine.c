/*
 * Relay engine, the owner's side: creating and freeing the engine, handing
 * relays over to its thread, reaping their results, reading its counters.
 * The thread's loop is engine_loop.c; settings, listing and cancelling
 * are engine_control.c; a forked child's engine is engine_fork.c. The
 * thread starts with the first relay (see engine_fork.c for why).
 * SPDX-License-Identifier: MIT
 */
#define _GNU_SOURCE
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include "bucket.h"
#include "engine_internal.h"
#include "fd.h"

struct engine *
engine_new(const struct engine_config *cfg, int *err)
{
	struct engine *e = calloc(1, sizeof(*e));

	if (e == NULL) {
		*err = ENOMEM;
		return NULL;
	}
	e->cfg = *cfg;
	e->epfd = e->wakefd = e->notifyfd = -1;
	bucket_init(&e->total, cfg->total_rate_limit, now_us());
	pthread_mutex_init(&e->lock, NULL);
	pthread_cond_init(&e->list_cond, NULL);
	if ((*err = relay_buffer_init(&e->buf,
	    cfg->buffer_size ? cfg->buffer_size : ENGINE_BUFFER_SIZE_DEFAULT,
	    cfg->relay_memory))) {
		goto fail;
	}
	if ((*err = fd_eventfd(&e->notifyfd))) {
		goto fail;
	}
	if ((*err = engine_loop_open(e))) {
		goto fail;
	}
	return e;
fail:
	engine_free(e);
	return NULL;
}

int
engine_notify_fd(const struct engine *e)
{
	return e->notifyfd;
}

static void
apply_sockbuf(int fd, int size)
{
	/* Best effort: the kernel clamps to its maxima. */
	(void)setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &size, sizeof(size));
	(void)setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &size, sizeof(size));
}

int
engine_make_room(struct engine *e, size_t need)
{
	if (need > e->done_cap) {
		size_t cap = e->done_cap ? e->done_cap * 2 : 16;
		if (cap < need) {
			cap = need;
		}
		struct engine_result *grown = realloc(e->done, cap * sizeof(*grown));
		if (grown == NULL) {
			return ENOMEM;
		}
		e->done = grown;
		e->done_cap = cap;
	}
	return 0;
}

/*
 * Makes room in e->done for one more relay's result, and promises it
 * (e->reserved). Called with the lock held. Returns 0 or ENOMEM.
 */
static int
reserve_result(struct engine *e)
{
	int err = engine_make_room(e, e->done_len + (size_t)e->stats.active + e->reserved + 1);

	if (err == 0) {
		e->reserved++;
	}
	return err;
}

int
engine_add(struct engine *e, uint64_t id, int fd0, int fd1,
    const uint8_t *early0, size_t len0, const uint8_t *early1, size_t len1)
{
	struct entry *en = NULL;
	int err;

	if ((err = engine_fork_check(e))) {
		goto fail;
	}
	if (!e->thread_started && (err = engine_loop_start(e))) {
		goto fail;
	}
	en = calloc(1, sizeof(*en));
	if (en == NULL) {
		err = ENOMEM;
		goto fail;
	}
	/*
	 * Reserve before relay_init: undoing a set-up relay (relay_close)
	 * would use the relay thread's scratch buffer, not this thread's.
	 */
	pthread_mutex_lock(&e->lock);
	err = reserve_result(e);
	pthread_mutex_unlock(&e->lock);
	if (err) {
		goto fail;
	}
	err = relay_init(&en->relay, fd0, fd1, early0, len0, early1, len1, e->cfg.mode);
	if (err) {
		pthread_mutex_lock(&e->lock);
		e->reserved--;
		pthread_mutex_unlock(&e->lock);
		goto fail;
	}
	if (e->cfg.sockbuf > 0) {
		apply_sockbuf(fd0, e->cfg.sockbuf);
		apply_sockbuf(fd1, e->cfg.sockbuf);
	}
	en->id = id;
	bucket_init(&en->bucket, e->cfg.rate_limit, now_us());
	en->max_bytes = e->cfg.max_bytes;
	en->refs[0].entry = en->refs[1].entry = en;
	en->refs[0].side = 0;
	en->refs[1].side = 1;
	pthread_mutex_lock(&e->lock);
	en->next = e->incoming;
	e->incoming = en;
	e->reserved--;	/* now counted in stats.active */
	e->stats.started++;
	e->stats.active++;
	pthread_mutex_unlock(&e->lock);
	fd_eventfd_signal(e->wakefd);
	return 0;
fail:
	free(en);
	fd_close(&fd0);
	fd_close(&fd1);
	return err;
}

size_t
engine_reap(struct engine *e, struct engine_result *out, size_t max)
{
	size_t n;

	(void)engine_fork_check(e);	/* a failure shows at the next engine_add */
	fd_eventfd_clear(e->notifyfd);
	pthread_mutex_lock(&e->lock);
	n = e->done_len < max ? e->done_len : max;
	/* e->done is NULL until a result is stored: memcpy(NULL) is UB even for 0. */
	if (n > 0) {
		memcpy(out, e->done, n * sizeof(*out));
		memmove(e->done, e->done + n, (e->done_len - n) * sizeof(*out));
		e->done_len -= n;
	}
	if (e->done_len > 0) {
		fd_eventfd_signal(e->notifyfd);	/* more to take: stay readable */
	}
	pthread_mutex_unlock(&e->lock);
	return n;
}

void
engine_get_stats(struct engine *e, struct engine_stats *st)
{
	(void)engine_fork_check(e);
	pthread_mutex_lock(&e->lock);
	*st = e->stats;
	st->relayed = atomic_load_explicit(&e->relayed, memory_order_relaxed);
	st->limited_us = atomic_load_explicit(&e->limited_us, memory_order_relaxed);
	pthread_mutex_unlock(&e->lock);
}

void
engine_free(struct engine *e)
{
	if (e == NULL) {
		return;
	}
	(void)engine_fork_check(e);	/* in a child: no thread here to join */
	if (e->thread_started) {
		pthread_mutex_lock(&e->lock);
		e->stopping = 1;
		pthread_mutex_unlock(&e->lock);
		fd_eventfd_signal(e->wakefd);
		pthread_join(e->thread, NULL);
	}
	/* Relays handed over but never picked up by the thread. */
	while (e->incoming) {
		struct entry *en = e->incoming;
		e->incoming = en->next;
		relay_close(&en->relay, &e->buf);
		free(en);
	}
	fd_close(&e->epfd);
	fd_close(&e->wakefd);
	fd_close(&e->notifyfd);
	free(e->done);
	relay_buffer_free(&e->buf);
	relay_buffer_release(e->next_buf.data, e->next_buf.size);
	pthread_cond_destroy(&e->list_cond);
	pthread_mutex_destroy(&e->lock);
	free(e);
}
