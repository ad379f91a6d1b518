/*
 * The relay thread: an edge-triggered epoll loop over the sockets of all
 * active relays (in the manner of Redis' ae.c, reduced to what a relay
 * needs), their turns, bandwidth waits, idle sweep and ends. The owner's
 * side is engine.c; this file runs on the thread alone, except where it
 * takes e->lock.
 *
 * Why a thread of its own: copying gigabytes keeps a core busy. On
 * Prosody's thread that work would delay every stanza; on its own thread
 * the kernel schedules it beside Prosody's loop, which only ever sees one
 * eventfd turn readable when relays finish.
 *
 * Hand-over between threads is a mutex-protected list plus an eventfd in
 * each direction; the hot path (pumping bytes) takes no lock.
 * SPDX-License-Identifier: MIT
 */
#define _GNU_SOURCE
#include <assert.h>
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <sys/types.h>
#include <unistd.h>

#include "bucket.h"
#include "engine_internal.h"
#include "fd.h"

#define MAX_EVENTS 64
/* Bytes one direction may move before other relays get their turn. */
#define PUMP_BUDGET (8u << 20)
#define SWEEP_INTERVAL_MS 1000

void
engine_loop_push(struct engine *e, struct entry *en)
{
	if (en->queued) {
		return;
	}
	en->queued = 1;
	en->run_next = NULL;
	if (e->run_tail) {
		e->run_tail->run_next = en;
	} else {
		e->run_head = en;
	}
	e->run_tail = en;
}

static uint64_t
entry_bytes(const struct entry *en)
{
	return en->relay.dir[0].bytes + en->relay.dir[1].bytes;
}

/* Ends a relay: closes it and publishes its result. */
static void
finish(struct engine *e, struct entry *en, int timed_out)
{
	struct engine_result res;
	int publish;

	for (int side = 0; side < 2; side++) {
		(void)epoll_ctl(e->epfd, EPOLL_CTL_DEL, en->relay.fd[side], NULL);
	}
	if (en->limited_since_us) {
		e->limited--;
	}
	if (timed_out && en->relay.error == 0) {
		/*
		 * An idle relay did not end: reset both sides like a broken one,
		 * so that neither peer takes what it got for the whole stream. A
		 * peer whose reset was lost on the way (it is sent only once)
		 * leaves its relay idle, and ends here.
		 */
		en->relay.error = ETIMEDOUT;
	}
	res.id = en->id;
	res.bytes[0] = en->relay.dir[0].bytes;
	res.bytes[1] = en->relay.dir[1].bytes;
	res.error = timed_out ? ETIMEDOUT : en->relay.error;
	res.failed_side = en->relay.failed_side;
	res.timed_out = timed_out;
	relay_close(&en->relay, &e->buf);
	if (en->prev) {
		en->prev->next = en->next;
	} else {
		e->active = en->next;
	}
	if (en->next) {
		en->next->prev = en->prev;
	}

	pthread_mutex_lock(&e->lock);
	publish = !e->stopping;
	if (publish) {
		assert(e->done_len < e->done_cap);	/* reserved by engine_add */
		e->done[e->done_len++] = res;
	}
	e->stats.active--;
	e->stats.finished++;
	e->stats.bytes += res.bytes[0] + res.bytes[1];
	if (timed_out) {
		e->stats.timed_out++;
	} else if (res.error) {
		e->stats.failed++;
	}
	pthread_mutex_unlock(&e->lock);
	if (publish) {
		fd_eventfd_signal(e->notifyfd);
	}
	free(en);
}

static int
watch(struct engine *e, struct entry *en, int side)
{
	struct epoll_event ev;

	memset(&ev, 0, sizeof(ev));
	ev.events = EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET;
	ev.data.ptr = &en->refs[side];
	return epoll_ctl(e->epfd, EPOLL_CTL_ADD, en->relay.fd[side], &ev) < 0 ? errno : 0;
}

/*
 * Why the relay thread may run nicer than Prosody's: both share the
 * machine's cores, and a thread copying at full speed is never idle. At
 * equal weight a stanza's wake-up competes with it for a core; with a
 * lower weight the scheduler favours Prosody's thread. On Linux,
 * setpriority(PRIO_PROCESS, tid) affects this one thread. Where the
 * scheduler groups Prosody's threads (a cgroup with the cpu controller, or
 * the kernel's autogroup of a session, as a systemd service has), the
 * thread yields to Prosody's own thread, not to the rest of the machine.
 * Best effort: an unprivileged process may raise its nice value but not
 * lower it again.
 */
