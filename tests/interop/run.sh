#!/usr/bin/env bash
# Cross-implementation tests: the `keyward` CLI against the npm `jose` library.
#
# Usage: bash tests/interop/run.sh KEYWARD_BINARY
#
#   1. jose -> Keyward: tokens signed by jose (ES256, EdDSA, RS256, PS256) verify with
#      `keyward token verify`; the same tokens with a flipped signature byte are refused with
#      bad_signature; the same keys bound to another issuer are refused.
#   2. Keyward -> jose: keys from `keyward keys generate` and tokens from `keyward token sign`
#      verify with jose (and with Keyward itself); jose refuses them once tampered with.
#   3. Storm-0558: a consumer key signs a token claiming an enterprise issuer. With the combined
#      JWKS (consumer and enterprise keys, each naming its issuer) Keyward refuses it with
#      key_issuer_mismatch, while jose's plain verification accepts it.
#   4. A live `keyward serve` (ephemeral port, fresh data directory) driven by npm openid-client:
#      discovery, client_credentials, authorization code with PKCE through the login form,
#      rotating refresh with reuse refused (oidc_flow.mjs); every access token verified by jose's
#      createRemoteJWKSet and by `keyward token verify` fed from the served JWKS; a token forged
#      with the consumer key stolen from the data directory (tests/tools/steal_key.cc) is
#      accepted by jose over the combined JWKS and refused by Keyward (key_issuer_mismatch) and
#      by the server's introspection.
#   5. The same server's JMAP mail service driven by npm jmap-jam with a user token from the login
#      flow (jmap_flow.mjs): session, mail handed over LMTP by Python's smtplib.LMTP and pushed to
#      an event source read with Node's fetch, Mailbox/get, Email/query + Email/get by result
#      reference, blob upload/download, Email/import; the forged token refused; then the audit
#      log, verified, holds the forged token's TokenRejected (key_issuer_mismatch).
#
# Usage: bash tests/interop/run.sh KEYWARD_BINARY [KW_STEAL_KEY_BINARY]
#
# Prints one PASS/FAIL line per check and ends with "N passed, M failed"; exits 1 if any failed.
set -euo pipefail

