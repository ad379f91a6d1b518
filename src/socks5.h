/*
 * SOCKS5 server-side handshake for XEP-0065, as an incremental state machine.
 * Pure C: no Lua, no I/O. Feed it bytes as they arrive; it consumes what
 * belongs to the handshake and leaves pipelined bytes to the caller.
 * SPDX-License-Identifier: MIT
 */
#ifndef CPROXY_SOCKS5_H
#define CPROXY_SOCKS5_H

#include <stddef.h>
#include <stdint.h>

#define SOCKS5_HASH_LEN 40
/* Largest reply we ever queue: greeting reply (2) + success reply (47). */
#define SOCKS5_REPLY_MAX 64

enum socks5_state {
	SOCKS5_GREETING,	/* waiting for VER NMETHODS METHODS */
	SOCKS5_REQUEST,	/* waiting for the CONNECT request */
	SOCKS5_DONE,	/* request parsed; hash is valid; answer it with
			 * socks5_accept() or socks5_refuse() */
	SOCKS5_FAILED	/* rejected; send the reply, then close */
};

/* Why a handshake was rejected: fixed tokens, see socks5_reason_name(). */
enum socks5_reason {
	SOCKS5_OK = 0,
	SOCKS5_BAD_VERSION,
	SOCKS5_NO_METHODS,
	SOCKS5_NO_ACCEPTABLE_METHOD,
	SOCKS5_COMMAND_NOT_SUPPORTED,
	SOCKS5_ADDRESS_TYPE_NOT_SUPPORTED,
	SOCKS5_BAD_RESERVED,
	SOCKS5_BAD_ADDRESS_LENGTH,
	SOCKS5_BAD_HASH,
	SOCKS5_BAD_PORT,
	SOCKS5_REFUSED,	/* valid, but the caller refused it (e.g. a third peer) */
	SOCKS5_OVER_LIMIT	/* valid, but over one of the caller's limits */
};

struct socks5 {
	enum socks5_state state;
	enum socks5_reason reason;
	/* The message being parsed: at most the 47-byte request is kept. */
	uint8_t msg[8 + SOCKS5_HASH_LEN];
	size_t have;	/* bytes of the current message seen so far */
	size_t need;	/* bytes the current message needs in total */
	uint8_t nmethods;
	int has_no_auth;
	char hash[SOCKS5_HASH_LEN + 1];	/* lowercase hex, NUL-terminated */
	uint8_t reply[SOCKS5_REPLY_MAX];
	size_t reply_len;	/* queued reply bytes, to be sent by the caller */
};

void socks5_init(struct socks5 *s);

/*
 * Consume bytes of data[0..len). Returns how many were consumed. It stops
 * at the end of the input, or as soon as the state becomes DONE or FAILED:
 * bytes after that are the caller's (early stream data).
 * Replies accumulate in s->reply; the caller sends and clears them.
 */
size_t socks5_feed(struct socks5 *s, const uint8_t *data, size_t len);

/* In state DONE: queue the success reply (ATYP 3, the hash, port 0). */
void socks5_accept(struct socks5 *s);

/*
 * In state DONE: queue a refusal and go to state FAILED. why is
 * SOCKS5_REFUSED ("connection not allowed", REP 2) or SOCKS5_OVER_LIMIT
 * ("general failure", REP 1).
 */
void socks5_refuse(struct socks5 *s, enum socks5_reason why);

/* A fixed token for a reason, e.g. "command-not-supported". */
const char *socks5_reason_name(enum socks5_reason reason);

#endif
