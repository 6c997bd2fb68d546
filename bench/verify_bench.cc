// Token verification throughput, each number next to the alternative it must be judged against.
//
//   BM_BareOpenSsl/<alg>            the floor: one EVP_DigestVerify of the same signing input and
//                                   signature with a fresh EVP_MD_CTX, nothing else
//   BM_KeywardVerifyUncached/<alg>  Verifier::Verify with the cache off: size and structure checks,
//                                   base64url, strict JSON of header and claims, issuer/tenant
//                                   policy, trust-store lookup, key binding, signature, time claims
//   BM_KeywardOwnWork/<alg>         Verifier::Verify of the same token with a signature that fails
//                                   Keyward's own encoding check (ES256 r = 0, EdDSA/RSA one byte
//                                   short): every step except the OpenSSL call. Far less noisy
//                                   than the difference of two ~20-90 us timings, it predicts
//                                   uncached/bare as bare / (bare + own work)
//   BM_KeywardVerifyCached/<alg>    Verifier::Verify of a token already in the verified-token cache
//   BM_RejectMalformed/<case>       refusal of a token that never reaches a key or a signature
//   BM_CachedVerifyThreads          the cached path on 1 and 2 threads, one token shared by all
//                                   threads (worst case: one shard lock, one refcount) or one token
//                                   per thread
//
// The token is a ~720-byte enterprise access token (ES256/EdDSA; an RSA signature adds 256 bytes
// of base64url) from a multi-tenant template issuer, checked against a 20-key trust store at a
// fixed time. bench/run.sh prints uncached/bare per algorithm; BENCHMARKS.md records the results.

#include <benchmark/benchmark.h>
#include <openssl/evp.h>
#include <openssl/rsa.h>

#include <array>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "core/base64url.h"
#include "core/clock.h"
#include "core/json.h"
#include "crypto/crypto.h"
#include "token/jws.h"
#include "token/reason.h"
#include "token/trust_store.h"
#include "token/verifier.h"

namespace kw::bench {
namespace {

using crypto::Algorithm;
using token::Reason;
using token::VerifyResult;

constexpr int64_t kNowSeconds = 1'700'000'000;
constexpr std::string_view kIssuerTemplate = "https://login.keyward.test/{tenantid}/v2.0";
constexpr std::string_view kTenant = "6c3d51dd-f0e5-4959-b4ea-a80c4e36fe5e";
constexpr std::string_view kAudience = "api://keyward-mail";
constexpr size_t kStoreKeys = 20;

std::string Issuer(std::string_view tenant) {
  std::string iss(kIssuerTemplate);
  iss.replace(iss.find(token::kTenantPlaceholder), token::kTenantPlaceholder.size(), tenant);
  return iss;
}

// Claims shaped like a real delegated access token for a mail API (~430 bytes of JSON, which
// with the header and an ES256 signature makes a ~720-byte token).
std::string ClaimsJson(std::string_view jti) {
  json::Writer w;
  w.BeginObject();
  w.Key("aud").String(kAudience);
  w.Key("iss").String(Issuer(kTenant));
  w.Key("iat").Int(kNowSeconds - 300);
  w.Key("nbf").Int(kNowSeconds - 300);
  w.Key("exp").Int(kNowSeconds + 3300);
  w.Key("azp").String("0e5f7c3a-8b21-4d6e-9f40-3a1c2b7d8e95");
  w.Key("name").String("Ada Lovelace");
  w.Key("preferred_username").String("ada@contoso.example");
  w.Key("scp").String("Mail.Read Mail.Send");
  w.Key("sub").String("kX9pT2vQ7mR4sL1nH8wY3bF6cJ0dG5aZ");
  w.Key("tid").String(kTenant);
  w.Key("ver").String("2.0");
  w.Key("jti").String(jti);
  w.EndObject();
  return w.Take();
}

template <typename T>
T OrDie(Result<T> r, const char* what) {
  if (!r.ok()) {
    std::fprintf(stderr, "verify_bench setup: %s: %s\n", what, r.status().ToString().c_str());
    std::abort();
  }
  return std::move(r).value();
}

size_t Index(Algorithm alg) { return static_cast<size_t>(alg); }

// What the benchmarks for one algorithm share: the signed token and, for the baseline, its
// signing input and the signature in the form OpenSSL takes.
struct AlgCase {
  Algorithm alg;
  std::optional<crypto::PublicKey> key;
  std::string token;
  std::string bad_encoding_token;  // same, with a signature refused before OpenSSL sees it
  std::string signing_input;
  std::string openssl_signature;  // DER for ES256, the JWS bytes otherwise
};

// Built once, on first use, and shared by every benchmark and thread.
class Env {
 public:
  static const Env& Get() {
    static const Env* env = new Env();
    return *env;
  }

