#!/usr/bin/env bash
# The keyward CLI as a user meets it: exit codes, error messages, files it writes.
set -uo pipefail
KW=${1:?usage: cli_test.sh KEYWARD_BINARY}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
pass=0 fail=0
check() {  # check NAME EXPECTED_EXIT GREP_PATTERN -- command...
  local name=$1 want=$2 pattern=$3; shift 4
  local out rc
  out=$("$@" 2>&1); rc=$?
  if [ "$rc" -eq "$want" ] && grep -qE -- "$pattern" <<<"$out"; then
    pass=$((pass + 1)); echo "PASS $name"
  else
    fail=$((fail + 1)); echo "FAIL $name (exit $rc, want $want; pattern '$pattern')"; echo "$out" | head -5
  fi
}

ISS=https://login.keyward.test/t1/v2.0
"$KW" keys generate --alg ES256 --kid k1 --issuer "$ISS" --out "$tmp/k1.json" > "$tmp/k1.pub.json" 2>/dev/null
mode=$(stat -c %a "$tmp/k1.json")
if [ "$mode" = 600 ]; then pass=$((pass + 1)); echo "PASS private key written 0600"; else fail=$((fail + 1)); echo "FAIL private key mode $mode"; fi
echo "{\"keys\":[$(cat "$tmp/k1.pub.json")]}" > "$tmp/jwks.json"
TOKEN=$("$KW" token sign --key "$tmp/k1.json" --claims "{\"iss\":\"$ISS\",\"tid\":\"t1\",\"aud\":\"api\",\"sub\":\"alice\"}" --lifetime 600)