if [[ $# -lt 1 || $# -gt 2 ]]; then
  echo "usage: bash tests/interop/run.sh KEYWARD_BINARY [KW_STEAL_KEY_BINARY]" >&2
  exit 2
fi
STEAL="${2:-$(dirname "$1")/../../tests/kw_steal_key}"
if [[ ! -x "$STEAL" ]]; then
  echo "interop: test tool '$STEAL' not found (build the tests first)" >&2
  exit 2
fi
STEAL="$(cd "$(dirname "$STEAL")" && pwd)/$(basename "$STEAL")"

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
if [[ ! -f "$1" || ! -x "$1" ]]; then
  echo "interop: keyward binary '$1' not found or not executable (build it first)" >&2
  exit 2
fi
KEYWARD="$(cd "$(dirname "$1")" && pwd)/$(basename "$1")"

for tool in node npm python3; do
  if ! command -v "$tool" >/dev/null 2>&1; then
    echo "interop: '$tool' is not installed; the interop tests need Node.js >= 18 and npm" \
      "(run 'bash scripts/setup' or 'apt-get install nodejs npm')" >&2
    exit 1
  fi
done

# ---- jose, pinned by package-lock.json ----

# True when node_modules matches package-lock.json: npm's hidden lockfile exists, is not older
# than package.json / package-lock.json, and the installed jose has the locked version.
deps_current() {
  local hidden="$HERE/node_modules/.package-lock.json"
  [[ -f "$hidden" ]] || return 1
  [[ "$HERE/package-lock.json" -nt "$hidden" || "$HERE/package.json" -nt "$hidden" ]] && return 1
  node -e '
    const fs = require("fs");
    const locked = JSON.parse(fs.readFileSync(process.argv[1] + "/package-lock.json", "utf8"));
    for (const pkg of ["jose", "openid-client", "jmap-jam"]) {
      const want = locked.packages["node_modules/" + pkg].version;
      const have = JSON.parse(fs.readFileSync(
          process.argv[1] + "/node_modules/" + pkg + "/package.json", "utf8")).version;
      if (want !== have) process.exit(1);
    }
  ' "$HERE" 2>/dev/null
}

if ! deps_current; then
  echo "interop: installing jose, openid-client and jmap-jam (npm ci)"
  (cd "$HERE" && npm ci --no-audit --no-fund --loglevel=error) >&2
fi
JOSE_VERSION="$(node -p 'require(process.argv[1]).version' "$HERE/node_modules/jose/package.json")"
OIDC_VERSION="$(node -p 'require(process.argv[1]).version' \
  "$HERE/node_modules/openid-client/package.json")"
JAM_VERSION="$(node -p 'require(process.argv[1]).version' "$HERE/node_modules/jmap-jam/package.json")"
echo "interop: node $(node --version), jose $JOSE_VERSION, openid-client $OIDC_VERSION," \
  "jmap-jam $JAM_VERSION, keyward $KEYWARD"

WORK="$(mktemp -d "${TMPDIR:-/tmp}/keyward-interop.XXXXXX")"
SERVER_PID=""
cleanup() {
  if [[ -n "$SERVER_PID" ]]; then kill "$SERVER_PID" 2>/dev/null || true; wait "$SERVER_PID" 2>/dev/null || true; fi
  rm -rf "$WORK"
}
trap cleanup EXIT
cd "$WORK"

ALGS=(ES256 EdDSA RS256 PS256)
ISSUER="https://login.interop.example/7d3e2a11-4b6c-4f0e-9a51-2c8d6e0f1a22/v2.0"
TENANT="7d3e2a11-4b6c-4f0e-9a51-2c8d6e0f1a22"
AUDIENCE="api://keyward-interop"
OTHER_ISSUER="https://login.interop.example/0f9c1b7e-5a2d-4e3b-8c64-91d2e7a3b5f0/v2.0"

PASSED=0
FAILED=0
pass() { echo "PASS $1"; PASSED=$((PASSED + 1)); }
fail() { echo "FAIL $1: $2"; FAILED=$((FAILED + 1)); }

# json_get FILE FIELD: prints a top-level member of the JSON object in FILE ("" if absent or if
# the file is not JSON); nested objects are printed as JSON.
json_get() {
  node -e '
    let v;
    try { v = JSON.parse(require("fs").readFileSync(process.argv[1], "utf8"))[process.argv[2]]; }
    catch { v = undefined; }
    if (v !== undefined) console.log(typeof v === "object" ? JSON.stringify(v) : String(v));
  ' "$1" "$2"
}

# tamper_signature IN OUT: copies a compact JWS, flipping all bits of signature byte 10 (well
# inside the signature, so the result is still canonical base64url of the right length).
tamper_signature() {
  node -e '
    const fs = require("fs");
    const parts = fs.readFileSync(process.argv[1], "utf8").trim().split(".");
    const sig = Buffer.from(parts[2], "base64url");
    sig[10] ^= 0xff;
    parts[2] = sig.toString("base64url");
    fs.writeFileSync(process.argv[2], parts.join(".") + "\n");
  ' "$1" "$2"
}

# set_members IN OUT JSON: copies a JWKS, adding the members of the JSON object to every key.
set_members() {
  node -e '
    const fs = require("fs");
    const jwks = JSON.parse(fs.readFileSync(process.argv[1], "utf8"));
    const extra = JSON.parse(process.argv[3]);
    jwks.keys = jwks.keys.map((k) => ({ ...k, ...extra }));
    fs.writeFileSync(process.argv[2], JSON.stringify(jwks) + "\n");
  ' "$1" "$2" "$3"
}

# kw_verify OUT TOKEN_FILE ARGS...: runs `keyward token verify --json` with ARGS, the token on
# stdin, its JSON outcome in OUT (stderr in OUT.err); sets RC to the exit code.
kw_verify() {
  local out="$1" token_file="$2"
  shift 2
  RC=0
  "$KEYWARD" token verify --json "$@" <"$token_file" >"$out" 2>"$out.err" || RC=$?
}

# jose_verify OUT JWKS TOKEN_FILE ISSUER AUDIENCE: sets RC to jose_verify.mjs's exit code.
jose_verify() {
  local out="$1"
  shift
  RC=0
  node "$HERE/jose_verify.mjs" "$@" >"$out" 2>"$out.err" || RC=$?
}

# ---- 1. jose -> Keyward ----

# A failure here shows up below as failed checks (the files are missing).
node "$HERE/jose_sign.mjs" "$WORK" "$ISSUER" "$AUDIENCE" "$TENANT" ||
  echo "interop: jose_sign.mjs failed" >&2

for alg in "${ALGS[@]}"; do
  jwks="jose-$alg.jwks.json"
  jwt="jose-$alg.jwt"

  # The JWKS keys have no "issuer" member: they are bound to the one --issuer, and an exact
  # enterprise issuer needs the keys' tenant.
  kw_verify out.json "$jwt" --jwks "$jwks" --issuer "$ISSUER" --audience "$AUDIENCE" \
    --key-tenant "$TENANT"
  sub="$(json_get out.json claims | node -e \
    'try { console.log(JSON.parse(require("fs").readFileSync(0, "utf8")).sub ?? ""); } catch {}')"
  if [[ $RC -eq 0 && "$(json_get out.json valid)" == "true" && "$sub" == "jose-subject-$alg" &&
        "$(json_get out.json alg)" == "$alg" ]]; then
    pass "jose->keyward $alg"
  else
    fail "jose->keyward $alg" "exit $RC, $(cat out.json out.json.err)"
  fi

  tamper_signature "$jwt" tampered.jwt
  kw_verify out.json tampered.jwt --jwks "$jwks" --issuer "$ISSUER" --audience "$AUDIENCE" \
    --key-tenant "$TENANT"
  reason="$(json_get out.json reason)"
  if [[ $RC -eq 1 && "$reason" == "bad_signature" ]]; then
    pass "jose->keyward $alg flipped signature byte refused (bad_signature)"
  else
    fail "jose->keyward $alg flipped signature byte" "exit $RC, reason '$reason'"
  fi

  # The same keys, published as belonging to another issuer: they must not sign for $ISSUER.
  set_members "$jwks" other.jwks.json "{\"issuer\":\"$OTHER_ISSUER\"}"
  kw_verify out.json "$jwt" --jwks other.jwks.json --issuer "$ISSUER" --audience "$AUDIENCE" \
    --key-tenant "$TENANT"
  reason="$(json_get out.json reason)"
  if [[ $RC -eq 1 && ("$reason" == "key_issuer_mismatch" || "$reason" == "issuer_mismatch") ]]; then
    pass "jose->keyward $alg key bound to another issuer refused ($reason)"
  else
    fail "jose->keyward $alg key bound to another issuer" "exit $RC, reason '$reason'"
  fi
done

# ---- 2. Keyward -> jose ----

CLAIMS_TEMPLATE='{"iss":"%s","aud":"%s","sub":"%s","tid":"%s","jti":"%s"}'
for alg in "${ALGS[@]}"; do
  sub="keyward-subject-$alg"
  if ! "$KEYWARD" keys generate --alg "$alg" --kid "k-$alg" --out "priv-$alg.json" \
       >"pub-$alg.json" 2>keygen.err; then
    fail "keyward->jose $alg" "keys generate failed: $(cat keygen.err)"
    continue
  fi
  node -e '
    const fs = require("fs");
    const pub = JSON.parse(fs.readFileSync(process.argv[1], "utf8"));
    fs.writeFileSync(process.argv[2], JSON.stringify({ keys: [pub] }) + "\n");
  ' "pub-$alg.json" "keyward-$alg.jwks.json"
  # shellcheck disable=SC2059
  claims="$(printf "$CLAIMS_TEMPLATE" "$ISSUER" "$AUDIENCE" "$sub" "$TENANT" "jti-$alg-$RANDOM")"
  if ! "$KEYWARD" token sign --key "priv-$alg.json" --claims "$claims" --lifetime 3600 \
       >"keyward-$alg.jwt" 2>sign.err; then
    fail "keyward->jose $alg" "token sign failed: $(cat sign.err)"
    continue
  fi

  jose_verify out.json "keyward-$alg.jwks.json" "keyward-$alg.jwt" "$ISSUER" "$AUDIENCE"
  got_sub="$(json_get out.json payload | node -e \
    'try { console.log(JSON.parse(require("fs").readFileSync(0, "utf8")).sub ?? ""); } catch {}')"
  got_kid="$(json_get out.json header | node -e \
    'try { console.log(JSON.parse(require("fs").readFileSync(0, "utf8")).kid ?? ""); } catch {}')"
  if [[ $RC -eq 0 && "$got_sub" == "$sub" && "$got_kid" == "k-$alg" ]]; then
    pass "keyward->jose $alg"
  else
    fail "keyward->jose $alg" "exit $RC, $(cat out.json out.json.err)"
  fi

  tamper_signature "keyward-$alg.jwt" tampered.jwt
  jose_verify out.json "keyward-$alg.jwks.json" tampered.jwt "$ISSUER" "$AUDIENCE"
  if [[ $RC -eq 1 ]] && grep -q "ERR_JWS_SIGNATURE_VERIFICATION_FAILED" out.json.err; then
    pass "keyward->jose $alg flipped signature byte refused by jose"
  else
    fail "keyward->jose $alg flipped signature byte" "exit $RC, $(cat out.json.err)"
  fi

  kw_verify out.json "keyward-$alg.jwt" --jwks "keyward-$alg.jwks.json" --issuer "$ISSUER" \
    --audience "$AUDIENCE" --key-tenant "$TENANT"
  if [[ $RC -eq 0 && "$(json_get out.json valid)" == "true" &&
        "$(json_get out.json kid)" == "k-$alg" ]]; then
    pass "keyward->keyward $alg"
  else
    fail "keyward->keyward $alg" "exit $RC, $(cat out.json out.json.err)"
  fi
done

# ---- 3. Storm-0558: a consumer key signing for an enterprise issuer ----

# The consumer issuer's tenant is the one Microsoft uses for personal accounts.
CONSUMER_TENANT="9188040d-6c67-4c5b-b112-36a304b66dad"
CONSUMER_ISSUER="https://login.interop.example/$CONSUMER_TENANT/v2.0"
ENTERPRISE_TENANT="$TENANT"
ENTERPRISE_ISSUER="$ISSUER"

# storm_setup: writes consumer-priv.json / enterprise-priv.json, combined.jwks.json, forged.jwt
# (the consumer key signing for the enterprise issuer) and genuine.jwt (the enterprise key's own).
storm_setup() {
  "$KEYWARD" keys generate --alg ES256 --kid consumer-2016 --issuer "$CONSUMER_ISSUER" \
    --out consumer-priv.json >consumer-pub.json 2>storm.err || return 1
  "$KEYWARD" keys generate --alg ES256 --kid enterprise-2023 --issuer "$ENTERPRISE_ISSUER" \
    --out enterprise-priv.json >enterprise-pub.json 2>storm.err || return 1
  # One key set for both issuers, each key naming its own issuer (and kind and tenant), as the
  # 2023 "common" metadata endpoint served it.
  node -e '
    const fs = require("fs");
    const [consumer, enterprise, consumerTid, enterpriseTid, out] = process.argv.slice(1);
    const c = JSON.parse(fs.readFileSync(consumer, "utf8"));
    const e = JSON.parse(fs.readFileSync(enterprise, "utf8"));
    const keys = [{ ...c, issuer_kind: "consumer", tid: consumerTid },
                  { ...e, issuer_kind: "enterprise", tid: enterpriseTid }];
    fs.writeFileSync(out, JSON.stringify({ keys }) + "\n");
  ' consumer-pub.json enterprise-pub.json "$CONSUMER_TENANT" "$ENTERPRISE_TENANT" \
    combined.jwks.json 2>storm.err || return 1
  local forged_claims genuine_claims
  # shellcheck disable=SC2059
  forged_claims="$(printf "$CLAIMS_TEMPLATE" "$ENTERPRISE_ISSUER" "$AUDIENCE" \
    "victim@enterprise" "$ENTERPRISE_TENANT" "jti-forged")"
  "$KEYWARD" token sign --key consumer-priv.json --claims "$forged_claims" --lifetime 3600 \
    >forged.jwt 2>storm.err || return 1
  # shellcheck disable=SC2059
  genuine_claims="$(printf "$CLAIMS_TEMPLATE" "$ENTERPRISE_ISSUER" "$AUDIENCE" \
    "user@enterprise" "$ENTERPRISE_TENANT" "jti-genuine")"
  "$KEYWARD" token sign --key enterprise-priv.json --claims "$genuine_claims" --lifetime 3600 \
    >genuine.jwt 2>storm.err || return 1
}

if ! storm_setup; then
  # The checks below then fail on the missing files; say why.
  echo "interop: storm-0558 setup failed: $(cat storm.err)" >&2
fi

kw_verify out.json forged.jwt --jwks combined.jwks.json --issuer "$ENTERPRISE_ISSUER" \
  --audience "$AUDIENCE"
reason="$(json_get out.json reason)"
if [[ $RC -eq 1 && "$reason" == "key_issuer_mismatch" ]]; then
  pass "storm-0558 keyward refuses consumer-key token for enterprise issuer (key_issuer_mismatch)"
else
  fail "storm-0558 keyward refuses consumer-key token" "exit $RC, reason '$reason'"
fi

jose_verify out.json combined.jwks.json forged.jwt "$ENTERPRISE_ISSUER" "$AUDIENCE"
kid="$(json_get out.json header | node -e \
  'try { console.log(JSON.parse(require("fs").readFileSync(0, "utf8")).kid ?? ""); } catch {}')"
if [[ $RC -eq 0 && "$kid" == "consumer-2016" ]]; then
  pass "storm-0558 jose accepts the same forged token (the flaw Keyward closes)"
else
  fail "storm-0558 jose accepts the forged token" \
    "expected jose to accept it (exit $RC): $(cat out.json.err)"
fi

# Control: the enterprise key's own token passes both, so the refusal above is the key binding.
kw_verify out.json genuine.jwt --jwks combined.jwks.json --issuer "$ENTERPRISE_ISSUER" \
  --audience "$AUDIENCE"
if [[ $RC -eq 0 && "$(json_get out.json kid)" == "enterprise-2023" ]]; then
  pass "storm-0558 keyward accepts the enterprise key's genuine token"
else
  fail "storm-0558 keyward accepts the genuine token" "exit $RC, $(cat out.json out.json.err)"
fi
jose_verify out.json combined.jwks.json genuine.jwt "$ENTERPRISE_ISSUER" "$AUDIENCE"
if [[ $RC -eq 0 ]]; then
  pass "storm-0558 jose accepts the enterprise key's genuine token"
else
  fail "storm-0558 jose accepts the genuine token" "exit $RC, $(cat out.json.err)"
fi

# ---- 4. A live identity service and openid-client ----

DATA="$WORK/live-data"
TENANT_LIVE="72f988bf-86f1-41af-91ab-2d7cd011db47"
MAIL_AUD="https://mail.keyward.test"
"$KEYWARD" tenant create --data-dir "$DATA" --name Contoso --id "$TENANT_LIVE" >/dev/null
echo "correct horse battery staple" |
  "$KEYWARD" user create --data-dir "$DATA" --tenant "$TENANT_LIVE" --username alice >/dev/null
"$KEYWARD" app create --data-dir "$DATA" --tenant "$TENANT_LIVE" --name daemon \
  --audience "$MAIL_AUD" --scope Mail.Read --scope Mail.Send >conf.json 2>/dev/null
"$KEYWARD" app create --data-dir "$DATA" --tenant "$TENANT_LIVE" --name web --public \
  --redirect-uri http://127.0.0.1:9/callback --audience "$MAIL_AUD" --scope Mail.Read \
  --scope Mail.ReadWrite >pub.json 2>/dev/null
"$KEYWARD" serve --data-dir "$DATA" --port 0 --mail-audience "$MAIL_AUD" --lmtp-port 0 \
  >serve.out 2>serve.err &
SERVER_PID=$!
BASE=""
for _ in $(seq 1 100); do
  BASE="$(sed -n 's/^listening on //p' serve.out)"
  [[ -n "$BASE" ]] && break
  sleep 0.05
done
if [[ -z "$BASE" ]]; then
  fail "live server" "keyward serve did not start: $(cat serve.err)"
  echo "$PASSED passed, $FAILED failed"
  exit 1
fi
LIVE_ISSUER="$BASE/$TENANT_LIVE/v2.0"
CONSUMER_ISSUER="$BASE/9188040d-6c67-4c5b-b112-36a304b66dad/v2.0"
node -e '
  const fs = require("fs");
  const conf = JSON.parse(fs.readFileSync("conf.json", "utf8"));
  const pub = JSON.parse(fs.readFileSync("pub.json", "utf8"));
  fs.writeFileSync("oidc.json", JSON.stringify({
    issuer: process.argv[1], audience: process.argv[2],
    confidential: { id: conf.client_id, secret: conf.client_secret },
    public: { id: pub.client_id }, redirect_uri: "http://127.0.0.1:9/callback",
    username: "alice", password: "correct horse battery staple" }));
' "$LIVE_ISSUER" "$MAIL_AUD"
RC=0
node "$HERE/oidc_flow.mjs" oidc.json "$WORK" >oidc.out 2>oidc.err || RC=$?
while read -r line; do
  case "$line" in
    PASS\ *) pass "openid-client: ${line#PASS }" ;;
    FAIL\ *) fail "openid-client: ${line#FAIL }" "see above" ;;
  esac
