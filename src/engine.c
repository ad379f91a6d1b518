/*
 * Relay engine: a thread running an edge-triggered epoll loop over the
 * sockets of all active relays (in the manner of Redis' ae.c, reduced to
 * what a relay needs).
 *
 * Why a thread of its own: copying gigabytes keeps a core busy. On
 * Prosody's thread that work would delay every stanza; on its own thread
 * the kernel schedules it beside Prosody's loop, which only ever sees one
 * eventfd turn readable when relays finish.
 *
 * Hand-over between threads is a mutex-protected list plus an eventfd in
 * each direction; the hot path (pumping bytes) takes no lock.
 *
 * Why the thread starts with the first relay, not with the engine: Prosody
 * loads its modules, then daemonizes (prosodyctl start, init scripts and
 * `daemonize = true` run `prosody -D`; mod_posix forks at server-started).
 * Threads do not survive fork(), so a thread started at load would be
 * missing in the daemon. Every entry point checks the process id, and an
 * engine that finds itself in a child process without its thread forgets
 * the relays that thread held (closing only this process's copies of their
 * fds) and starts anew.
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
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/types.h>
#include <time.h>
#include <unistd.h>

#include "bucket.h"
#include "engine.h"
#include "fd.h"

#define MAX_EVENTS 64
/* Bytes one direction may move before other relays get their turn. */
#define PUMP_BUDGET (8u << 20)
#define SWEEP_INTERVAL_MS 1000
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

