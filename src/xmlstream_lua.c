/*
 * Lua binding of the XMPP stream parser: cproxy.core.xmlstream{...}.
 * The only module that links libexpat. Stanzas come out as plain tables
 * in the shape of Prosody's util.stanza: { name=, attr={}, tags={}, ... }
 * with children and text in the array part.
 * SPDX-License-Identifier: MIT
 */
#include <string.h>

#include "cproxy.h"
#include "xmlstream.h"

#define XML_NS "http://www.w3.org/XML/1998/namespace"

struct xmlstream_ud {
	struct xmlstream x;
	int ready;	/* initialised and not broken by an error raised mid-parse */
	lua_State *L;	/* during feed only */
	int events;	/* stack index of the events table, during feed */
};

static struct xmlstream_ud *
check_xmlstream(lua_State *L)
{
	return luaL_checkudata(L, 1, CPROXY_XMLSTREAM_MT);
}

/* Pushes an attribute key: "name", "xml:name" or "ns\1name" (util.stanza). */
static void
push_attr_key(lua_State *L, const struct xmlstream_name *n)
{
	if (n->ns_len == 0) {
		lua_pushstring(L, n->local);
	} else if (n->ns_len == sizeof(XML_NS) - 1 && memcmp(n->ns, XML_NS, n->ns_len) == 0) {
		lua_pushfstring(L, "xml:%s", n->local);
	} else {
		lua_pushlstring(L, n->ns, n->ns_len + 1 + strlen(n->local));	/* the "\1" is expat's */
	}
}

/* Appends the value on top of the stack to the table at index t. */
static void
append(lua_State *L, int t)
{
	lua_rawseti(L, t, (lua_Integer)lua_rawlen(L, t) + 1);
}

static int
on_open(void *ud, int depth, const struct xmlstream_name *name, int n,
    const struct xmlstream_name *names, const char **values)
{
	struct xmlstream_ud *u = ud;
	lua_State *L = u->L;

	luaL_checkstack(L, 8, "stanza too deep");
	lua_createtable(L, 0, 4);	/* the element */
	lua_pushstring(L, name->local);
	lua_setfield(L, -2, "name");
	lua_createtable(L, 0, n + 1);	/* attr */
	for (int i = 0; i < n; i++) {
		push_attr_key(L, &names[i]);
		lua_pushstring(L, values[i]);
		lua_rawset(L, -3);
	}
	if (name->ns_len > 0) {
		lua_pushlstring(L, name->ns, name->ns_len);
		lua_setfield(L, -2, "xmlns");
	}
	lua_setfield(L, -2, "attr");
	if (depth == 1) {	/* the stream header: an event of its own */
		lua_pushliteral(L, "header");
		lua_setfield(L, -2, "event");
		append(L, u->events);
		return 0;
	}
	lua_newtable(L);
	lua_setfield(L, -2, "tags");
	if (depth > 2) {	/* a child: into its parent (just below it) */
		lua_pushvalue(L, -1);
		append(L, -3);
		lua_getfield(L, -2, "tags");
		lua_pushvalue(L, -2);
		append(L, -2);
		lua_pop(L, 1);
	}
	return 0;	/* the element stays on the stack until it closes */
}

static int
on_text(void *ud, int depth, const char *s, int len)
{
	struct xmlstream_ud *u = ud;
	lua_State *L = u->L;
	lua_Integer last = (lua_Integer)lua_rawlen(L, -1);

	(void)depth;
	/* expat splits text at its buffer's edges: join consecutive runs. */
	if (last > 0) {
		if (lua_rawgeti(L, -1, last) == LUA_TSTRING) {
			lua_pushlstring(L, s, (size_t)len);
			lua_concat(L, 2);
			lua_rawseti(L, -2, last);
			return 0;
		}
		lua_pop(L, 1);
	}
	lua_pushlstring(L, s, (size_t)len);
	append(L, -2);
	return 0;
}

static int
on_close(void *ud, int depth)
{
	struct xmlstream_ud *u = ud;
	lua_State *L = u->L;

	if (depth == 1) {
		lua_createtable(L, 0, 1);
		lua_pushliteral(L, "end");
		lua_setfield(L, -2, "event");
		append(L, u->events);
	} else if (depth == 2) {
		lua_pushliteral(L, "stanza");
		lua_setfield(L, -2, "event");
		append(L, u->events);
	} else {
		lua_pop(L, 1);
	}
	return 0;
}