check "valid token prints claims" 0 '"sub": "alice"' -- "$KW" token verify --jwks "$tmp/jwks.json" --key-tenant t1 --audience api "$TOKEN"
check "token from stdin" 0 '"tid": "t1"' -- bash -c "echo '$TOKEN' | '$KW' token verify --jwks '$tmp/jwks.json' --key-tenant t1"
check "wrong audience" 1 'rejected: audience_mismatch' -- "$KW" token verify --jwks "$tmp/jwks.json" --key-tenant t1 --audience other "$TOKEN"
check "json output on rejection" 1 '"reason":"audience_mismatch"' -- "$KW" token verify --json --jwks "$tmp/jwks.json" --key-tenant t1 --audience other "$TOKEN"
sig=${TOKEN##*.}; c=${sig:10:1}; [ "$c" = A ] && r=B || r=A
TAMPERED="${TOKEN%.*}.${sig:0:10}${r}${sig:11}"
check "tampered token" 1 'bad_signature' -- "$KW" token verify --jwks "$tmp/jwks.json" --key-tenant t1 "$TAMPERED"
check "malformed token" 1 'rejected: malformed' -- "$KW" token verify --jwks "$tmp/jwks.json" --key-tenant t1 "not-a-token"
check "verify as of a later time" 1 'rejected: expired' -- "$KW" token verify --jwks "$tmp/jwks.json" --key-tenant t1 --now 4102444800 "$TOKEN"
check "missing key file" 2 'cannot open' -- "$KW" token verify --jwks "$tmp/nope.json" "$TOKEN"
echo '{"keys":[{"kty":"RSA","kid":"x","n":"AQAB","e":"AQAB","alg":"RS256"}]}' > "$tmp/bad.json"
check "weak key in a JWKS is named" 2 'keys\[0\].*too small' -- "$KW" token verify --jwks "$tmp/bad.json" --issuer "$ISS" "$TOKEN"
echo '{"keys":[' > "$tmp/broken.json"
check "broken JSON names the file" 2 'broken.json' -- "$KW" token verify --jwks "$tmp/broken.json" "$TOKEN"
check "both key sources" 2 'exactly one' -- "$KW" token verify --jwks "$tmp/jwks.json" --trust-store "$tmp/jwks.json" "$TOKEN"
check "inspect decodes without trust" 0 '"verified": false' -- "$KW" token inspect "$TOKEN"
check "inspect malformed" 1 'cannot decode: malformed' -- "$KW" token inspect "a.b"
check "unknown algorithm" 2 "unsupported --alg" -- "$KW" keys generate --alg HS256
check "sign needs an object" 2 'JSON object' -- "$KW" token sign --key "$tmp/k1.json" --claims '[1]'
check "demo refuses every forgery" 0 'every outcome as expected' -- "$KW" demo --guard-only
check "no subcommand" 2 'subcommand' -- "$KW"

# Identity directory administration on a fresh data directory.
DATA="$tmp/data"
TENANT=$("$KW" tenant create --name Contoso --data-dir "$DATA")
check "tenant listed" 0 "\"id\":\"$TENANT\".*enterprise" -- "$KW" tenant list --data-dir "$DATA"
check "consumer tenant exists" 0 '"kind":"consumer"' -- "$KW" tenant list --data-dir "$DATA"
check "duplicate tenant id" 1 'already exists' -- "$KW" tenant create --name X --id "$TENANT" --data-dir "$DATA"
check "user created from stdin password" 0 '^[0-9a-f-]{36}$' -- bash -c "echo 'correct horse battery' | '$KW' user create --tenant $TENANT --username alice --data-dir '$DATA'"
check "short password refused" 1 'at least 8' -- bash -c "echo short | '$KW' user create --tenant $TENANT --username bob --data-dir '$DATA'"
check "user in unknown tenant" 1 "no tenant" -- bash -c "echo 'long enough pw' | '$KW' user create --tenant nope --username bob --data-dir '$DATA'"
check "app created with a secret" 0 '"client_secret":"' -- "$KW" app create --tenant "$TENANT" --name web --redirect-uri https://mail.example/cb --scope Mail.Read --data-dir "$DATA"
check "insecure redirect refused" 1 'https' -- "$KW" app create --tenant "$TENANT" --name bad --redirect-uri http://evil.example/cb --data-dir "$DATA"
check "apps listed without secrets" 0 '"scopes":\["Mail.Read"\]' -- "$KW" app list --tenant "$TENANT" --data-dir "$DATA"
mode=$(stat -c %a "$DATA/keyward.db")
if [ "$mode" = 600 ]; then pass=$((pass + 1)); echo "PASS directory database is 0600"; else fail=$((fail + 1)); echo "FAIL directory database mode $mode"; fi
if "$KW" app list --tenant "$TENANT" --data-dir "$DATA" | grep -q secret; then fail=$((fail + 1)); echo "FAIL app list shows a secret"; else pass=$((pass + 1)); echo "PASS app list shows no secret"; fi

# keyward serve refuses a master key file that others can read.
mkdir -p "$tmp/svc" && printf '%064d\n' 0 > "$tmp/svc/master.key" && chmod 644 "$tmp/svc/master.key"
check "serve refuses a readable master key" 2 'chmod 600' -- "$KW" serve --data-dir "$tmp/svc" --port 0
check "serve created nothing next to it" 0 '' -- test ! -e "$tmp/svc/keyward.db"

# keyward serve on an ephemeral port: the first stdout line names it; discovery answers over
# HTTP (bash's /dev/tcp, so no curl is needed); SIGTERM stops it cleanly.
"$KW" serve --data-dir "$tmp/svc2" --port 0 > "$tmp/serve.out" 2> "$tmp/serve.err" &
serve_pid=$!
for _ in $(seq 50); do grep -q '^listening on ' "$tmp/serve.out" 2>/dev/null && break; sleep 0.1; done
url=$(head -1 "$tmp/serve.out" | sed 's/^listening on //')
port=${url##*:}
CONSUMER=9188040d-6c67-4c5b-b112-36a304b66dad
discovery=$(exec 3<>"/dev/tcp/127.0.0.1/$port" &&
  printf 'GET /%s/v2.0/.well-known/openid-configuration HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n' "$CONSUMER" >&3 &&
  timeout 5 cat <&3)
if grep -q "\"issuer\":\"$url/$CONSUMER/v2.0\"" <<<"$discovery"; then
  pass=$((pass + 1)); echo "PASS serve answers discovery on the printed port"
else
  fail=$((fail + 1)); echo "FAIL serve discovery (url '$url')"; head -3 "$tmp/serve.err"
fi
jmap=$(exec 3<>"/dev/tcp/127.0.0.1/$port" &&
  printf 'GET /.well-known/jmap HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n' >&3 && cat <&3)
case "$jmap" in
  "HTTP/1.1 401"*invalid_token*) pass=$((pass + 1)); echo "PASS the mail service refuses a request without a token" ;;
  *) fail=$((fail + 1)); echo "FAIL mail session without a token: $(echo "$jmap" | head -1)" ;;
esac
kill -TERM "$serve_pid"; wait "$serve_pid"; rc=$?
if [ "$rc" -eq 0 ]; then pass=$((pass + 1)); echo "PASS serve stops on SIGTERM"; else fail=$((fail + 1)); echo "FAIL serve exit $rc after SIGTERM"; fi
mode=$(stat -c %a "$tmp/svc2/master.key")
if [ "$mode" = 600 ]; then pass=$((pass + 1)); echo "PASS serve created master.key 0600"; else fail=$((fail + 1)); echo "FAIL master.key mode $mode"; fi

check "the audit log of the run verifies" 0 'intact' -- "$KW" audit verify --data-dir "$tmp/svc2"
check "the refused mail request is in the audit log" 0 'TokenRejected' -- "$KW" audit query --data-dir "$tmp/svc2" --operation TokenRejected
printf 'From: a@example.com\r\nTo: nobody@example.com\r\nSubject: hi\r\n\r\nbody\r\n' > "$tmp/msg.eml"
check "mail deliver refuses an unknown recipient" 1 'no mailbox' -- sh -c "\"$KW\" mail deliver --data-dir \"$tmp/svc2\" --to nobody@example.com < \"$tmp/msg.eml\""

echo "$pass passed, $fail failed"
[ "$fail" -eq 0 ]