  const AlgCase& Case(Algorithm alg) const { return cases_[Index(alg)]; }
  const token::Verifier& uncached() const { return *uncached_; }
  const token::Verifier& cached() const { return *cached_; }
  // Distinct ES256 tokens, one per thread, for BM_CachedVerifyThreads.
  const std::string& ThreadToken(int i) const { return thread_tokens_[i % thread_tokens_.size()]; }

 private:
  Env() : clock_(kNowSeconds * 1000) {
    auto store = std::make_shared<token::TrustStore>();
    // Twenty keys, five per algorithm. The first of each algorithm signs the benchmark tokens;
    // the rest make the store look like a real one: exact single-tenant issuers, validity
    // windows, a retired key.
    std::vector<std::optional<crypto::PrivateKey>> signers(std::size(crypto::kAllAlgorithms));
    std::vector<std::string> signer_kids(signers.size());
    for (size_t i = 0; i < kStoreKeys; ++i) {
      Algorithm alg = crypto::kAllAlgorithms[i % std::size(crypto::kAllAlgorithms)];
      crypto::PrivateKey key = OrDie(crypto::PrivateKey::Generate(alg), "key generation");
      token::TrustedKeySpec spec;
      // Short kids, as identity providers publish them (a prefix of the RFC 7638 thumbprint).
      spec.kid = key.public_key().Thumbprint().substr(0, 16);
      spec.alg = alg;
      spec.key = key.public_key();
      spec.kind = token::IssuerKind::kEnterprise;
      if (i % 5 == 4) {
        std::string tenant = "0000000" + std::to_string(i) + "-1111-4222-8333-444455556666";
        spec.issuer = Issuer(tenant);
        spec.tenant_id = tenant;
      } else {
        spec.issuer = std::string(kIssuerTemplate);
      }
      if (i % 3 == 0) {
        spec.not_before = kNowSeconds - 30 * 86400;
        spec.not_after = kNowSeconds + 60 * 86400;
      }
      if (i == kStoreKeys - 2) spec.state = token::KeyState::kRetired;
      if (i < signers.size()) {
        signer_kids[i] = spec.kid;
        signers[i] = std::move(key);
      }
      Status s = store->Add(std::move(spec));
      if (!s.ok()) {
        std::fprintf(stderr, "verify_bench setup: %s\n", s.ToString().c_str());
        std::abort();
      }
    }

    const std::string claims = ClaimsJson("Yk3vQ8xN2pR7tL5wZ1cF9h");
    for (Algorithm alg : crypto::kAllAlgorithms) {
      const crypto::PrivateKey& key = *signers[Index(alg)];
      AlgCase c{.alg = alg, .key = key.public_key()};
      c.token = OrDie(token::SignCompact(key, alg, signer_kids[Index(alg)], claims), "signing");
      size_t dot = c.token.rfind('.');
      c.signing_input = c.token.substr(0, dot);
      std::string sig = OrDie(Base64UrlDecode(c.token.substr(dot + 1)), "signature decode");
      std::string bad_sig =
          alg == Algorithm::kES256 ? std::string(64, '\0') : sig.substr(0, sig.size() - 1);
      c.bad_encoding_token = c.signing_input + "." + Base64UrlEncode(bad_sig);
      if (alg != Algorithm::kES256) {
        c.openssl_signature = std::move(sig);
      } else if (!crypto::EcdsaRawToDer(sig, &c.openssl_signature)) {
        std::abort();
      }
      cases_[Index(alg)] = std::move(c);
    }
    for (int i = 0; i < 2; ++i) {
      thread_tokens_.push_back(
          OrDie(token::SignCompact(*signers[Index(Algorithm::kES256)], Algorithm::kES256,
                                   signer_kids[Index(Algorithm::kES256)],
                                   ClaimsJson("thread" + std::to_string(i) + "-Qm8rW2zK5nV1xJ")),
                "signing"));
    }

    token::VerifierPolicy policy;
    policy.issuers = {std::string(kIssuerTemplate)};
    policy.audiences = {std::string(kAudience)};
    policy.cache.max_entries = 0;
    uncached_ = std::make_unique<token::Verifier>(store, policy, &clock_);
    policy.cache.max_entries = 100'000;
    cached_ = std::make_unique<token::Verifier>(store, policy, &clock_);
  }

