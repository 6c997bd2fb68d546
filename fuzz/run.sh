#!/usr/bin/env bash
# Builds libFuzzer targets with clang in their own build directory and fuzzes each for a while.
# Usage: fuzz/run.sh [seconds-per-target [target...]]   (default 30 seconds; default targets: all)
#   BUILD_DIR  build directory (default: build-fuzz at the repository root)
#   JOBS       build parallelism (default: ninja's)
# Targets: token_parser_fuzz rule_loader_fuzz event_reader_fuzz audit_reader_fuzz mime_fuzz
# jmap_request_fuzz (see fuzz/CMakeLists.txt). Exits non-zero if a fuzzer finds a crash, a leak
# or a timeout; the reproducer is left in $BUILD_DIR/fuzz/artifacts/. Seed corpora
# (fuzz/corpus/NAME) are copied so that fuzzing never edits the checked-in files; new inputs
# accumulate in $BUILD_DIR/fuzz/corpus/NAME across runs.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
seconds="${1:-30}"
shift $(( $# > 0 ? 1 : 0 ))
targets=("$@")
if [[ ${#targets[@]} -eq 0 ]]; then
  targets=(token_parser_fuzz rule_loader_fuzz event_reader_fuzz audit_reader_fuzz mime_fuzz
           jmap_request_fuzz)
fi
build="${BUILD_DIR:-$root/build-fuzz}"

if [[ ! -f "$build/build.ninja" ]]; then
  CC=clang CXX=clang++ cmake -S "$root" -B "$build" -G Ninja -DKEYWARD_FUZZ=ON \
    -DKEYWARD_BUILD_TESTS=OFF -DKEYWARD_BUILD_BENCH=OFF
fi
present=()
for t in "${targets[@]}"; do
  if [[ -f "$root/fuzz/$t.cc" ]]; then present+=("$t"); else echo "fuzz: no fuzz/$t.cc, skipped" >&2; fi
done
cmake --build "$build" --target "${present[@]}" ${JOBS:+--parallel "$JOBS"}

export ASAN_OPTIONS="${ASAN_OPTIONS:-abort_on_error=1}"
export UBSAN_OPTIONS="${UBSAN_OPTIONS:-halt_on_error=1:print_stacktrace=1}"
work="$build/fuzz"
artifacts="$work/artifacts"
mkdir -p "$artifacts"
for t in "${present[@]}"; do
  name="${t%_fuzz}"
  corpus="$work/corpus/$name"
  mkdir -p "$corpus"
  if [[ -d "$root/fuzz/corpus/$name" ]]; then
    for seed in "$root/fuzz/corpus/$name"/*; do
      [[ -e "$seed" && ! -e "$corpus/$(basename "$seed")" ]] && cp "$seed" "$corpus/"
    done
  fi
  dict=()
  [[ -f "$root/fuzz/$name.dict" ]] && dict=(-dict="$root/fuzz/$name.dict")
  echo "fuzz: $t for ${seconds}s"
  "$work/$t" \
    -max_total_time="$seconds" \
    -max_len=20000 \
    -timeout=10 \
    -print_final_stats=1 \
    "${dict[@]}" \
    -artifact_prefix="$artifacts/" \
    "$corpus"
done
