/*
 * XMPP stream parsing on libexpat (see xmlstream.h).
 *
 * Bounds: expat buffers an unfinished token (a start tag, a long text run)
 * until it is complete. So expat is never handed more than one byte past
 * max_stanza bytes since the last stanza (or the header) ended, or since
 * the current stanza began: if the stanza has not ended by then it is too
 * big. A peer can never make it hold, or deliver, more than max_stanza + 1
 * bytes of one stanza, and since the cut falls at the same byte whatever
 * the chunks, so does the error (spec/fuzz/fuzz_xmlstream.c checks both).
 * Depth and attribute count are checked as elements open.
 * SPDX-License-Identifier: MIT
 */
#include <assert.h>
#include <errno.h>
#include <string.h>

#include "xmlstream.h"

#define NS_SEP '\1'

/*
 * COMPAT: expat 2.6.0 defers re-parsing an unfinished token (a long start
 * tag, say) until the buffer has grown to about twice its size. Debian 12's
 * security updates of 2.5.0 carry the same change with their version macros
 * still at 2.5.0, so no macro tells. A stream parser is fed what the network
 * delivers, and with deferral the tail of a stanza would wait for the next
 * stanza, which may never come: it must be off. The declaration is weak, so
 * the call is made wherever the libexpat loaded at run time has it, whether
 * or not the header built against declared it (a build made before the
 * security update and run after it still turns deferral off).
 */
#pragma weak XML_SetReparseDeferralEnabled
XMLPARSEAPI(XML_Bool) XML_SetReparseDeferralEnabled(XML_Parser parser, XML_Bool enabled);

/* Splits expat's "ns\1local" without copying. */
static void
split_name(const char *qualified, struct xmlstream_name *out)
{
	const char *sep = strchr(qualified, NS_SEP);

	if (sep == NULL) {
		out->ns = "";
		out->ns_len = 0;
		out->local = qualified;
	} else {
		out->ns = qualified;
		out->ns_len = (size_t)(sep - qualified);
		out->local = sep + 1;
	}
}

static void
stop(struct xmlstream *x, enum xmlstream_error err)
{
	if (x->error == XMLSTREAM_OK) {
		x->error = err;
	}
	XML_StopParser(x->parser, XML_FALSE);
}

static void XMLCALL
on_start(void *ud, const XML_Char *qname, const XML_Char **atts)
{
	struct xmlstream *x = ud;
	struct xmlstream_name name, names[XMLSTREAM_MAX_ATTRS_LIMIT];
	const char *values[XMLSTREAM_MAX_ATTRS_LIMIT];
	int n = 0;

	if (x->error) {
		return;
	}
	if (x->depth + 1 > x->max_depth) {
		stop(x, XMLSTREAM_TOO_DEEP);
		return;
	}
	for (int i = 0; atts[i] != NULL; i += 2) {
		if (n >= x->max_attrs) {
			stop(x, XMLSTREAM_TOO_MANY_ATTRS);
			return;
		}
		split_name(atts[i], &names[n]);
		values[n] = atts[i + 1];
		n++;
	}
	x->depth++;
	if (x->depth == 1) {
		/* Stanzas are measured from the end of the stream header. */
		x->boundary = (unsigned long long)XML_GetCurrentByteIndex(x->parser)
		    + (unsigned long long)XML_GetCurrentByteCount(x->parser);
	} else if (x->depth == 2) {
		x->boundary = (unsigned long long)XML_GetCurrentByteIndex(x->parser);
	}
	split_name(qname, &name);
	if (x->cb.open(x->cb.ud, x->depth, &name, n, names, values)) {
		stop(x, XMLSTREAM_NO_MEMORY);
	}
}

static void XMLCALL
on_end(void *ud, const XML_Char *qname)
{
	struct xmlstream *x = ud;

	(void)qname;
	if (x->error) {
		return;
	}
	if (x->depth == 2) {
		/* The next stanza's bytes start after this end tag. */
		unsigned long long end = (unsigned long long)XML_GetCurrentByteIndex(x->parser)
		    + (unsigned long long)XML_GetCurrentByteCount(x->parser);
		if (end - x->boundary > x->max_stanza) {
			stop(x, XMLSTREAM_TOO_BIG);	/* one byte over: not delivered */
			return;
		}
		x->boundary = end;
	}
	if (x->cb.close(x->cb.ud, x->depth)) {
		stop(x, XMLSTREAM_NO_MEMORY);
		return;
	}
	x->depth--;
	if (x->depth == 0) {
		x->ended = 1;
		XML_StopParser(x->parser, XML_FALSE);
	}
}

static void XMLCALL
on_text(void *ud, const XML_Char *s, int len)
{
	struct xmlstream *x = ud;

	if (x->error || x->depth < 2) {
		return;	/* whitespace between stanzas */
	}
	/* No size check here: xmlstream_feed never parses past the bound. */
	if (x->cb.text(x->cb.ud, x->depth, s, len)) {
		stop(x, XMLSTREAM_NO_MEMORY);
	}
}

static void XMLCALL
on_restricted_pi(void *ud, const XML_Char *target, const XML_Char *data)
{
	(void)target;
	(void)data;
	stop(ud, XMLSTREAM_RESTRICTED_XML);
}

