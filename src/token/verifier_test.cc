#include "token/verifier.h"

#include <gtest/gtest.h>

#include <atomic>
#include <set>
#include <thread>

#include "core/base64url.h"
#include "core/file.h"
#include "token/test_util.h"

namespace kw::token {
namespace {

using testing::Claims;
using testing::Fixture;
using testing::IssuerOf;
using testing::kNow;
using testing::kTenantA;
using testing::kTenantB;

class VerifierTest : public testing::SharedFixtureTest {};

TEST_F(VerifierTest, ClaimsAreReturned) {
  auto v = fixture_->MakeVerifier();
  VerifyResult r = v->Verify(fixture_->Good());
  ASSERT_TRUE(r.ok()) << r.detail;
  EXPECT_EQ(r.token->claims.sub, "alice");
  EXPECT_EQ(r.token->claims.tid, kTenantA);
  EXPECT_EQ(r.token->claims.azp, "mail-web");
  EXPECT_EQ(r.token->claims.aud, std::vector<std::string>{"https://mail.keyward.test"});
  EXPECT_EQ(*r.token->claims.exp, kNow + 3600);
  EXPECT_EQ(r.token->kid, "a-es");
  EXPECT_EQ(r.token->key->spec().tenant_id, kTenantA);
}

TEST_F(VerifierTest, SecondPresentationComesFromTheCache) {
  auto v = fixture_->MakeVerifier();
  std::string t = fixture_->Good();
  EXPECT_FALSE(v->Verify(t).from_cache);
  VerifyResult again = v->Verify(t);
  EXPECT_TRUE(again.ok());
  EXPECT_TRUE(again.from_cache);
  EXPECT_EQ(v->cache()->stats().hits, 1u);
}

TEST_F(VerifierTest, RevocationTakesEffectImmediatelyEvenForCachedTokens) {
  Fixture f;  // own store: this test revokes a key
  auto v = f.MakeVerifier();
  std::string t = f.Good();
  ASSERT_TRUE(v->Verify(t).ok());
  ASSERT_TRUE(v->Verify(t).from_cache);
  ASSERT_TRUE(f.store()->SetState("a-es", KeyState::kRevoked).ok());
  VerifyResult r = v->Verify(t);
  EXPECT_EQ(r.reason, Reason::kKeyRevoked);
  EXPECT_FALSE(r.from_cache);
  EXPECT_EQ(v->cache()->stats().entries, 0u);  // erased eagerly by the store's listener
  // Revocation is final.
  EXPECT_FALSE(f.store()->SetState("a-es", KeyState::kActive).ok());
}

TEST_F(VerifierTest, RetiringAKeyDropsItsCachedTokens) {
  Fixture f;
  auto v = f.MakeVerifier();
  std::string t = f.Good("a-ed");
  ASSERT_TRUE(v->Verify(t).ok());
  ASSERT_TRUE(f.store()->SetState("a-ed", KeyState::kRetired).ok());
  EXPECT_EQ(v->Verify(t).reason, Reason::kKeyRetired);
}

TEST_F(VerifierTest, CachedEntryDoesNotOutliveTheToken) {
  Fixture f;
  auto v = f.MakeVerifier();
  std::string t = f.Good();
  ASSERT_TRUE(v->Verify(t).ok());
  f.clock().AdvanceSeconds(3600);  // exactly exp
  VerifyResult r = v->Verify(t);
  EXPECT_FALSE(r.from_cache);
  // Within the 60 s skew the uncached path still accepts; past it, expired.
  f.clock().AdvanceSeconds(60);
  EXPECT_EQ(v->Verify(t).reason, Reason::kExpired);
}

TEST_F(VerifierTest, ClockSkewIsHonoured) {
  auto p = fixture_->Policy();
  p.clock_skew_seconds = 0;
  auto strict = fixture_->MakeVerifier(p);
  std::string future = fixture_->Sign("a-es", Claims(IssuerOf(kTenantA), kTenantA, kNow + 30));
  EXPECT_EQ(strict->Verify(future).reason, Reason::kNotYetValid);
  auto lenient = fixture_->MakeVerifier();  // 60 s default
  EXPECT_TRUE(lenient->Verify(future).ok());
}

TEST_F(VerifierTest, TenantAllowList) {
  auto p = fixture_->Policy();
  p.allowed_tenants = {std::string(kTenantB)};
  auto v = fixture_->MakeVerifier(p);
  EXPECT_EQ(v->Verify(fixture_->Good()).reason, Reason::kTenantNotAllowed);
  EXPECT_TRUE(v->Verify(fixture_->Sign("b-es", Claims(IssuerOf(kTenantB), kTenantB))).ok());
}

TEST_F(VerifierTest, ConsumerTokensOnlyWhereAllowed) {
  std::string consumer = fixture_->Sign(
      "consumer-1", Claims(IssuerOf(testing::kConsumerTenant), testing::kConsumerTenant));
  auto p = fixture_->Policy();
  EXPECT_EQ(fixture_->MakeVerifier(p)->Verify(consumer).reason, Reason::kConsumerTokenRefused);
  p.allow_consumer_tokens = true;
  EXPECT_TRUE(fixture_->MakeVerifier(p)->Verify(consumer).ok());
  // Allowing consumer tokens never lets the consumer key sign for a tenant.
  EXPECT_EQ(fixture_->MakeVerifier(p)->Verify(fixture_->Sign("consumer-1", Claims(IssuerOf(kTenantA), kTenantA))).reason,
            Reason::kKeyIssuerMismatch);
}

TEST_F(VerifierTest, AlgorithmPolicy) {
  auto p = fixture_->Policy();
  p.algorithms = {crypto::Algorithm::kES256};
  auto v = fixture_->MakeVerifier(p);
  EXPECT_TRUE(v->Verify(fixture_->Good("a-es")).ok());
  EXPECT_EQ(v->Verify(fixture_->Good("a-rs")).reason, Reason::kAlgNotAllowed);
}

// A token refused at its header still tells the audit record what it claimed.
TEST_F(VerifierTest, RefusedHeaderStillReportsWhatTheTokenAsserted) {
  auto v = fixture_->MakeVerifier();
  std::string claims = Claims(IssuerOf(kTenantA), kTenantA);
  std::string none = Base64UrlEncode(R"({"alg":"none","kid":"a-es","typ":"JWT"})") + "." + Base64UrlEncode(claims) + ".";
  VerifyResult r = v->Verify(none);
  EXPECT_EQ(r.reason, Reason::kAlgNotAllowed);
  EXPECT_EQ(r.tid, kTenantA);
  EXPECT_EQ(r.iss, IssuerOf(kTenantA));
  EXPECT_EQ(r.kid, "a-es");
  EXPECT_EQ(r.alg, "none");
  EXPECT_EQ(r.claims_json, claims);
  EXPECT_FALSE(r.token);
  // Garbage stays garbage: nothing is made up.
  VerifyResult g = v->Verify("not.a.token");
  EXPECT_NE(g.reason, Reason::kOk);
  EXPECT_TRUE(g.tid.empty());
  EXPECT_TRUE(g.claims_json.empty());
}

TEST_F(VerifierTest, EmptyIssuerListStillBindsKeysToIssuers) {
  auto p = fixture_->Policy();
  p.issuers.clear();
  auto v = fixture_->MakeVerifier(p);
  EXPECT_TRUE(v->Verify(fixture_->Good()).ok());
  EXPECT_EQ(v->Verify(fixture_->Sign("consumer-1", Claims(IssuerOf(kTenantA), kTenantA))).reason,
            Reason::kKeyIssuerMismatch);
}

TEST_F(VerifierTest, UnknownKidTriggersARateLimitedReload) {
  Fixture f;
  auto extra = crypto::PrivateKey::Generate(crypto::Algorithm::kES256).value();
  std::atomic<int> calls{0};
  f.store()->SetReloadHook(
      [&](TrustStore& store) {
        ++calls;
        TrustedKeySpec spec;
        spec.kid = "a-new";
        spec.issuer = IssuerOf(kTenantA);
        spec.tenant_id = std::string(kTenantA);
        spec.key = extra.public_key();
        return store.Upsert(std::move(spec));
      },
      /*min_interval_ms=*/30'000, &f.clock());
  auto v = f.MakeVerifier();
  std::string t = testing::SignRaw(extra, crypto::Algorithm::kES256,
                                   R"({"alg":"ES256","kid":"a-new"})", Claims(IssuerOf(kTenantA), kTenantA));
  EXPECT_TRUE(v->Verify(t).ok());
  EXPECT_EQ(calls.load(), 1);
  // A flood of random kids within the interval causes no further reloads.
  for (int i = 0; i < 100; ++i) {
    std::string junk = testing::SignRaw(extra, crypto::Algorithm::kES256,
                                        fmt::format(R"({{"alg":"ES256","kid":"rnd-{}"}})", i),
                                        Claims(IssuerOf(kTenantA), kTenantA));
    EXPECT_EQ(v->Verify(junk).reason, Reason::kUnknownKid);
  }
  EXPECT_EQ(calls.load(), 1);
  f.clock().AdvanceSeconds(31);
  EXPECT_EQ(v->Verify(testing::SignRaw(extra, crypto::Algorithm::kES256, R"({"alg":"ES256","kid":"zzz"})",
                                       Claims(IssuerOf(kTenantA), kTenantA)))
                .reason,
            Reason::kUnknownKid);
  EXPECT_EQ(calls.load(), 2);
}

TEST_F(VerifierTest, ConcurrentVerifyAndRevoke) {
  Fixture f;
  auto v = f.MakeVerifier();
  std::string t = f.Good();
  std::atomic<bool> revoked{false};
  std::atomic<int> accepted_after_revoke{0};
  std::vector<std::thread> threads;
  for (int i = 0; i < 4; ++i) {
    threads.emplace_back([&] {
      for (int j = 0; j < 2000; ++j) {
        bool was_revoked = revoked.load(std::memory_order_acquire);
        if (v->Verify(t).ok() && was_revoked) ++accepted_after_revoke;
      }
    });
  }
  std::this_thread::sleep_for(std::chrono::milliseconds(5));
  ASSERT_TRUE(f.store()->SetState("a-es", KeyState::kRevoked).ok());
  revoked.store(true, std::memory_order_release);
  for (auto& th : threads) th.join();
  EXPECT_EQ(accepted_after_revoke.load(), 0);
}

TEST(TrustStoreTest, KidsAreUniqueAcrossIssuers) {
  TrustStore store;
  auto k = crypto::PrivateKey::Generate(crypto::Algorithm::kES256).value();
  TrustedKeySpec a;
  a.kid = "k";
  a.issuer = IssuerOf(kTenantA);
  a.tenant_id = std::string(kTenantA);
  a.key = k.public_key();
  ASSERT_TRUE(store.Add(a).ok());
  TrustedKeySpec b = a;
  b.issuer = IssuerOf(kTenantB);
  b.tenant_id = std::string(kTenantB);
  EXPECT_EQ(store.Add(b).code(), StatusCode::kAlreadyExists);
}

TEST(TrustStoreTest, ValidationErrors) {
  auto ec = crypto::PrivateKey::Generate(crypto::Algorithm::kES256).value();
  struct Row {
    std::string name;
    std::function<void(TrustedKeySpec&)> mutate;
  } rows[] = {
      {"no kid", [](TrustedKeySpec& s) { s.kid.clear(); }},
      {"no issuer", [](TrustedKeySpec& s) { s.issuer.clear(); }},
      {"no key", [](TrustedKeySpec& s) { s.key.reset(); }},
      {"alg does not fit key", [](TrustedKeySpec& s) { s.alg = crypto::Algorithm::kRS256; }},
      {"consumer template", [](TrustedKeySpec& s) {
         s.kind = IssuerKind::kConsumer;
         s.issuer = std::string(testing::kTemplate);
         s.tenant_id.clear();
       }},
      {"enterprise exact without tenant", [](TrustedKeySpec& s) { s.tenant_id.clear(); }},
      {"window inverted", [](TrustedKeySpec& s) { s.not_before = 10; s.not_after = 5; }},
  };
  for (auto& row : rows) {
    TrustedKeySpec s;
    s.kid = "k";
    s.issuer = IssuerOf(kTenantA);
    s.tenant_id = std::string(kTenantA);
    s.key = ec.public_key();
    row.mutate(s);
    TrustStore store;
    EXPECT_EQ(store.Add(s).code(), StatusCode::kInvalidArgument) << row.name;
  }
}

TEST(TrustStoreTest, JsonRoundTripAndJwksImport) {
  Fixture f;
  std::string json = f.store()->ToJson();
  auto back = TrustStore::FromJson(json);
  ASSERT_TRUE(back.ok()) << back.status().ToString();
  EXPECT_EQ((*back)->size(), f.store()->size());
  EXPECT_EQ((*back)->Find("a-revoked")->state(), KeyState::kRevoked);
  EXPECT_EQ((*back)->Find("consumer-1")->spec().kind, IssuerKind::kConsumer);
  EXPECT_TRUE((*back)->Find("a-rs")->key().Equals(f.store()->Find("a-rs")->key()));

  auto priv = crypto::PrivateKey::Generate(crypto::Algorithm::kEdDSA).value();
  std::string pub = priv.public_key().ToJwk();
  pub.pop_back();
  std::string jwks = R"({"keys":[)" + pub + R"(,"kid":"e1","issuer":"https://id.example/t/v2.0"}]})";
  auto s = TrustStore::FromJwks(jwks, "", IssuerKind::kEnterprise, "t");
  ASSERT_TRUE(s.ok()) << s.status().ToString();
  EXPECT_EQ((*s)->Find("e1")->spec().issuer, "https://id.example/t/v2.0");
  EXPECT_EQ((*s)->Find("e1")->spec().alg, crypto::Algorithm::kEdDSA);

  // Private material in a JWKS is refused, and so is an RSA key without alg.
  std::string with_d = priv.ToJwk();
  with_d.pop_back();
  EXPECT_FALSE(TrustStore::FromJwks(R"({"keys":[)" + with_d + R"(,"kid":"x"}]})", "https://i", IssuerKind::kEnterprise, "t").ok());
  auto rsa = crypto::PrivateKey::Generate(crypto::Algorithm::kRS256).value().public_key().ToJwk();
  rsa.pop_back();
  auto no_alg = TrustStore::FromJwks(R"({"keys":[)" + rsa + R"(,"kid":"r"}]})", "https://i", IssuerKind::kEnterprise, "t");
  EXPECT_FALSE(no_alg.ok());
  EXPECT_NE(no_alg.status().message().find("alg"), std::string::npos);
  // Bad files name the problem.
  auto bad = TrustStore::FromJson(R"({"keys":[{"kid":"x"}]})");
  EXPECT_NE(bad.status().message().find("keys[0]"), std::string::npos);
}

TEST(ReasonTest, CodesAreUniqueAndRoundTrip) {
  std::set<std::string_view> seen;
  for (int i = 0; i < kReasonCount; ++i) {
    auto r = static_cast<Reason>(i);
    EXPECT_TRUE(seen.insert(ReasonCode(r)).second) << ReasonCode(r);
    EXPECT_EQ(ParseReasonCode(ReasonCode(r)), r);
    EXPECT_FALSE(ReasonDescription(r).empty());
  }
}

TEST(ReasonTest, EveryCodeIsDocumented) {
  auto doc = ReadFile(KEYWARD_SOURCE_DIR "/docs/reason-codes.md");
  ASSERT_TRUE(doc.ok()) << doc.status().ToString();
  for (int i = 0; i < kReasonCount; ++i) {
    std::string cell = fmt::format("| `{}` |", ReasonCode(static_cast<Reason>(i)));
    EXPECT_NE(doc->find(cell), std::string::npos) << cell;
  }
}

}  // namespace
}  // namespace kw::token
