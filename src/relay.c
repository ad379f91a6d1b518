/*
 * The relay of one bytestream: two pumps, one per direction.
 *
 * Copy mode reads the source into a buffer shared by every relay of a
 * thread and sends what the destination takes. When it takes only part,
 * the pump keeps that buffer with the rest (no second copy) until the
 * destination is writable again, and reads nothing more meanwhile, so TCP's
 * flow control still pushes back on the sender. Held buffers have a cap
 * per thread (struct relay_buffer); past it, a read only peeks and then
 * drops what was sent (MSG_TRUNC), leaving unsent bytes in the kernel.
 * Measured on one stream, peeking costs about a third more CPU per byte.
 * Splice mode moves pages through a pipe per direction (zero copy); the
 * pipe bounds what is in flight.
 *
 * EOF on a source: the bytes already taken are delivered, then the
 * destination gets shutdown(SHUT_WR). A relay ends when both directions
 * have ended, or at the first socket error, such as a reset of either
 * side. A clean end closes each socket with FIN after its queued bytes;
 * an error resets both, so the surviving peer does not take a truncated
 * stream for a complete one.
 * SPDX-License-Identifier: MIT
 */
#define _GNU_SOURCE
#include <assert.h>
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <unistd.h>

#include "fd.h"
#include "relay.h"

#define PIPE_SIZE (1 << 20)

static void
pump_init(struct pump *p)
{
	memset(p, 0, sizeof(*p));
	p->state = PUMP_WANT_READ;
	p->ready = 1;	/* bytes may have arrived before activation */
	p->pipe[0] = p->pipe[1] = -1;
}

/*
 * Copy buffers are mapped, not malloc()ed: the relay thread's malloc arena
 * would keep freed megabytes mapped, so a busy hour would leave the pool's
 * high-water mark in the process's RSS for good.
 */
uint8_t *
relay_buffer_alloc(size_t size)
{
	void *p = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);

	return p == MAP_FAILED ? NULL : p;
}

void
relay_buffer_release(void *p, size_t size)
{
	if (p != NULL) {
		(void)munmap(p, size);
	}
}

int
relay_buffer_init(struct relay_buffer *b, size_t size, size_t max_held_bytes)
{
	memset(b, 0, sizeof(*b));
	b->size = size;
	b->max_held_bytes = max_held_bytes;
	b->data = relay_buffer_alloc(size);
	return b->data ? 0 : ENOMEM;
}

void
relay_buffer_trim(struct relay_buffer *b)
{
	while (b->free_list) {
		void *next = *(void **)b->free_list;
		relay_buffer_release(b->free_list, b->size);
		b->free_list = next;
	}
	b->free_bytes = 0;
}

void
relay_buffer_free(struct relay_buffer *b)
{
	relay_buffer_trim(b);
	relay_buffer_release(b->data, b->size);
	b->data = NULL;
}

/*
 * Whether a read may be kept by its pump if the destination takes only
 * part: within the cap, and with a free buffer to read into next.
 */
static int
can_hold(struct relay_buffer *b)
{
	if (b->held_bytes + b->size > b->max_held_bytes) {
		return 0;
	}
	if (b->free_list == NULL && (b->free_list = relay_buffer_alloc(b->size)) != NULL) {
		*(void **)b->free_list = NULL;
		b->free_bytes = b->size;
	}
	return b->free_list != NULL;
}

/* The pump keeps b->data, with bytes [off, len) unsent; needs can_hold(). */
static void
hold(struct pump *p, struct relay_buffer *b, size_t off, size_t len)
{
	p->held = b->data;
	p->held_size = b->size;
	p->held_off = off;
	p->held_len = len;
	b->held_bytes += b->size;
	b->data = b->free_list;
	b->free_list = *(void **)b->data;
	b->free_bytes -= b->size;
}

/*
 * Gives a drained (or abandoned) held buffer back to the pool, which keeps
 * it while within its cap. b is NULL in a forked child (relay_release):
 * there the buffer is left, not freed, since a fork in the middle of
 * hold() or unhold() may have left it in the pool as well.
 */
static void
unhold(struct pump *p, struct relay_buffer *b)
{
	if (p->held == NULL) {
		return;
	}
	if (b != NULL) {
		b->held_bytes -= p->held_size;
		/* Not one of a size from before a resize, nor past a lowered cap. */
		if (p->held_size == b->size
		    && b->held_bytes + b->free_bytes + b->size <= b->max_held_bytes) {
			*(void **)p->held = b->free_list;
			b->free_list = p->held;
			b->free_bytes += b->size;
		} else {
			relay_buffer_release(p->held, p->held_size);
		}
	}
	p->held = NULL;
	p->held_size = p->held_off = p->held_len = 0;
}

