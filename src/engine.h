/*
 * The relay engine: one thread with one epoll set that runs every
 * activated bytestream of a proxy65 instance. Pure C: no Lua.
 * The owner hands over socket pairs with engine_add() and learns of
 * finished relays by watching engine_notify_fd() and calling engine_reap().
 * All state lives in the engine object: no globals, so two instances (or a
 * reloaded module) never share anything.
 * SPDX-License-Identifier: MIT
 */
#ifndef CPROXY_ENGINE_H
#define CPROXY_ENGINE_H

#include <stddef.h>
#include <stdint.h>

#include "relay.h"

/* The copy buffer's size when the config gives none: one read moves this. */
#define ENGINE_BUFFER_SIZE_DEFAULT (4u << 20)
/*
 * What copy mode may hold of bytes read and not yet sent, in buffers of
 * buffer_size (relay.h): 16 of the default size, 8 streams' worth.
 */
#define ENGINE_RELAY_MEMORY_DEFAULT ((size_t)64 << 20)

/* The relay thread's name, as ps -L and /proc/PID/task/TID/comm show it. */
#define ENGINE_THREAD_NAME "cproxy-relay"

struct engine_config {
	size_t buffer_size;	/* copy-mode scratch buffer, shared by all relays; 0: the default */
	size_t relay_memory;	/* copy mode: buffers relays may hold for unsent bytes
				 * (relay.h); 0: none. engine{} defaults it to
				 * ENGINE_RELAY_MEMORY_DEFAULT */
	enum relay_mode mode;
	int idle_timeout_ms;	/* 0: relays never time out */
	int sockbuf;	/* SO_SNDBUF/SO_RCVBUF to set, 0: leave to the kernel */
	uint64_t rate_limit;	/* bytes/s of each relay, both ways; 0: none */
	uint64_t total_rate_limit;	/* bytes/s of all relays together; 0: none */
	uint64_t max_bytes;	/* a relay moving more is aborted; 0: no cap */
	int nice;	/* the relay thread runs this much nicer than its process */
};

struct engine_result {
	uint64_t id;
	uint64_t bytes[2];	/* delivered from fd[0] and from fd[1] */
	int error;	/* errno, 0 on a clean end */
	int failed_side;	/* -1 if none */
	int timed_out;
};

struct engine_stats {
	uint64_t started, finished, failed, timed_out, active;
	uint64_t bytes;	/* delivered by finished relays */
	uint64_t relayed;	/* delivered so far, by running relays too */
	uint64_t limited_us;	/* time relays spent waiting for a bandwidth limit */
};

struct engine;

/* Returns NULL with *err set to an errno value on failure. */
struct engine *engine_new(const struct engine_config *cfg, int *err);

/*
 * Change the settings for what comes next: mode, socket buffers, the rate
 * limit and the size cap apply to relays added from now on; the idle
 * timeout, the total rate limit, the copy buffer, its relay memory and the
 * thread's nice value to all relays, from the thread's next turn. Returns 0 or an errno
 * value.
 */
int engine_configure(struct engine *e, const struct engine_config *cfg);

/* Readable (eventfd) when engine_reap() has results. */
int engine_notify_fd(const struct engine *e);

/*
 * Hand over two connected sockets. The engine owns them from here on,
 * even on failure (they are then closed). Returns 0 or an errno value.
 */
int engine_add(struct engine *e, uint64_t id, int fd0, int fd1,
    const uint8_t *early0, size_t len0, const uint8_t *early1, size_t len1);

/* A running relay, as engine_list() sees it. */
struct engine_relay_info {
	uint64_t id;
	uint64_t bytes[2];	/* delivered from fd[0] and from fd[1] so far */
};

/*
 * Copies up to max running relays to out, as the thread sees them, and
 * sets *n. Waits for the thread (it answers between two turns, within
 * milliseconds), at most a second. Returns 0 or an errno value (ETIMEDOUT).
 */
int engine_list(struct engine *e, struct engine_relay_info *out, size_t max, size_t *n);

/*
 * Asks the thread to end relay `id` as cancelled (both peers are reset);
 * an id that no relay has any more is ignored. Returns 0, or EAGAIN when
 * too many cancellations are waiting.
 */
int engine_cancel(struct engine *e, uint64_t id);

/* Copies up to max finished results to out; returns how many. */
size_t engine_reap(struct engine *e, struct engine_result *out, size_t max);

void engine_get_stats(struct engine *e, struct engine_stats *st);

/* Stops the thread and closes every socket it still holds. */
void engine_free(struct engine *e);

#endif