static int64_t
now_us(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

static int64_t
now_ms(void)
{
	return now_us() / 1000;
}

static void
signal_fd(int fd)
{
	uint64_t one = 1;

	/* An eventfd only fails to count when it would overflow: ignore. */
	while (write(fd, &one, sizeof(one)) < 0 && errno == EINTR) {
	}
}

static void
clear_fd(int fd)
{
	uint64_t count;

	while (read(fd, &count, sizeof(count)) < 0 && errno == EINTR) {
	}
}

static void
run_push(struct engine *e, struct entry *en)
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
		signal_fd(e->notifyfd);
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
static void
set_priority(struct engine *e)
{
	int value = e->base_nice + e->cfg.nice;

	value = value > 19 ? 19 : value;
	(void)setpriority(PRIO_PROCESS, (id_t)syscall(SYS_gettid), value);
}

/* Takes the relays handed over since the last wake-up. Returns stopping. */
static int
take_incoming(struct engine *e)
{
	struct entry *list;
	int stopping;

	struct relay_buffer old = { NULL, 0 };

	pthread_mutex_lock(&e->lock);
	list = e->incoming;
	e->incoming = NULL;
	stopping = e->stopping;
	if (e->reconfigure) {
		e->cfg.idle_timeout_ms = e->next_idle_timeout_ms;
		bucket_set_rate(&e->total, e->next_total_rate, now_us());
		if (e->next_nice != e->cfg.nice) {
			e->cfg.nice = e->next_nice;
			set_priority(e);
		}
		if (e->next_buf.data) {
			old = e->buf;
			e->buf = e->next_buf;
			e->next_buf.data = NULL;
		}
		e->reconfigure = 0;
	}
	for (size_t i = 0; i < e->n_cancel; i++) {
		for (struct entry *en = e->active; en; en = en->next) {
			if (en->id == e->cancel[i]) {
				en->cancelled = 1;
				run_push(e, en);	/* run_all() ends it */
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
	pthread_mutex_unlock(&e->lock);
	free(old.data);
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
		run_push(e, en);	/* send early bytes, read what is waiting */
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
			run_push(e, en);
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
			run_push(e, en);
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

	set_priority(e);
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
				clear_fd(e->wakefd);
				if (take_incoming(e)) {
					goto stop;
				}
				continue;
			}
			relay_event(&ref->entry->relay, ref->side, events[i].events);
			run_push(e, ref->entry);
		}
		if (e->limited) {
			unlimit_due(e, now_us());
		}
		run_all(e);
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

/* The thread's epoll set and its wake-up eventfd. Returns 0 or an errno. */
static int
open_loop(struct engine *e)
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

static int
start_thread(struct engine *e)
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

/* Publishes that the relay of `en` was given up; the caller frees en. */
static void
publish_cancelled(struct engine *e, const struct entry *en)
{
	struct engine_result res;

	memset(&res, 0, sizeof(res));
	res.id = en->id;
	res.bytes[0] = en->relay.dir[0].bytes;
	res.bytes[1] = en->relay.dir[1].bytes;
	res.error = ECANCELED;
	res.failed_side = -1;
	if (e->done_len == e->done_cap) {
		size_t cap = e->done_cap ? e->done_cap * 2 : 16;
		struct engine_result *grown = realloc(e->done, cap * sizeof(*grown));
		if (grown == NULL) {
			return;	/* the owner never learns of it: its hash stays taken */
		}
		e->done = grown;
		e->done_cap = cap;
	}
	e->done[e->done_len++] = res;
}

/*
 * In a child process the engine is a copy whose thread does not exist.
 * The relays it ran belong to the parent: close this process's copies of
 * their fds (without shutdown(), which would end the parent's streams),
 * report them as cancelled, and set up a loop of this process's own.
 * The lock is re-initialised: the lost thread may have held it at fork().
 * Called by the owner's thread only, so nothing runs concurrently here.
 */
static int
forget_lost_thread(struct engine *e)
{
	struct entry *lists[2] = { e->active, e->incoming };

	pthread_mutex_init(&e->lock, NULL);
	pthread_cond_init(&e->list_cond, NULL);
	e->n_cancel = 0;
	e->list_wanted = 0;
	e->active = e->incoming = NULL;
	e->run_head = e->run_tail = NULL;
	for (int i = 0; i < 2; i++) {
		while (lists[i]) {
			struct entry *en = lists[i];
			lists[i] = en->next;
			publish_cancelled(e, en);
			relay_release(&en->relay);
			free(en);
			e->stats.active--;
			e->stats.finished++;
			e->stats.failed++;
		}
	}
	e->thread_started = 0;
	e->stopping = 0;
	e->limited = 0;
	fd_close(&e->epfd);
	fd_close(&e->wakefd);
	if (e->done_len > 0) {
		signal_fd(e->notifyfd);
	}
	return open_loop(e);
}

/* Called first by every entry point that the owner's thread uses. */
static int
check_process(struct engine *e)
{
	if (e->thread_started && e->thread_pid != getpid()) {
		return forget_lost_thread(e);
	}
	return e->epfd < 0 ? EBADF : 0;
}

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
	e->buf.size = cfg->buffer_size ? cfg->buffer_size : (4u << 20);
	e->buf.data = malloc(e->buf.size);
	if (e->buf.data == NULL) {
		*err = ENOMEM;
		goto fail;
	}
	if ((*err = fd_eventfd(&e->notifyfd))) {
		goto fail;
	}
	if ((*err = open_loop(e))) {
		goto fail;
	}
	return e;
fail:
	engine_free(e);
	return NULL;
}

int
engine_configure(struct engine *e, const struct engine_config *cfg)
{
	struct relay_buffer buf = { NULL, 0 };
	int err;

	if ((err = check_process(e))) {
		return err;
	}
	if (cfg->buffer_size != e->cfg.buffer_size) {
		buf.size = cfg->buffer_size;
		buf.data = malloc(buf.size);
		if (buf.data == NULL) {
			return ENOMEM;
		}
	}
	/* Read by engine_add only, on this (the owner's) thread. */
	e->cfg.mode = cfg->mode;
	e->cfg.sockbuf = cfg->sockbuf;
	e->cfg.buffer_size = cfg->buffer_size;
	e->cfg.rate_limit = cfg->rate_limit;
	e->cfg.max_bytes = cfg->max_bytes;
	if (!e->thread_started) {
		e->cfg.idle_timeout_ms = cfg->idle_timeout_ms;
		e->cfg.nice = cfg->nice;
		bucket_set_rate(&e->total, cfg->total_rate_limit, now_us());
		if (buf.data) {
			free(e->buf.data);
			e->buf = buf;
		}
		return 0;
	}
	/* The thread's own settings change between two of its turns. */
	pthread_mutex_lock(&e->lock);
	free(e->next_buf.data);
	e->next_buf = buf;
	e->next_idle_timeout_ms = cfg->idle_timeout_ms;
	e->next_total_rate = cfg->total_rate_limit;
	e->next_nice = cfg->nice;
	e->reconfigure = 1;
	pthread_mutex_unlock(&e->lock);
	signal_fd(e->wakefd);
	return 0;
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

/*
 * Makes room in e->done for one more relay's result, and promises it
 * (e->reserved). Called with the lock held. Returns 0 or ENOMEM.
 */
static int
reserve_result(struct engine *e)
{
	size_t need = e->done_len + (size_t)e->stats.active + e->reserved + 1;

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
	e->reserved++;
	return 0;
}

int
engine_add(struct engine *e, uint64_t id, int fd0, int fd1,
    const uint8_t *early0, size_t len0, const uint8_t *early1, size_t len1)
{
	struct entry *en = NULL;
	int err;

	if ((err = check_process(e))) {
		goto fail;
	}
	if (!e->thread_started && (err = start_thread(e))) {
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
	signal_fd(e->wakefd);
	return 0;
fail:
	free(en);
	fd_close(&fd0);
	fd_close(&fd1);
	return err;
}

int
engine_list(struct engine *e, struct engine_relay_info *out, size_t max, size_t *n)
{
	struct timespec deadline;
	int err;

	*n = 0;
	if ((err = check_process(e))) {
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
	signal_fd(e->wakefd);
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

	if ((err = check_process(e))) {
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
		signal_fd(e->wakefd);
	}
	return err;
}

size_t
engine_reap(struct engine *e, struct engine_result *out, size_t max)
{
	size_t n;

	(void)check_process(e);	/* a failure shows at the next engine_add */
	clear_fd(e->notifyfd);
	pthread_mutex_lock(&e->lock);
	n = e->done_len < max ? e->done_len : max;
	/* e->done is NULL until a result is stored: memcpy(NULL) is UB even for 0. */
	if (n > 0) {
		memcpy(out, e->done, n * sizeof(*out));
		memmove(e->done, e->done + n, (e->done_len - n) * sizeof(*out));
		e->done_len -= n;
	}
	if (e->done_len > 0) {
		signal_fd(e->notifyfd);	/* more to take: stay readable */
	}
	pthread_mutex_unlock(&e->lock);
	return n;
}

void
engine_get_stats(struct engine *e, struct engine_stats *st)
{
	(void)check_process(e);
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
	if (e->thread_started && e->thread_pid != getpid()) {
		(void)forget_lost_thread(e);	/* no thread here to join */
	}
	if (e->thread_started) {
		pthread_mutex_lock(&e->lock);
		e->stopping = 1;
		pthread_mutex_unlock(&e->lock);
		signal_fd(e->wakefd);
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
	free(e->buf.data);
	free(e->next_buf.data);
	pthread_cond_destroy(&e->list_cond);
	pthread_mutex_destroy(&e->lock);
	free(e);
}
