# Builds async_engine with cargo (see config.m4). The module depends on every
# file under rust/, so `make` runs cargo when a source changed and `make
# install` (which PIE may run through sudo, where the user's cargo is not set
# up) only copies what `make` built. `+` lets cargo share make's job slots.
ASYNC_ENGINE_SOURCES := $(shell find $(srcdir)/rust -type f)
ASYNC_ENGINE_CARGO_LIB = $(ASYNC_ENGINE_TARGET_DIR)/release/libasync_engine.so

$(phplibdir)/async_engine.so: $(ASYNC_ENGINE_SOURCES)
	+cd $(srcdir)/rust && PHP_CONFIG="$(ASYNC_ENGINE_PHP_CONFIG)" PHP="$(PHP_EXECUTABLE)" \
		LIBCLANG_PATH="$${LIBCLANG_PATH:-$(dir $(ASYNC_ENGINE_LIBCLANG))}" \
		"$(ASYNC_ENGINE_CARGO)" build --release --locked --target-dir "$(ASYNC_ENGINE_TARGET_DIR)"
	@mkdir -p $(phplibdir)
	cp $(ASYNC_ENGINE_CARGO_LIB) $@

# distclean removes cargo's output only when it is this build's own target/.
async-engine-cargo-clean:
	rm -rf $(ASYNC_ENGINE_OWN_TARGET_DIR)

distclean: async-engine-cargo-clean

.PHONY: async-engine-cargo-clean
