#!/usr/bin/env bash
# Build the libFuzzer harness of the C coder, twice: with the decoder's
# x86-64 inline assembly and with its portable C path (-DDEC_NO_ASM).
# Needs clang with libFuzzer (Debian: clang-14 libclang-rt-14-dev).
set -euo pipefail
cd "$(dirname "$0")/.."
CC=${CC:-$(command -v clang-14 || command -v clang || true)}
if [ -z "$CC" ]; then
    echo "fuzz/build.sh: clang not found (Debian: apt-get install clang-14 libclang-rt-14-dev)" >&2
    exit 1
fi
mkdir -p fuzz/build
FLAGS=(-g -O1 -std=c99 -Wall -Wextra -Wno-unused-parameter -Werror -D_POSIX_C_SOURCE=200809L
       -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined -fno-omit-frame-pointer
       -Icsrc/include -Icsrc/src)
"$CC" "${FLAGS[@]}" fuzz/fuzz_deepcabac.c csrc/src/*.c -o fuzz/build/fuzz_deepcabac
"$CC" "${FLAGS[@]}" -DDEC_NO_ASM fuzz/fuzz_deepcabac.c csrc/src/*.c -o fuzz/build/fuzz_deepcabac_noasm
echo "built fuzz/build/fuzz_deepcabac and fuzz/build/fuzz_deepcabac_noasm with $CC"