done <oidc.out
if [[ $RC -ne 0 && ! -s oidc.out ]]; then fail "openid-client" "exit $RC: $(cat oidc.err)"; fi

# Keyward's own verifier, fed from the JWKS the server publishes (consumer and enterprise keys
# together, as the 2023 "common" endpoint did: each key names its issuer).
node -e '
  (async () => {
    const keys = [];
    for (const url of process.argv.slice(1)) keys.push(...(await (await fetch(url)).json()).keys);
    require("fs").writeFileSync("live.jwks.json", JSON.stringify({ keys }));
  })().catch((e) => { console.error(e); process.exit(1); });
' "$LIVE_ISSUER/keys" "$CONSUMER_ISSUER/keys"
N=0
while read -r tok; do
  [[ -z "$tok" ]] && continue
  N=$((N + 1))
  RC=0
  "$KEYWARD" token verify --json --jwks live.jwks.json --issuer "$LIVE_ISSUER" \
    --audience "$MAIL_AUD" "$tok" >out.json 2>out.json.err || RC=$?
  if [[ $RC -eq 0 ]]; then
    pass "keyward verifies openid-client token $N from the served JWKS"
  else
    fail "keyward verifies openid-client token $N" "exit $RC, $(cat out.json out.json.err)"
  fi
done <"$WORK/tokens.txt"

