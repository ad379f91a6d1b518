/*
 * Load generator for `make bench`: pushes bytes through SOCKS5 bytestream
 * pairs (or a direct loopback pair) as fast as loopback allows, and
 * reports the throughput. It is C so that it is never the bottleneck.
 *
 *   loadgen direct BYTES STREAMS
 *   loadgen socks5 PORT BYTES HASH...   (one stream per hash)
 *   loadgen pair PORT BYTES STREAMS     (through bench/relay.c)
 *
 * socks5 mode connects the target and then the initiator for each hash,
 * prints "ready", and starts sending at once: bytes sent before the
 * activation wait in the kernel. pair mode connects the receiver and then
 * the sender of each stream, with no handshake. Timing runs from the first
 * byte received to the last. The last line is "result bytes=N seconds=S mibps=M".
 * SPDX-License-Identifier: MIT
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#include "client.h"

#define CHUNK (1u << 20)
#define RECV_BUF (4u << 20)
#define MAX_STREAMS 1024

struct stream {
	int send_fd, recv_fd;
	uint64_t sent, received;
	int send_done, recv_done;
};

static uint64_t total_bytes;
static unsigned char *send_buf, *recv_buf;

static void
direct_pair(int *a, int *b)
{
	struct sockaddr_in sa;
	socklen_t len = sizeof(sa);
	int l = socket(AF_INET, SOCK_STREAM, 0);

	memset(&sa, 0, sizeof(sa));
	sa.sin_family = AF_INET;
	sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	if (l < 0 || bind(l, (struct sockaddr *)&sa, sizeof(sa)) < 0 || listen(l, 4) < 0
	    || getsockname(l, (struct sockaddr *)&sa, &len) < 0) {
		client_die("listen");
	}
	*a = client_connect(ntohs(sa.sin_port));
	*b = accept(l, NULL, NULL);
	if (*b < 0) {
		client_die("accept");
	}
	close(l);
}

static void
watch(int ep, int fd, uint32_t events, uint64_t tag)
{
	struct epoll_event ev = { .events = events, .data.u64 = tag };
	int flags = 1;

	(void)setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &flags, sizeof(flags));
	if (epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev) < 0) {
		client_die("epoll_ctl");
	}
}

int
main(int argc, char **argv)
{
	static struct stream streams[MAX_STREAMS];
	int n = 0, ep, remaining;
	double first = 0, last = 0;
	uint64_t received_total = 0;

	if (argc >= 4 && strcmp(argv[1], "direct") == 0) {
		total_bytes = strtoull(argv[2], NULL, 10);
		n = atoi(argv[3]);
		if (n < 1 || n > MAX_STREAMS) {
			return 2;
		}
		for (int i = 0; i < n; i++) {
			direct_pair(&streams[i].send_fd, &streams[i].recv_fd);
		}
	} else if (argc >= 5 && strcmp(argv[1], "socks5") == 0) {
		int port = atoi(argv[2]);
		total_bytes = strtoull(argv[3], NULL, 10);
		n = argc - 4;
		if (n > MAX_STREAMS) {
			return 2;
		}
		for (int i = 0; i < n; i++) {
			streams[i].recv_fd = client_socks5(port, argv[4 + i]);	/* target */
			streams[i].send_fd = client_socks5(port, argv[4 + i]);	/* initiator */
		}
	} else if (argc >= 5 && strcmp(argv[1], "pair") == 0) {
		int port = atoi(argv[2]);
		total_bytes = strtoull(argv[3], NULL, 10);
		n = atoi(argv[4]);
		if (n < 1 || n > MAX_STREAMS) {
			return 2;
		}
		for (int i = 0; i < n; i++) {
			streams[i].recv_fd = client_connect(port);
			streams[i].send_fd = client_connect(port);
		}
	} else {
		fprintf(stderr, "usage: loadgen direct BYTES STREAMS | loadgen socks5 PORT BYTES HASH..."
		    " | loadgen pair PORT BYTES STREAMS\n");
		return 2;
	}
	printf("ready\n");
	fflush(stdout);

	send_buf = malloc(CHUNK);
	recv_buf = malloc(RECV_BUF);
	if (!send_buf || !recv_buf) {
		client_die("malloc");
	}
	for (size_t i = 0; i < CHUNK; i++) {
		send_buf[i] = (unsigned char)(i * 2654435761u >> 13);
	}
	ep = epoll_create1(0);
	for (int i = 0; i < n; i++) {
		watch(ep, streams[i].send_fd, EPOLLOUT, (uint64_t)i << 1);
		watch(ep, streams[i].recv_fd, EPOLLIN, ((uint64_t)i << 1) | 1);
	}
	remaining = n;
	while (remaining > 0) {
		struct epoll_event evs[64];
		int k = epoll_wait(ep, evs, 64, 30000);
		if (k <= 0) {
			fprintf(stderr, "loadgen: stalled\n");
			return 1;
		}
		for (int j = 0; j < k; j++) {
			struct stream *s = &streams[evs[j].data.u64 >> 1];
			if (evs[j].data.u64 & 1) {
				ssize_t r = read(s->recv_fd, recv_buf, RECV_BUF);
				if (r > 0) {
					if (first == 0) {
						first = client_now();
					}
					s->received += (uint64_t)r;
					received_total += (uint64_t)r;
				} else if (r == 0 || (errno != EAGAIN && errno != EINTR)) {
					s->recv_done = 1;
					epoll_ctl(ep, EPOLL_CTL_DEL, s->recv_fd, NULL);
					close(s->recv_fd);
					remaining--;
					last = client_now();
				}
			} else if (!s->send_done) {
				uint64_t left = total_bytes - s->sent;
				size_t want = left < CHUNK ? (size_t)left : CHUNK;
				ssize_t w = want ? send(s->send_fd, send_buf, want, MSG_DONTWAIT | MSG_NOSIGNAL) : 0;
				if (w > 0) {
					s->sent += (uint64_t)w;
				} else if (w < 0 && errno != EAGAIN && errno != EINTR) {
					client_die("send");
				}
				if (s->sent == total_bytes) {
					s->send_done = 1;
					epoll_ctl(ep, EPOLL_CTL_DEL, s->send_fd, NULL);
					shutdown(s->send_fd, SHUT_WR);
				}
			}
		}
	}
	for (int i = 0; i < n; i++) {
		close(streams[i].send_fd);
		if (streams[i].received != total_bytes) {
			fprintf(stderr, "loadgen: stream %d got %llu of %llu bytes\n", i,
			    (unsigned long long)streams[i].received, (unsigned long long)total_bytes);
			return 1;
		}
	}
	double secs = last - first;
	printf("result bytes=%llu seconds=%.4f mibps=%.1f\n", (unsigned long long)received_total,
	    secs, secs > 0 ? received_total / 1048576.0 / secs : 0.0);
	return 0;
}