void
engine_loop_set_priority(struct engine *e)
{
	int value = e->base_nice + e->cfg.nice;

	value = value > 19 ? 19 : value;
	(void)setpriority(PRIO_PROCESS, (id_t)syscall(SYS_gettid), value);
}

/*
 * Takes the relays handed over since the last wake-up, and the owner's
 * requests. Returns stopping.
 */
static int
take_incoming(struct engine *e)
{
	struct entry *list;
	struct relay_buffer old;
	int stopping;

	pthread_mutex_lock(&e->lock);
	list = e->incoming;
	e->incoming = NULL;
	stopping = e->stopping;
	old = engine_control_take(e);
	pthread_mutex_unlock(&e->lock);
	relay_buffer_free(&old);
	while (list) {
		struct entry *en = list;
		list = list->next;
		en->prev = NULL;
		en->next = e->active;
		if (e->active) {
			e->active->prev = en;
		}
		e->active = en;
		en->last_active_ms = now_ms();
		int err = watch(e, en, 0);
		if (!err) {
			err = watch(e, en, 1);
		}
		if (err) {
			en->relay.error = err;
			finish(e, en, 0);
			continue;
		}
		engine_loop_push(e, en);	/* send early bytes, read what is waiting */
	}
	return stopping;
}

/*
 * How much `en` may move this turn: the pump budget, within its bandwidth
 * limits and (one byte past) its size cap. 0: it must wait for bandwidth.
 */
static size_t
turn_budget(struct engine *e, struct entry *en, int64_t now)
{
	size_t budget = PUMP_BUDGET;
	size_t allowed;

	if (en->bucket.rate || e->total.rate) {
		allowed = bucket_allowance(&en->bucket, now);
		if (allowed > 0) {
			size_t total = bucket_allowance(&e->total, now);
			allowed = total < allowed ? total : allowed;
		}
		if (allowed == 0) {
			int64_t wait = bucket_wait_us(&en->bucket, now);
			int64_t wait_total = bucket_wait_us(&e->total, now);
			int64_t at = now + (wait > wait_total ? wait : wait_total);
			if (!en->limited_since_us) {
				en->limited_since_us = now;
				e->limited++;
			}
			if (e->unlimit_at_us == 0 || at < e->unlimit_at_us) {
				e->unlimit_at_us = at;
			}
			return 0;
		}
		budget = allowed < budget ? allowed : budget;
	}
	if (en->max_bytes) {
		uint64_t bytes = entry_bytes(en);
		uint64_t left = bytes <= en->max_bytes ? en->max_bytes - bytes + 1 : 1;
		budget = left < budget ? (size_t)left : budget;
	}
	return budget;
}

/* Gives the relays waiting for bandwidth a turn, once it is due. */
static void
unlimit_due(struct engine *e, int64_t now)
{
	if (e->limited == 0 || now < e->unlimit_at_us) {
		return;
	}
	e->unlimit_at_us = 0;
	for (struct entry *en = e->active; en; en = en->next) {
		if (en->limited_since_us) {
			atomic_fetch_add_explicit(&e->limited_us, (uint64_t)(now - en->limited_since_us),
			    memory_order_relaxed);
			en->limited_since_us = 0;
			e->limited--;
			engine_loop_push(e, en);
		}
	}
}

static void
run_all(struct engine *e)
{
	struct entry *list = e->run_head;
	int64_t now = (e->limited || list) ? now_us() : 0;

	e->run_head = e->run_tail = NULL;
	while (list) {
		struct entry *en = list;
		list = list->run_next;
		en->queued = 0;
		if (en->cancelled) {
			if (en->relay.error == 0) {
				en->relay.error = ECANCELED;
			}
			finish(e, en, 0);
			continue;
		}
		if (en->limited_since_us) {
			continue;	/* its turn comes with unlimit_due() */
		}
		size_t budget = turn_budget(e, en, now);
		if (budget == 0) {
			continue;
		}
		enum relay_status status = relay_pump(&en->relay, &e->buf, budget);
		uint64_t bytes = entry_bytes(en);
		if (bytes != en->counted) {
			uint64_t moved = bytes - en->counted;
			atomic_fetch_add_explicit(&e->relayed, moved, memory_order_relaxed);
			en->counted = bytes;
			bucket_take(&en->bucket, moved);
			bucket_take(&e->total, moved);
		}
		if (en->max_bytes && bytes > en->max_bytes && status != RELAY_FINISHED) {
			en->relay.error = EFBIG;	/* aborts both sides: see relay_close() */
			status = RELAY_FINISHED;
		}
		switch (status) {
		case RELAY_FINISHED:
			finish(e, en, 0);
			break;
		case RELAY_MORE:
			engine_loop_push(e, en);
			break;
		case RELAY_BLOCKED:
			break;
		}
	}
}

