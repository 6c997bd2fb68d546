#!/usr/bin/env bash
# keyward hunt against the alternatives, on the same generated Microsoft 365 audit log, in one run:
#   floor   bare parse (bench/simdjson_floor.cc): the file read in 4 MiB chunks, every line parsed
#           with simdjson On-Demand and three fields read, on as many threads as hunt has workers
#   hunt    keyward hunt, three rule sets: the SigmaHQ cloud rules (azure, m365, okta, gcp, aws)
#           alone; plus the built-in rules (mail-read correlations); plus the Storm-0558 analytics
#           (their Sigma rules and stateful detectors)
#   jq      jq applying ONE equivalent filter (MailItemsAccessed by a REST client)
#   sqlite  the Zircolite approach: records flattened into a SQLite table (one column per
#           top-level field, nested values as JSON text), then each rule one SQL query over the
#           table. Measured: the load and ONE query (the same filter as jq); the row for all cloud
#           rules adds (rules - 1) x the measured query time, a projection, labelled as such.
# jq and sqlite run on a prefix of the file (SLOW_MB, default 100 MB) and are compared per event.
# Per-core figures divide by the CPU time the process used (user + system), not by nproc.
#   SIZE      generated log size (default 1G); BUILD_DIR (default build-bench, Release)
#   SHARED    the shared/ directory with testdata/sigma (default ../shared)
#   WORK_DIR  keep the generated log there (reused when present)
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

# peak RSS (kB), wall and CPU seconds of a command, via python's resource module.
measure() {
  python3 - "$@" <<'PY'
import resource, subprocess, sys, time
t = time.monotonic()
p = subprocess.run(sys.argv[1:], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
wall = time.monotonic() - t
ru = resource.getrusage(resource.RUSAGE_CHILDREN)
sys.stdout.write(p.stdout.decode(errors="replace")[-400:])
print(f"\nMEASURE wall={wall:.3f} cpu={ru.ru_utime + ru.ru_stime:.3f} rss_kb={ru.ru_maxrss} rc={p.returncode}")
PY
}
field() { sed -n "s/.*MEASURE.* $1=\([0-9.]*\).*/\1/p" <<<"$2"; }
cloud_rules=$(find "$shared/testdata/sigma/rules/cloud" -name '*.yml' | wc -l)
echo "load average before: $(cut -d' ' -f1-3 /proc/loadavg)"

hunt_run() {  # name, then keyward hunt arguments
  local name=$1
  shift
  local out
  out=$(measure "$K" hunt --quiet --output json --out "$work/$name.json" "$@" "$log")
  local workers alerts
  workers=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["summary"]["workers"])' "$work/$name.json")
  alerts=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["summary"]["alerts"])' "$work/$name.json")
  echo "$name $(field wall "$out") $(field cpu "$out") $(field rss_kb "$out") $workers $alerts"
}
R="$shared/testdata/sigma/rules/cloud"
runs=()
runs+=("$(hunt_run cloud --no-analytics --rules "$R")")
runs+=("$(hunt_run builtin --no-analytics --rules "$R" --builtin)")
runs+=("$(hunt_run analytics --rules "$R" --builtin)")
hunt_workers=$(awk '{print $5}' <<<"${runs[0]}")
# The floor's own clocks (wall and process CPU time from the first read to the last parse).
floor_times() { sed -n 's/.* seconds=\([0-9.]*\) cpu_seconds=\([0-9.]*\).*/\1 \2/p' <<<"$1"; }
floor1=$(measure "$build/bench/simdjson_floor" "$log" 1)
floorn=$(measure "$build/bench/simdjson_floor" "$log" "$hunt_workers")

# The slow alternatives on a prefix.
head -c $((slow_mb * 1000000)) "$log" | sed '$d' >"$work/prefix.jsonl"
prefix_events=$(wc -l <"$work/prefix.jsonl")
filter='select(.Operation == "MailItemsAccessed" and ((.ClientInfoString // "") | contains("Client=REST")))'
jq_out=$(measure jq -c "$filter" "$work/prefix.jsonl")
rm -f "$work/z.db"
# Zircolite flattens each record into a row of one table (a column per field), then runs every
# rule as its own SQL query over that table. Top-level fields become columns here; nested
# values are kept as JSON text (Zircolite flattens them further: more columns, same scans).
cat >"$work/zircolite_like.py" <<'PY'
import json, sqlite3, sys, time
src, db = sys.argv[1], sys.argv[2]
con = sqlite3.connect(db)
con.execute("PRAGMA journal_mode=OFF"); con.execute("PRAGMA synchronous=OFF")
t0 = time.monotonic()
rows, cols = [], {}
with open(src, encoding="utf-8") as f:
    for line in f:
        rec = json.loads(line)
        row = {}
        for k, v in rec.items():
            cols.setdefault(k, len(cols))
            row[k] = json.dumps(v) if isinstance(v, (dict, list)) else v
        rows.append(row)
