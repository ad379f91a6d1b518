# prosody-cproxy: build, test, run and benchmark.
# `make` builds build/cproxy/core.so; `make check` sets up and runs the specs;
# `make run` starts a demo Prosody from this checkout; `make check-prosody13`
# runs the integration specs against Prosody 13, built from its tarball.

LUA_VERSION ?= 5.4
PKG_CONFIG ?= pkg-config
CC ?= cc

LUA_INCDIR ?= $(shell $(PKG_CONFIG) --variable=includedir lua$(LUA_VERSION) 2>/dev/null)/lua$(LUA_VERSION)
LUA_CFLAGS ?= $(shell $(PKG_CONFIG) --cflags lua$(LUA_VERSION) 2>/dev/null || echo -I$(LUA_INCDIR))
EXPAT_CFLAGS ?= $(shell $(PKG_CONFIG) --cflags expat 2>/dev/null)
EXPAT_LIBS ?= $(shell $(PKG_CONFIG) --libs expat 2>/dev/null || echo -lexpat)
CRYPTO_CFLAGS ?= $(shell $(PKG_CONFIG) --cflags libcrypto 2>/dev/null)
CRYPTO_LIBS ?= $(shell $(PKG_CONFIG) --libs libcrypto 2>/dev/null || echo -lcrypto)

CFLAGS ?= -O2
# -Werror is for development and CI (the check targets set it), not for a
# user's `luarocks make` on a newer compiler with new warnings.
WERROR ?=
WARN = -std=c11 -Wall -Wextra -Wshadow -Wformat=2 $(WERROR)
ALL_CFLAGS = $(WARN) $(CFLAGS) -fPIC -fvisibility=hidden $(LUA_CFLAGS) $(EXPAT_CFLAGS) $(CRYPTO_CFLAGS)
LIBFLAG ?= -shared
LIBS = $(EXPAT_LIBS) $(CRYPTO_LIBS) -lpthread

