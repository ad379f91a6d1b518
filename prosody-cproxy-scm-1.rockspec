rockspec_format = "3.0"
package = "prosody-cproxy"
version = "scm-1"
source = {
	url = "git+file:///dev/null", -- install from a checkout: luarocks make
}
description = {
	summary = "XEP-0065 proxy65 and client_proxy (JAT) components for Prosody, with their hot paths in C",
	detailed = [[
A drop-in replacement for Prosody's mod_proxy65 whose SOCKS5 handshake and
byte relay run in C, and a client_proxy component (Jabber Address
Translation) with authenticated encoding in C.
]],
	license = "MIT",
}
dependencies = {
	"lua >= 5.4",
}
-- Debian provides LuaSocket, libexpat and libcrypto; install offline with
--   luarocks --lua-version 5.4 make --deps-mode none
build = {
	type = "make",
	build_variables = {
		CFLAGS = "$(CFLAGS)",
		LIBFLAG = "$(LIBFLAG)",
		LUA_INCDIR = "$(LUA_INCDIR)",
		LUA_CFLAGS = "-I$(LUA_INCDIR)",
	},
	install_variables = {
		INST_LIBDIR = "$(LIBDIR)",
		INST_LUADIR = "$(LUADIR)",
		INST_BINDIR = "$(BINDIR)",
	},
}
