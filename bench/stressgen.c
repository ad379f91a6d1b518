/*
 * Load for `make stress`: many SOCKS5 bytestreams through proxy65 at once,
 * each checked byte by byte, or many idle or slow connections.
 *
 *   stressgen transfers PORT SEED HASH...   one bytestream per hash
 *   stressgen hold PORT N                   N connections that complete
 *                                           their request, then wait
 *   stressgen slow PORT N SECONDS           N connections sending their
 *                                           greeting a byte a second
 *
 * transfers: connects the target, then the initiator, of each hash; prints
 * "ready"; then each initiator sends a size drawn from SEED (0 to 8 MiB)
 * and ends it one of three ways: shutdown (half-close; 80%), a plain
 * close() right after the last byte (10%), or a reset half-way (10%). The
 * target checks every byte against the generator and reads to the end.
 * The last line is "result streams= intact= aborted= aborted_closed=
 * close_reset= corrupt= stalled= bytes= seconds=". hold and slow print "ready", then
 * how many the proxy closed, when stdin closes (hold) or after SECONDS
 * (slow): "result open= closed=".
 * SPDX-License-Identifier: MIT
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#include "client.h"

#define MAX_SIZE (8u << 20)
#define BUF_SIZE (256u << 10)
/*
 * transfers gives up when no byte has moved for STALL_SECONDS: a slow
 * machine makes a round long, not wrong. Longer than TCP's longest
 * retransmission backoff (2 minutes), which loopback reaches when it drops
 * segments under load, and than the stress spec's idle timeout, which ends
 * a relay whose peer's reset was dropped. TOTAL_SECONDS bounds it anyway.
 */
#define STALL_SECONDS 200
#define TOTAL_SECONDS 1200

enum ending { END_SHUTDOWN, END_CLOSE, END_RESET };

struct flow {
	int send_fd, recv_fd;
	uint64_t id, size, sent, received;
	enum ending ending;
	int send_done, recv_done, corrupt;
};

static uint64_t
mix(uint64_t x)
{
	x += 0x9e3779b97f4a7c15ULL;
	x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
	x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
	return x ^ (x >> 31);
}

/* The byte at `offset` of stream `id`: no two streams or blocks alike. */
static unsigned char
pattern(uint64_t id, uint64_t offset)
{
	return (unsigned char)(mix((id << 40) ^ (offset >> 3)) >> ((offset & 7) * 8));
}

static void
nonblocking(int fd)
{
	int one = 1;

	fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
	(void)setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
}

/*
 * TCP keepalive after 20 s of silence: a receiver sends nothing, so a
 * reset that loopback dropped under load (one is sent only once) would
 * otherwise leave it waiting for ever. A probe to a socket that is gone
 * draws a fresh reset, as a real client's keepalive would.
 */
static void
keepalive(int fd)
{
	int on = 1, idle = 20, interval = 5, count = 3;

	(void)setsockopt(fd, SOL_SOCKET, SO_KEEPALIVE, &on, sizeof(on));
	(void)setsockopt(fd, IPPROTO_TCP, TCP_KEEPIDLE, &idle, sizeof(idle));
	(void)setsockopt(fd, IPPROTO_TCP, TCP_KEEPINTVL, &interval, sizeof(interval));
	(void)setsockopt(fd, IPPROTO_TCP, TCP_KEEPCNT, &count, sizeof(count));
}

static void
reset(int fd)
{
	struct linger lg = { 1, 0 };

	(void)setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
	close(fd);
}

