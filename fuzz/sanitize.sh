#!/usr/bin/env bash
# Run a command (python, pytest) with the AddressSanitizer runtime preloaded,
# for an nnc_core whose C extension was built with NNC_SANITIZE=address,undefined
# (tox env `sanitize`).  The Python interpreter itself is not instrumented, so
# ASan must be loaded first; leak detection is off here because CPython keeps
# memory until exit by design: fuzz/leak_check.py checks the coder for leaks.
# Every report aborts the run (the extension is built with -fno-sanitize-recover).
# detect_stack_use_after_return stays off: with it, GCC 12's fake stack frames
# faulted in an earlier form of the AVX-512 estimation pass (not re-checked
# since that pass changed); clang's build (fuzz/build.sh) runs with it on.
set -euo pipefail
CC=${CC:-gcc}
LIBASAN=$("$CC" -print-file-name=libasan.so)
if [ ! -e "$LIBASAN" ]; then
    echo "fuzz/sanitize.sh: $CC has no libasan.so" >&2
    exit 1
fi
export LD_PRELOAD="$LIBASAN${LD_PRELOAD:+:$LD_PRELOAD}"
export ASAN_OPTIONS="${ASAN_OPTIONS:-detect_leaks=0:abort_on_error=1:strict_string_checks=1:check_initialization_order=1}"
export UBSAN_OPTIONS="${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}"
exec "$@"
