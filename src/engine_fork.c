/*
 * The engine in a forked child process.
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
#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "engine_internal.h"
#include "fd.h"

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
	/*
	 * engine_add reserved this room, but the lost thread may have been
	 * part-way through an update when the process forked.
	 */
	if (engine_make_room(e, e->done_len + 1)) {
		return;	/* the owner never learns of it: its hash stays taken */
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
	/*
	 * The copy pool's buffers held by those relays were left, not freed
	 * (relay.c, unhold): a fork in the middle of the thread's update of the
	 * pool may have listed one twice. The free list is left for the same
	 * reason; the read buffer stays in use.
	 */
	e->buf.held_bytes = 0;
	e->buf.free_list = NULL;
	e->buf.free_bytes = 0;
	e->thread_started = 0;
	e->stopping = 0;
	e->limited = 0;
	fd_close(&e->epfd);
	fd_close(&e->wakefd);
	if (e->done_len > 0) {
		fd_eventfd_signal(e->notifyfd);
	}
	return engine_loop_open(e);
}

int
engine_fork_check(struct engine *e)
{
	if (e->thread_started && e->thread_pid != getpid()) {
		return forget_lost_thread(e);
	}
	return e->epfd < 0 ? EBADF : 0;
}