# The thief: the consumer key, unsealed from the data directory, signs an enterprise token.
"$STEAL" "$DATA" >stolen.json 2>steal.err || fail "steal the consumer key" "$(cat steal.err)"
NOW=$(date +%s)
"$KEYWARD" token sign --key stolen.json --lifetime 600 --claims \
  "{\"iss\":\"$LIVE_ISSUER\",\"tid\":\"$TENANT_LIVE\",\"aud\":\"$MAIL_AUD\",\"sub\":\"alice\",\"azp\":\"d3b1ad6e-0000-4000-8000-000000000000\",\"jti\":\"forged-$NOW\"}" \
  >live-forged.jwt 2>sign.err || fail "forge with the stolen key" "$(cat sign.err)"
RC=0
"$KEYWARD" token verify --json --jwks live.jwks.json --issuer "$LIVE_ISSUER" \
  --audience "$MAIL_AUD" "$(cat live-forged.jwt)" >out.json 2>out.json.err || RC=$?
reason="$(json_get out.json reason)"
if [[ $RC -eq 1 && "$reason" == "key_issuer_mismatch" ]]; then
  pass "keyward refuses the stolen consumer key's enterprise token (key_issuer_mismatch)"
else
  fail "keyward refuses the stolen-key token" "exit $RC, reason '$reason' $(cat out.json.err)"
