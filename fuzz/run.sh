#!/usr/bin/env bash
# Fuzz every harness, seeded with real bitstreams (fuzz/make_seeds.py), after
# replaying every input that once found a bug (fuzz/regressions/).
#
#   fuzz/run.sh short        CI (tox -e fuzz): about 90 s of fuzzing in all
#   fuzz/run.sh long SECONDS the long run recorded in the README
#
# Environment: PYTHON (default python: must import nnc_core and atheris),
# CC (clang with libFuzzer), FUZZ_OUT (default fuzz/build: corpora, crashes).
# Exits non-zero on the first crash, sanitizer report, timeout or memory
# blow-up (-rss_limit_mb); the input is written to $FUZZ_OUT/crash-* etc.
set -euo pipefail
cd "$(dirname "$0")/.."
MODE=${1:-short}
PY=${PYTHON:-python}
OUT=${FUZZ_OUT:-fuzz/build}
case "$MODE" in
    short) T_C=30; T_NOASM=20; T_PY=40 ;;
    long)  TOTAL=${2:?fuzz/run.sh long SECONDS}; T_C=$((TOTAL * 45 / 100)); T_NOASM=$((TOTAL * 15 / 100)); T_PY=$((TOTAL * 40 / 100)) ;;
    *) echo "usage: fuzz/run.sh short | long SECONDS" >&2; exit 2 ;;
esac

bash fuzz/build.sh
"$PY" fuzz/make_seeds.py "$OUT/corpus"

echo "== regressions"
replay() {  # dir command...: every input of dir (if any) must pass
    local dir=$1
    shift
    [ -n "$(ls -A "$dir" 2>/dev/null)" ] || return 0
    "$@" -runs=0 "$dir" >"$OUT/regressions.log" 2>&1 || {
        tail -n 60 "$OUT/regressions.log"; echo "fuzz/run.sh: an input of $dir fails again" >&2; exit 1; }
    echo "$(ls "$dir" | wc -l) inputs of $dir pass: $*"
}
replay fuzz/regressions/c fuzz/build/fuzz_deepcabac
replay fuzz/regressions/c fuzz/build/fuzz_deepcabac_noasm
replay fuzz/regressions/python "$PY" fuzz/fuzz_decode.py

common=(-print_final_stats=1 -timeout=20 -artifact_prefix="$OUT/")
run() {  # name seconds seed-dir command...
    local name=$1 seconds=$2 seeds=$3
    shift 3
    mkdir -p "$OUT/work-$name"
    echo "== $name: $seconds s"
    "$@" -max_total_time="$seconds" "${common[@]}" "$OUT/work-$name" "$seeds" >"$OUT/$name.log" 2>&1 || {
        tail -n 60 "$OUT/$name.log"; echo "fuzz/run.sh: $name found a crash (log $OUT/$name.log)" >&2; exit 1; }
    grep -E "^(Done|stat::number_of_executed_units|stat::peak_rss_mb)" "$OUT/$name.log" | tail -n 3
}
run c "$T_C" "$OUT/corpus/c" fuzz/build/fuzz_deepcabac -max_len=4096
run c-noasm "$T_NOASM" "$OUT/corpus/c" fuzz/build/fuzz_deepcabac_noasm -max_len=4096
run python "$T_PY" "$OUT/corpus/python" "$PY" fuzz/fuzz_decode.py -max_len=16384 -rss_limit_mb=1024
echo "fuzz/run.sh $MODE: no crash"
