/*
 * SOCKS5 handshake state machine (RFC 1928 as profiled by XEP-0065).
 * It parses one byte at a time, so any split of the input works and no
 * field is ever read before it has arrived. It does no I/O and no logging.
 * SPDX-License-Identifier: MIT
 */
#include <assert.h>
#include <string.h>

#include "socks5.h"

#define SOCKS5_VERSION 0x05
#define METHOD_NO_AUTH 0x00
#define METHOD_NONE_ACCEPTABLE 0xFF
#define CMD_CONNECT 0x01
#define ATYP_DOMAIN 0x03

#define REP_SUCCEEDED 0x00
#define REP_GENERAL_FAILURE 0x01
#define REP_NOT_ALLOWED 0x02
#define REP_COMMAND_NOT_SUPPORTED 0x07
#define REP_ADDRESS_TYPE_NOT_SUPPORTED 0x08

/* Request layout: VER CMD RSV ATYP LEN HASH[40] PORT[2] */
#define REQ_HASH_AT 5
#define REQ_PORT_AT (REQ_HASH_AT + SOCKS5_HASH_LEN)
#define REQ_LEN (REQ_PORT_AT + 2)

void
socks5_init(struct socks5 *s)
{
	memset(s, 0, sizeof(*s));
	s->state = SOCKS5_GREETING;
}

static void
queue_reply(struct socks5 *s, const uint8_t *bytes, size_t n)
{
	/* Replies are fixed-size and at most two are ever queued. */
	if (n <= sizeof(s->reply) - s->reply_len) {
		memcpy(s->reply + s->reply_len, bytes, n);
		s->reply_len += n;
	}
}

static void
fail_greeting(struct socks5 *s, enum socks5_reason reason)
{
	static const uint8_t reply[2] = { SOCKS5_VERSION, METHOD_NONE_ACCEPTABLE };

	queue_reply(s, reply, sizeof(reply));
	s->reason = reason;
	s->state = SOCKS5_FAILED;
}

static void
fail_request(struct socks5 *s, enum socks5_reason reason, uint8_t rep)
{
	/* BND.ADDR is IPv4 0.0.0.0 and BND.PORT 0: nothing was bound. */
	const uint8_t reply[10] = { SOCKS5_VERSION, rep, 0x00, 0x01, 0, 0, 0, 0, 0, 0 };

	queue_reply(s, reply, sizeof(reply));
	s->reason = reason;
	s->state = SOCKS5_FAILED;
}

static void
greeting_byte(struct socks5 *s, uint8_t c)
{
	size_t at = s->have++;

	if (at == 0) {
		if (c != SOCKS5_VERSION) {
			fail_greeting(s, SOCKS5_BAD_VERSION);
		}
		return;
	}
	if (at == 1) {
		if (c == 0) {
			fail_greeting(s, SOCKS5_NO_METHODS);
		}
		s->nmethods = c;
		return;
	}
	if (c == METHOD_NO_AUTH) {
		s->has_no_auth = 1;
	}
	if (at - 1 == s->nmethods) {	/* that was the last method */
		if (!s->has_no_auth) {
			fail_greeting(s, SOCKS5_NO_ACCEPTABLE_METHOD);
			return;
		}
		static const uint8_t reply[2] = { SOCKS5_VERSION, METHOD_NO_AUTH };
		queue_reply(s, reply, sizeof(reply));
		s->state = SOCKS5_REQUEST;
		s->have = 0;
	}
}