fi
jose_verify out.json live.jwks.json live-forged.jwt "$LIVE_ISSUER" "$MAIL_AUD"
if [[ $RC -eq 0 ]]; then
  pass "jose over the combined JWKS accepts the same forged token (the 2023 flaw)"
else
  fail "jose accepts the forged token" "expected acceptance (exit $RC): $(cat out.json.err)"
fi
INTROSPECT="$(node -e '
  const [url, id, secret, token] = process.argv.slice(1);
  fetch(url, { method: "POST", body: new URLSearchParams({ token, client_id: id, client_secret: secret }) })
    .then((r) => r.text()).then((t) => console.log(t));
' "$LIVE_ISSUER/introspect" "$(json_get conf.json client_id)" "$(json_get conf.json client_secret)" \
  "$(cat live-forged.jwt)")"
if [[ "$INTROSPECT" == '{"active":false}' ]]; then
  pass "the identity service's introspection calls the forged token inactive"
else
  fail "introspection of the forged token" "$INTROSPECT"
fi

# ---- 5. The mail service: jmap-jam, LMTP from Python's smtplib, push ----

LMTP="$(sed -n 's/^lmtp on //p' serve.out)"
printf 'From: Carol <carol@fabrikam.test>\r\nTo: alice\r\nSubject: Interop over LMTP\r\nMessage-ID: <lmtp-1@fabrikam.test>\r\nDate: Mon, 30 Nov 2026 09:00:00 +0000\r\n\r\nHanded over by smtplib.LMTP.\r\n' >lmtp.eml
node -e '
  const fs = require("fs");
  const [base, issuer, lmtp] = process.argv.slice(1);
  const pub = JSON.parse(fs.readFileSync("pub.json", "utf8"));
  const i = lmtp.lastIndexOf(":");
  fs.writeFileSync("jmap.json", JSON.stringify({
    base, issuer, public: { id: pub.client_id }, redirect_uri: "http://127.0.0.1:9/callback",
    username: "alice", password: "correct horse battery staple",
    lmtp: { host: lmtp.slice(0, i), port: Number(lmtp.slice(i + 1)) },
    message_file: "lmtp.eml", forged_token_file: "live-forged.jwt" }));
