/*
 * An XMPP stream parser on libexpat: the stream header, then one stanza
 * after another, each delivered whole through callbacks, with hard bounds
 * on what a peer can make it hold. Pure C: no Lua, no I/O.
 * Names arrive namespace-qualified as "namespace\1local" (expat's NS mode);
 * the callbacks get them split. Comments, processing instructions and
 * DTDs are refused (RFC 6120's restricted XML).
 * SPDX-License-Identifier: MIT
 */
#ifndef CPROXY_XMLSTREAM_H
#define CPROXY_XMLSTREAM_H

#include <stddef.h>

#include <expat.h>

#define XMLSTREAM_MAX_STANZA_DEFAULT (256u << 10)
#define XMLSTREAM_MAX_DEPTH_DEFAULT 32
#define XMLSTREAM_MAX_ATTRS_DEFAULT 64
#define XMLSTREAM_MAX_ATTRS_LIMIT 256	/* max_attrs may be at most this */

/* Why a stream failed: each maps to an RFC 6120 stream error condition. */
enum xmlstream_error {
	XMLSTREAM_OK = 0,
	XMLSTREAM_NOT_WELL_FORMED,	/* not-well-formed */
	XMLSTREAM_RESTRICTED_XML,	/* restricted-xml */
	XMLSTREAM_TOO_BIG,	/* policy-violation: a stanza past max_stanza */
	XMLSTREAM_TOO_DEEP,	/* policy-violation: nesting past max_depth */
	XMLSTREAM_TOO_MANY_ATTRS,	/* policy-violation */
	XMLSTREAM_NO_MEMORY	/* resource-constraint */
};

/* A namespace-qualified name; ns_len is 0 when it has no namespace. */
struct xmlstream_name {
	const char *ns;
	size_t ns_len;
	const char *local;
};

struct xmlstream_callbacks {
	void *ud;
	/*
	 * An element opens at `depth` (1: the stream header, 2: a stanza),
	 * with n attributes: names[i] = values[i]. Returns 0, or nonzero to
	 * stop with XMLSTREAM_NO_MEMORY.
	 */
	int (*open)(void *ud, int depth, const struct xmlstream_name *name,
	    int n, const struct xmlstream_name *names, const char **values);
	/* Character data inside an element at `depth` (not the header). */
	int (*text)(void *ud, int depth, const char *s, int len);
	/* An element closes; depth 1 is the end of the stream. */
	int (*close)(void *ud, int depth);
};

struct xmlstream {
	XML_Parser parser;
	struct xmlstream_callbacks cb;
	size_t max_stanza;
	int max_depth, max_attrs;
	int depth;
	enum xmlstream_error error;
	unsigned long long fed;	/* bytes fed so far */
	unsigned long long boundary;	/* where the current stanza began */
	int ended;	/* the stream's end tag was seen */
};

/* Returns 0, or ENOMEM. The limits are the defaults above until changed. */
int xmlstream_init(struct xmlstream *x, const struct xmlstream_callbacks *cb);

/*
 * Parses len bytes. Returns XMLSTREAM_OK, or the error that ended the
 * stream (then nothing more may be fed). Bytes after the stream's end tag
 * are not parsed: the stream is over, and whether expat would call them
 * an error depends on where the chunks fall.
 */
enum xmlstream_error xmlstream_feed(struct xmlstream *x, const char *data, size_t len);

/* A fixed token for an error, e.g. "not-well-formed". */
const char *xmlstream_error_name(enum xmlstream_error err);

/* The RFC 6120 stream error condition for an error. */
const char *xmlstream_error_condition(enum xmlstream_error err);

void xmlstream_free(struct xmlstream *x);

#endif