static void
pump_free(struct pump *p, struct relay_buffer *b)
{
	free(p->early);
	p->early = NULL;
	unhold(p, b);
	fd_close(&p->pipe[0]);
	fd_close(&p->pipe[1]);
}

static int
copy_early(struct pump *p, const uint8_t *bytes, size_t len)
{
	if (len == 0) {
		return 0;
	}
	p->early = malloc(len);
	if (p->early == NULL) {
		return ENOMEM;
	}
	memcpy(p->early, bytes, len);
	p->early_len = len;
	return 0;
}

/* Splice mode's pipes, at full size. Returns 0 when they can't be had. */
static int
make_pipes(struct relay *r)
{
	for (int d = 0; d < 2; d++) {
		if (fd_pipe(r->dir[d].pipe) != 0
		    || fcntl(r->dir[d].pipe[0], F_SETPIPE_SZ, PIPE_SIZE) < 0) {
			fd_close(&r->dir[0].pipe[0]);
			fd_close(&r->dir[0].pipe[1]);
			fd_close(&r->dir[1].pipe[0]);
			fd_close(&r->dir[1].pipe[1]);
			return 0;
		}
	}
	return 1;
}

int
relay_init(struct relay *r, int fd0, int fd1, const uint8_t *early0,
    size_t len0, const uint8_t *early1, size_t len1, enum relay_mode mode)
{
	int err;

	memset(r, 0, sizeof(*r));
	r->fd[0] = fd0;
	r->fd[1] = fd1;
	r->failed_side = -1;
	r->mode = mode;
	pump_init(&r->dir[0]);
	pump_init(&r->dir[1]);
	if ((err = fd_set_nonblocking(fd0)) || (err = fd_set_nonblocking(fd1))
	    || (err = copy_early(&r->dir[0], early0, len0))
	    || (err = copy_early(&r->dir[1], early1, len1))) {
		goto undo;
	}
	if (mode == RELAY_SPLICE && !make_pipes(r)) {
		/*
		 * Past the per-user pipe quota (fs.pipe-user-pages-soft) the
		 * kernel refuses large pipes, and tiny ones relay slowly: this
		 * relay copies instead.
		 */
		r->mode = RELAY_COPY;
	}
	return 0;
undo:
	pump_free(&r->dir[0], NULL);
	pump_free(&r->dir[1], NULL);
	return err;
}

static enum relay_status
fail(struct relay *r, int side, int err)
{
	if (r->error == 0) {
		r->error = err ? err : EIO;
		r->failed_side = side;
	}
	return RELAY_FINISHED;
}

/*
 * Sends [*off, len) of bytes to fd, as much as it takes. Returns 1 once
 * all is out, else 0 with *err set (EAGAIN: the destination is full).
 */
static int
send_from(int fd, const uint8_t *bytes, size_t *off, size_t len, struct pump *p,
    size_t *moved, int *err)
{
	while (*off < len) {
		ssize_t n = send(fd, bytes + *off, len - *off, MSG_NOSIGNAL | MSG_DONTWAIT);
		if (n < 0) {
			if (errno == EINTR) {
				continue;
			}
			*err = errno;
			return 0;
		}
		*off += (size_t)n;
		p->bytes += (uint64_t)n;
		*moved += (size_t)n;
	}
	return 1;
}

/*
 * Sends what the pump already has, early bytes first, then what it holds;
 * they count against the turn's budget in *moved, as reads do. Returns 1
 * when all of it is out.
 */
static int
send_pending(struct relay *r, struct pump *p, int dst, struct relay_buffer *buf,
    size_t *moved, int *err)
{
	if (p->early) {
		if (!send_from(r->fd[dst], p->early, &p->early_off, p->early_len, p, moved, err)) {
			return 0;
		}
		free(p->early);
		p->early = NULL;
		p->early_len = p->early_off = 0;
	}
	if (p->held) {
		if (!send_from(r->fd[dst], p->held, &p->held_off, p->held_len, p, moved, err)) {
			return 0;
		}
		unhold(p, buf);
	}
	return 1;
}

/* Sends buf[0..len) to fd, as much as it takes. Returns bytes sent or -1. */
static ssize_t
send_some(int fd, const uint8_t *buf, size_t len)
{
	size_t sent = 0;

	while (sent < len) {
		ssize_t n = send(fd, buf + sent, len - sent, MSG_NOSIGNAL | MSG_DONTWAIT);
		if (n < 0) {
			if (errno == EINTR) {
				continue;
			}
			if (errno == EAGAIN || errno == EWOULDBLOCK) {
				break;
			}
			return -1;
		}
		sent += (size_t)n;
	}
	return (ssize_t)sent;
}