static int
transfers(int port, uint64_t seed, int n, char **hashes)
{
	struct flow *flows = calloc((size_t)n, sizeof(*flows));
	unsigned char *buf = malloc(BUF_SIZE);
	int ep = epoll_create1(0), remaining = n;
	int intact = 0, aborted = 0, aborted_closed = 0, corrupt = 0, close_reset = 0;
	uint64_t bytes = 0;
	double start, moved, shown;

	if (!flows || !buf || ep < 0) {
		client_die("setup");
	}
	for (int i = 0; i < n; i++) {
		struct flow *f = &flows[i];
		uint64_t r = mix(seed ^ (uint64_t)i);
		f->id = (uint64_t)i + 1;
		f->size = r % (MAX_SIZE + 1);
		f->ending = (r >> 40) % 10 == 0 ? END_RESET : (r >> 40) % 10 == 1 ? END_CLOSE : END_SHUTDOWN;
		f->recv_fd = client_socks5(port, hashes[i]);
		f->send_fd = client_socks5(port, hashes[i]);
		nonblocking(f->recv_fd);
		nonblocking(f->send_fd);
		keepalive(f->recv_fd);
	}
	printf("ready\n");
	fflush(stdout);
	for (int i = 0; i < n; i++) {
		struct epoll_event in = { .events = EPOLLIN, .data.u64 = (uint64_t)i << 1 | 1 };
		struct epoll_event out = { .events = EPOLLOUT, .data.u64 = (uint64_t)i << 1 };
		if (epoll_ctl(ep, EPOLL_CTL_ADD, flows[i].recv_fd, &in) < 0
		    || epoll_ctl(ep, EPOLL_CTL_ADD, flows[i].send_fd, &out) < 0) {
			client_die("epoll_ctl");
		}
	}
	start = moved = shown = client_now();
	while (remaining > 0 && client_now() - moved < STALL_SECONDS && client_now() - start < TOTAL_SECONDS) {
		struct epoll_event evs[256];
		int k = epoll_wait(ep, evs, 256, 1000);
		if (client_now() - shown >= 30) {
			shown = client_now();
			printf("progress seconds=%.0f done=%d bytes=%llu\n", shown - start, n - remaining,
			    (unsigned long long)bytes);
			fflush(stdout);
		}
		for (int j = 0; j < k; j++) {
			struct flow *f = &flows[evs[j].data.u64 >> 1];
			if (evs[j].data.u64 & 1) {
				ssize_t r = read(f->recv_fd, buf, BUF_SIZE);
				if (r >= 0) {
					moved = client_now();
				}
				if (r > 0) {
					for (ssize_t b = 0; b < r && !f->corrupt; b++) {
						if (buf[b] != pattern(f->id, f->received + (uint64_t)b)) {
							f->corrupt = 1;
						}
					}
					f->received += (uint64_t)r;
					bytes += (uint64_t)r;
					continue;
				}
				if (r < 0 && (errno == EAGAIN || errno == EINTR)) {
					continue;
				}
				/* The end: EOF, or the proxy's reset of an aborted stream. */
				f->recv_done = 1;
				epoll_ctl(ep, EPOLL_CTL_DEL, f->recv_fd, NULL);
				close(f->recv_fd);
				remaining--;
				if (f->corrupt || f->received > f->size) {
					corrupt++;
					printf("bad stream %llu: ending %d, %llu of %llu bytes, corrupt %d\n",
					    (unsigned long long)f->id, (int)f->ending, (unsigned long long)f->received,
					    (unsigned long long)f->size, f->corrupt);
				} else if (f->ending == END_RESET) {
					aborted++;
					aborted_closed++;
				} else if (f->received == f->size) {
					intact++;
				} else if (f->ending == END_CLOSE && r < 0 && errno == ECONNRESET) {
					/*
					 * A socket closed with bytes unsent is orphaned; under
					 * memory pressure the sender's kernel aborts it, and the
					 * proxy passes the reset on (TcpExtTCPAbortOnMemory).
					 */
					close_reset++;
					printf("reset stream %llu: closed by its sender, %llu of %llu bytes\n",
					    (unsigned long long)f->id, (unsigned long long)f->received,
					    (unsigned long long)f->size);
				} else {
					corrupt++;	/* cut short without a reset of ours */
					printf("short stream %llu: ending %d, %llu of %llu bytes (%s)\n",
					    (unsigned long long)f->id, (int)f->ending, (unsigned long long)f->received,
					    (unsigned long long)f->size, r == 0 ? "EOF" : strerror(errno));
				}
			} else if (!f->send_done) {
				uint64_t limit = f->ending == END_RESET ? f->size / 2 : f->size;
				while (f->sent < limit) {
					size_t chunk = limit - f->sent < BUF_SIZE ? (size_t)(limit - f->sent) : BUF_SIZE;
					for (size_t b = 0; b < chunk; b++) {
						buf[b] = pattern(f->id, f->sent + b);
					}
					ssize_t w = write(f->send_fd, buf, chunk);
					if (w <= 0) {
						break;
					}
					f->sent += (uint64_t)w;
					moved = client_now();
				}
				if (f->sent >= limit) {
					f->send_done = 1;
					epoll_ctl(ep, EPOLL_CTL_DEL, f->send_fd, NULL);
					if (f->ending == END_RESET) {
						reset(f->send_fd);
					} else if (f->ending == END_CLOSE) {
						close(f->send_fd);
					} else {
						shutdown(f->send_fd, SHUT_WR);	/* closed at exit */
					}
				}
			}
		}
	}
	for (int i = 0; i < n && remaining > 0; i++) {
		struct flow *f = &flows[i];
		if (!f->recv_done) {
			printf("stalled stream %llu: ending %d, sent %llu (%s), received %llu of %llu bytes\n",
			    (unsigned long long)f->id, (int)f->ending, (unsigned long long)f->sent,
			    f->send_done ? "done" : "not done", (unsigned long long)f->received,
			    (unsigned long long)f->size);
		}
	}
	printf("result streams=%d intact=%d aborted=%d aborted_closed=%d close_reset=%d corrupt=%d stalled=%d"
	    " bytes=%llu seconds=%.2f\n", n, intact, aborted, aborted_closed, close_reset, corrupt, remaining,
	    (unsigned long long)bytes, client_now() - start);
	return remaining == 0 && corrupt == 0 ? 0 : 1;
}

