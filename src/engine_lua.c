/*
 * Lua binding of the relay engine: cproxy.core.engine{...}.
 * SPDX-License-Identifier: MIT
 */
#include <errno.h>
#include <string.h>

#include "cproxy.h"
#include "engine.h"

#define REAP_BATCH 64

/*
 * The bounds of each engine option, defined here once and exported as
 * cproxy.core.engine_limits, which the modules read their options against.
 */
struct limit {
	const char *name;
	lua_Integer def, min, max;
};

static const struct limit limits[] = {
	{ "buffer_size", ENGINE_BUFFER_SIZE_DEFAULT, 4096, 1 << 30 },
	/* Held in int milliseconds: 24 days is the most that fits. */
	{ "idle_timeout", 0, 0, 86400 * 24 },
	{ "sockbuf", 0, 0, 1 << 30 },
	/* Rates up to 16 GiB/s keep the bucket's arithmetic in 64 bits. */
	{ "rate_limit", 0, 0, (lua_Integer)1 << 34 },
	{ "total_rate_limit", 0, 0, (lua_Integer)1 << 34 },
	{ "max_bytes", 0, 0, (lua_Integer)1 << 53 },
	/* The relay thread's nice value, relative to none (0). */
	{ "nice", 0, 0, 19 },
	{ "relay_memory", (lua_Integer)ENGINE_RELAY_MEMORY_DEFAULT, 0, (lua_Integer)1 << 40 },
};

enum {
	LIMIT_BUFFER_SIZE, LIMIT_IDLE_TIMEOUT, LIMIT_SOCKBUF, LIMIT_RATE, LIMIT_TOTAL_RATE, LIMIT_MAX_BYTES,
	LIMIT_NICE, LIMIT_RELAY_MEMORY
};

struct engine_ud {
	struct engine *engine;	/* NULL once closed */
	uint64_t next_id;
};

static void set_integer(lua_State *L, const char *name, uint64_t v);

static struct engine_ud *
check_engine_ud(lua_State *L)
{
	return luaL_checkudata(L, 1, CPROXY_ENGINE_MT);
}

static struct engine *
check_engine(lua_State *L)
{
	struct engine_ud *ud = check_engine_ud(L);

	luaL_argcheck(L, ud->engine != NULL, 1, "engine is closed");
	return ud->engine;
}

static lua_Integer
opt_field(lua_State *L, int t, const char *name, lua_Integer def, lua_Integer min,
    lua_Integer max)
{
	lua_Integer v;

	lua_getfield(L, t, name);
	if (lua_isnil(L, -1)) {
		v = def;
	} else {
		int ok;
		v = lua_tointegerx(L, -1, &ok);
		if (!ok || v < min || v > max) {
			luaL_error(L, "option '%s' must be an integer in [%I, %I]", name, min, max);
		}
	}
	lua_pop(L, 1);
	return v;
}

static lua_Integer
opt_limit(lua_State *L, int t, const struct limit *limit)
{
	return opt_field(L, t, limit->name, limit->def, limit->min, limit->max);
}

/* Reads the options table at index t (or defaults, when it is absent). */
static void
check_config(lua_State *L, int t, struct engine_config *cfg)
{
	static const char *const modes[] = { "copy", "splice", NULL };	/* enum relay_mode */

	memset(cfg, 0, sizeof(*cfg));
	if (lua_isnoneornil(L, t)) {
		/* No table: every option at its default, read as from an empty one
		 * (the options are the last argument). */
		lua_settop(L, t - 1);
		lua_newtable(L);
	}
	luaL_checktype(L, t, LUA_TTABLE);
	cfg->buffer_size = (size_t)opt_limit(L, t, &limits[LIMIT_BUFFER_SIZE]);
	cfg->idle_timeout_ms = (int)opt_limit(L, t, &limits[LIMIT_IDLE_TIMEOUT]) * 1000;
	cfg->sockbuf = (int)opt_limit(L, t, &limits[LIMIT_SOCKBUF]);
	cfg->rate_limit = (uint64_t)opt_limit(L, t, &limits[LIMIT_RATE]);
	cfg->total_rate_limit = (uint64_t)opt_limit(L, t, &limits[LIMIT_TOTAL_RATE]);
	cfg->max_bytes = (uint64_t)opt_limit(L, t, &limits[LIMIT_MAX_BYTES]);
	cfg->nice = (int)opt_limit(L, t, &limits[LIMIT_NICE]);
	cfg->relay_memory = (size_t)opt_limit(L, t, &limits[LIMIT_RELAY_MEMORY]);
	lua_getfield(L, t, "mode");
	cfg->mode = (enum relay_mode)luaL_checkoption(L, -1, "copy", modes);
	lua_pop(L, 1);
}