' "$BASE" "$LIVE_ISSUER" "$LMTP"
RC=0
node "$HERE/jmap_flow.mjs" jmap.json >jmap.out 2>jmap.err || RC=$?
while read -r line; do
  case "$line" in
    PASS\ *) pass "jmap-jam: ${line#PASS }" ;;
    FAIL\ *) fail "jmap-jam: ${line#FAIL }" "see above" ;;
  esac
done <jmap.out
if [[ $RC -ne 0 && ! -s jmap.out ]]; then fail "jmap-jam" "exit $RC: $(cat jmap.err)"; fi

kill -TERM "$SERVER_PID"; wait "$SERVER_PID" 2>/dev/null || true; SERVER_PID=""
RC=0
"$KEYWARD" audit verify --data-dir "$DATA" >verify.out 2>&1 || RC=$?
if [[ $RC -eq 0 ]]; then pass "the audit log of the live run verifies"; else fail "audit verify" "exit $RC: $(cat verify.out)"; fi
"$KEYWARD" audit query --json --data-dir "$DATA" --operation TokenRejected >rejected.jsonl 2>query.err || true
if grep -q '"key_issuer_mismatch"' rejected.jsonl && grep -q "forged-$NOW" rejected.jsonl; then
  pass "the audit log records the forged token as TokenRejected (key_issuer_mismatch)"
else
  fail "TokenRejected in the audit log" "$(head -c 400 rejected.jsonl) $(cat query.err)"
fi
"$KEYWARD" audit query --json --data-dir "$DATA" --operation MailItemsAccessed >reads.jsonl 2>/dev/null || true
if grep -q 'lmtp-1@fabrikam.test' reads.jsonl; then
  pass "the audit log records jmap-jam's reads item by item (Internet message id)"
else
  fail "MailItemsAccessed in the audit log" "$(head -c 400 reads.jsonl)"
fi

echo "$PASSED passed, $FAILED failed"
[[ $FAILED -eq 0 ]]
