#!/usr/bin/env bash
# keyward hunt against the alternatives, on the same generated Microsoft 365 audit log, in one run:
#   floor   bare simdjson parse of every record (bench/simdjson_floor.cc)
#   hunt    keyward hunt with every SigmaHQ cloud rule (azure, m365, okta, gcp, aws) plus the
#           built-in Storm-0558 rules
#   jq      jq applying ONE equivalent filter (MailItemsAccessed by a REST client)
#   sqlite  the Zircolite approach: load the records into SQLite (one JSON column, json_extract
#           per field, as Zircolite's flattened table is queried) and run the same filter as SQL
# jq and sqlite run on a prefix of the file (SLOW_MB, default 100 MB) and are compared per event.
#   SIZE      generated log size (default 1G); BUILD_DIR (default build-bench, Release)
#   SHARED    the shared/ directory with testdata/sigma (default ../shared)
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
build="${BUILD_DIR:-$root/build-bench}"
size="${SIZE:-1G}"
slow_mb="${SLOW_MB:-100}"
shared="${SHARED:-$root/../shared}"
for tool in jq python3; do
  command -v "$tool" >/dev/null || { echo "hunt_bench: $tool is not installed (bash scripts/setup)" >&2; exit 2; }
done
[[ -d "$shared/testdata/sigma/rules/cloud" ]] || { echo "hunt_bench: $shared/testdata/sigma is missing" >&2; exit 2; }
if [[ ! -f "$build/build.ninja" ]]; then
  cmake -S "$root" -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release -DKEYWARD_BUILD_TESTS=OFF \
    -DKEYWARD_BUILD_BENCH=ON >/dev/null
fi
cmake --build "$build" --target keyward simdjson_floor >/dev/null
K="$build/src/cli/keyward"
work="${WORK_DIR:-$(mktemp -d "${TMPDIR:-/tmp}/keyward-hunt-bench.XXXXXX")}"
log="$work/ual.jsonl"
[[ -f "$log" ]] || "$K" gen-logs --out "$log" --size "$size" --tenants 4 --users 250 --seed 42 --actor
bytes=$(stat -c %s "$log")
events=$(wc -l <"$log")
cores=$(nproc)
echo "input: $log, $((bytes / 1000000)) MB, $events events; $cores cores"

# peak RSS (kB) and wall seconds of a command, via python's resource module.
measure() {
  python3 - "$@" <<'PY'
import resource, subprocess, sys, time
t = time.monotonic()
p = subprocess.run(sys.argv[1:], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
wall = time.monotonic() - t
rss = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
sys.stdout.write(p.stdout.decode(errors="replace")[-400:])
print(f"\nMEASURE wall={wall:.3f} rss_kb={rss} rc={p.returncode}")
PY
}

floor=$(measure "$build/bench/simdjson_floor" "$log")
floor_s=$(sed -n 's/.*seconds=\([0-9.]*\).*/\1/p' <<<"$floor" | head -1)
hunt=$(measure "$K" hunt --quiet --rules "$shared/testdata/sigma/rules/cloud" --builtin --output json --out "$work/alerts.json" "$log")
hunt_wall=$(sed -n 's/.*MEASURE wall=\([0-9.]*\).*/\1/p' <<<"$hunt")
hunt_rss=$(sed -n 's/.*rss_kb=\([0-9]*\).*/\1/p' <<<"$hunt")
hunt_rc=$(sed -n 's/.*rc=\([0-9]*\).*/\1/p' <<<"$hunt")
sigma=$(measure "$K" hunt --quiet --no-analytics --rules "$shared/testdata/sigma/rules/cloud" --builtin --output json --out "$work/alerts-sigma.json" "$log")
sigma_wall=$(sed -n 's/.*MEASURE wall=\([0-9.]*\).*/\1/p' <<<"$sigma")
sigma_workers=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["summary"]["workers"])' "$work/alerts-sigma.json")
workers=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["summary"]["workers"])' "$work/alerts.json")
alerts=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["summary"]["alerts"])' "$work/alerts.json")