static int
hex_lower(uint8_t c)
{
	if ((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f')) {
		return c;
	}
	if (c >= 'A' && c <= 'F') {
		return c - 'A' + 'a';
	}
	return -1;
}

void
socks5_accept(struct socks5 *s)
{
	uint8_t reply[REQ_LEN];

	if (s->state != SOCKS5_DONE) {
		return;
	}
	/* The reply echoes ATYP 3 with the (normalised) hash and port 0. */
	reply[0] = SOCKS5_VERSION;
	reply[1] = REP_SUCCEEDED;
	reply[2] = 0x00;
	reply[3] = ATYP_DOMAIN;
	reply[4] = SOCKS5_HASH_LEN;
	memcpy(reply + REQ_HASH_AT, s->hash, SOCKS5_HASH_LEN);
	reply[REQ_PORT_AT] = 0;
	reply[REQ_PORT_AT + 1] = 0;
	queue_reply(s, reply, sizeof(reply));
}

void
socks5_refuse(struct socks5 *s, enum socks5_reason why)
{
	assert(why == SOCKS5_REFUSED || why == SOCKS5_OVER_LIMIT);
	if (s->state == SOCKS5_DONE) {
		fail_request(s, why, why == SOCKS5_OVER_LIMIT ? REP_GENERAL_FAILURE : REP_NOT_ALLOWED);
	}
}

static void
request_byte(struct socks5 *s, uint8_t c)
{
	size_t at = s->have;

	assert(at < REQ_LEN);	/* DONE stops the feed before the buffer is full */
	if (at >= REQ_LEN) {
		return;	/* NDEBUG builds: ignore rather than overflow */
	}
	s->msg[s->have++] = c;
	switch (at) {
	case 0:
		if (c != SOCKS5_VERSION) {
			fail_request(s, SOCKS5_BAD_VERSION, REP_GENERAL_FAILURE);
		}
		return;
	case 1:
		if (c != CMD_CONNECT) {
			fail_request(s, SOCKS5_COMMAND_NOT_SUPPORTED, REP_COMMAND_NOT_SUPPORTED);
		}
		return;
	case 2:
		if (c != 0) {
			fail_request(s, SOCKS5_BAD_RESERVED, REP_GENERAL_FAILURE);
		}
		return;
	case 3:
		if (c != ATYP_DOMAIN) {
			fail_request(s, SOCKS5_ADDRESS_TYPE_NOT_SUPPORTED,
			    REP_ADDRESS_TYPE_NOT_SUPPORTED);
		}
		return;
	case 4:
		if (c != SOCKS5_HASH_LEN) {
			fail_request(s, SOCKS5_BAD_ADDRESS_LENGTH, REP_GENERAL_FAILURE);
		}
		return;
	default:
		break;
	}
	if (at < REQ_PORT_AT) {
		int h = hex_lower(c);
		if (h < 0) {
			fail_request(s, SOCKS5_BAD_HASH, REP_GENERAL_FAILURE);
			return;
		}
		s->msg[at] = (uint8_t)h;
		return;
	}
	if (c != 0) {
		fail_request(s, SOCKS5_BAD_PORT, REP_GENERAL_FAILURE);
		return;
	}
	if (s->have == REQ_LEN) {
		memcpy(s->hash, s->msg + REQ_HASH_AT, SOCKS5_HASH_LEN);
		s->hash[SOCKS5_HASH_LEN] = '\0';
		s->state = SOCKS5_DONE;
	}
}

size_t
socks5_feed(struct socks5 *s, const uint8_t *data, size_t len)
{
	size_t used = 0;

	while (used < len) {
		if (s->state == SOCKS5_GREETING) {
			greeting_byte(s, data[used++]);
		} else if (s->state == SOCKS5_REQUEST) {
			request_byte(s, data[used++]);
		} else {
			break;
		}
	}
	return used;
}

const char *
socks5_reason_name(enum socks5_reason reason)
{
	switch (reason) {
	case SOCKS5_OK: return "ok";
	case SOCKS5_BAD_VERSION: return "bad-version";
	case SOCKS5_NO_METHODS: return "no-methods";
	case SOCKS5_NO_ACCEPTABLE_METHOD: return "no-acceptable-method";
	case SOCKS5_COMMAND_NOT_SUPPORTED: return "command-not-supported";
	case SOCKS5_ADDRESS_TYPE_NOT_SUPPORTED: return "address-type-not-supported";
	case SOCKS5_BAD_RESERVED: return "bad-reserved";
	case SOCKS5_BAD_ADDRESS_LENGTH: return "bad-address-length";
	case SOCKS5_BAD_HASH: return "bad-hash";
	case SOCKS5_BAD_PORT: return "bad-port";
	case SOCKS5_REFUSED: return "refused";
	case SOCKS5_OVER_LIMIT: return "over-limit";
	}
	return "unknown";
}