static void XMLCALL
on_restricted_comment(void *ud, const XML_Char *data)
{
	(void)data;
	stop(ud, XMLSTREAM_RESTRICTED_XML);
}

static void XMLCALL
on_restricted_doctype(void *ud, const XML_Char *name, const XML_Char *sysid,
    const XML_Char *pubid, int has_internal_subset)
{
	(void)name;
	(void)sysid;
	(void)pubid;
	(void)has_internal_subset;
	stop(ud, XMLSTREAM_RESTRICTED_XML);
}

static void XMLCALL
on_restricted_entity(void *ud, const XML_Char *name, int is_param,
    const XML_Char *value, int value_len, const XML_Char *base,
    const XML_Char *sysid, const XML_Char *pubid, const XML_Char *notation)
{
	(void)name;
	(void)is_param;
	(void)value;
	(void)value_len;
	(void)base;
	(void)sysid;
	(void)pubid;
	(void)notation;
	stop(ud, XMLSTREAM_RESTRICTED_XML);
}

int
xmlstream_init(struct xmlstream *x, const struct xmlstream_callbacks *cb)
{
	memset(x, 0, sizeof(*x));
	x->cb = *cb;
	x->max_stanza = XMLSTREAM_MAX_STANZA_DEFAULT;
	x->max_depth = XMLSTREAM_MAX_DEPTH_DEFAULT;
	x->max_attrs = XMLSTREAM_MAX_ATTRS_DEFAULT;
	x->parser = XML_ParserCreateNS("UTF-8", NS_SEP);
	if (x->parser == NULL) {
		return ENOMEM;
	}
	if (XML_SetReparseDeferralEnabled != NULL) {
		XML_SetReparseDeferralEnabled(x->parser, XML_FALSE);
	}
	XML_SetUserData(x->parser, x);
	XML_SetElementHandler(x->parser, on_start, on_end);
	XML_SetCharacterDataHandler(x->parser, on_text);
	XML_SetProcessingInstructionHandler(x->parser, on_restricted_pi);
	XML_SetCommentHandler(x->parser, on_restricted_comment);
	XML_SetStartDoctypeDeclHandler(x->parser, on_restricted_doctype);
	XML_SetEntityDeclHandler(x->parser, on_restricted_entity);
	return 0;
}

enum xmlstream_error
xmlstream_feed(struct xmlstream *x, const char *data, size_t len)
{
	if (x->error) {
		return x->error;
	}
	while (len > 0 && !x->ended) {
		/*
		 * Stop one byte past the bound, wherever the caller's chunks end
		 * (see the top of this file); expat takes an int length, so no
		 * more than 1 MiB at a time either.
		 */
		unsigned long long room = x->boundary + x->max_stanza + 1 - x->fed;
		size_t piece = len < (1u << 20) ? len : (1u << 20);
		enum XML_Status status;

		assert(x->fed - x->boundary <= x->max_stanza && room >= 1);
		if (piece > room) {
			piece = (size_t)room;
		}
		status = XML_Parse(x->parser, data, (int)piece, XML_FALSE);
		x->fed += (unsigned long long)piece;
		data += piece;
		len -= piece;
		if (status != XML_STATUS_OK) {
			if (x->ended && x->error == XMLSTREAM_OK) {
				break;	/* stopped at the stream's end tag */
			}
			if (x->error == XMLSTREAM_OK) {
				x->error = XML_GetErrorCode(x->parser) == XML_ERROR_NO_MEMORY
				    ? XMLSTREAM_NO_MEMORY : XMLSTREAM_NOT_WELL_FORMED;
			}
			return x->error;
		}
		/* Bytes since the last stanza (or the header) ended. */
		if (x->fed - x->boundary > x->max_stanza) {
			x->error = XMLSTREAM_TOO_BIG;
			return x->error;
		}
	}
	return XMLSTREAM_OK;
}

const char *
xmlstream_error_name(enum xmlstream_error err)
{
	switch (err) {
	case XMLSTREAM_OK: return "ok";
	case XMLSTREAM_NOT_WELL_FORMED: return "not-well-formed";
	case XMLSTREAM_RESTRICTED_XML: return "restricted-xml";
	case XMLSTREAM_TOO_BIG: return "stanza-too-big";
	case XMLSTREAM_TOO_DEEP: return "too-deep";
	case XMLSTREAM_TOO_MANY_ATTRS: return "too-many-attributes";
	case XMLSTREAM_NO_MEMORY: return "no-memory";
	}
	return "unknown";
}

const char *
xmlstream_error_condition(enum xmlstream_error err)
{
	switch (err) {
	case XMLSTREAM_OK: return NULL;
	case XMLSTREAM_NOT_WELL_FORMED: return "not-well-formed";
	case XMLSTREAM_RESTRICTED_XML: return "restricted-xml";
	case XMLSTREAM_TOO_BIG:
	case XMLSTREAM_TOO_DEEP:
	case XMLSTREAM_TOO_MANY_ATTRS: return "policy-violation";
	case XMLSTREAM_NO_MEMORY: return "resource-constraint";
	}
	return "undefined-condition";
}

void
xmlstream_free(struct xmlstream *x)
{
	if (x->parser) {
		XML_ParserFree(x->parser);
		x->parser = NULL;
	}
}