# The slow alternatives on a prefix.
head -c $((slow_mb * 1000000)) "$log" | sed '$d' >"$work/prefix.jsonl"
prefix_events=$(wc -l <"$work/prefix.jsonl")
filter='select(.Operation == "MailItemsAccessed" and ((.ClientInfoString // "") | contains("Client=REST")))'
jq_out=$(measure jq -c "$filter" "$work/prefix.jsonl")
jq_wall=$(sed -n 's/.*MEASURE wall=\([0-9.]*\).*/\1/p' <<<"$jq_out")
rm -f "$work/z.db"
# Zircolite loads records into SQLite from Python, then runs each rule as SQL.
cat >"$work/zircolite_like.py" <<'PY'
import sqlite3, sys
src, db = sys.argv[1], sys.argv[2]
con = sqlite3.connect(db)
con.execute("PRAGMA journal_mode=OFF"); con.execute("PRAGMA synchronous=OFF")
con.execute("CREATE TABLE logs (doc TEXT)")
with open(src, encoding="utf-8") as f:
    con.executemany("INSERT INTO logs VALUES (?)", ((line,) for line in f))
con.commit()
n = con.execute("""SELECT count(*) FROM logs WHERE json_extract(doc,'$.Operation')='MailItemsAccessed'
                   AND instr(json_extract(doc,'$.ClientInfoString'),'Client=REST') > 0""").fetchone()[0]
print("matched", n)
PY
sq_out=$(measure python3 "$work/zircolite_like.py" "$work/prefix.jsonl" "$work/z.db")
sq_rc=$(sed -n 's/.*rc=\([0-9]*\).*/\1/p' <<<"$sq_out")
[[ "$sq_rc" == 0 ]] || { echo "hunt_bench: the SQLite run failed: $sq_out" >&2; exit 1; }
sq_wall=$(sed -n 's/.*MEASURE wall=\([0-9.]*\).*/\1/p' <<<"$sq_out")

python3 - "$events" "$bytes" "$floor_s" "$hunt_wall" "$hunt_rss" "$workers" "$prefix_events" "$jq_wall" "$sq_wall" "$alerts" "$cores" "$hunt_rc" "$sigma_wall" "$sigma_workers" <<'PY'
import sys
ev, b, floor, hunt, rss, workers, pev, jq, sq, alerts, cores, rc, sigma, sigma_workers = sys.argv[1:]
ev, b, floor, hunt, pev, jq, sq, sigma = int(ev), int(b), float(floor), float(hunt), int(pev), float(jq), float(sq), float(sigma)
hunt_eps = ev / hunt
rows = [
    ("simdjson parse (floor, 1 thread)", ev / floor, 1),
    (f"keyward hunt, cloud rules + Storm-0558 analytics ({workers} worker + reader)", hunt_eps, int(workers)),
    (f"keyward hunt, cloud rules + built-in Sigma only ({sigma_workers} workers + reader)", ev / sigma, int(cores)),
    ("jq, one filter (1 thread)", pev / jq, 1),
    ("SQLite JSON, Zircolite approach, one filter", pev / sq, 1),
]
print(f"\n| tool | events/s | events/s per core used | vs keyward hunt |")
print("|---|---|---|---|")
for name, eps, c in rows:
    print(f"| {name} | {eps:,.0f} | {eps / max(c,1):,.0f} | {hunt_eps / eps:.2f}x |")
print(f"\nkeyward hunt: {alerts} alerts (exit {rc}), peak RSS {int(rss)/1024:.0f} MB, "
      f"{b/1e6/hunt:.0f} MB/s; share of the bare-parse rate: {hunt_eps / (ev/floor):.0%}")
PY
echo "work directory: $work (delete it when done)"
