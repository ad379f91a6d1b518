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

# Prosody 13, built in place from its release tarball (tools/build-prosody);
# the integration specs run against it with PROSODY_SRC.
PROSODY13_VERSION = 13.0.1
PROSODY13_TARBALL ?= ../shared/third_party/prosody-$(PROSODY13_VERSION).tar.gz
PROSODY13 = $(BUILD)/prosody-$(PROSODY13_VERSION)
PROSODY_BUILD_DEPS = libidn2-dev libicu-dev

.PHONY: all clean deps check check-prosody13 test stress bench run install FORCE

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
	$(CC) $(LIBFLAG) -o $@ $(OBJECTS) $(LIBS)

install: $(CORE)
	install -d $(INST_LIBDIR)/cproxy $(PLUGIN_DIR)/cproxy
	install -m 644 $(CORE) $(INST_LIBDIR)/cproxy/core.so
	install -m 644 lua/mod_*.lua $(PLUGIN_DIR)/
	install -m 644 lua/cproxy/*.lua $(PLUGIN_DIR)/cproxy/
	install -d $(INST_BINDIR)
	install -m 755 bin/proxy65 $(INST_BINDIR)/proxy65

# Installs the Debian packages the project needs, when any is missing.
deps:
	@sh tools/install-deps

check: WERROR = -Werror
check: deps all
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

# Slow specs: long transfers and many concurrent ones.
LOADGEN = $(BUILD)/loadgen
STRESSGEN = $(BUILD)/stressgen
$(STRESSGEN): bench/stressgen.c
	@mkdir -p $(dir $@)
	$(CC) $(WARN) $(CFLAGS) -o $@ bench/stressgen.c

stress: WERROR = -Werror
stress: deps all $(STRESSGEN) $(LOADGEN)
	@bash tools/run-specs $(BUSTED) --run=stress

$(LOADGEN): bench/loadgen.c
	@mkdir -p $(dir $@)
	$(CC) $(WARN) $(CFLAGS) -o $@ bench/loadgen.c

bench: deps all $(LOADGEN)
	@bash tools/bench

run: all
	@bash tools/run-demo

clean:
	rm -rf $(BUILD)
