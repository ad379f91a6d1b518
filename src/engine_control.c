/*
 * What the owner asks of a running relay thread: new settings, the list
 * of running relays, a relay's end. Both sides of each request are here:
 * the owner posts it under e->lock and wakes the thread, and the thread
 * takes it between two of its turns (engine_control_take). Adding relays
 * and reaping results are engine.c's.
 * SPDX-License-Identifier: MIT
 */
#define _GNU_SOURCE
#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <time.h>

#include "bucket.h"
#include "engine_internal.h"
#include "fd.h"

struct relay_buffer
engine_control_take(struct engine *e)
{
	struct relay_buffer old = { 0 };

	if (e->reconfigure) {
		if (e->next_relay_memory < e->buf.max_held_bytes) {
			relay_buffer_trim(&e->buf);	/* held ones go as they drain */
		}
		e->buf.max_held_bytes = e->next_relay_memory;
		e->cfg.idle_timeout_ms = e->next_idle_timeout_ms;
		bucket_set_rate(&e->total, e->next_total_rate, now_us());
		if (e->next_nice != e->cfg.nice) {
			e->cfg.nice = e->next_nice;
			engine_loop_set_priority(e);
		}
		if (e->next_buf.data) {
			/* Held buffers of the old size are freed as they drain. */
			old.data = e->buf.data;
			old.size = e->buf.size;
			old.free_list = e->buf.free_list;
			e->buf.data = e->next_buf.data;
			e->buf.size = e->next_buf.size;
			e->buf.free_list = NULL;
			e->next_buf.data = NULL;
		}
		e->reconfigure = 0;
	}
	for (size_t i = 0; i < e->n_cancel; i++) {
		for (struct entry *en = e->active; en; en = en->next) {
			if (en->id == e->cancel[i]) {
				en->cancelled = 1;
				engine_loop_push(e, en);	/* its turn (engine_loop.c) ends it */
			}
		}
	}
	e->n_cancel = 0;
	if (e->list_wanted) {
		size_t n = 0;
		for (struct entry *en = e->active; en && n < e->list_max; en = en->next) {
			e->list_out[n].id = en->id;
			e->list_out[n].bytes[0] = en->relay.dir[0].bytes;
			e->list_out[n].bytes[1] = en->relay.dir[1].bytes;
			n++;
		}
		e->list_n = n;
		e->list_wanted = 0;
		e->list_done = 1;
		pthread_cond_broadcast(&e->list_cond);
	}
	return old;
}

int
engine_configure(struct engine *e, const struct engine_config *cfg)
{
	struct relay_buffer buf = { 0 };
	int err;

	if ((err = engine_fork_check(e))) {
		return err;
	}
	if (cfg->buffer_size != e->cfg.buffer_size) {
		buf.size = cfg->buffer_size;
		buf.data = relay_buffer_alloc(buf.size);
		if (buf.data == NULL) {
			return ENOMEM;
		}
	}
	/* Read by engine_add only, on this (the owner's) thread. */
	e->cfg.mode = cfg->mode;
	e->cfg.sockbuf = cfg->sockbuf;
	e->cfg.buffer_size = cfg->buffer_size;
	e->cfg.relay_memory = cfg->relay_memory;
	e->cfg.rate_limit = cfg->rate_limit;
	e->cfg.max_bytes = cfg->max_bytes;
	if (!e->thread_started) {
		e->cfg.idle_timeout_ms = cfg->idle_timeout_ms;
		e->cfg.nice = cfg->nice;
		bucket_set_rate(&e->total, cfg->total_rate_limit, now_us());
		e->buf.max_held_bytes = cfg->relay_memory;
		if (buf.data) {
			relay_buffer_free(&e->buf);
			e->buf.data = buf.data;
			e->buf.size = buf.size;
		}
		return 0;
	}
	/* The thread's own settings change between two of its turns. */
	pthread_mutex_lock(&e->lock);
	relay_buffer_release(e->next_buf.data, e->next_buf.size);
	e->next_buf = buf;
	e->next_idle_timeout_ms = cfg->idle_timeout_ms;
	e->next_total_rate = cfg->total_rate_limit;
	e->next_nice = cfg->nice;
	e->next_relay_memory = cfg->relay_memory;
	e->reconfigure = 1;
	pthread_mutex_unlock(&e->lock);
	fd_eventfd_signal(e->wakefd);
	return 0;
}

int
engine_list(struct engine *e, struct engine_relay_info *out, size_t max, size_t *n)
{
	struct timespec deadline;
	int err;

	*n = 0;
	if ((err = engine_fork_check(e))) {
		return err;
	}
	if (!e->thread_started) {
		return 0;	/* no relay ever ran */
	}
	clock_gettime(CLOCK_REALTIME, &deadline);
	deadline.tv_sec += 1;
	pthread_mutex_lock(&e->lock);
	e->list_out = out;
	e->list_max = max;
	e->list_done = 0;
	e->list_wanted = 1;
	fd_eventfd_signal(e->wakefd);
	while (!e->list_done && err == 0) {
		err = pthread_cond_timedwait(&e->list_cond, &e->lock, &deadline);
	}
	if (e->list_done) {
		*n = e->list_n;
		err = 0;
	}
	e->list_wanted = 0;	/* the thread must not write to out any more */
	e->list_out = NULL;
	pthread_mutex_unlock(&e->lock);
	return err;
}

int
engine_cancel(struct engine *e, uint64_t id)
{
	int err;

	if ((err = engine_fork_check(e))) {
		return err;
	}
	pthread_mutex_lock(&e->lock);
	if (e->n_cancel == CANCEL_MAX) {
		err = EAGAIN;
	} else {
		e->cancel[e->n_cancel++] = id;
	}
	pthread_mutex_unlock(&e->lock);
	if (err == 0) {
		fd_eventfd_signal(e->wakefd);
	}
	return err;
}
