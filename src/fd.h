/*
 * Small file-descriptor helpers (pure C). Those that return an int return 0
 * or an errno value (fd_socket_error: the pending error); the others cannot
 * fail in a way their callers could act on.
 * SPDX-License-Identifier: MIT
 */
#ifndef CPROXY_FD_H
#define CPROXY_FD_H

#include <stddef.h>

int fd_set_nonblocking(int fd);
int fd_pipe(int fds[2]);
int fd_eventfd(int *fd);
/* Adds one to an eventfd's count, making it readable. */
void fd_eventfd_signal(int fd);
/* Resets an eventfd's count, so it is readable no more. */
void fd_eventfd_clear(int fd);
/* Pending SO_ERROR of a socket, 0 if none. */
int fd_socket_error(int fd);
/* Reads and drops whatever input is queued, without blocking (bounded). */
void fd_discard_input(int fd, void *scratch, size_t size);
/* Close a socket with a reset (abortive close), as fd_close. */
void fd_abort(int *fd);
/* close(*fd) if open and set it to -1. */
void fd_close(int *fd);

#endif
