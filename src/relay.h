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
	RELAY_COPY,	/* recv(MSG_PEEK) into a shared buffer, send, then discard */
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

/* Shared scratch space for copy mode: one per engine thread. */
struct relay_buffer {
	uint8_t *data;
	size_t size;
};

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
