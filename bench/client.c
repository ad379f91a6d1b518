/*
 * Loopback and SOCKS5 client helpers of the load generators: see client.h.
 * SPDX-License-Identifier: MIT
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "client.h"

#define HASH_LEN 40

double
client_now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

void
client_die(const char *what)
{
	fprintf(stderr, "%s: %s: %s\n", program_invocation_short_name, what, strerror(errno));
	exit(1);
}

int
client_connect(int port)
{
	struct sockaddr_in sa;
	int fd = socket(AF_INET, SOCK_STREAM, 0);

	if (fd < 0) {
		client_die("socket");
	}
	memset(&sa, 0, sizeof(sa));
	sa.sin_family = AF_INET;
	sa.sin_port = htons((uint16_t)port);
	sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
		client_die("connect");
	}
	return fd;
}

/* Reads exactly n bytes, or dies. */
static void
read_exactly(int fd, unsigned char *buf, size_t n)
{
	size_t got = 0;

	while (got < n) {
		ssize_t r = read(fd, buf + got, n - got);
		if (r <= 0) {
			client_die("SOCKS5 reply");
		}
		got += (size_t)r;
	}
}

int
client_socks5(int port, const char *hash)
{
	/* Greeting (no authentication), then CONNECT to hash:0 (ATYP 3). */
	unsigned char req[7 + HASH_LEN], buf[2 + 5 + HASH_LEN];
	int fd;

	if (strlen(hash) != HASH_LEN) {
		errno = EINVAL;
		client_die("hash length");
	}
	fd = client_connect(port);
	/*
	 * The request waits for the method reply, as real clients do: Prosody's
	 * built-in mod_proxy65 takes a first read for the greeting alone and
	 * loses a request that came with it.
	 */
	if (write(fd, "\5\1\0", 3) != 3) {
		client_die("greeting");
	}
	read_exactly(fd, buf, 2);
	if (buf[0] != 5 || buf[1] != 0) {
		errno = EPROTO;
		client_die("greeting refused");
	}
	memcpy(req, "\5\1\0\3\50", 5);
	memcpy(req + 5, hash, HASH_LEN);
	req[5 + HASH_LEN] = req[6 + HASH_LEN] = 0;
	if (write(fd, req, sizeof(req)) != (ssize_t)sizeof(req)) {
		client_die("request");
	}
	read_exactly(fd, buf, sizeof(buf));
	if (buf[0] != 5 || buf[1] != 0 || buf[3] != 3) {
		errno = EPROTO;
		client_die("request refused");
	}
	return fd;
}
