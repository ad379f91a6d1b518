/*
 * The relay: moves the bytes of one activated bytestream between two
 * sockets, both directions, with half-close and bounded memory.
 * Pure C: no Lua. It does not wait for readiness itself: the engine
 * (engine_loop.c) registers both sockets edge-triggered, passes each event to
 * relay_event(), and calls relay_pump() until it reports RELAY_BLOCKED.
 * SPDX-License-Identifier: MIT
 */
#ifndef CPROXY_RELAY_H
#define CPROXY_RELAY_H

#include <stddef.h>
#include <stdint.h>

enum relay_mode {
	RELAY_COPY,	/* recv into a shared buffer, send; a pump may hold what is unsent */
	RELAY_SPLICE	/* splice(2) through a pipe per direction */
};

enum pump_state {
	PUMP_WANT_READ,	/* waiting for the source to be readable */
	PUMP_WANT_WRITE,	/* waiting for the destination to be writable */
	PUMP_DONE	/* EOF relayed (or the direction died) */
};

/* One direction: bytes from fd[src] to fd[1 - src]. */
struct pump {
	enum pump_state state;
	int eof;	/* the source returned EOF */
	uint8_t *early;	/* bytes read before activation, sent first */
	size_t early_len, early_off;
	uint8_t *held;	/* copy mode: a read's unsent bytes, in a buffer of the pool */
	size_t held_size, held_off, held_len;
	int pipe[2];	/* splice mode only, else -1 */
	size_t in_pipe;	/* bytes spliced into the pipe, not yet out */
	int ready;	/* the awaited readiness was reported: run it */
	uint64_t bytes;	/* delivered to the destination */
};

struct relay {
	int fd[2];	/* [0] target, [1] initiator, as XEP-0065 names them */
	struct pump dir[2];	/* dir[i] reads fd[i], writes fd[1 - i] */
	int error;	/* errno of the first failure, 0 if none */
	int failed_side;	/* which fd failed, -1 if none */
	enum relay_mode mode;
};

/*
 * Copy mode's memory, one per engine thread. Each read goes into `data`. A
 * pump whose destination takes only part of a read keeps that buffer, as
 * its `held` bytes, and the thread goes on with a free one: the unsent
 * bytes are not copied again. Buffers are held only while `held_bytes`
 * stays within `max_held_bytes`; past it, a read only peeks and drops what
 * was sent (MSG_TRUNC), so unsent bytes wait in the kernel, at more CPU
 * per byte. Drained buffers wait on a free list until no relay runs, so
 * that a busy thread does not fault in fresh pages for every partial send.
 * Held and free buffers together stay within max_held_bytes: the thread's
 * copy memory is at most size + max_held_bytes, and one relay holds at
 * most 2 * size (so nothing is ever held when max_held_bytes < size).
 * After a runtime change of either, buffers held before it count against
 * the old figures until they drain, and are then freed.
 */
struct relay_buffer {
	uint8_t *data;	/* where the next read goes: never NULL while in use */
	size_t size;
	void *free_list;	/* drained buffers of `size`, linked through their first bytes */
	size_t free_bytes;	/* in the free list */
	size_t held_bytes;	/* in buffers that pumps hold */
	size_t max_held_bytes;
};

/* A copy buffer of `size` bytes, or NULL; and its release. */
uint8_t *relay_buffer_alloc(size_t size);
void relay_buffer_release(void *p, size_t size);

/* Allocates b->data. Returns 0 or ENOMEM. */
int relay_buffer_init(struct relay_buffer *b, size_t size, size_t max_held_bytes);

/* Frees b->data and the free list (buffers pumps hold are theirs to free). */
void relay_buffer_free(struct relay_buffer *b);

/* Frees the free list: the thread calls it when no relay runs. */
void relay_buffer_trim(struct relay_buffer *b);

/*
 * Set up a relay over two connected sockets (made non-blocking here).
 * early[i] are bytes already read from fd[i]; they are copied.
 * Returns 0, or an errno value (the fds are then left open).
 */
int relay_init(struct relay *r, int fd0, int fd1, const uint8_t *early0,
    size_t len0, const uint8_t *early1, size_t len1, enum relay_mode mode);

enum relay_status {
	RELAY_BLOCKED,	/* every live direction waits for an event */
	RELAY_MORE,	/* a direction used up its budget: pump again soon */
	RELAY_FINISHED	/* both directions done, or a socket failed */
};

/*
 * Record epoll events seen on fd[side]: wakes the directions they concern.
 * A pending socket error fails the relay at once (the next relay_pump()
 * reports RELAY_FINISHED).
 */
void relay_event(struct relay *r, int side, uint32_t events);

/*
 * Run the woken directions until each would block, is done, or has moved
 * `budget` bytes (fairness between relays sharing a thread).
 */
enum relay_status relay_pump(struct relay *r, struct relay_buffer *buf,
    size_t budget);

/*
 * Close both sockets. After a clean end, bytes already queued still reach
 * the peers, then FIN. After an error (r->error set) both are reset: a
 * peer must not take a truncated stream for a complete one.
 */
void relay_close(struct relay *r, struct relay_buffer *buf);

/*
 * Release what the relay holds in this process only: close its fds with no
 * shutdown(), so that another process sharing the sockets is unaffected.
 */
void relay_release(struct relay *r);

#endif
