#!/usr/bin/env bash
# Load test of the identity service on loopback with wrk: client_credentials issuance (POST
# /TENANT/v2.0/token) and JWKS fetches (GET /TENANT/v2.0/keys), on a Release `keyward serve`
# with a fresh data directory: every token is in the durable audit log (fsync'ed, group commit)
# before it is returned, and live detection reads every record. Prints requests/s, p50/p99 latency and the ratio to the published
# reference figures (Keycloak ~120 grants/s per vCPU; Ory Hydra 410/s on 2 cores), which cannot
# run here (neither is a Debian package).
#   BUILD_DIR    build directory (default build-bench, Release)
#   DURATION     seconds per wrk run (default 10)
#   CONNECTIONS  wrk connections (default 32); THREADS wrk threads (default 2)
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
build="${BUILD_DIR:-$root/build-bench}"
duration="${DURATION:-10}"
conns="${CONNECTIONS:-32}"
threads="${THREADS:-2}"
command -v wrk >/dev/null || { echo "identity_wrk: wrk is not installed (bash scripts/setup)" >&2; exit 2; }
if [[ ! -f "$build/build.ninja" ]]; then
  cmake -S "$root" -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release -DKEYWARD_BUILD_TESTS=OFF \
    -DKEYWARD_BUILD_BENCH=ON >/dev/null
fi
cmake --build "$build" --target keyward >/dev/null
K="$build/src/cli/keyward"
work="$(mktemp -d "${TMPDIR:-/tmp}/keyward-wrk.XXXXXX")"
pid=""
trap '[[ -n "$pid" ]] && kill "$pid" 2>/dev/null; wait 2>/dev/null; rm -rf "$work"' EXIT
tenant=72f988bf-86f1-41af-91ab-2d7cd011db47
"$K" tenant create --data-dir "$work/data" --name Bench --id "$tenant" >/dev/null
app="$("$K" app create --data-dir "$work/data" --tenant "$tenant" --name bench \
  --audience https://mail.keyward.test --scope Mail.Read 2>/dev/null)"
id="$(python3 -c 'import json,sys; print(json.loads(sys.argv[1])["client_id"])' "$app")"
secret="$(python3 -c 'import json,sys; print(json.loads(sys.argv[1])["client_secret"])' "$app")"
"$K" serve --data-dir "$work/data" --port 0 >"$work/serve.out" 2>"$work/serve.err" &
pid=$!
for _ in $(seq 1 100); do grep -q '^listening on' "$work/serve.out" && break; sleep 0.05; done
base="$(sed -n 's/^listening on //p' "$work/serve.out")"
[[ -n "$base" ]] || { echo "identity_wrk: server did not start: $(cat "$work/serve.err")" >&2; exit 1; }
cat >"$work/token.lua" <<LUA
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/x-www-form-urlencoded"
wrk.body = "grant_type=client_credentials&client_id=$id&client_secret=$secret&scope=Mail.Read"
done = function(summary, latency, requests)
  io.write(string.format("RESULT rps=%.0f p50_ms=%.2f p99_ms=%.2f errors=%d non2xx=%d\n",
    summary.requests / (summary.duration / 1e6), latency:percentile(50) / 1000,
    latency:percentile(99) / 1000, summary.errors.connect + summary.errors.read +
    summary.errors.write + summary.errors.timeout, summary.errors.status))
end
LUA
cat >"$work/get.lua" <<'LUA'
done = function(summary, latency, requests)
  io.write(string.format("RESULT rps=%.0f p50_ms=%.2f p99_ms=%.2f errors=%d non2xx=%d\n",
    summary.requests / (summary.duration / 1e6), latency:percentile(50) / 1000,
    latency:percentile(99) / 1000, summary.errors.connect + summary.errors.read +
    summary.errors.write + summary.errors.timeout, summary.errors.status))
end
LUA
# Warm-up: the first token opens the ring and generates its first key.
wrk -t1 -c1 -d1s -s "$work/token.lua" "$base/$tenant/v2.0/token" >/dev/null
echo "machine: $(nproc) cores; wrk -t$threads -c$conns -d${duration}s; server and wrk share the cores"
tok="$(wrk -t"$threads" -c"$conns" -d"${duration}s" -s "$work/token.lua" "$base/$tenant/v2.0/token" | sed -n 's/^RESULT //p')"
jwks="$(wrk -t"$threads" -c"$conns" -d"${duration}s" -s "$work/get.lua" "$base/$tenant/v2.0/keys" | sed -n 's/^RESULT //p')"
issued="$("$K" audit query --data-dir "$work/data" --operation TokenIssued | wc -l)"
echo "client_credentials: $tok"
echo "jwks:               $jwks"
echo "token_issued audit events written: $issued"
rps="$(sed 's/.*rps=\([0-9]*\).*/\1/' <<<"$tok")"
python3 - "$rps" <<'PY'
import sys
rps = float(sys.argv[1])
print(f"ratio to Keycloak (120/s per vCPU x 2): {rps / 240:.1f}x; to Ory Hydra (410/s on 2 cores): {rps / 410:.1f}x")
PY