  FakeClock clock_;
  std::array<AlgCase, std::size(crypto::kAllAlgorithms)> cases_;
  std::vector<std::string> thread_tokens_;
  std::unique_ptr<token::Verifier> uncached_;
  std::unique_ptr<token::Verifier> cached_;
};

bool Fails(benchmark::State& state, const VerifyResult& r) {
  if (r.ok()) return false;
  std::string msg =
      "verification failed: " + std::string(token::ReasonCode(r.reason)) + ": " + r.detail;
  state.SkipWithError(msg.c_str());
  return true;
}

void BM_BareOpenSsl(benchmark::State& state, Algorithm alg) {
  const AlgCase& c = Env::Get().Case(alg);
  EVP_MD* sha256 = EVP_MD_fetch(nullptr, "SHA256", nullptr);
  const EVP_MD* md = alg == Algorithm::kEdDSA ? nullptr : sha256;
  const auto* sig = reinterpret_cast<const unsigned char*>(c.openssl_signature.data());
  const auto* in = reinterpret_cast<const unsigned char*>(c.signing_input.data());
  for (auto _ : state) {
    EVP_MD_CTX* ctx = EVP_MD_CTX_new();
    EVP_PKEY_CTX* pctx = nullptr;
    int rc = EVP_DigestVerifyInit(ctx, &pctx, md, nullptr, c.key->raw());
    if (rc == 1 && alg == Algorithm::kPS256) {
      rc = EVP_PKEY_CTX_set_rsa_padding(pctx, RSA_PKCS1_PSS_PADDING) == 1 &&
           EVP_PKEY_CTX_set_rsa_pss_saltlen(pctx, 32) == 1 &&
           EVP_PKEY_CTX_set_rsa_mgf1_md(pctx, sha256) == 1;
    }
    if (rc == 1) {
      rc = EVP_DigestVerify(ctx, sig, c.openssl_signature.size(), in, c.signing_input.size());
    }
    EVP_MD_CTX_free(ctx);
    if (rc != 1) {
      state.SkipWithError("OpenSSL did not verify the signature");
      break;
    }
  }
  EVP_MD_free(sha256);
  state.SetItemsProcessed(state.iterations());
}

void BM_KeywardVerifyUncached(benchmark::State& state, Algorithm alg) {
  const Env& env = Env::Get();
  const std::string& token = env.Case(alg).token;
  for (auto _ : state) {
    VerifyResult r = env.uncached().Verify(token);
    if (Fails(state, r)) break;
    benchmark::DoNotOptimize(r);
  }
  state.SetItemsProcessed(state.iterations());
  state.counters["token_bytes"] = static_cast<double>(token.size());
}

void BM_KeywardOwnWork(benchmark::State& state, Algorithm alg) {
  const Env& env = Env::Get();
  const std::string& token = env.Case(alg).bad_encoding_token;
  for (auto _ : state) {
    VerifyResult r = env.uncached().Verify(token);
    if (r.reason != Reason::kBadSignature) {
      state.SkipWithError("expected bad_signature");
      break;
    }
    benchmark::DoNotOptimize(r);
  }
  state.SetItemsProcessed(state.iterations());
}

void BM_KeywardVerifyCached(benchmark::State& state, Algorithm alg) {
  const Env& env = Env::Get();
  const std::string& token = env.Case(alg).token;
  if (Fails(state, env.cached().Verify(token))) return;  // warms the cache
  for (auto _ : state) {
    VerifyResult r = env.cached().Verify(token);
    if (Fails(state, r)) break;
    if (!r.from_cache) {
      state.SkipWithError("cache miss on a warm token");
      break;
    }
    benchmark::DoNotOptimize(r);
  }
  state.SetItemsProcessed(state.iterations());
  state.counters["token_bytes"] = static_cast<double>(token.size());
}

// state.range(0): 0 = every thread presents the same token, 1 = each thread its own.
void BM_CachedVerifyThreads(benchmark::State& state) {
  const Env& env = Env::Get();
  const std::string& token = state.range(0) == 0 ? env.Case(Algorithm::kES256).token
                                                 : env.ThreadToken(state.thread_index());
  if (Fails(state, env.cached().Verify(token))) return;
  for (auto _ : state) {
    VerifyResult r = env.cached().Verify(token);
    if (Fails(state, r)) break;
    benchmark::DoNotOptimize(r);
  }
  state.SetItemsProcessed(state.iterations());
}

struct MalformedCase {
  std::string token;
  Reason expected;
};

std::string B64(std::string_view s) { return Base64UrlEncode(s); }

MalformedCase MakeMalformed(std::string_view name) {
  const std::string& good = Env::Get().Case(Algorithm::kES256).token;
  const std::string payload = B64(ClaimsJson("malformed"));
  const std::string sig(86, 'A');
  if (name == "two_segments") return {good.substr(0, good.rfind('.')), Reason::kMalformed};
  if (name == "bad_base64_header") {
    std::string t = good;
    t[5] = '+';  // standard-alphabet character: not base64url
    return {t, Reason::kMalformed};
  }
  if (name == "alg_none") {
    return {B64(R"({"alg":"none","typ":"JWT"})") + "." + payload + ".", Reason::kAlgNotAllowed};
  }
  if (name == "alg_hs256") {
    return {B64(R"({"alg":"HS256","kid":"k1","typ":"JWT"})") + "." + payload + "." + sig,
            Reason::kAlgNotAllowed};
  }
  if (name == "jwe_five_segments") {
    return {B64(R"({"alg":"RSA-OAEP","enc":"A256GCM"})") + ".AAAA.AAAA.AAAA.AAAA",
            Reason::kEncryptedToken};
  }
  if (name == "header_not_json") {
    return {B64("{\"alg\":") + "." + payload + "." + sig, Reason::kMalformed};
  }
  if (name == "oversized_17KiB") return {std::string(17 * 1024, 'A'), Reason::kOversized};
  std::abort();
}

void BM_RejectMalformed(benchmark::State& state, const char* name) {
  const Env& env = Env::Get();
  const MalformedCase c = MakeMalformed(name);
  for (auto _ : state) {
    VerifyResult r = env.cached().Verify(c.token);
    if (r.reason != c.expected) {
      std::string msg =
          std::string("unexpected reason ") + std::string(token::ReasonCode(r.reason));
      state.SkipWithError(msg.c_str());
      break;
    }
    benchmark::DoNotOptimize(r);
  }
  state.SetItemsProcessed(state.iterations());
}

#define KW_BENCH_ALGS(fn)                          \
  BENCHMARK_CAPTURE(fn, ES256, Algorithm::kES256); \
  BENCHMARK_CAPTURE(fn, EdDSA, Algorithm::kEdDSA); \
  BENCHMARK_CAPTURE(fn, RS256, Algorithm::kRS256); \
  BENCHMARK_CAPTURE(fn, PS256, Algorithm::kPS256)

KW_BENCH_ALGS(BM_BareOpenSsl);
KW_BENCH_ALGS(BM_KeywardVerifyUncached);
KW_BENCH_ALGS(BM_KeywardOwnWork);
KW_BENCH_ALGS(BM_KeywardVerifyCached);

BENCHMARK_CAPTURE(BM_RejectMalformed, two_segments, "two_segments");
BENCHMARK_CAPTURE(BM_RejectMalformed, bad_base64_header, "bad_base64_header");
BENCHMARK_CAPTURE(BM_RejectMalformed, alg_none, "alg_none");
BENCHMARK_CAPTURE(BM_RejectMalformed, alg_hs256, "alg_hs256");
BENCHMARK_CAPTURE(BM_RejectMalformed, jwe_five_segments, "jwe_five_segments");
BENCHMARK_CAPTURE(BM_RejectMalformed, header_not_json, "header_not_json");
BENCHMARK_CAPTURE(BM_RejectMalformed, oversized_17KiB, "oversized_17KiB");

// Real time: with several threads, CPU time would add up the threads and hide contention.
BENCHMARK(BM_CachedVerifyThreads)
    ->ArgName("distinct_tokens")
    ->Arg(0)
    ->Arg(1)
    ->Threads(1)
    ->Threads(2)
    ->UseRealTime();

}  // namespace
}  // namespace kw::bench

BENCHMARK_MAIN();
