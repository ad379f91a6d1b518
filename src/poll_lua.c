/*
 * cproxy.core.poll(): a level-triggered epoll set for the standalone
 * component's event loop (Prosody brings its own; this one serves where
 * Prosody is absent), after Prosody's util.poll: one ready fd per wait().
 * SPDX-License-Identifier: MIT
 */
#include <errno.h>
#include <string.h>
#include <sys/epoll.h>
#include <unistd.h>

#include "cproxy.h"
#include "fd.h"

#define MAX_EVENTS 256

struct poll_ud {
	int epfd;
	int n, next;	/* events[next..n) are still to be handed out */
	struct epoll_event events[MAX_EVENTS];
};

static struct poll_ud *
check_poll(lua_State *L)
{
	struct poll_ud *p = luaL_checkudata(L, 1, CPROXY_POLL_MT);

	luaL_argcheck(L, p->epfd >= 0, 1, "poll is closed");
	return p;
}

/* poll() -> poll | nil, err, errno */
static int
l_new(lua_State *L)
{
	struct poll_ud *p = lua_newuserdatauv(L, sizeof(*p), 0);

	p->epfd = -1;
	p->n = p->next = 0;
	luaL_setmetatable(L, CPROXY_POLL_MT);
	p->epfd = epoll_create1(EPOLL_CLOEXEC);
	if (p->epfd < 0) {
		return errors_push(L, errno);
	}
	return 1;
}

static int
control(lua_State *L, int op)
{
	struct poll_ud *p = check_poll(L);
	lua_Integer fd = luaL_checkinteger(L, 2);
	struct epoll_event ev;

	luaL_argcheck(L, fd >= 0 && fd <= 0x7fffffff, 2, "invalid fd");
	memset(&ev, 0, sizeof(ev));
	ev.events = (lua_toboolean(L, 3) ? EPOLLIN : 0) | (lua_toboolean(L, 4) ? EPOLLOUT : 0);
	ev.data.fd = (int)fd;
	if (epoll_ctl(p->epfd, op, (int)fd, &ev) < 0) {
		return errors_push(L, errno);
	}
	/* A removed fd may still have an event pending here: drop it. */
	if (op == EPOLL_CTL_DEL) {
		for (int i = p->next; i < p->n; i++) {
			if (p->events[i].data.fd == (int)fd) {
				p->events[i].events = 0;
			}
		}
	}
	lua_pushboolean(L, 1);
	return 1;
}

/* (poll, fd, read, write) -> true | nil, err, errno */
static int
l_add(lua_State *L)
{
	return control(L, EPOLL_CTL_ADD);
}

/* (poll, fd, read, write) -> true | nil, err, errno */
static int
l_set(lua_State *L)
{
	return control(L, EPOLL_CTL_MOD);
}

/* (poll, fd) -> true | nil, err, errno */
static int
l_del(lua_State *L)
{
	return control(L, EPOLL_CTL_DEL);
}

/*
 * (poll, timeout_seconds) -> fd, readable, writable | nil, "timeout"
 *   | nil, err, errno
 * An error or hang-up counts as readable (the read will tell).
 */
static int
l_wait(lua_State *L)
{
	struct poll_ud *p = check_poll(L);
	lua_Number timeout = luaL_checknumber(L, 2);

	while (p->next >= p->n) {
		int ms = timeout < 0 ? -1 : timeout > 86400 ? 86400000 : (int)(timeout * 1000);
		int n = epoll_wait(p->epfd, p->events, MAX_EVENTS, ms);
		if (n < 0) {
			if (errno == EINTR) {
				continue;
			}
			return errors_push(L, errno);
		}
		if (n == 0) {
			lua_pushnil(L);
			lua_pushliteral(L, "timeout");
			return 2;
		}
		p->n = n;
		p->next = 0;
	}
	while (p->next < p->n) {
		struct epoll_event *ev = &p->events[p->next++];
		if (ev->events == 0) {
			continue;	/* removed since */
		}
		lua_pushinteger(L, ev->data.fd);
		lua_pushboolean(L, (ev->events & (EPOLLIN | EPOLLHUP | EPOLLERR)) != 0);
		lua_pushboolean(L, (ev->events & EPOLLOUT) != 0);
		return 3;
	}
	lua_pushnil(L);
	lua_pushliteral(L, "timeout");
	return 2;
}

/* (poll) -> true   idempotent; also __gc and __close */
static int
l_close(lua_State *L)
{
	struct poll_ud *p = luaL_checkudata(L, 1, CPROXY_POLL_MT);

	fd_close(&p->epfd);
	lua_pushboolean(L, 1);
	return 1;
}

static int
l_tostring(lua_State *L)
{
	struct poll_ud *p = luaL_checkudata(L, 1, CPROXY_POLL_MT);

	lua_pushfstring(L, "poll (%s): %p", p->epfd >= 0 ? "open" : "closed", (void *)p);
	return 1;
}

void
poll_lua_open(lua_State *L)
{
	static const luaL_Reg methods[] = {
		{ "add", l_add },
		{ "set", l_set },
		{ "del", l_del },
		{ "wait", l_wait },
		{ "close", l_close },
		{ NULL, NULL }
	};

	class_define(L, CPROXY_POLL_MT, methods, l_close, l_tostring);
	lua_pushcfunction(L, l_new);
	lua_setfield(L, -2, "poll");
}
