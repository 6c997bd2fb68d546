// Test helpers shared by the token tests: a realistic trust store (a consumer issuer, two
// enterprise tenants, keys in every state) and raw token construction for crafting attacks.
#pragma once

#include <map>
#include <memory>
#include <string>

#include <fmt/format.h>
#include <gtest/gtest.h>

#include "core/base64url.h"
#include "core/clock.h"
#include "crypto/crypto.h"
#include "token/jws.h"
#include "token/trust_store.h"
#include "token/verifier.h"

namespace kw::token::testing {

inline constexpr std::string_view kConsumerTenant = "9188040d-6c67-4c5b-b112-36a304b66dad";
inline constexpr std::string_view kTenantA = "72f988bf-86f1-41af-91ab-2d7cd011db47";
inline constexpr std::string_view kTenantB = "4a1c2f3e-5b6d-4e7f-8a9b-0c1d2e3f4a5b";
inline constexpr std::string_view kAudience = "https://mail.keyward.test";
inline constexpr std::string_view kTemplate = "https://login.keyward.test/{tenantid}/v2.0";
inline constexpr int64_t kNow = 1'700'000'000;

inline std::string IssuerOf(std::string_view tenant) {
  return fmt::format("https://login.keyward.test/{}/v2.0", tenant);
}

// Signs `header.claims` as given, byte for byte (no re-serialization), so tests control every
// member of both.
inline std::string SignRaw(const crypto::PrivateKey& key, crypto::Algorithm alg,
                           std::string_view header, std::string_view claims) {
  std::string input = Base64UrlEncode(header) + "." + Base64UrlEncode(claims);
  auto sig = key.Sign(alg, input);
  return input + "." + Base64UrlEncode(sig.value());
}

inline std::string Claims(std::string_view iss, std::string_view tid, int64_t now = kNow,
                          std::string_view extra = "") {
  return fmt::format(
      R"({{"iss":"{}","tid":"{}","aud":"{}","sub":"alice","azp":"mail-web","scp":"Mail.Read",)"
      R"("jti":"j-1","iat":{},"nbf":{},"exp":{}{}}})",
      iss, tid, kAudience, now, now, now + 3600, extra);
}

// A trust store with: consumer key "consumer-1"; tenant A keys "a-es" (ES256), "a-ed" (EdDSA),
// "a-rs" (RS256), "a-ps" (PS256), "a-revoked", "a-retired", "a-expired", "a-future"; tenant B key
// "b-es"; and a multi-tenant template key "t-es". Private keys are kept for signing.
class Fixture {
 public:
  Fixture() : clock_(kNow * 1000), store_(std::make_shared<TrustStore>()) {
    using A = crypto::Algorithm;
    Add("consumer-1", A::kES256, IssuerOf(kConsumerTenant), IssuerKind::kConsumer, kConsumerTenant);
    Add("a-es", A::kES256, IssuerOf(kTenantA), IssuerKind::kEnterprise, kTenantA);
    Add("a-ed", A::kEdDSA, IssuerOf(kTenantA), IssuerKind::kEnterprise, kTenantA);
    Add("a-rs", A::kRS256, IssuerOf(kTenantA), IssuerKind::kEnterprise, kTenantA);
    Add("a-ps", A::kPS256, IssuerOf(kTenantA), IssuerKind::kEnterprise, kTenantA);
    Add("a-revoked", A::kES256, IssuerOf(kTenantA), IssuerKind::kEnterprise, kTenantA);
    Add("a-retired", A::kES256, IssuerOf(kTenantA), IssuerKind::kEnterprise, kTenantA);
    Add("a-expired", A::kES256, IssuerOf(kTenantA), IssuerKind::kEnterprise, kTenantA, 0,
        kNow - 86400);
    Add("a-future", A::kES256, IssuerOf(kTenantA), IssuerKind::kEnterprise, kTenantA,
        kNow + 86400, 0);
    Add("b-es", A::kES256, IssuerOf(kTenantB), IssuerKind::kEnterprise, kTenantB);
    Add("t-es", A::kES256, std::string(kTemplate), IssuerKind::kEnterprise, "");
    (void)store_->SetState("a-revoked", KeyState::kRevoked);
    (void)store_->SetState("a-retired", KeyState::kRetired);
  }

  VerifierPolicy Policy() const {
    VerifierPolicy p;
    p.issuers = {std::string(kTemplate)};
    p.audiences = {std::string(kAudience)};
    return p;
  }

  std::unique_ptr<Verifier> MakeVerifier(VerifierPolicy p) const {
    return std::make_unique<Verifier>(store_, std::move(p), &clock_);
  }
  std::unique_ptr<Verifier> MakeVerifier() const { return MakeVerifier(Policy()); }

  const crypto::PrivateKey& Private(const std::string& kid) const { return keys_.at(kid); }
  crypto::Algorithm Alg(const std::string& kid) const { return store_->Find(kid)->spec().alg; }

  // A token signed by `kid` with header {"alg","kid","typ":"JWT"}.
  std::string Sign(const std::string& kid, std::string_view claims) const {
    auto alg = Alg(kid);
    std::string header = fmt::format(R"({{"alg":"{}","kid":"{}","typ":"JWT"}})",
                                     crypto::AlgorithmName(alg), kid);
    return SignRaw(Private(kid), alg, header, claims);
  }
  std::string Good(const std::string& kid = "a-es") const {
    return Sign(kid, Claims(IssuerOf(kTenantA), kTenantA));
  }

  FakeClock& clock() { return clock_; }
  const std::shared_ptr<TrustStore>& store() const { return store_; }

 private:
  void Add(const std::string& kid, crypto::Algorithm alg, std::string issuer, IssuerKind kind,
           std::string_view tenant, int64_t not_before = 0, int64_t not_after = 0) {
    auto priv = crypto::PrivateKey::Generate(alg).value();
    TrustedKeySpec spec;
    spec.kid = kid;
    spec.issuer = std::move(issuer);
    spec.kind = kind;
    spec.tenant_id = std::string(tenant);
    spec.alg = alg;
    spec.key = priv.public_key();
    spec.not_before = not_before;
    spec.not_after = not_after;
    Status s = store_->Add(std::move(spec));
    if (!s.ok()) throw std::runtime_error(s.ToString());
    keys_.emplace(kid, std::move(priv));
  }

  mutable FakeClock clock_;
  std::shared_ptr<TrustStore> store_;
  std::map<std::string, crypto::PrivateKey> keys_;
};

// A test suite sharing one Fixture across its tests: generating the RSA keys is the slow part.
class SharedFixtureTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() { fixture_ = new Fixture(); }
  static void TearDownTestSuite() {
    delete fixture_;
    fixture_ = nullptr;
  }
  static inline Fixture* fixture_ = nullptr;
};

}  // namespace kw::token::testing
