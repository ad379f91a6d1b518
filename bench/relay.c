/*
 * The ceiling for `make bench`, `relay PORT`: a minimal TCP relay. Each two
 * connections accepted in a row are a pair (loadgen's "pair" mode); bytes
 * go both ways by read()/write() with a 4 MiB buffer per direction and
 * 4 MiB socket buffers, edge-triggered epoll. No SOCKS5, no limits, no
 * bound on memory: a yardstick, not a proxy. SPDX-License-Identifier: MIT
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#define BUF (4 << 20)

struct conn {
	int fd, eof, closed;
	struct conn *peer;
	char *buf;	/* bytes read from fd, not yet written to the peer */
	size_t off, len;
};

/* Moves what it can from c to its peer. Returns 0 once c is finished. */
static int
pump(struct conn *c)
{
	for (;;) {
		while (c->off < c->len) {
			ssize_t n = write(c->peer->fd, c->buf + c->off, c->len - c->off);
			if (n < 0) {
				return errno == EAGAIN ? 1 : 0;
			}
			c->off += (size_t)n;
		}
		if (c->eof) {
			shutdown(c->peer->fd, SHUT_WR);
			return 0;
		}
		ssize_t n = read(c->fd, c->buf, BUF);
		if (n < 0) {
			return errno == EAGAIN ? 1 : 0;
		}
		c->off = 0;
		c->len = (size_t)n;
		c->eof = n == 0;
	}
}

int
main(int argc, char **argv)
{
	struct sockaddr_in sa = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	int size = BUF, ep = epoll_create1(0), l = socket(AF_INET, SOCK_STREAM, 0);
	struct conn *waiting = NULL;
	struct epoll_event ev, evs[64];

	sa.sin_port = htons((uint16_t)(argc == 2 ? atoi(argv[1]) : 0));
	if (bind(l, (struct sockaddr *)&sa, sizeof(sa)) < 0 || listen(l, 128) < 0) {
		perror("relay: listen");
		return 1;
	}
	ev = (struct epoll_event){ .events = EPOLLIN, .data.ptr = NULL };
	epoll_ctl(ep, EPOLL_CTL_ADD, l, &ev);
	for (;;) {
		for (int i = 0, k = epoll_wait(ep, evs, 64, -1); i < k; i++) {
			struct conn *c = evs[i].data.ptr;
			if (c == NULL) {
				c = calloc(1, sizeof(*c));
				c->fd = accept4(l, NULL, NULL, SOCK_NONBLOCK);
				c->buf = malloc(BUF);
				setsockopt(c->fd, SOL_SOCKET, SO_SNDBUF, &size, sizeof(size));
				setsockopt(c->fd, SOL_SOCKET, SO_RCVBUF, &size, sizeof(size));
				if (waiting == NULL) {
					waiting = c;
					continue;
				}
				c->peer = waiting;
				waiting->peer = c;
				waiting = NULL;
				for (int side = 0; side < 2; side++) {
					struct conn *s = side ? c->peer : c;
					ev = (struct epoll_event){ .events = EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET, .data.ptr = s };
					epoll_ctl(ep, EPOLL_CTL_ADD, s->fd, &ev);
				}
			}
			/* Either side may unblock either way; ended pairs stay allocated. */
			if (!c->closed && !pump(c) & !pump(c->peer)) {
				for (int side = 0; side < 2; side++, c = c->peer) {
					close(c->fd);
					free(c->buf);
					c->closed = 1;
				}
			}
		}
	}
}
