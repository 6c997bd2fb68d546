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
print("Throughput ratios from median CPU time (1.00 = as fast as bare OpenSSL):")
for alg in ("ES256", "EdDSA", "RS256", "PS256"):
    bare = median(f"BM_BareOpenSsl/{alg}", "cpu_time")
    unc = median(f"BM_KeywardVerifyUncached/{alg}", "cpu_time")
    if bare and unc:
        print(f"{alg} uncached/bare = {bare / unc:.2f}  "
              f"(bare {bare / 1000:.1f} us, uncached {unc / 1000:.1f} us, "
              f"Keyward's own work {(unc - bare) / 1000:+.2f} us)")
cached = [(b["run_name"], b["items_per_second"]) for b in runs
          if b.get("aggregate_name") == "median" and "VerifyCached/" in b.get("run_name", "")]
for name, rate in cached:
    print(f"{name.split('/')[-1]} cached = {rate / 1e6:.2f} M tokens/s")
EOF
