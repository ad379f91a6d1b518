/*
 * File-descriptor helpers: non-blocking and close-on-exec set at creation,
 * EINTR retried, errno returned rather than left in a global.
 * SPDX-License-Identifier: MIT
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stddef.h>
#include <stdint.h>
#include <fcntl.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include "fd.h"

/* At most this many bytes are dropped when a socket is being closed. */
#define DISCARD_MAX (64u << 20)

int
fd_set_nonblocking(int fd)
{
	int flags = fcntl(fd, F_GETFL);

	if (flags < 0) {
		return errno;
	}
	if (!(flags & O_NONBLOCK) && fcntl(fd, F_SETFL, flags | O_NONBLOCK) < 0) {
		return errno;
	}
	return 0;
}

int
fd_pipe(int fds[2])
{
	if (pipe2(fds, O_NONBLOCK | O_CLOEXEC) < 0) {
		fds[0] = fds[1] = -1;
		return errno;
	}
	return 0;
}

int
fd_eventfd(int *fd)
{
	*fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
	return *fd < 0 ? errno : 0;
}

void
fd_eventfd_signal(int fd)
{
	uint64_t one = 1;

	/* An eventfd only fails to count when it would overflow: ignore. */
	while (write(fd, &one, sizeof(one)) < 0 && errno == EINTR) {
	}
}

void
fd_eventfd_clear(int fd)
{
	uint64_t count;

	while (read(fd, &count, sizeof(count)) < 0 && errno == EINTR) {
	}
}

int
fd_socket_error(int fd)
{
	int err = 0;
	socklen_t len = sizeof(err);

	if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) < 0) {
		return errno;
	}
	return err;
}

void
fd_discard_input(int fd, void *scratch, size_t size)
{
	size_t dropped = 0;

	while (dropped < DISCARD_MAX) {
		/* MSG_TRUNC: TCP drops the bytes without copying them. */
		ssize_t n = recv(fd, scratch, size, MSG_TRUNC | MSG_DONTWAIT);
		if (n < 0 && errno == EINTR) {
			continue;
		}
		if (n <= 0) {
			return;
		}
		dropped += (size_t)n;
	}
}

void
fd_abort(int *fd)
{
	const struct linger now = { .l_onoff = 1, .l_linger = 0 };

	if (*fd >= 0) {
		/* Linger on, timeout 0: close() sends RST and drops queued bytes. */
		(void)setsockopt(*fd, SOL_SOCKET, SO_LINGER, &now, sizeof(now));
		fd_close(fd);
	}
}

void
fd_close(int *fd)
{
	if (*fd >= 0) {
		/* Linux always releases the fd, even when close() says EINTR. */
		(void)close(*fd);
		*fd = -1;
	}
}