BUILD = build
CORE = $(BUILD)/cproxy/core.so
SOURCES = $(wildcard src/*.c)
OBJECTS = $(patsubst src/%.c,$(BUILD)/obj/%.o,$(SOURCES))
HEADERS = $(wildcard src/*.h)

BUSTED ?= busted --lua=lua$(LUA_VERSION)

# Installation targets, as passed by luarocks (see the rockspec).
INST_LIBDIR ?= /usr/local/lib/lua/$(LUA_VERSION)
INST_LUADIR ?= /usr/local/share/lua/$(LUA_VERSION)
INST_BINDIR ?= /usr/local/bin
PLUGIN_DIR = $(INST_LUADIR)/prosody_cproxy
# lua/cproxy/: the shared parts at the top, a folder per component.
LUA_COMPONENTS = proxy65 client_proxy standalone

# Prosody 13, built in place from its release tarball (tools/build-prosody);
# the integration specs run against it with PROSODY_SRC.
PROSODY13_VERSION = 13.0.1
PROSODY13_TARBALL ?= ../shared/third_party/prosody-$(PROSODY13_VERSION).tar.gz
PROSODY13 = $(BUILD)/prosody-$(PROSODY13_VERSION)
PROSODY_BUILD_DEPS = libidn2-dev libicu-dev

.PHONY: all clean deps check check-prosody13 test stress bench run try deb check-package install FORCE fuzz fuzz-build check-sanitize check-valgrind deps-reliability deps-recommends deps-ejabberd deps-slixmpp deps-gloox

all: $(CORE)

# Objects are rebuilt when the flags change (say, -Werror for make check).
FLAGS_STAMP = $(BUILD)/cflags
$(FLAGS_STAMP): FORCE
	@mkdir -p $(dir $@)
	@echo '$(CC) $(ALL_CFLAGS)' | cmp -s - $@ || echo '$(CC) $(ALL_CFLAGS)' > $@

$(BUILD)/obj/%.o: src/%.c $(HEADERS) $(FLAGS_STAMP)
	@mkdir -p $(dir $@)
	$(CC) $(ALL_CFLAGS) -c -o $@ $<

$(CORE): $(OBJECTS)
	@mkdir -p $(dir $@)
	$(CC) $(LIBFLAG) $(LDFLAGS) -o $@ $(OBJECTS) $(LIBS)

install: $(CORE)
	install -d $(INST_LIBDIR)/cproxy $(PLUGIN_DIR)/cproxy
	install -m 644 $(CORE) $(INST_LIBDIR)/cproxy/core.so
	install -m 644 lua/mod_*.lua $(PLUGIN_DIR)/
	install -m 644 lua/cproxy/*.lua $(PLUGIN_DIR)/cproxy/
	for dir in $(LUA_COMPONENTS); do \
		install -d $(PLUGIN_DIR)/cproxy/$$dir && install -m 644 lua/cproxy/$$dir/*.lua $(PLUGIN_DIR)/cproxy/$$dir/ || exit 1; \
	done
	install -d $(INST_BINDIR)
	install -m 755 bin/proxy65 $(INST_BINDIR)/proxy65
	install -m 755 bin/client_proxy $(INST_BINDIR)/client_proxy

# Installs the Debian packages the project needs, when any is missing.
deps:
	@sh tools/install-deps

# spec/gloox_spec.lua's client, two gloox (C++) clients: built for `make
# check` only where gloox's headers and a C++ compiler are installed (`make
# deps-gloox`); elsewhere the spec says so and skips. The spec also builds
# it itself, for a bare `busted spec/gloox_spec.lua`.
GLOOX_TRANSFER = $(BUILD)/gloox_transfer
GLOOX_CXXFLAGS ?= -O2
HAVE_GLOOX := $(shell $(PKG_CONFIG) --exists gloox 2>/dev/null && command -v $(CXX) >/dev/null 2>&1 && echo yes)
CHECK_CLIENTS = $(if $(HAVE_GLOOX),$(GLOOX_TRANSFER))

check: WERROR = -Werror
check: deps all $(CHECK_CLIENTS)
	@bash tools/run-specs $(BUSTED) --run=check

# Without the tarball, says so and passes: Debian's 0.12 is what `make
# check` runs.
check-prosody13: WERROR = -Werror
check-prosody13: deps all
	@if [ ! -f "$(PROSODY13_TARBALL)" ]; then \
		echo "Prosody 13 skipped: $(PROSODY13_TARBALL) not found"; \
		echo "0 passed, 0 failed"; \
	elif ! { sh tools/install-deps $(PROSODY_BUILD_DEPS) && \
		LUA_VERSION=$(LUA_VERSION) sh tools/build-prosody "$(PROSODY13_TARBALL)" "$(PROSODY13)"; }; then \
		echo "0 passed, 1 failed"; \
		exit 1; \
	else \
		PROSODY_SRC="$(CURDIR)/$(PROSODY13)" bash tools/run-specs $(BUSTED) --run=integration; \
	fi

# spec/gloox_spec.lua's client (GLOOX_TRANSFER, above).
$(GLOOX_TRANSFER): spec/clients/gloox_transfer.cpp
	@mkdir -p $(dir $@)
	$(CXX) -std=c++17 -Wall -Wextra -Wshadow $(WERROR) $(GLOOX_CXXFLAGS) $(shell $(PKG_CONFIG) --cflags gloox libcrypto) \
	    -o $@ $< $(shell $(PKG_CONFIG) --libs gloox libcrypto) -pthread

# Slow specs: long transfers and many concurrent ones.
LOADGEN = $(BUILD)/loadgen
STRESSGEN = $(BUILD)/stressgen
# The load generators share their client side (bench/client.c).
BENCH_CLIENT = bench/client.c bench/client.h
$(STRESSGEN): bench/stressgen.c $(BENCH_CLIENT)
	@mkdir -p $(dir $@)
	$(CC) $(WARN) $(CFLAGS) -o $@ bench/stressgen.c bench/client.c

stress: WERROR = -Werror
stress: deps all $(STRESSGEN) $(LOADGEN)
	@bash tools/run-specs $(BUSTED) --run=stress

$(LOADGEN): bench/loadgen.c $(BENCH_CLIENT)
	@mkdir -p $(dir $@)
	$(CC) $(WARN) $(CFLAGS) -o $@ bench/loadgen.c bench/client.c

RELAY = $(BUILD)/relay
$(RELAY): bench/relay.c
	@mkdir -p $(dir $@)
	$(CC) $(WARN) $(CFLAGS) -o $@ bench/relay.c

bench: deps all $(LOADGEN) $(RELAY)
	@bash tools/bench

run: all
	@bash tools/run-demo

# The Debian package, built offline from a copy of this tree in
# build/deb/ (dpkg-buildpackage writes beside the source), then checked
# with lintian, which must find no error.
DEB_DIR = $(BUILD)/deb
deb:
	@sh tools/install-deps debhelper lintian dpkg-dev
	rm -rf $(DEB_DIR)
	mkdir -p $(DEB_DIR)/prosody-cproxy
	tar --exclude=./build --exclude=./.git -cf - . | tar -x -C $(DEB_DIR)/prosody-cproxy
	cd $(DEB_DIR)/prosody-cproxy && dpkg-buildpackage -us -uc -b
	lintian --fail-on error $(DEB_DIR)/*.deb

# The package installed, used by a Prosody run as Debian runs it, and
# removed (spec/debian_package_spec.lua; root).
check-package: deb
	@bash tools/run-specs $(BUSTED) --run=package

# A transfer through proxy65 and a JAT round trip, with real clients,
# against `make run`'s server or one of its own (tools/try).
try: all deps-slixmpp
	@bash tools/try

# ejabberd, for spec/standalone_ejabberd_spec.lua and the bench's ejabberd
# row; both skip it, saying so, where it is missing. CI installs it.
deps-ejabberd:
	@sh tools/install-deps ejabberd

# slixmpp, the Python XMPP library spec/slixmpp_spec.lua transfers with;
# the spec skips, saying so, where it is missing. CI installs it.
deps-slixmpp:
	@sh tools/install-deps python3-slixmpp

# gloox, the C++ XMPP library of spec/gloox_spec.lua (spec/clients/
# gloox_transfer.cpp), and a compiler for it; the spec skips, saying so,
# where it is missing. CI installs it.
deps-gloox:
	@sh tools/install-deps libgloox-dev g++ pkg-config

# Prosody's recommended packages, which `apt-get install prosody` brings
# unless told not to: with lua-unbound Prosody resolves through libunbound
# (every localhost name is loopback), without it through its own resolver.
# Operators have both, so CI runs `make check` without them and the rest
# with them.
deps-recommends:
	@sh tools/install-deps lua-unbound lua-event lua-readline

# The tools of the fuzz, sanitizer and valgrind runs (Debian 12 packages).
RELIABILITY_DEPS = clang libclang-rt-14-dev valgrind
deps-reliability:
	@sh tools/install-deps $(RELIABILITY_DEPS)

# Fuzzing (clang, libFuzzer): each target links only the pure C core it
# tests. `make fuzz` runs each for FUZZ_SECONDS on a copy of its corpus and
# fails on the first crash; spec/fuzz/corpus/<target>/ holds the seeds.
FUZZ_CC ?= clang
FUZZ_SECONDS ?= 60
FUZZ_FLAGS = -std=c11 -g -O1 -Wall -Wextra -Werror -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=all
FUZZ_TARGETS = socks5 jat xmlstream
FUZZ_BINS = $(patsubst %,$(BUILD)/fuzz/fuzz_%,$(FUZZ_TARGETS))

$(BUILD)/fuzz/fuzz_socks5: spec/fuzz/fuzz_socks5.c spec/fuzz/split.h src/socks5.c src/socks5.h
	@mkdir -p $(dir $@)
	$(FUZZ_CC) $(FUZZ_FLAGS) -o $@ spec/fuzz/fuzz_socks5.c src/socks5.c

$(BUILD)/fuzz/fuzz_jat: spec/fuzz/fuzz_jat.c src/jat.c src/jat.h
	@mkdir -p $(dir $@)
	$(FUZZ_CC) $(FUZZ_FLAGS) $(CRYPTO_CFLAGS) -o $@ spec/fuzz/fuzz_jat.c src/jat.c $(CRYPTO_LIBS)

$(BUILD)/fuzz/fuzz_xmlstream: spec/fuzz/fuzz_xmlstream.c spec/fuzz/split.h src/xmlstream.c src/xmlstream.h
	@mkdir -p $(dir $@)
	$(FUZZ_CC) $(FUZZ_FLAGS) $(EXPAT_CFLAGS) -o $@ spec/fuzz/fuzz_xmlstream.c src/xmlstream.c $(EXPAT_LIBS)

fuzz-build: $(FUZZ_BINS)

fuzz: deps-reliability
	@$(MAKE) --no-print-directory fuzz-build
	@bash tools/fuzz $(FUZZ_SECONDS) $(FUZZ_TARGETS)

# The whole suite against a build with ASan and UBSan (build/sanitize/),
# swapped in for the run; any sanitizer report fails it.
SANITIZE_CC ?= clang
SANITIZE_FLAGS = -O1 -g -fno-omit-frame-pointer -fsanitize=address,undefined -fno-sanitize-recover=undefined
check-sanitize: deps deps-reliability all
	@$(MAKE) --no-print-directory BUILD=$(BUILD)/sanitize CC=$(SANITIZE_CC) CFLAGS="$(SANITIZE_FLAGS)" \
	    LIBFLAG="-shared -shared-libasan $(SANITIZE_FLAGS)" $(BUILD)/sanitize/cproxy/core.so
	@bash tools/check-sanitize $(BUSTED) --run=check

# A few integration specs (transfers, JAT traffic) with Prosody under
# valgrind memcheck; spec/valgrind.supp lists what is Prosody's own.
VALGRIND_SPECS = spec/mod_proxy65_relay_spec.lua spec/mod_client_proxy_spec.lua
check-valgrind: deps deps-reliability all
	@bash tools/check-valgrind $(BUSTED) --run=check $(VALGRIND_SPECS)

clean:
	rm -rf $(BUILD)