/* hold and slow: how many of fds the proxy has closed. */
static int
count_closed(int *fds, int n)
{
	int closed = 0;
	char c;

	for (int i = 0; i < n; i++) {
		struct pollfd p = { .fd = fds[i], .events = POLLIN };
		if (poll(&p, 1, 0) == 1) {
			ssize_t r = recv(fds[i], &c, 1, MSG_DONTWAIT | MSG_PEEK);
			/* A reply byte (hold: the success reply was read) is not a close. */
			if (r == 0 || (r < 0 && errno != EAGAIN)) {
				closed++;
			}
		}
	}
	return closed;
}

static int
hold(int port, int n)
{
	int *fds = calloc((size_t)n, sizeof(*fds));
	char hash[41], c;

	if (!fds) {
		client_die("calloc");
	}
	for (int i = 0; i < n; i++) {
		snprintf(hash, sizeof(hash), "%040llx", (unsigned long long)mix((uint64_t)i + 1));
		fds[i] = client_socks5(port, hash);
	}
	printf("ready\n");
	fflush(stdout);
	while (read(0, &c, 1) > 0) {
	}
	printf("result open=%d closed=%d\n", n - count_closed(fds, n), count_closed(fds, n));
	return 0;
}

static int
slow(int port, int n, int seconds)
{
	int *fds = calloc((size_t)n, sizeof(*fds));
	double end = client_now() + seconds;

	if (!fds) {
		client_die("calloc");
	}
	for (int i = 0; i < n; i++) {
		fds[i] = client_connect(port);
		nonblocking(fds[i]);
	}
	printf("ready\n");
	fflush(stdout);
	/* One byte a second of a greeting that never ends: \5 then method 0s. */
	for (int tick = 0; client_now() < end; tick++) {
		unsigned char byte = tick == 0 ? 5 : tick == 1 ? 255 : 0;
		for (int i = 0; i < n; i++) {
			(void)send(fds[i], &byte, 1, MSG_NOSIGNAL | MSG_DONTWAIT);
		}
		sleep(1);
	}
	printf("result open=%d closed=%d\n", n - count_closed(fds, n), count_closed(fds, n));
	return 0;
}

int
main(int argc, char **argv)
{
	if (argc >= 5 && strcmp(argv[1], "transfers") == 0) {
		return transfers(atoi(argv[2]), strtoull(argv[3], NULL, 10), argc - 4, argv + 4);
	} else if (argc == 4 && strcmp(argv[1], "hold") == 0) {
		return hold(atoi(argv[2]), atoi(argv[3]));
	} else if (argc == 5 && strcmp(argv[1], "slow") == 0) {
		return slow(atoi(argv[2]), atoi(argv[3]), atoi(argv[4]));
	}
	fprintf(stderr, "usage: stressgen transfers PORT SEED HASH... | hold PORT N | slow PORT N SECONDS\n");
	return 2;
}
