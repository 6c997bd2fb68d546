#!/usr/bin/env bash
# Builds the Release benchmark (if needed), runs it, and prints each algorithm's uncached/bare
# throughput ratio. Usage: bench/run.sh [extra Google Benchmark flags...]
#   BUILD_DIR    build directory (default: build-bench at the repository root; configured as
#                Release with tests off when it does not exist yet)
#   MIN_TIME     seconds per benchmark run (default 0.5)
#   REPETITIONS  runs of each benchmark, randomly interleaved; medians are reported (default 3)
#   JSON_OUT     where to keep the JSON results (default: $BUILD_DIR/verify_bench.json)
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
build="${BUILD_DIR:-$root/build-bench}"
min_time="${MIN_TIME:-0.5}"
reps="${REPETITIONS:-3}"
json="${JSON_OUT:-$build/verify_bench.json}"

if [[ ! -f "$build/build.ninja" && ! -f "$build/Makefile" ]]; then
  cmake -S "$root" -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release -DKEYWARD_BUILD_TESTS=OFF \
    -DKEYWARD_BUILD_BENCH=ON
fi
build_type="$(sed -n 's/^CMAKE_BUILD_TYPE:[A-Z]*=//p' "$build/CMakeCache.txt")"
if [[ "$build_type" != "Release" ]]; then
  echo "warning: $build is a '$build_type' build; numbers in BENCHMARKS.md are from Release" >&2
fi
cmake --build "$build" --target verify_bench

# Interleaving the repetitions spreads any background load over every benchmark alike instead of
# penalizing whichever happened to run during a burst.
"$build/bench/verify_bench" \
  --benchmark_min_time="$min_time" \
  --benchmark_repetitions="$reps" \
  --benchmark_enable_random_interleaving=true \
  --benchmark_report_aggregates_only=true \
  --benchmark_out="$json" --benchmark_out_format=json \
  "$@"

python3 - "$json" <<'EOF'
import json
import sys

with open(sys.argv[1]) as f:
    runs = json.load(f)["benchmarks"]

def median(name, field):
    for b in runs:
        if b.get("run_name") == name and b.get("aggregate_name") == "median":
            return b.get(field)
    for b in runs:  # a single repetition has no aggregates
        if b.get("run_name") == name and b.get("run_type") == "iteration":
            return b.get(field)
    return None

print()
print("uncached/bare = bare OpenSSL time / Keyward uncached time (median CPU time; 1.00 = no")
print("cost over OpenSSL). 'predicted' = bare / (bare + BM_KeywardOwnWork), which does not depend")
print("on the difference of two noisy ~20-90 us timings.")
for alg in ("ES256", "EdDSA", "RS256", "PS256"):
    bare = median(f"BM_BareOpenSsl/{alg}", "cpu_time")
    unc = median(f"BM_KeywardVerifyUncached/{alg}", "cpu_time")
    own = median(f"BM_KeywardOwnWork/{alg}", "cpu_time")
    if not (bare and unc):
        continue
    line = (f"{alg} uncached/bare = {bare / unc:.2f}  "
            f"(bare {bare / 1000:.1f} us, uncached {unc / 1000:.1f} us")
    if own:
        line += f", own work {own / 1000:.2f} us, predicted {bare / (bare + own):.2f}"
    print(line + ")")
for alg in ("ES256", "EdDSA", "RS256", "PS256"):
    rate = median(f"BM_KeywardVerifyCached/{alg}", "items_per_second")
    if rate:
        print(f"{alg} cached = {rate / 1e6:.2f} M tokens/s")
for distinct, label in ((0, "one shared token"), (1, "a token per thread")):
    rates = [median(f"BM_CachedVerifyThreads/distinct_tokens:{distinct}/real_time/threads:{t}",
                    "items_per_second") for t in (1, 2)]
    if all(rates):
        print(f"cached, {label}: 1 thread {rates[0] / 1e6:.2f} M/s, "
              f"2 threads {rates[1] / 1e6:.2f} M/s in total")
EOF
