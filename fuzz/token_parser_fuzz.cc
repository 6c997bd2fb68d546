// libFuzzer target: arbitrary bytes through the token parser, the claims parser and the verifier.
//
// Every input is used three ways:
//   1. as a compact JWS for ParseCompactJws,
//   2. as a claims payload for ParseClaims,
//   3. as a bearer token for Verifier::Verify (six-key trust store, template issuer, cache on).
// And an input that starts with '{' is also used as the payload of a token signed here with a
// trusted Ed25519 key, so that the checks after the signature (exp, nbf, iat, lifetime, audience)
// and the verified-token cache are reached too.
//
// Invariants (a violation aborts, which libFuzzer reports as a crash with the input saved):
//  - ParseCompactJws: kOk implies the input is within the size limit, signing_input is the input
//    up to its second '.', each segment is the canonical base64url of what was decoded (so one
//    token has one spelling), the signature is non-empty, "alg" round-trips and a kid is at most
//    256 bytes. A refusal always comes with a detail sentence; an input over the limit is
//    kOversized.
//  - ParseClaims: kOk implies the kept JSON is the input and every time claim is in
//    [0, 253402300799]; a refusal is malformed or invalid_claim, with a detail.
//  - Verify of the raw input never succeeds: the trust store's private keys are generated at
//    start-up and never leave this process, so no input can carry a valid signature. A refusal
//    has a detail and a reason code that exists.
//  - Verify of a token signed here is never refused for its signature or its header; when it is
//    accepted every time and audience rule holds, and a second Verify is a cache hit unless
//    "exp" has passed (the verifier allows clock skew, the cache does not).

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

#include "core/base64url.h"
#include "core/clock.h"
#include "crypto/crypto.h"
#include "token/jws.h"
#include "token/reason.h"
#include "token/trust_store.h"
#include "token/verifier.h"

