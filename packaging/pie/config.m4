dnl config.m4 for async_engine, a PHP extension written in Rust.
dnl
dnl phpize && ./configure && make && make install (what PIE runs) builds the
dnl extension with cargo: configure checks for cargo, libclang (which the
dnl bindings to PHP's headers are generated with) and SQLite, and Makefile.frag
dnl runs `cargo build --release --locked` on the crates in rust/ against the
dnl PHP that phpize belongs to, then puts the library in modules/ for
dnl `make install`.

PHP_ARG_ENABLE([async-engine],
  [whether to build the async_engine extension],
  [AS_HELP_STRING([--enable-async-engine], [Build the async_engine extension (default: yes)])],
  [yes], [no])

PHP_ARG_WITH([cargo],
  [for the cargo program to build with],
  [AS_HELP_STRING([--with-cargo=PATH], [Path to cargo (default: cargo on PATH, else ~/.cargo/bin/cargo)])],
  [no], [no])

if test "$PHP_ASYNC_ENGINE" != "no"; then
  if test "$PHP_THREAD_SAFETY" = "yes"; then
    AC_MSG_ERROR([async_engine is built and tested for non-thread-safe (NTS) PHP only; $PHP_EXECUTABLE is a thread-safe (ZTS) build])
  fi

  dnl cargo: --with-cargo, else on PATH, else where rustup puts it.
  if test "$PHP_CARGO" != "no" && test "$PHP_CARGO" != "yes"; then
    AC_MSG_CHECKING([for cargo])
    if test -x "$PHP_CARGO" && test ! -d "$PHP_CARGO"; then
      ASYNC_ENGINE_CARGO=$PHP_CARGO
      AC_MSG_RESULT([$ASYNC_ENGINE_CARGO])
    else
      AC_MSG_RESULT([no])
      AC_MSG_ERROR([--with-cargo=$PHP_CARGO: no cargo program there])
    fi
  else
    AC_PATH_PROG([ASYNC_ENGINE_CARGO], [cargo], [], [$PATH:$HOME/.cargo/bin])
    if test -z "$ASYNC_ENGINE_CARGO"; then
      AC_MSG_ERROR([cargo, Rust's build tool, was not found on PATH or in ~/.cargo/bin. async_engine is written in Rust: install Rust from https://rustup.rs (or your system's cargo and rustc packages), or pass --with-cargo=/path/to/cargo])
    fi
  fi
  AC_MSG_CHECKING([cargo's version])
  ASYNC_ENGINE_CARGO_VERSION=`"$ASYNC_ENGINE_CARGO" --version 2>/dev/null`
  if test -z "$ASYNC_ENGINE_CARGO_VERSION"; then
    AC_MSG_RESULT([none])
    AC_MSG_ERROR([$ASYNC_ENGINE_CARGO --version failed: is a Rust toolchain installed (rustup default stable)?])
  fi
  AC_MSG_RESULT([$ASYNC_ENGINE_CARGO_VERSION])

  dnl libclang: bindgen loads it at build time, looking where clang-sys looks.
  AC_MSG_CHECKING([for libclang])
  async_engine_clang_dirs="$LIBCLANG_PATH"
  if test -z "$async_engine_clang_dirs"; then
    for llvm_config in llvm-config `ls -d /usr/lib/llvm-*/bin/llvm-config 2>/dev/null | sort -r`; do
      dir=`$llvm_config --libdir 2>/dev/null` && async_engine_clang_dirs="$async_engine_clang_dirs $dir"
    done
    async_engine_clang_dirs="$async_engine_clang_dirs `ls -d /usr/lib/llvm-*/lib 2>/dev/null` /usr/lib/$host_cpu-linux-gnu /usr/lib64 /usr/lib /usr/local/lib /usr/local/lib64 /opt/homebrew/opt/llvm/lib /usr/local/opt/llvm/lib"
  fi
  ASYNC_ENGINE_LIBCLANG=
  for dir in $async_engine_clang_dirs; do
    for lib in "$dir"/libclang.so "$dir"/libclang-*.so "$dir"/libclang.so.* "$dir"/libclang-*.so.* "$dir"/libclang.dylib; do
      if test -f "$lib"; then
        ASYNC_ENGINE_LIBCLANG=$lib
        break 2
      fi
    done
  done
  if test -z "$ASYNC_ENGINE_LIBCLANG"; then
    AC_MSG_RESULT([no])
    AC_MSG_ERROR([libclang was not found${LIBCLANG_PATH:+ in LIBCLANG_PATH=$LIBCLANG_PATH} (the Rust bindings to PHP's headers are generated with it at build time): install libclang-dev (Debian, Ubuntu) or clang-devel (Fedora, RHEL), or set LIBCLANG_PATH to the directory holding libclang.so])
  fi
  AC_MSG_RESULT([$ASYNC_ENGINE_LIBCLANG])

  dnl SQLite: the extension links the system libsqlite3, as pdo_sqlite does.
  AC_CHECK_HEADER([sqlite3.h], [], [
    AC_MSG_ERROR([SQLite's headers (sqlite3.h) were not found: install libsqlite3-dev (Debian, Ubuntu) or sqlite-devel (Fedora, RHEL)])
  ])
  AC_CHECK_LIB([sqlite3], [sqlite3_open_v2], [:], [
    AC_MSG_ERROR([SQLite's library (libsqlite3) cannot be linked: install libsqlite3-dev (Debian, Ubuntu) or sqlite-devel (Fedora, RHEL)])
  ])

  dnl cargo's output goes to CARGO_TARGET_DIR when set (shared: never
  dnl cleaned here), else to target/ in the build directory.
  if test -n "$CARGO_TARGET_DIR"; then
    ASYNC_ENGINE_TARGET_DIR=$CARGO_TARGET_DIR
    ASYNC_ENGINE_OWN_TARGET_DIR=
  else
    ASYNC_ENGINE_TARGET_DIR=$abs_builddir/target
    ASYNC_ENGINE_OWN_TARGET_DIR=$ASYNC_ENGINE_TARGET_DIR
  fi
  dnl ext-php-rs reads PHP_CONFIG as a path: make it one.
  ASYNC_ENGINE_PHP_CONFIG=`command -v "$PHP_CONFIG"`
  dnl The module `make` builds and `make install` copies into EXTENSION_DIR.
  PHP_MODULES='$(phplibdir)/async_engine.so'
  PHP_ADD_BUILD_DIR([modules])

  PHP_SUBST(ASYNC_ENGINE_CARGO)
  PHP_SUBST(ASYNC_ENGINE_LIBCLANG)
  PHP_SUBST(ASYNC_ENGINE_TARGET_DIR)
  PHP_SUBST(ASYNC_ENGINE_OWN_TARGET_DIR)
  PHP_SUBST(ASYNC_ENGINE_PHP_CONFIG)
  PHP_ADD_MAKEFILE_FRAGMENT([$abs_srcdir/Makefile.frag], [$abs_srcdir], [$abs_builddir])
fi