/*
 * How a step of a pump ended. A step counts what it delivered in p->bytes
 * and in *moved whatever way it ends: a partial send still moved bytes,
 * and the idle sweep and the results go by that count.
 */
enum step {
	STEP_MORE,	/* moved bytes, may move more */
	STEP_EOF,	/* the source ended */
	STEP_SRC_EMPTY,	/* wait for the source to be readable */
	STEP_DST_FULL,	/* wait for the destination to be writable */
	STEP_SRC_FAILED,	/* errno in *err */
	STEP_DST_FAILED
};

static int
would_block(int err)
{
	return err == EAGAIN || err == EWOULDBLOCK;
}

/*
 * One step of copy mode: at most `want` bytes from src to dst. A read that
 * the pump may hold is consumed at once; otherwise it is a peek, and only
 * what was sent is dropped from the source.
 */
static enum step
copy_step(struct pump *p, int src, int dst, struct relay_buffer *buf, size_t want,
    size_t *moved, int *err)
{
	int holding = can_hold(buf);
	ssize_t n, m, dropped;

	do {
		n = recv(src, buf->data, want, MSG_DONTWAIT | (holding ? 0 : MSG_PEEK));
	} while (n < 0 && errno == EINTR);
	if (n == 0) {
		return STEP_EOF;
	}
	if (n < 0) {
		*err = errno;
		return would_block(*err) ? STEP_SRC_EMPTY : STEP_SRC_FAILED;
	}
	m = send_some(dst, buf->data, (size_t)n);
	if (m < 0) {
		*err = errno;
		return STEP_DST_FAILED;
	}
	p->bytes += (uint64_t)m;
	*moved += (size_t)m;
	if (holding) {
		if (m < n) {
			hold(p, buf, (size_t)m, (size_t)n);
			return STEP_DST_FULL;
		}
		return STEP_MORE;
	}
	if (m == 0) {
		return STEP_DST_FULL;
	}
	/* Drop what was sent from the source; TCP discards without copying. */
	do {
		dropped = recv(src, buf->data, (size_t)m, MSG_TRUNC | MSG_DONTWAIT);
	} while (dropped < 0 && errno == EINTR);
	if (dropped != m) {
		/* The peeked bytes are queued: only a reset in between fails this. */
		assert(dropped < 0);
		*err = dropped < 0 ? errno : EIO;
		return STEP_SRC_FAILED;
	}
	return m < n ? STEP_DST_FULL : STEP_MORE;
}

/* Empties the pipe of splice mode into dst. Returns 0, or -1 with errno. */
static int
splice_flush(struct pump *p, int dst, size_t *moved)
{
	while (p->in_pipe > 0) {
		ssize_t n = splice(p->pipe[0], NULL, dst, NULL, p->in_pipe,
		    SPLICE_F_MOVE | SPLICE_F_NONBLOCK);
		if (n < 0) {
			if (errno == EINTR) {
				continue;
			}
			return -1;
		}
		p->in_pipe -= (size_t)n;
		p->bytes += (uint64_t)n;
		*moved += (size_t)n;
	}
	return 0;
}

/* One step of splice mode, same contract as copy_step. */
static enum step
splice_step(struct pump *p, int src, int dst, size_t want, size_t *moved, int *err)
{
	size_t before = *moved;
	ssize_t n;

	if (splice_flush(p, dst, moved) < 0) {
		*err = errno;
		return would_block(*err) ? STEP_DST_FULL : STEP_DST_FAILED;
	}
	/* What the pipe held counts against this turn's share too. */
	if (*moved - before >= want) {
		return STEP_MORE;
	}
	want -= *moved - before;
	do {
		n = splice(src, NULL, p->pipe[1], NULL, want,
		    SPLICE_F_MOVE | SPLICE_F_NONBLOCK);
	} while (n < 0 && errno == EINTR);
	if (n == 0) {
		return STEP_EOF;
	}
	if (n < 0) {
		*err = errno;
		return would_block(*err) ? STEP_SRC_EMPTY : STEP_SRC_FAILED;
	}
	p->in_pipe = (size_t)n;
	if (splice_flush(p, dst, moved) < 0) {
		*err = errno;
		return would_block(*err) ? STEP_DST_FULL : STEP_DST_FAILED;
	}
	return STEP_MORE;
}