namespace kw::fuzz {
namespace {

#define KW_FUZZ_CHECK(cond)                                                             \
  do {                                                                                  \
    if (!(cond)) {                                                                      \
      std::fprintf(stderr, "%s:%d: invariant failed: %s\n", __FILE__, __LINE__, #cond); \
      std::abort();                                                                     \
    }                                                                                   \
  } while (0)

using crypto::Algorithm;
using token::Reason;

constexpr int64_t kNowSeconds = 1'700'000'000;
constexpr int64_t kMaxNumericDate = 253402300799;
constexpr std::string_view kIssuerTemplate = "https://login.keyward.test/{tenantid}/v2.0";
constexpr std::string_view kAudience = "api://keyward-mail";

struct Env {
  FakeClock clock{kNowSeconds * 1000};
  std::optional<crypto::PrivateKey> signer;  // Ed25519, kid "k-ed"
  std::unique_ptr<token::Verifier> verifier;
};

crypto::PrivateKey MustGenerate(Algorithm alg) {
  auto key = crypto::PrivateKey::Generate(alg);
  if (!key.ok()) {
    std::fprintf(stderr, "fuzz setup: %s\n", key.status().ToString().c_str());
    std::abort();
  }
  return std::move(key).value();
}

void MustAdd(token::TrustStore& store, std::string kid, Algorithm alg, const crypto::PublicKey& key,
             std::string issuer, token::IssuerKind kind, std::string tenant,
             token::KeyState state = token::KeyState::kActive) {
  token::TrustedKeySpec spec;
  spec.kid = std::move(kid);
  spec.issuer = std::move(issuer);
  spec.kind = kind;
  spec.tenant_id = std::move(tenant);
  spec.alg = alg;
  spec.key = key;
  spec.state = state;
  Status s = store.Add(std::move(spec));
  if (!s.ok()) {
    std::fprintf(stderr, "fuzz setup: %s\n", s.ToString().c_str());
    std::abort();
  }
}

// Short, fixed kids so that the corpus and the fuzzer can name them.
Env& GetEnv() {
  static Env* env = [] {
    auto* e = new Env();
    auto store = std::make_shared<token::TrustStore>();
    const std::string tmpl(kIssuerTemplate);
    e->signer = MustGenerate(Algorithm::kEdDSA);
    MustAdd(*store, "k-ed", Algorithm::kEdDSA, e->signer->public_key(), tmpl,
            token::IssuerKind::kEnterprise, "");
    MustAdd(*store, "k-es", Algorithm::kES256, MustGenerate(Algorithm::kES256).public_key(), tmpl,
            token::IssuerKind::kEnterprise, "");
    crypto::PrivateKey rsa = MustGenerate(Algorithm::kRS256);
    MustAdd(*store, "k-rs", Algorithm::kRS256, rsa.public_key(), tmpl,
            token::IssuerKind::kEnterprise, "");
    MustAdd(*store, "k-ps", Algorithm::kPS256, MustGenerate(Algorithm::kPS256).public_key(), tmpl,
            token::IssuerKind::kEnterprise, "");
    MustAdd(*store, "k-consumer", Algorithm::kES256, MustGenerate(Algorithm::kES256).public_key(),
            "https://login.keyward.test/9188040d-6c67-4c5b-b112-36a304b66dad/v2.0",
            token::IssuerKind::kConsumer, "9188040d-6c67-4c5b-b112-36a304b66dad");
    MustAdd(*store, "k-revoked", Algorithm::kEdDSA, MustGenerate(Algorithm::kEdDSA).public_key(),
            tmpl, token::IssuerKind::kEnterprise, "", token::KeyState::kRevoked);
    token::VerifierPolicy policy;
    policy.issuers = {tmpl};
    policy.audiences = {std::string(kAudience)};
    policy.cache.max_entries = 64;
    policy.cache.shards = 4;
    e->verifier = std::make_unique<token::Verifier>(std::move(store), policy, &e->clock);
    return e;
  }();
  return *env;
}

bool IsKnownReason(Reason r) {
  int v = static_cast<int>(r);
  return v >= 0 && v < token::kReasonCount && !token::ReasonCode(r).empty();
}

void CheckParseCompactJws(std::string_view input) {
  const token::JwsLimits limits;
  token::ParsedJws jws;
  std::string detail;
  Reason r = token::ParseCompactJws(input, limits, &jws, &detail);
  KW_FUZZ_CHECK(IsKnownReason(r));
  if (input.size() > limits.max_token_bytes) KW_FUZZ_CHECK(r == Reason::kOversized);
  if (r != Reason::kOk) {
    KW_FUZZ_CHECK(!detail.empty());
    return;
  }
  KW_FUZZ_CHECK(input.size() <= limits.max_token_bytes);
  size_t d1 = input.find('.');
  size_t d2 = input.find('.', d1 + 1);
  KW_FUZZ_CHECK(d1 != std::string_view::npos && d2 != std::string_view::npos);
  KW_FUZZ_CHECK(input.find('.', d2 + 1) == std::string_view::npos);
  KW_FUZZ_CHECK(jws.signing_input.data() == input.data());
  KW_FUZZ_CHECK(jws.signing_input.size() == d2);
  KW_FUZZ_CHECK(input.substr(0, d2) == jws.signing_input);
  KW_FUZZ_CHECK(Base64UrlEncode(jws.header_json) == input.substr(0, d1));
  KW_FUZZ_CHECK(Base64UrlEncode(jws.payload) == input.substr(d1 + 1, d2 - d1 - 1));
  KW_FUZZ_CHECK(!jws.signature.empty());
  KW_FUZZ_CHECK(Base64UrlEncode(jws.signature) == input.substr(d2 + 1));
  KW_FUZZ_CHECK(crypto::ParseAlgorithm(crypto::AlgorithmName(jws.alg)) == jws.alg);
  KW_FUZZ_CHECK(jws.kid.size() <= 256);
  KW_FUZZ_CHECK(jws.has_kid || jws.kid.empty());

  // Whatever the header said, the payload must survive the claims parser without a crash.
  token::Claims claims;
  std::string claims_detail;
  Reason cr = token::ParseClaims(jws.payload, limits, &claims, &claims_detail);
  KW_FUZZ_CHECK(IsKnownReason(cr));
}

void CheckTimeClaim(const std::optional<int64_t>& v) {
  if (v) KW_FUZZ_CHECK(*v >= 0 && *v <= kMaxNumericDate);
}

void CheckParseClaims(std::string_view input) {
  token::Claims claims;
  std::string detail;
  Reason r = token::ParseClaims(input, token::JwsLimits{}, &claims, &detail);
  if (r != Reason::kOk) {
    KW_FUZZ_CHECK(r == Reason::kMalformed || r == Reason::kInvalidClaim);
    KW_FUZZ_CHECK(!detail.empty());
    return;
  }
  KW_FUZZ_CHECK(claims.json == input);
  CheckTimeClaim(claims.exp);
  CheckTimeClaim(claims.nbf);
  CheckTimeClaim(claims.iat);
}

void CheckVerifyRaw(Env& env, std::string_view input) {
  token::VerifyResult r = env.verifier->Verify(input);
  KW_FUZZ_CHECK(!r.ok());  // no input can hold a signature by one of this process's keys
  KW_FUZZ_CHECK(!r.token);
  KW_FUZZ_CHECK(IsKnownReason(r.reason));
  KW_FUZZ_CHECK(!r.detail.empty());
}

void CheckVerifySigned(Env& env, std::string_view payload) {
  auto signed_token = token::SignCompact(*env.signer, Algorithm::kEdDSA, "k-ed", payload);
  if (!signed_token.ok()) return;
  const std::string& t = *signed_token;
  token::VerifyResult r = env.verifier->Verify(t);
  KW_FUZZ_CHECK(IsKnownReason(r.reason));
  switch (r.reason) {
    // The header and the signature are ours and correct: none of these may come back.
    case Reason::kMalformed:
      // Only the payload can be malformed, and then the claims parser agrees.
      {
        token::Claims c;
        KW_FUZZ_CHECK(token::ParseClaims(payload, {}, &c, nullptr) == Reason::kMalformed);
      }
      break;
    case Reason::kEncryptedToken:
    case Reason::kNestedToken:
    case Reason::kAlgNotAllowed:
    case Reason::kCritUnsupported:
    case Reason::kB64Unsupported:
    case Reason::kKeyReferenceNotAllowed:
    case Reason::kMissingKid:
    case Reason::kUnknownKid:
    case Reason::kKeyRevoked:
    case Reason::kKeyRetired:
    case Reason::kKeyExpired:
    case Reason::kKeyNotYetValid:
    case Reason::kBadSignature:
    case Reason::kConsumerTokenRefused:
      std::fprintf(stderr, "signed token refused as %s: %s\n",
                   std::string(token::ReasonCode(r.reason)).c_str(), r.detail.c_str());
      std::abort();
    default:
      break;
  }
  if (t.size() > token::JwsLimits{}.max_token_bytes) KW_FUZZ_CHECK(r.reason == Reason::kOversized);
  if (!r.ok()) {
    KW_FUZZ_CHECK(!r.detail.empty());
    return;
  }
  const token::Claims& c = r.token->claims;
  const token::VerifierPolicy& p = env.verifier->policy();
  KW_FUZZ_CHECK(c.exp.has_value());
  KW_FUZZ_CHECK(kNowSeconds < *c.exp + p.clock_skew_seconds);
  if (c.nbf) KW_FUZZ_CHECK(*c.nbf <= kNowSeconds + p.clock_skew_seconds);
  if (c.iat) KW_FUZZ_CHECK(*c.iat <= kNowSeconds + p.clock_skew_seconds);
  int64_t start = c.iat ? *c.iat : (c.nbf ? *c.nbf : kNowSeconds);
  KW_FUZZ_CHECK(*c.exp - start <= p.max_lifetime_seconds);
  bool audience_ok = false;
  for (const std::string& a : c.aud) audience_ok |= a == kAudience;
  KW_FUZZ_CHECK(audience_ok);
  std::string expected_iss(kIssuerTemplate);
  expected_iss.replace(expected_iss.find(token::kTenantPlaceholder),
                       token::kTenantPlaceholder.size(), c.tid);
  KW_FUZZ_CHECK(!c.tid.empty() && c.iss == expected_iss);
  KW_FUZZ_CHECK(c.json == payload);
  KW_FUZZ_CHECK(r.token->kid == "k-ed" && r.token->alg == Algorithm::kEdDSA);

  // Within the clock skew after "exp" the verifier still accepts but the cache, which never
  // serves a token past its "exp", does not keep it.
  token::VerifyResult again = env.verifier->Verify(t);
  KW_FUZZ_CHECK(again.ok());
  if (kNowSeconds < *c.exp) KW_FUZZ_CHECK(again.from_cache && again.token == r.token);
}

}  // namespace
}  // namespace kw::fuzz

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace kw::fuzz;
  Env& env = GetEnv();
  std::string_view input(reinterpret_cast<const char*>(data), size);
  CheckParseCompactJws(input);
  CheckParseClaims(input);
  CheckVerifyRaw(env, input);
  if (!input.empty() && input[0] == '{') CheckVerifySigned(env, input);
  return 0;
}