/*
 * engine{ buffer_size=, mode="copy"|"splice", idle_timeout=seconds, sockbuf=,
 *   rate_limit=, total_rate_limit= (bytes/s), max_bytes=, nice=0..19,
 *   relay_memory= (bytes) }
 *   -> engine | nil, err, errno
 */
static int
l_new(lua_State *L)
{
	struct engine_config cfg;
	struct engine_ud *ud;
	int err;

	check_config(L, 1, &cfg);
	ud = lua_newuserdatauv(L, sizeof(*ud), 0);
	ud->engine = NULL;
	ud->next_id = 1;
	luaL_setmetatable(L, CPROXY_ENGINE_MT);
	ud->engine = engine_new(&cfg, &err);
	if (ud->engine == NULL) {
		return errors_push(L, err);
	}
	return 1;
}

/*
 * (engine, { buffer_size=, mode=, idle_timeout=, sockbuf=, rate_limit=,
 *   total_rate_limit=, max_bytes=, nice=, relay_memory= }) -> true | nil, err, errno
 * The same options as engine{}; see engine_configure() for when each applies.
 */
static int
l_configure(lua_State *L)
{
	struct engine *e = check_engine(L);
	struct engine_config cfg;
	int err;

	luaL_checktype(L, 2, LUA_TTABLE);
	check_config(L, 2, &cfg);
	if ((err = engine_configure(e, &cfg))) {
		return errors_push(L, err);
	}
	lua_pushboolean(L, 1);
	return 1;
}

/*
 * (engine) -> { { id=, target_bytes=, initiator_bytes= }, ... } | nil, err, errno
 * The running relays, from the relay thread (a wait of milliseconds).
 */
static int
l_list(lua_State *L)
{
	struct engine *e = check_engine(L);
	struct engine_relay_info *info;
	size_t n = 0, max = 4096;
	int err;

	info = lua_newuserdatauv(L, max * sizeof(*info), 0);	/* freed by the GC */
	if ((err = engine_list(e, info, max, &n))) {
		return errors_push(L, err);
	}
	lua_createtable(L, (int)n, 0);
	for (size_t i = 0; i < n; i++) {
		lua_createtable(L, 0, 3);
		set_integer(L, "id", info[i].id);
		set_integer(L, "target_bytes", info[i].bytes[0]);
		set_integer(L, "initiator_bytes", info[i].bytes[1]);
		lua_rawseti(L, -2, (lua_Integer)i + 1);
	}
	return 1;
}

/* (engine, id) -> true | nil, err, errno   ends the relay, resetting both peers */
static int
l_cancel(lua_State *L)
{
	struct engine *e = check_engine(L);
	lua_Integer id = luaL_checkinteger(L, 2);
	int err;

	luaL_argcheck(L, id > 0, 2, "invalid relay id");
	if ((err = engine_cancel(e, (uint64_t)id))) {
		return errors_push(L, err);
	}
	lua_pushboolean(L, 1);
	return 1;
}

/* (engine) -> fd   readable when relays have finished */
static int
l_getfd(lua_State *L)
{
	lua_pushinteger(L, engine_notify_fd(check_engine(L)));
	return 1;
}

/*
 * (engine, target, initiator[, target_early[, initiator_early]])
 *   -> id | nil, err, errno
 * target and initiator are cproxy.fd handles (cproxy.core.own_fd). The
 * engine takes their fds and owns them from here on, also on failure; if
 * this raises instead, the handles keep them.
 */
static int
l_add(lua_State *L)
{
	struct engine_ud *ud = check_engine_ud(L);
	int fd0 = fd_lua_peek(L, 2);
	int fd1 = fd_lua_peek(L, 3);
	size_t len0 = 0, len1 = 0;
	const char *early0 = luaL_optlstring(L, 4, "", &len0);
	const char *early1 = luaL_optlstring(L, 5, "", &len1);
	uint64_t id;
	int err;

	/* Whatever raises here leaves both fds to their handles. */
	luaL_argcheck(L, ud->engine != NULL, 1, "engine is closed");
	luaL_argcheck(L, fd0 >= 0, 2, "fd closed or released");
	luaL_argcheck(L, fd1 >= 0 && fd1 != fd0, 3, "fd closed, released or the same as the first");
	fd0 = fd_lua_take(L, 2);
	fd1 = fd_lua_take(L, 3);
	id = ud->next_id++;
	/* The engine owns the fds from here on, even when it fails. */
	err = engine_add(ud->engine, id, fd0, fd1, (const uint8_t *)early0,
	    len0, (const uint8_t *)early1, len1);
	if (err) {
		return errors_push(L, err);
	}
	lua_pushinteger(L, (lua_Integer)id);
	return 1;
}