/* Runs direction d. Returns RELAY_MORE if it stopped on its budget. */
static enum relay_status
pump_run(struct relay *r, int d, struct relay_buffer *buf, size_t budget)
{
	struct pump *p = &r->dir[d];
	int src = d, dst = 1 - d;
	size_t moved = 0;
	int err = 0;

	p->ready = 0;
	if ((p->early || p->held) && !send_pending(r, p, dst, buf, &moved, &err)) {
		if (err == EAGAIN || err == EWOULDBLOCK) {
			p->state = PUMP_WANT_WRITE;
			return RELAY_BLOCKED;
		}
		return fail(r, dst, err);
	}
	while (!p->eof) {
		size_t want = r->mode == RELAY_SPLICE ? PIPE_SIZE : buf->size;
		enum step step;

		if (moved >= budget) {
			p->ready = 1;
			return RELAY_MORE;
		}
		if (want > budget - moved) {
			want = budget - moved;	/* a limited turn takes no more */
		}
		if (r->mode == RELAY_SPLICE) {
			step = splice_step(p, r->fd[src], r->fd[dst], want, &moved, &err);
		} else {
			step = copy_step(p, r->fd[src], r->fd[dst], buf, want, &moved, &err);
		}
		switch (step) {
		case STEP_MORE:
			break;
		case STEP_EOF:
			p->eof = 1;
			break;
		case STEP_SRC_EMPTY:
			p->state = PUMP_WANT_READ;
			return RELAY_BLOCKED;
		case STEP_DST_FULL:
			p->state = PUMP_WANT_WRITE;
			return RELAY_BLOCKED;
		case STEP_SRC_FAILED:
			return fail(r, src, err);
		case STEP_DST_FAILED:
			return fail(r, dst, err);
		}
	}
	/* EOF: everything taken is out; pass the half-close on. */
	if (shutdown(r->fd[dst], SHUT_WR) < 0 && errno != ENOTCONN) {
		return fail(r, dst, errno);
	}
	p->state = PUMP_DONE;
	return RELAY_BLOCKED;
}

void
relay_event(struct relay *r, int side, uint32_t events)
{
	const uint32_t gone = EPOLLHUP | EPOLLERR;

	if (events & (EPOLLIN | EPOLLRDHUP | gone)) {
		if (r->dir[side].state == PUMP_WANT_READ) {
			r->dir[side].ready = 1;
		}
	}
	if (events & (EPOLLOUT | gone)) {
		if (r->dir[1 - side].state == PUMP_WANT_WRITE) {
			r->dir[1 - side].ready = 1;
		}
	}
	/*
	 * A socket error (mostly a reset) ends the relay now, whatever its
	 * pumps wait for. Reading SO_ERROR clears it, so it is recorded here
	 * or lost: a reset socket whose error is gone reads as a clean EOF,
	 * which would pass a truncated stream off as complete and leave the
	 * relay half-open.
	 */
	if ((events & EPOLLERR) && r->error == 0) {
		int err = fd_socket_error(r->fd[side]);
		if (err) {
			fail(r, side, err);
		}
	}
}

enum relay_status
relay_pump(struct relay *r, struct relay_buffer *buf, size_t budget)
{
	enum relay_status status = RELAY_BLOCKED;

	for (int d = 0; d < 2 && r->error == 0; d++) {
		if (r->dir[d].state != PUMP_DONE && r->dir[d].ready) {
			if (pump_run(r, d, buf, budget) == RELAY_MORE) {
				status = RELAY_MORE;
			}
		}
	}
	if (r->error != 0
	    || (r->dir[0].state == PUMP_DONE && r->dir[1].state == PUMP_DONE)) {
		return RELAY_FINISHED;
	}
	return status;
}

void
relay_close(struct relay *r, struct relay_buffer *buf)
{
	for (int side = 0; side < 2; side++) {
		if (r->fd[side] >= 0 && r->error != 0) {
			/*
			 * The stream broke: reset both sides, so that a peer
			 * learns the stream was aborted rather than take what it
			 * got so far for all of it. Bytes still queued for it are
			 * dropped on purpose.
			 */
			fd_abort(&r->fd[side]);
		} else if (r->fd[side] >= 0) {
			/*
			 * close() with unread input makes Linux send a reset,
			 * which can destroy bytes still queued for the peer.
			 * Drop the input and send FIN first, so they arrive.
			 */
			fd_discard_input(r->fd[side], buf->data, buf->size);
			(void)shutdown(r->fd[side], SHUT_WR);
			fd_close(&r->fd[side]);
		}
		pump_free(&r->dir[side], buf);
	}
}

void
relay_release(struct relay *r)
{
	for (int side = 0; side < 2; side++) {
		fd_close(&r->fd[side]);
		pump_free(&r->dir[side], NULL);
	}
}
