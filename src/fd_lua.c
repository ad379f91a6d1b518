/*
 * cproxy.core.own_fd(fd): a socket fd held between net.server and the
 * relay engine. proxy65 takes each socket away from Prosody's loop once
 * its SOCKS5 handshake is done; the handle keeps it open until activation
 * hands it to the engine, and closes it if that never happens. Nothing
 * here reads or writes the fd: probe() only peeks.
 * SPDX-License-Identifier: MIT
 */
#include <errno.h>
#include <sys/socket.h>
#include <sys/types.h>

#include "cproxy.h"
#include "fd.h"

struct owned_fd {
	int fd;	/* -1 once closed or released */
};

static struct owned_fd *
check_owned(lua_State *L)
{
	return luaL_checkudata(L, 1, CPROXY_FD_MT);
}

/* (fd) -> handle   the handle owns fd from here on */
static int
l_own_fd(lua_State *L)
{
	lua_Integer fd = luaL_checkinteger(L, 1);
	struct owned_fd *h;

	luaL_argcheck(L, fd >= 0 && fd <= 0x7fffffff, 1, "invalid fd");
	h = lua_newuserdatauv(L, sizeof(*h), 0);
	h->fd = (int)fd;
	luaL_setmetatable(L, CPROXY_FD_MT);
	return 1;
}

int
fd_lua_peek(lua_State *L, int idx)
{
	struct owned_fd *h = luaL_checkudata(L, idx, CPROXY_FD_MT);

	return h->fd;
}

int
fd_lua_take(lua_State *L, int idx)
{
	struct owned_fd *h = luaL_checkudata(L, idx, CPROXY_FD_MT);
	int fd = h->fd;

	h->fd = -1;
	return fd;
}

/* (handle) -> fd | nil   nil once closed or released */
static int
l_getfd(lua_State *L)
{
	struct owned_fd *h = check_owned(L);

	if (h->fd < 0) {
		lua_pushnil(L);
	} else {
		lua_pushinteger(L, h->fd);
	}
	return 1;
}

/* (handle) -> fd   gives the fd to the caller; raises if there is none */
static int
l_release(lua_State *L)
{
	struct owned_fd *h = check_owned(L);

	luaL_argcheck(L, h->fd >= 0, 1, "fd already closed or released");
	lua_pushinteger(L, h->fd);
	h->fd = -1;
	return 1;
}

/*
 * (handle) -> "data" | "eof" | "empty" | nil, err, errno
 * What reading would find, without reading: bytes, the peer's FIN, or
 * nothing yet. For a socket waiting for activation: its input must stay
 * queued for the relay, but a peer that leaves should be noticed.
 */
static int
l_probe(lua_State *L)
{
	struct owned_fd *h = check_owned(L);
	char byte;
	ssize_t n;

	luaL_argcheck(L, h->fd >= 0, 1, "fd closed or released");
	do {
		n = recv(h->fd, &byte, 1, MSG_PEEK | MSG_DONTWAIT);
	} while (n < 0 && errno == EINTR);
	if (n > 0) {
		lua_pushliteral(L, "data");
	} else if (n == 0) {
		lua_pushliteral(L, "eof");
	} else if (errno == EAGAIN || errno == EWOULDBLOCK) {
		lua_pushliteral(L, "empty");
	} else {
		return errors_push(L, errno);
	}
	return 1;
}

/* (handle) -> true   idempotent; also __gc and __close */
static int
l_close(lua_State *L)
{
	struct owned_fd *h = check_owned(L);

	fd_close(&h->fd);
	lua_pushboolean(L, 1);
	return 1;
}

static int
l_tostring(lua_State *L)
{
	struct owned_fd *h = check_owned(L);

	if (h->fd < 0) {
		lua_pushliteral(L, "owned fd (closed)");
	} else {
		lua_pushfstring(L, "owned fd %d", h->fd);
	}
	return 1;
}

void
fd_lua_open(lua_State *L)
{
	static const luaL_Reg methods[] = {
		{ "getfd", l_getfd },
		{ "release", l_release },
		{ "probe", l_probe },
		{ "close", l_close },
		{ NULL, NULL }
	};

	class_define(L, CPROXY_FD_MT, methods, l_close, l_tostring);
	lua_pushcfunction(L, l_own_fd);
	lua_setfield(L, -2, "own_fd");
}