/* xmlstream{ max_stanza=, max_depth=, max_attributes= } -> parser | nil, err, errno */
static int
l_new(lua_State *L)
{
	static const struct xmlstream_callbacks callbacks = { NULL, on_open, on_text, on_close };
	struct xmlstream_callbacks cb = callbacks;
	struct xmlstream_ud *u;
	lua_Integer max_stanza = XMLSTREAM_MAX_STANZA_DEFAULT;
	lua_Integer max_depth = XMLSTREAM_MAX_DEPTH_DEFAULT, max_attrs = XMLSTREAM_MAX_ATTRS_DEFAULT;
	int err;

	if (!lua_isnoneornil(L, 1)) {
		luaL_checktype(L, 1, LUA_TTABLE);
		lua_getfield(L, 1, "max_stanza");
		max_stanza = luaL_optinteger(L, -1, max_stanza);
		lua_getfield(L, 1, "max_depth");
		max_depth = luaL_optinteger(L, -1, max_depth);
		lua_getfield(L, 1, "max_attributes");
		max_attrs = luaL_optinteger(L, -1, max_attrs);
		lua_pop(L, 3);
		luaL_argcheck(L, max_stanza >= 1024 && max_stanza <= (64 << 20), 1, "max_stanza out of range");
		luaL_argcheck(L, max_depth >= 2 && max_depth <= 256, 1, "max_depth out of range");
		luaL_argcheck(L, max_attrs >= 1 && max_attrs <= XMLSTREAM_MAX_ATTRS_LIMIT, 1,
		    "max_attributes out of range");
	}
	u = lua_newuserdatauv(L, sizeof(*u), 0);
	memset(u, 0, sizeof(*u));
	luaL_setmetatable(L, CPROXY_XMLSTREAM_MT);
	cb.ud = u;
	if ((err = xmlstream_init(&u->x, &cb))) {
		return errors_push(L, err);
	}
	u->x.max_stanza = (size_t)max_stanza;
	u->x.max_depth = (int)max_depth;
	u->x.max_attrs = (int)max_attrs;
	u->ready = 1;
	return 1;
}

/*
 * (parser, data) -> events | nil, reason, condition, events
 * events: a list of { event = "header", name=, attr= } (the stream's
 * opening tag), { event = "stanza", name=, attr=, tags=, ... } and
 * { event = "end" }. On failure, reason is a fixed token (see
 * xmlstream_error_name) and condition the RFC 6120 stream error to send;
 * events then holds what was complete before the error, so that a reader
 * sees the same stanzas however the bytes were split. The parser is then
 * dead.
 */
static int
l_feed(lua_State *L)
{
	struct xmlstream_ud *u = check_xmlstream(L);
	size_t len;
	const char *data = luaL_checklstring(L, 2, &len);
	enum xmlstream_error err;
	int top;

	luaL_argcheck(L, u->ready, 1, "parser closed or broken");
	lua_settop(L, 2);
	lua_newtable(L);
	u->events = lua_gettop(L);
	top = u->events;
	/* A Lua error raised inside a callback would leave expat mid-parse. */
	u->ready = 0;
	u->L = L;
	/* Elements still open from an earlier feed were left in the registry. */
	lua_rawgetp(L, LUA_REGISTRYINDEX, u);
	if (lua_istable(L, -1)) {
		int n = (int)lua_rawlen(L, -1);
		luaL_checkstack(L, n + 8, "stanza too deep");
		for (int i = 1; i <= n; i++) {
			lua_rawgeti(L, top + 1, i);
		}
	}
	lua_remove(L, top + 1);
	err = xmlstream_feed(&u->x, data, len);
	u->L = NULL;
	/* Keep the elements still open for the next feed. */
	{
		int open = lua_gettop(L) - top;
		lua_createtable(L, open, 0);
		for (int i = 1; i <= open; i++) {
			lua_pushvalue(L, top + i);
			lua_rawseti(L, -2, i);
		}
		lua_rawsetp(L, LUA_REGISTRYINDEX, u);
		lua_settop(L, top);
	}
	if (err != XMLSTREAM_OK) {
		lua_pushnil(L);
		lua_pushstring(L, xmlstream_error_name(err));
		lua_pushstring(L, xmlstream_error_condition(err));
		lua_pushvalue(L, top);
		return 4;
	}
	u->ready = 1;
	return 1;
}

/* (parser) -> true   idempotent; also __gc and __close */
static int
l_close(lua_State *L)
{
	struct xmlstream_ud *u = check_xmlstream(L);

	xmlstream_free(&u->x);
	u->ready = 0;
	lua_pushnil(L);
	lua_rawsetp(L, LUA_REGISTRYINDEX, u);
	lua_pushboolean(L, 1);
	return 1;
}

static int
l_tostring(lua_State *L)
{
	struct xmlstream_ud *u = check_xmlstream(L);

	lua_pushfstring(L, "xmlstream (%s): %p", u->ready ? "open" : "closed", (void *)u);
	return 1;
}

void
xmlstream_lua_open(lua_State *L)
{
	static const luaL_Reg methods[] = {
		{ "feed", l_feed },
		{ "close", l_close },
		{ NULL, NULL }
	};

	class_define(L, CPROXY_XMLSTREAM_MT, methods, l_close, l_tostring);
	lua_pushcfunction(L, l_new);
	lua_setfield(L, -2, "xmlstream");
}