static void
set_integer(lua_State *L, const char *name, uint64_t v)
{
	lua_pushinteger(L, (lua_Integer)v);
	lua_setfield(L, -2, name);
}

/*
 * (engine) -> { { id=, target_bytes=, initiator_bytes=, timed_out=,
 *                error=, errno=, failed="target"|"initiator" }, ... }
 * target_bytes counts what the target sent, delivered to the initiator.
 */
static int
l_reap(lua_State *L)
{
	struct engine *e = check_engine(L);
	struct engine_result res[REAP_BATCH];
	size_t n;
	lua_Integer k = 0;

	lua_newtable(L);
	do {
		n = engine_reap(e, res, REAP_BATCH);
		for (size_t i = 0; i < n; i++) {
			lua_createtable(L, 0, 7);
			set_integer(L, "id", res[i].id);
			set_integer(L, "target_bytes", res[i].bytes[0]);
			set_integer(L, "initiator_bytes", res[i].bytes[1]);
			lua_pushboolean(L, res[i].timed_out);
			lua_setfield(L, -2, "timed_out");
			if (res[i].error) {
				lua_pushstring(L, strerror(res[i].error));
				lua_setfield(L, -2, "error");
				set_integer(L, "errno", (uint64_t)res[i].error);
			}
			if (res[i].failed_side >= 0) {
				lua_pushstring(L, res[i].failed_side == 0 ? "target" : "initiator");
				lua_setfield(L, -2, "failed");
			}
			lua_rawseti(L, -2, ++k);
		}
	} while (n == REAP_BATCH);
	return 1;
}

/*
 * (engine) -> { started=, finished=, failed=, timed_out=, active=, bytes=,
 *   relayed=, limited_us= }   bytes: by finished relays; relayed: so far,
 *   by all; limited_us: time relays waited for a bandwidth limit
 */
static int
l_stats(lua_State *L)
{
	struct engine_stats st;

	engine_get_stats(check_engine(L), &st);
	lua_createtable(L, 0, 8);
	set_integer(L, "started", st.started);
	set_integer(L, "finished", st.finished);
	set_integer(L, "failed", st.failed);
	set_integer(L, "timed_out", st.timed_out);
	set_integer(L, "active", st.active);
	set_integer(L, "bytes", st.bytes);
	set_integer(L, "relayed", st.relayed);
	set_integer(L, "limited_us", st.limited_us);
	return 1;
}

/* (engine) -> true   stops the thread and closes all relays; idempotent */
static int
l_close(lua_State *L)
{
	struct engine_ud *ud = check_engine_ud(L);

	engine_free(ud->engine);
	ud->engine = NULL;
	lua_pushboolean(L, 1);
	return 1;
}

static int
l_tostring(lua_State *L)
{
	struct engine_ud *ud = check_engine_ud(L);

	lua_pushfstring(L, "relay engine (%s): %p", ud->engine ? "running" : "closed",
	    (void *)ud);
	return 1;
}

void
engine_lua_open(lua_State *L)
{
	static const luaL_Reg methods[] = {
		{ "getfd", l_getfd },
		{ "add", l_add },
		{ "configure", l_configure },
		{ "list", l_list },
		{ "cancel", l_cancel },
		{ "reap", l_reap },
		{ "stats", l_stats },
		{ "close", l_close },
		{ NULL, NULL }
	};

	class_define(L, CPROXY_ENGINE_MT, methods, l_close, l_tostring);
	lua_pushcfunction(L, l_new);
	lua_setfield(L, -2, "engine");
	/* engine_limits = { name = { default=, min=, max= }, ... } */
	lua_createtable(L, 0, (int)(sizeof(limits) / sizeof(limits[0])));
	for (size_t i = 0; i < sizeof(limits) / sizeof(limits[0]); i++) {
		lua_createtable(L, 0, 3);
		lua_pushinteger(L, limits[i].def);
		lua_setfield(L, -2, "default");
		lua_pushinteger(L, limits[i].min);
		lua_setfield(L, -2, "min");
		lua_pushinteger(L, limits[i].max);
		lua_setfield(L, -2, "max");
		lua_setfield(L, -2, limits[i].name);
	}
	lua_setfield(L, -2, "engine_limits");
}