names = sorted(cols, key=cols.get)
con.execute("CREATE TABLE logs (" + ", ".join(f'"{n}" TEXT COLLATE NOCASE' for n in names) + ")")
marks = ", ".join("?" for _ in names)
con.executemany(f"INSERT INTO logs VALUES ({marks})", ([r.get(n) for n in names] for r in rows))
con.commit()
t1 = time.monotonic()
n = con.execute("""SELECT count(*) FROM logs WHERE "Operation" = 'MailItemsAccessed'
                   AND "ClientInfoString" LIKE '%Client=REST%'""").fetchone()[0]
t2 = time.monotonic()
print(f"matched={n} load={t1 - t0:.3f} query={t2 - t1:.3f}")
PY
sq_out=$(measure python3 "$work/zircolite_like.py" "$work/prefix.jsonl" "$work/z.db")
sq_rc=$(sed -n 's/.*rc=\([0-9]*\).*/\1/p' <<<"$sq_out")
[[ "$sq_rc" == 0 ]] || { echo "hunt_bench: the SQLite run failed: $sq_out" >&2; exit 1; }
sq_load=$(sed -n 's/.*load=\([0-9.]*\).*/\1/p' <<<"$sq_out")
sq_query=$(sed -n 's/.*query=\([0-9.]*\).*/\1/p' <<<"$sq_out")
jq_cpu=$(field cpu "$jq_out")
echo "load average after: $(cut -d' ' -f1-3 /proc/loadavg)"

python3 - "$events" "$bytes" "$prefix_events" "$jq_cpu" "$sq_load" "$sq_query" "$cloud_rules" \
  "$(floor_times "$floor1")" "$(floor_times "$floorn") $hunt_workers" \
  "${runs[@]}" <<'PY'
import sys
ev, b, pev = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
jq_cpu, sq_load, sq_query, nrules = float(sys.argv[4]), float(sys.argv[5]), float(sys.argv[6]), int(sys.argv[7])
f1w, f1c = map(float, sys.argv[8].split())
fnw, fnc, fn = sys.argv[9].split()
fnw, fnc = float(fnw), float(fnc)
runs = [r.split() for r in sys.argv[10:]]
print(f"\ninput: {b/1e6:,.0f} MB, {ev:,} events; jq and SQLite on the first {pev:,} events\n")
print("| run | workers | wall s | events/s | CPU s | events/s per CPU-second | peak RSS MB | alerts |")
print("|---|---|---|---|---|---|---|---|")
print(f"| bare parse (simdjson_floor, 1 thread) | 1 | {f1w:.2f} | {ev/f1w:,.0f} | {f1c:.2f} | {ev/f1c:,.0f} | | |")
print(f"| bare parse (simdjson_floor, {fn} threads) | {fn} | {fnw:.2f} | {ev/fnw:,.0f} | {fnc:.2f} | {ev/fnc:,.0f} | | |")
label = {"cloud": "hunt, SigmaHQ cloud rules", "builtin": "hunt, cloud + built-in rules (correlations)",
         "analytics": "hunt, cloud + built-in + Storm-0558 analytics"}
rates = {}
for name, wall, cpu, rss, workers, alerts in runs:
    wall, cpu = float(wall), float(cpu)
    rates[name] = (ev / wall, ev / cpu)
    print(f"| {label[name]} | {workers} | {wall:.2f} | {ev/wall:,.0f} | {cpu:.2f} | {ev/cpu:,.0f} | {int(rss)/1024:.0f} | {alerts} |")
print(f"| jq, one filter | 1 | | | {jq_cpu:.2f} | {pev/jq_cpu:,.0f} | | |")
print(f"| SQLite (Zircolite approach): load + 1 query | 1 | | | {sq_load + sq_query:.2f} | {pev/(sq_load + sq_query):,.0f} | | |")
proj = sq_load + nrules * sq_query
print(f"| SQLite: load + {nrules} queries (projected: load + {nrules} x the measured query) | 1 | | | {proj:.2f} | {pev/proj:,.0f} | | |")
print()
for name in ("cloud", "builtin", "analytics"):
    w, c = rates[name]
    print(f"{label[name]}: {w/(ev/fnw):.0%} of the bare-parse wall rate ({fn} threads), "
          f"{c/(ev/fnc):.0%} per CPU-second; {c/(pev/jq_cpu):.1f}x jq, "
          f"{c/(pev/(sq_load + sq_query)):.1f}x SQLite load+1 query, {c/(pev/proj):.1f}x SQLite projected, per CPU-second")
PY
echo "work directory: $work (delete it when done)"
