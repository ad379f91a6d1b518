/*
 * The client side shared by the load generators (loadgen.c, stressgen.c):
 * loopback connections and the SOCKS5 handshake of XEP-0065. Any failure
 * ends the program with a message: they are test tools, not libraries.
 * SPDX-License-Identifier: MIT
 */
#ifndef BENCH_CLIENT_H
#define BENCH_CLIENT_H

/* Seconds on the monotonic clock. */
double client_now(void);

/* Prints "program: what: strerror(errno)" and exits with status 1. */
void client_die(const char *what);

/* A blocking TCP connection to 127.0.0.1:port. */
int client_connect(int port);

/*
 * Connects to the proxy, sends the greeting, then, after its reply, the
 * CONNECT request for hash (40 characters), and reads that reply: it dies
 * unless both accept.
 */
int client_socks5(int port, const char *hash);

#endif