static void
sweep_idle(struct engine *e, int64_t now)
{
	struct entry *en = e->active;

	while (en) {
		struct entry *next = en->next;
		uint64_t bytes = entry_bytes(en);
		if (bytes != en->last_bytes) {
			en->last_bytes = bytes;
			en->last_active_ms = now;
		} else if (now - en->last_active_ms >= e->cfg.idle_timeout_ms && !en->queued
		    && !en->limited_since_us) {
			finish(e, en, 1);
		}
		en = next;
	}
}

static void *
engine_main(void *arg)
{
	struct engine *e = arg;
	struct epoll_event events[MAX_EVENTS];
	int64_t next_sweep = now_ms() + SWEEP_INTERVAL_MS;

	/* So that top -H, ps -L and /proc tell the relay from Prosody's loop. */
	(void)pthread_setname_np(pthread_self(), ENGINE_THREAD_NAME);
	engine_loop_set_priority(e);
	for (;;) {
		int timeout = -1;
		if (e->run_head) {
			timeout = 0;
		} else if (e->cfg.idle_timeout_ms > 0) {
			timeout = SWEEP_INTERVAL_MS;
		}
		if (e->limited && timeout != 0) {
			int64_t wait = (e->unlimit_at_us - now_us() + 999) / 1000;
			wait = wait < 0 ? 0 : wait;
			if (timeout < 0 || wait < timeout) {
				timeout = (int)wait;
			}
		}
		int n = epoll_wait(e->epfd, events, MAX_EVENTS, timeout);
		if (n < 0 && errno != EINTR) {
			break;	/* only EBADF/EINVAL: a broken engine, stop */
		}
		for (int i = 0; i < n; i++) {
			struct side_ref *ref = events[i].data.ptr;
			if (ref == NULL) {
				fd_eventfd_clear(e->wakefd);
				if (take_incoming(e)) {
					goto stop;
				}
				continue;
			}
			relay_event(&ref->entry->relay, ref->side, events[i].events);
			engine_loop_push(e, ref->entry);
		}
		if (e->limited) {
			unlimit_due(e, now_us());
		}
		run_all(e);
		if (e->active == NULL) {
			relay_buffer_trim(&e->buf);	/* at rest, one buffer */
		}
		if (e->cfg.idle_timeout_ms > 0) {
			int64_t now = now_ms();
			if (now >= next_sweep) {
				sweep_idle(e, now);
				next_sweep = now + SWEEP_INTERVAL_MS;
			}
		}
	}
stop:
	while (e->active) {
		/* Cut short: reset both peers rather than pass it off as complete. */
		if (e->active->relay.error == 0) {
			e->active->relay.error = ECANCELED;
		}
		finish(e, e->active, 0);
	}
	return NULL;
}

int
engine_loop_open(struct engine *e)
{
	struct epoll_event ev;
	int err;

	e->epfd = epoll_create1(EPOLL_CLOEXEC);
	if (e->epfd < 0) {
		return errno;
	}
	if ((err = fd_eventfd(&e->wakefd))) {
		return err;
	}
	memset(&ev, 0, sizeof(ev));
	ev.events = EPOLLIN;
	ev.data.ptr = NULL;	/* NULL marks the wake-up fd */
	return epoll_ctl(e->epfd, EPOLL_CTL_ADD, e->wakefd, &ev) < 0 ? errno : 0;
}

int
engine_loop_start(struct engine *e)
{
	sigset_t all, old;
	int err;

	/* Signals belong to the host's main thread: block them all here. */
	sigfillset(&all);
	pthread_sigmask(SIG_SETMASK, &all, &old);
	errno = 0;
	e->base_nice = getpriority(PRIO_PROCESS, 0);
	if (errno != 0) {
		e->base_nice = 0;
	}
	err = pthread_create(&e->thread, NULL, engine_main, e);
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	if (err == 0) {
		e->thread_started = 1;
		e->thread_pid = getpid();
	}
	return err;
}
