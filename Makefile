# prosody-cproxy: build, test, run and benchmark.
# `make` builds build/cproxy/core.so; `make check` sets up and runs the specs;
# `make run` starts a demo Prosody from this checkout.

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
WARN = -std=c11 -Wall -Wextra -Werror
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
PLUGIN_DIR = $(INST_LUADIR)/prosody_cproxy

.PHONY: all clean deps check test stress bench run install

all: $(CORE)

$(BUILD)/obj/%.o: src/%.c $(HEADERS)
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

# Installs the Debian packages the project needs, when any is missing.
deps:
	@sh tools/install-deps

check: deps all
	@bash tools/run-specs $(BUSTED) --run=check

# Slow specs: long transfers and many concurrent ones.
stress: deps all
	@bash tools/run-specs $(BUSTED) --run=stress

LOADGEN = $(BUILD)/loadgen
$(LOADGEN): bench/loadgen.c
	@mkdir -p $(dir $@)
	$(CC) $(WARN) $(CFLAGS) -o $@ bench/loadgen.c

RELAY = $(BUILD)/relay
$(RELAY): bench/relay.c
	@mkdir -p $(dir $@)
	$(CC) $(WARN) $(CFLAGS) -o $@ bench/relay.c

bench: deps all $(LOADGEN) $(RELAY)
	@bash tools/bench

run: all
	@bash tools/run-demo

clean:
	rm -rf $(BUILD)
