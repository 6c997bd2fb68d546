#!/usr/bin/env bash
# Builds the libFuzzer target with clang in its own build directory and fuzzes it for a while.
# Usage: fuzz/run.sh [seconds [libFuzzer flags...]]    (default 30 seconds)
#   BUILD_DIR  build directory (default: build-fuzz at the repository root)
#   JOBS       build parallelism (default: ninja's)
# Exits non-zero if the fuzzer finds a crash, a leak or a timeout; the reproducer is left in
# $BUILD_DIR/fuzz/artifacts/. The seed corpus is copied so that fuzzing never edits the checked-in
# files; new inputs found accumulate in $BUILD_DIR/fuzz/corpus/token_parser across runs.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
seconds="${1:-30}"
shift $(( $# > 0 ? 1 : 0 ))
build="${BUILD_DIR:-$root/build-fuzz}"

if [[ ! -f "$build/build.ninja" ]]; then
  CC=clang CXX=clang++ cmake -S "$root" -B "$build" -G Ninja -DKEYWARD_FUZZ=ON \
    -DKEYWARD_BUILD_TESTS=OFF -DKEYWARD_BUILD_BENCH=OFF
fi
cmake --build "$build" --target token_parser_fuzz ${JOBS:+--parallel "$JOBS"}

work="$build/fuzz"
corpus="$work/corpus/token_parser"
artifacts="$work/artifacts"
mkdir -p "$corpus" "$artifacts"
for seed in "$root"/fuzz/corpus/token_parser/*; do
  [[ -e "$corpus/$(basename "$seed")" ]] || cp "$seed" "$corpus/"
done

export ASAN_OPTIONS="${ASAN_OPTIONS:-abort_on_error=1}"
export UBSAN_OPTIONS="${UBSAN_OPTIONS:-halt_on_error=1:print_stacktrace=1}"
"$work/token_parser_fuzz" \
  -max_total_time="$seconds" \
  -max_len=20000 \
  -timeout=10 \
  -print_final_stats=1 \
  -dict="$root/fuzz/token_parser.dict" \
  -artifact_prefix="$artifacts/" \
  "$@" \
  "$corpus"
