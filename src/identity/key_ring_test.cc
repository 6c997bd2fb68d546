#include "identity/key_ring.h"

#include <gtest/gtest.h>

#include <atomic>
#include <deque>
#include <map>
#include <mutex>
#include <set>
#include <thread>

#include <fmt/format.h>

#include "core/base64url.h"
#include "core/log.h"
#include "identity/test_util.h"
#include "token/jws.h"
#include "token/test_util.h"
#include "token/verifier.h"

namespace kw::identity {
namespace {

using token::IssuerKind;
using token::Reason;

constexpr int64_t kHour = 3600;
constexpr int64_t kDay = 24 * kHour;
constexpr int64_t kT0 = 1'700'000'000;
using token::testing::IssuerOf;
using token::testing::kAudience;
using token::testing::kConsumerTenant;
using token::testing::kTemplate;
using token::testing::kTenantA;
using token::testing::kTenantB;
IssuerIdentity Enterprise(std::string_view tenant) {
  return {IssuerOf(tenant), IssuerKind::kEnterprise, std::string(tenant)};
}
IssuerIdentity Consumer() {
  return {IssuerOf(kConsumerTenant), IssuerKind::kConsumer, std::string(kConsumerTenant)};
}

std::string ClaimsFor(const IssuerIdentity& who, int64_t now, int64_t lifetime = kHour) {
  return fmt::format(
      R"({{"iss":"{}","tid":"{}","aud":"{}","sub":"alice","iat":{},"nbf":{},"exp":{}}})",
      who.issuer, who.tenant_id, kAudience, now, now, now + lifetime);
}

// Signs exactly these claims with a raw key, as an attacker holding the key would.
std::string SignWith(const crypto::PrivateKey& key, crypto::Algorithm alg, std::string_view kid,
                     std::string_view claims) {
  std::string header =
      fmt::format(R"({{"alg":"{}","kid":"{}","typ":"JWT"}})", crypto::AlgorithmName(alg), kid);
  std::string input = Base64UrlEncode(header) + "." + Base64UrlEncode(claims);
  return input + "." + Base64UrlEncode(key.Sign(alg, input).value());
}

std::string KidOf(std::string_view token) {
  token::ParsedJws jws;
  std::string detail;
  if (token::ParseCompactJws(token, {}, &jws, &detail) != Reason::kOk) return "";
  return jws.kid;
}

// A KeyStore in memory, to feed a ring records a real store would never hold together.
class MemoryKeyStore : public KeyStore {
 public:
  Result<std::vector<KeyRecord>> Load(std::string_view issuer) override {
    std::lock_guard lock(mu_);
    std::vector<KeyRecord> out;
    for (const auto& r : records_) {
      if (r.issuer.issuer == issuer || return_everything_) out.push_back(r);
    }
    return out;
  }
  Status Save(const KeyRecord& r) override {
    std::lock_guard lock(mu_);
    for (const auto& x : records_) {
      if (x.kid == r.kid) return AlreadyExistsError("kid taken");
    }
    records_.push_back(r);
    return Status::Ok();
  }
  Status Update(const KeyRecord& r) override {
    std::lock_guard lock(mu_);
    for (auto& x : records_) {
      if (x.kid == r.kid && x.issuer == r.issuer) {
        x = r;
        return Status::Ok();
      }
    }
    return NotFoundError("no such key");
  }
  // Load() answers with every record, whatever the issuer asked for (a buggy or hostile store).
  void set_return_everything(bool v) { return_everything_ = v; }

 private:
  std::mutex mu_;
  std::vector<KeyRecord> records_;
  bool return_everything_ = false;
};

// Clock, master key, audit sink and trust store shared by the rings of one test.
struct Env {
  FakeClock clock{kT0 * 1000};
  std::shared_ptr<const MasterKey> master = std::make_shared<MasterKey>(MasterKey::Generate());
  std::shared_ptr<MemoryAuditSink> audit = std::make_shared<MemoryAuditSink>();
  std::shared_ptr<token::TrustStore> trust = std::make_shared<token::TrustStore>();

  std::unique_ptr<KeyRing> Open(IssuerIdentity who, KeyRingPolicy policy = {},
                                std::shared_ptr<KeyStore> store = nullptr) {
    auto ring = KeyRing::Open(std::move(who), policy, {master, std::move(store), audit, &clock});
    EXPECT_TRUE(ring.ok()) << ring.status().ToString();
    if (!ring.ok()) return nullptr;
    EXPECT_TRUE((*ring)->AttachTrustStore(trust).ok());
    return std::move(ring).value();
  }

  // A verifier as the mail service would configure it: any tenant's enterprise issuer.
  std::unique_ptr<token::Verifier> MakeVerifier(bool allow_consumer = false) {
    token::VerifierPolicy p;
    p.issuers = {std::string(kTemplate)};
    p.audiences = {std::string(kAudience)};
    p.allow_consumer_tokens = allow_consumer;
    return std::make_unique<token::Verifier>(trust, p, &clock);
  }

  int64_t now() const { return clock.NowSeconds(); }
  void Set(int64_t seconds) { clock.SetMillis(seconds * 1000); }
  void Advance(int64_t seconds) { clock.AdvanceSeconds(seconds); }

  // Keys generated and activated at once because nothing could sign.
  size_t Emergencies() const {
    size_t n = 0;
    for (const auto& e : audit->events()) {
      n += e.type == AuditEventType::kKeyGenerated && e.detail.starts_with("emergency:");
    }
    return n;
  }
  size_t CountDetail(std::string_view needle) const {
    size_t n = 0;
    for (const auto& e : audit->events()) n += e.detail.find(needle) != std::string::npos;
    return n;
  }
};

std::set<std::string> JwksKids(const KeyRing& ring) {
  auto store = token::TrustStore::FromJwks(ring.Jwks(), "", IssuerKind::kEnterprise, "");
  EXPECT_TRUE(store.ok()) << store.status().ToString();
  std::set<std::string> out;
  if (!store.ok()) return out;
  for (const auto& k : (*store)->Keys()) out.insert(k->kid());
  return out;
}

// ---- Policy and issuer ----

TEST(KeyRingPolicyTest, DefaultsAreValid) {
  KeyRingPolicy p;
  EXPECT_TRUE(p.Validate().ok());
  EXPECT_EQ(p.pre_publication_seconds, kDay);
  EXPECT_EQ(p.rotation_interval_seconds, 30 * kDay);
  EXPECT_EQ(p.max_token_lifetime_seconds, kHour);
  EXPECT_EQ(p.max_key_age_seconds, 90 * kDay);
  EXPECT_EQ(p.age_warning_seconds(), 72 * kDay);
}

TEST(KeyRingPolicyTest, ImpossibleSchedulesAreRefused) {
  struct Case {
    const char* name;
    void (*mutate)(KeyRingPolicy*);
  };
  const Case cases[] = {
      {"rotation longer than max age allows",
       [](KeyRingPolicy* p) { p->rotation_interval_seconds = 90 * kDay; }},
      {"zero rotation", [](KeyRingPolicy* p) { p->rotation_interval_seconds = 0; }},
      {"zero token lifetime", [](KeyRingPolicy* p) { p->max_token_lifetime_seconds = 0; }},
      {"negative pre-publication", [](KeyRingPolicy* p) { p->pre_publication_seconds = -1; }},
      {"warning at max age", [](KeyRingPolicy* p) { p->age_warning_fraction = 1.0; }},
      {"warning at zero", [](KeyRingPolicy* p) { p->age_warning_fraction = 0.0; }},
      {"overflowing periods",
       [](KeyRingPolicy* p) { p->pre_publication_seconds = INT64_MAX / 2 + 1; }},
  };
  for (const auto& c : cases) {
    SCOPED_TRACE(c.name);
    KeyRingPolicy p;
    c.mutate(&p);
    EXPECT_EQ(p.Validate().code(), StatusCode::kInvalidArgument);
  }
}

TEST(IssuerIdentityTest, EveryRingNamesOneExactIssuer) {
  struct Case {
    IssuerIdentity who;
    bool ok;
  };
  const Case cases[] = {
      {Enterprise(kTenantA), true},
      {Consumer(), true},
      {{"https://login.keyward.test/consumers/v2.0", IssuerKind::kConsumer, ""}, true},
      {{IssuerOf(kTenantA), IssuerKind::kEnterprise, ""}, false},  // enterprise needs a tenant
      {{std::string(kTemplate), IssuerKind::kEnterprise, ""}, false},  // template: shared key
      {{"", IssuerKind::kConsumer, ""}, false},
  };
  for (const auto& c : cases) {
    SCOPED_TRACE(c.who.Describe());
    EXPECT_EQ(c.who.Validate().ok(), c.ok);
    Env env;
    auto ring = KeyRing::Open(c.who, {}, {env.master, nullptr, env.audit, &env.clock});
    EXPECT_EQ(ring.ok(), c.ok);
  }
}

// ---- Rotation over simulated time ----

struct RotationCase {
  const char* name;
  KeyRingPolicy policy;
  int64_t step;           // seconds between ticks
  bool expect_warnings;   // keys live long enough to reach the warning threshold
  int64_t days = 200;     // simulated time
};

KeyRingPolicy LateRotation() {
  // Rotate as late as the policy allows: keys reach the age-warning threshold while signing.
  KeyRingPolicy p;
  p.rotation_interval_seconds =
      p.max_key_age_seconds - p.pre_publication_seconds - p.verify_tail_seconds();
  return p;
}

KeyRingPolicy Fast() {
  KeyRingPolicy p;
  p.pre_publication_seconds = 2 * kHour;
  p.rotation_interval_seconds = 3 * kDay;
  p.max_token_lifetime_seconds = 20 * 60;
  p.max_key_age_seconds = 5 * kDay;
  return p;
}

void PrintTo(const RotationCase& c, std::ostream* os) { *os << c.name; }

class RotationTest : public ::testing::TestWithParam<RotationCase> {};

TEST_P(RotationTest, ManyGenerationsOfKeys) {
  const RotationCase& rc = GetParam();
  const KeyRingPolicy& policy = rc.policy;
  const int64_t P = policy.pre_publication_seconds;
  const int64_t L = policy.max_token_lifetime_seconds;
  const int64_t M = policy.max_key_age_seconds;
  const int64_t tail = policy.verify_tail_seconds();
  const IssuerIdentity who = Enterprise(kTenantA);
  testing::TempDir dir;
  auto store = SqliteKeyStore::OpenFile(dir.File("keys.db"));
  ASSERT_TRUE(store.ok()) << store.status().ToString();
  std::shared_ptr<KeyStore> shared_store = std::move(store).value();

  Env env;
  auto ring = env.Open(who, policy, shared_store);
  ASSERT_TRUE(ring);
  auto verifier = env.MakeVerifier();

  std::map<std::string, int64_t> first_in_jwks, last_in_jwks, first_signed, last_signed;
  std::map<std::string, int64_t> created, not_after;
  struct Issued {
    std::string token;
    int64_t exp;
    std::string kid;
  };
  std::deque<Issued> live_tokens;
  std::optional<crypto::PrivateKey> first_key;
  std::string first_kid;

  int64_t end = kT0;  // the last step taken
  for (int64_t now = kT0; now <= kT0 + rc.days * kDay; now += rc.step) {
    end = now;
    env.Set(now);
    auto events = ring->Tick();
    ASSERT_TRUE(events.ok()) << events.status().ToString();
    auto again = ring->Tick();
    ASSERT_TRUE(again.ok());
    ASSERT_TRUE(again->empty()) << "Tick is not idempotent at " << now - kT0 << " s";

    std::set<std::string> jwks = JwksKids(*ring);
    for (const auto& kid : jwks) {
      first_in_jwks.try_emplace(kid, now);
      last_in_jwks[kid] = now;
    }
    size_t active = 0;
    for (const KeyRecord& r : ring->Keys()) {
      created[r.kid] = r.created;
      not_after[r.kid] = r.not_after;
      if (r.state == SigningKeyState::kActive) ++active;
      if (jwks.count(r.kid)) {
        ASSERT_LT(now - r.created, M) << "key " << r.kid << " in the JWKS past its maximum age";
      }
    }

    if (now >= kT0 + P) {
      ASSERT_EQ(active, 1u) << "at " << now - kT0 << " s";
      auto key = ring->SigningKey();
      ASSERT_TRUE(key.ok()) << key.status().ToString();
      ASSERT_TRUE(jwks.count(key->kid)) << "signing key not in the JWKS";
      ASSERT_EQ(key->latest_exp, now + L);
      // Every token it signs expires before the key reaches its maximum age.
      ASSERT_LE(now + L, created[key->kid] + M - policy.clock_skew_seconds);
      if (!first_key) {
        first_key = key->key;
        first_kid = key->kid;
      }
      auto token = ring->SignJwt(ClaimsFor(who, now, L));
      ASSERT_TRUE(token.ok()) << token.status().ToString();
      ASSERT_EQ(KidOf(*token), key->kid) << "exactly one key signs at a time";
      first_signed.try_emplace(key->kid, now);
      last_signed[key->kid] = now;
      live_tokens.push_back({*token, now + L, key->kid});
    } else {
      ASSERT_EQ(active, 0u);
    }

    // Every token that has not expired still verifies, whatever happened to its key since.
    while (!live_tokens.empty() && live_tokens.front().exp <= now) live_tokens.pop_front();
    for (const auto& t : live_tokens) {
      token::VerifyResult r = verifier->Verify(t.token);
      ASSERT_TRUE(r.ok()) << "token of key " << t.kid << " issued "
                          << (now - (t.exp - L)) << " s ago: " << token::ReasonCode(r.reason)
                          << ": " << r.detail;
    }
  }

  ASSERT_GE(first_signed.size(), 3u);
  for (const auto& [kid, first] : first_signed) {
    SCOPED_TRACE(kid);
    EXPECT_GE(first - first_in_jwks.at(kid), P) << "signed before a full pre-publication period";
    EXPECT_LE(last_signed.at(kid) + L, not_after.at(kid)) << "signed too close to max age";
    if (last_in_jwks.at(kid) < end) {
      // Gone from the JWKS once its last token expired, not much later.
      EXPECT_LT(last_in_jwks.at(kid), last_signed.at(kid) + tail + rc.step);
      EXPECT_GE(last_in_jwks.at(kid) + rc.step, last_signed.at(kid) + L);
    }
    EXPECT_LT(last_in_jwks.at(kid), not_after.at(kid));
  }
  EXPECT_EQ(env.Emergencies(), 0u) << "a healthy ring never needs an emergency key";

  // Age warnings: one per key that lived past the threshold, before its maximum age.
  std::map<std::string, int64_t> warned;
  for (const auto& e : env.audit->events()) {
    if (e.type == AuditEventType::kKeyAgeWarning) {
      EXPECT_TRUE(warned.emplace(e.kid, e.time).second) << "warned twice about " << e.kid;
    }
  }
  if (rc.expect_warnings) {
    for (const auto& [kid, first] : first_signed) {
      if (last_signed.at(kid) - created.at(kid) < policy.age_warning_seconds()) continue;
      ASSERT_TRUE(warned.count(kid)) << "no age warning for " << kid;
      EXPECT_GE(warned.at(kid) - created.at(kid), policy.age_warning_seconds());
      EXPECT_LT(warned.at(kid), not_after.at(kid));
    }
    EXPECT_FALSE(warned.empty());
  } else {
    EXPECT_TRUE(warned.empty());
  }

  // The first key is long past its maximum age: a token it signs now verifies nowhere.
  token::VerifyResult old =
      verifier->Verify(SignWith(*first_key, crypto::Algorithm::kES256, first_kid,
                                ClaimsFor(who, env.now())));
  EXPECT_EQ(old.reason, Reason::kKeyRetired) << old.detail;

  // Everything survived in the database: a fresh ring sees the same keys and JWKS.
  auto reopened = KeyRing::Open(who, policy, {env.master, shared_store, nullptr, &env.clock});
  ASSERT_TRUE(reopened.ok()) << reopened.status().ToString();
  EXPECT_EQ((*reopened)->Jwks(), ring->Jwks());
  auto a = ring->Keys();
  auto b = (*reopened)->Keys();
  ASSERT_EQ(a.size(), b.size());
  for (size_t i = 0; i < a.size(); ++i) {
    EXPECT_EQ(a[i].kid, b[i].kid);
    EXPECT_EQ(a[i].state, b[i].state);
    EXPECT_EQ(a[i].not_before, b[i].not_before);
    EXPECT_EQ(a[i].verify_until, b[i].verify_until);
    EXPECT_EQ(a[i].first_used_at, b[i].first_used_at);
  }
}

INSTANTIATE_TEST_SUITE_P(
    Policies, RotationTest,
    ::testing::Values(RotationCase{"defaults_hourly", KeyRingPolicy{}, kHour, false},
                      RotationCase{"defaults_37min", KeyRingPolicy{}, 37 * 60, false},
                      RotationCase{"late_rotation", LateRotation(), 53 * 60, true},
                      // 3-day rotation: 20 generations of keys in 60 days.
                      RotationCase{"fast", Fast(), 7 * 60, false, 60}),
    [](const auto& info) { return std::string(info.param.name); });

TEST(KeyRingTest, SuccessorIsGeneratedOnePrePublicationPeriodAhead) {
  Env env;
  auto ring = env.Open(Enterprise(kTenantA));
  auto ev = ring->Tick();
  ASSERT_TRUE(ev.ok());
  // First tick: one key, published, signs a day later.
  ASSERT_EQ(ev->size(), 2u);
  EXPECT_EQ((*ev)[0].type, AuditEventType::kKeyGenerated);
  EXPECT_EQ((*ev)[1].type, AuditEventType::kKeyPublished);
  std::string k1 = (*ev)[0].kid;
  EXPECT_EQ(ring->Keys()[0].not_before, kT0 + kDay);
  EXPECT_EQ(ring->Keys()[0].not_after, kT0 + 90 * kDay);

  env.Set(kT0 + kDay);
  ev = ring->Tick();
  ASSERT_EQ(ev->size(), 1u);
  EXPECT_EQ((*ev)[0].type, AuditEventType::kKeyActivated);

  // 29 days after activation (30 − 1): the successor appears.
  env.Set(kT0 + kDay + 29 * kDay - 1);
  EXPECT_TRUE(ring->Tick()->empty());
  env.Set(kT0 + kDay + 29 * kDay);
  ev = ring->Tick();
  ASSERT_EQ(ev->size(), 2u);
  std::string k2 = (*ev)[0].kid;
  EXPECT_EQ(JwksKids(*ring), (std::set<std::string>{k1, k2}));
  EXPECT_EQ(ring->SigningKey()->kid, k1);

  // 30 days after activation: k2 signs, k1 verifies for one more hour (+ skew).
  env.Set(kT0 + 31 * kDay);
  ev = ring->Tick();
  ASSERT_EQ(ev->size(), 2u);
  EXPECT_EQ((*ev)[0].type, AuditEventType::kKeyRetiring);
  EXPECT_EQ((*ev)[0].kid, k1);
  EXPECT_EQ((*ev)[1].type, AuditEventType::kKeyActivated);
  EXPECT_EQ((*ev)[1].kid, k2);
  EXPECT_EQ(ring->SigningKey()->kid, k2);
  env.Advance(kHour + 59);
  EXPECT_TRUE(ring->Tick()->empty());
  EXPECT_TRUE(JwksKids(*ring).count(k1));
  env.Advance(1);
  ev = ring->Tick();
  ASSERT_EQ(ev->size(), 1u);
  EXPECT_EQ((*ev)[0].type, AuditEventType::kKeyRetired);
  EXPECT_EQ(JwksKids(*ring), std::set<std::string>{k2});
  EXPECT_EQ(env.trust->Find(k1)->state(), token::KeyState::kRetired);
}

TEST(KeyRingTest, OperatorRotationScheduledAndImmediate) {
  Env env;
  auto ring = env.Open(Enterprise(kTenantA));
  ASSERT_TRUE(ring->Tick().ok());  // k1 published
  env.Set(kT0 + kDay);
  ASSERT_TRUE(ring->Tick().ok());  // k1 signs
  const std::string k1 = ring->SigningKey()->kid;
  EXPECT_FALSE(ring->Rotate(false, "").ok());

  // Scheduled: published now, signs after the pre-publication period, then k1 retires.
  auto k2 = ring->Rotate(false, "quarterly drill");
  ASSERT_TRUE(k2.ok()) << k2.status().ToString();
  EXPECT_NE(*k2, k1);
  EXPECT_EQ(ring->SigningKey()->kid, k1);
  EXPECT_TRUE(JwksKids(*ring).count(*k2));
  EXPECT_EQ(env.CountDetail("operator rotation: quarterly drill"), 1u);
  // A second scheduled rotation while one is pending changes nothing.
  EXPECT_EQ(*ring->Rotate(false, "again"), *k2);
  env.Advance(kDay);
  EXPECT_EQ(ring->SigningKey()->kid, *k2);

  // Immediate: a new key signs at once; the old one only verifies; tokens keep verifying.
  auto verifier = env.MakeVerifier();
  std::string before = *ring->SignJwt(ClaimsFor(Enterprise(kTenantA), env.now()));
  auto k3 = ring->Rotate(true, "suspected compromise");
  ASSERT_TRUE(k3.ok());
  EXPECT_EQ(ring->SigningKey()->kid, *k3);
  EXPECT_EQ(env.trust->Find(*k2)->state(), token::KeyState::kActive);  // retiring: verifies
  EXPECT_TRUE(verifier->Verify(before).ok());
  EXPECT_EQ(env.Emergencies(), 0u);  // an operator rotation is not an emergency
  EXPECT_EQ(env.CountDetail("activated at once by an operator rotation (suspected compromise)"),
            1u);
}

TEST(KeyRingTest, RevocationsByAnotherProcessAreAppliedFromTheStore) {
  Env env;
  auto store = std::make_shared<MemoryKeyStore>();
  auto ring = env.Open(Enterprise(kTenantA), {}, store);
  auto verifier = env.MakeVerifier();
  std::string token = *ring->SignJwt(ClaimsFor(Enterprise(kTenantA), env.now()));
  ASSERT_TRUE(verifier->Verify(token).ok());
  EXPECT_TRUE(ring->RefreshFromStore()->empty());  // nothing changed elsewhere

  // Another process revokes the key in the shared store.
  auto records = store->Load(Enterprise(kTenantA).issuer);
  ASSERT_TRUE(records.ok());
  KeyRecord r = records->back();
  r.state = SigningKeyState::kRevoked;
  r.revoked_at = env.now();
  r.revoked_reason = "revoked by the operator elsewhere";
  ASSERT_TRUE(store->Update(r).ok());
  EXPECT_TRUE(verifier->Verify(token).ok());  // not seen yet

  auto revoked = ring->RefreshFromStore();
  ASSERT_TRUE(revoked.ok());
  EXPECT_EQ(*revoked, std::vector<std::string>{r.kid});
  EXPECT_EQ(verifier->Verify(token).reason, token::Reason::kKeyRevoked);
  EXPECT_NE(ring->SigningKey()->kid, r.kid);
  EXPECT_EQ(env.CountDetail("by another process: revoked by the operator elsewhere"), 1u);
  EXPECT_TRUE(ring->RefreshFromStore()->empty());  // applied once
}

TEST(KeyRingTest, NoKeyOutlivesItsMaximumAgeEvenWhenTickIsNeverCalled) {
  Env env;
  auto ring = env.Open(Enterprise(kTenantA));
  ASSERT_TRUE(ring->Tick().ok());
  env.Advance(kDay);
  auto k1 = ring->SigningKey();
  ASSERT_TRUE(k1.ok());
  std::string stolen_kid = k1->kid;
  crypto::PrivateKey stolen = k1->key;
  auto verifier = env.MakeVerifier();
  ASSERT_TRUE(verifier->Verify(SignWith(stolen, k1->alg, stolen_kid,
                                        ClaimsFor(Enterprise(kTenantA), env.now())))
                  .ok());

  // The timer died; 100 days pass. The trust store alone already refuses the old key.
  env.Advance(100 * kDay);
  auto forged = verifier->Verify(
      SignWith(stolen, k1->alg, stolen_kid, ClaimsFor(Enterprise(kTenantA), env.now())));
  EXPECT_EQ(forged.reason, Reason::kKeyExpired) << forged.detail;
  EXPECT_FALSE(JwksKids(*ring).count(stolen_kid));

  // Signing still works, with a new key, and says why.
  auto k2 = ring->SigningKey();
  ASSERT_TRUE(k2.ok());
  EXPECT_NE(k2->kid, stolen_kid);
  EXPECT_EQ(env.Emergencies(), 1u);
  EXPECT_EQ(env.audit->Count(AuditEventType::kKeyRetired, stolen_kid), 1u);
  auto token = ring->SignJwt(ClaimsFor(Enterprise(kTenantA), env.now()));
  ASSERT_TRUE(token.ok());
  EXPECT_TRUE(verifier->Verify(*token).ok());
}

TEST(KeyRingTest, SigningBeforeAnyKeyMaturedUsesAnEmergencyKey) {
  Env env;
  auto ring = env.Open(Enterprise(kTenantA));
  ASSERT_TRUE(ring->Tick().ok());  // k1 published, signs tomorrow
  auto key = ring->SigningKey();
  ASSERT_TRUE(key.ok());
  EXPECT_EQ(env.Emergencies(), 1u);
  EXPECT_EQ(env.audit->Count(AuditEventType::kKeyFirstUsed, key->kid), 1u);
  auto verifier = env.MakeVerifier();
  EXPECT_TRUE(verifier->Verify(*ring->SignJwt(ClaimsFor(Enterprise(kTenantA), env.now()))).ok());
  // Tomorrow the pre-published key takes over as planned and the emergency key retires.
  env.Advance(kDay);
  ASSERT_TRUE(ring->Tick().ok());
  EXPECT_NE(ring->SigningKey()->kid, key->kid);
  EXPECT_EQ(env.Emergencies(), 1u);
}

TEST(KeyRingTest, SignJwtSignsOnlyForItsOwnIssuerAndWithinTheLifetime) {
  Env env;
  auto ring = env.Open(Enterprise(kTenantA));
  ASSERT_TRUE(ring->Tick().ok());
  env.Advance(kDay);
  const int64_t now = env.now();
  struct Case {
    const char* name;
    std::string claims;
    bool ok;
  };
  const Case cases[] = {
      {"good", ClaimsFor(Enterprise(kTenantA), now), true},
      {"other tenant's issuer", ClaimsFor(Enterprise(kTenantB), now), false},
      {"consumer issuer", ClaimsFor(Consumer(), now), false},
      {"tid of another tenant",
       fmt::format(R"({{"iss":"{}","tid":"{}","exp":{}}})", IssuerOf(kTenantA), kTenantB, now + 60),
       false},
      {"no tid", fmt::format(R"({{"iss":"{}","exp":{}}})", IssuerOf(kTenantA), now + 60), false},
      {"no exp", fmt::format(R"({{"iss":"{}","tid":"{}"}})", IssuerOf(kTenantA), kTenantA), false},
      {"lifetime too long", ClaimsFor(Enterprise(kTenantA), now, kHour + 1), false},
      {"already expired", ClaimsFor(Enterprise(kTenantA), now, 0), false},
      {"not an object", "[1]", false},
      {"duplicate member",
       fmt::format(R"({{"iss":"{}","iss":"x","tid":"{}","exp":{}}})", IssuerOf(kTenantA), kTenantA,
                   now + 60),
       false},
  };
  for (const auto& c : cases) {
    SCOPED_TRACE(c.name);
    auto r = ring->SignJwt(c.claims);
    EXPECT_EQ(r.ok(), c.ok) << r.status().ToString();
  }
}

// ---- Revocation ----

TEST(KeyRingTest, RevokedKeyIsRefusedAtOnceIncludingCachedTokens) {
  Env env;
  auto ring = env.Open(Enterprise(kTenantA));
  ASSERT_TRUE(ring->Tick().ok());
  env.Advance(kDay);
  ASSERT_TRUE(ring->Tick().ok());
  auto verifier = env.MakeVerifier();
  auto other_verifier = env.MakeVerifier();  // another service in the same process
  std::string token = *ring->SignJwt(ClaimsFor(Enterprise(kTenantA), env.now()));
  std::string kid = KidOf(token);
  ASSERT_TRUE(verifier->Verify(token).ok());
  ASSERT_TRUE(verifier->Verify(token).from_cache);
  ASSERT_TRUE(other_verifier->Verify(token).ok());

  ASSERT_TRUE(ring->Revoke(kid, "private key found on a build server").ok());
  token::VerifyResult r = verifier->Verify(token);
  EXPECT_EQ(r.reason, Reason::kKeyRevoked) << r.detail;
  EXPECT_FALSE(r.from_cache);
  EXPECT_EQ(other_verifier->Verify(token).reason, Reason::kKeyRevoked);
  EXPECT_FALSE(JwksKids(*ring).count(kid));
  EXPECT_EQ(env.trust->Find(kid)->state(), token::KeyState::kRevoked);

  // The audit trail has it, with the reason; a second revoke changes nothing.
  ASSERT_EQ(env.audit->Count(AuditEventType::kKeyRevoked, kid), 1u);
  EXPECT_EQ(env.CountDetail("private key found on a build server"), 1u);
  EXPECT_TRUE(ring->Revoke(kid, "again").ok());
  EXPECT_EQ(env.audit->Count(AuditEventType::kKeyRevoked, kid), 1u);

  // Signing goes on at once with a new key, never the revoked one.
  auto next = ring->SigningKey();
  ASSERT_TRUE(next.ok());
  EXPECT_NE(next->kid, kid);
  EXPECT_TRUE(verifier->Verify(*ring->SignJwt(ClaimsFor(Enterprise(kTenantA), env.now()))).ok());
  // Ticks never bring a revoked key back.
  for (int i = 0; i < 100; ++i) {
    env.Advance(kDay);
    ASSERT_TRUE(ring->Tick().ok());
    EXPECT_NE(ring->SigningKey()->kid, kid);
  }
  EXPECT_EQ(env.trust->Find(kid)->state(), token::KeyState::kRevoked);
}

TEST(KeyRingTest, RevokeChecksItsArguments) {
  Env env;
  auto a = env.Open(Enterprise(kTenantA));
  auto b = env.Open(Enterprise(kTenantB));
  ASSERT_TRUE(a->Tick().ok());
  ASSERT_TRUE(b->Tick().ok());
  std::string kid_b = b->Keys()[0].kid;
  EXPECT_EQ(a->Revoke("nope", "x").code(), StatusCode::kNotFound);
  EXPECT_EQ(a->Revoke(kid_b, "x").code(), StatusCode::kNotFound) << "a ring revokes only its own";
  EXPECT_EQ(b->Revoke(kid_b, "").code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(env.trust->Find(kid_b)->state(), token::KeyState::kActive);
}

// ---- Consumer and enterprise separation (the 2023 failure) ----

TEST(KeyRingTest, ConsumerKeyCannotSignForAnEnterpriseTenant) {
  Env env;
  auto consumer = env.Open(Consumer());
  auto tenant_a = env.Open(Enterprise(kTenantA));
  for (auto* ring : {consumer.get(), tenant_a.get()}) ASSERT_TRUE(ring->Tick().ok());
  env.Advance(kDay);
  auto consumer_key = consumer->SigningKey();
  ASSERT_TRUE(consumer_key.ok());

  // Each ring publishes only its own keys, each bound to its own issuer.
  std::set<std::string> ck = JwksKids(*consumer), ek = JwksKids(*tenant_a);
  for (const auto& k : ck) EXPECT_FALSE(ek.count(k));
  EXPECT_NE(consumer->Jwks().find(R"("issuer_kind":"consumer")"), std::string::npos);
  EXPECT_EQ(consumer->Jwks().find(R"("issuer_kind":"enterprise")"), std::string::npos);

  // The ring refuses to sign enterprise claims...
  EXPECT_EQ(consumer->SignJwt(ClaimsFor(Enterprise(kTenantA), env.now())).status().code(),
            StatusCode::kInvalidArgument);
  // ...and a token forged with the stolen consumer key is refused by the mail service, through
  // the process trust store and through a "common" JWKS merging both rings.
  std::string forged = SignWith(consumer_key->key, consumer_key->alg, consumer_key->kid,
                                ClaimsFor(Enterprise(kTenantA), env.now()));
  auto verifier = env.MakeVerifier(/*allow_consumer=*/true);
  EXPECT_EQ(verifier->Verify(forged).reason, Reason::kKeyIssuerMismatch);

  std::string c = consumer->Jwks(), e = tenant_a->Jwks();
  std::string common = c.substr(0, c.size() - 2) + "," + e.substr(std::string("{\"keys\":[").size());
  auto common_store =
      token::TrustStore::FromJwks(common, "", IssuerKind::kEnterprise, "");
  ASSERT_TRUE(common_store.ok()) << common_store.status().ToString();
  token::VerifierPolicy p;
  p.issuers = {std::string(kTemplate)};
  p.allow_consumer_tokens = true;
  token::Verifier common_verifier(std::shared_ptr<token::TrustStore>(std::move(*common_store)), p,
                                  &env.clock);
  EXPECT_EQ(common_verifier.Verify(forged).reason, Reason::kKeyIssuerMismatch);
  EXPECT_TRUE(common_verifier.Verify(*tenant_a->SignJwt(ClaimsFor(Enterprise(kTenantA), env.now())))
                  .ok());
}

TEST(KeyRingTest, RingRefusesKeysOfAnotherIssuerFromItsStore) {
  Env env;
  auto store = std::make_shared<MemoryKeyStore>();
  auto consumer = env.Open(Consumer(), {}, store);
  ASSERT_TRUE(consumer->Tick().ok());
  // A store that answers with every key it has, whatever issuer was asked for.
  store->set_return_everything(true);
  auto r = KeyRing::Open(Enterprise(kTenantA), {}, {env.master, store, env.audit, &env.clock});
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), StatusCode::kFailedPrecondition);
  EXPECT_NE(r.status().message().find("belongs to consumer issuer"), std::string::npos)
      << r.status().message();
  EXPECT_NE(r.status().message().find("never share a ring"), std::string::npos);
}

TEST(KeyRingTest, ConsumerAndEnterpriseRingsCannotShareAnIssuerUrl) {
  Env env;
  testing::TempDir dir;
  std::shared_ptr<KeyStore> store = SqliteKeyStore::OpenFile(dir.File("k.db")).value();
  const std::string url = "https://login.keyward.test/common/v2.0";
  auto consumer = env.Open({url, IssuerKind::kConsumer, ""}, {}, store);
  ASSERT_TRUE(consumer->Tick().ok());
  auto enterprise =
      KeyRing::Open({url, IssuerKind::kEnterprise, std::string(kTenantA)}, {},
                    {env.master, store, env.audit, &env.clock});
  ASSERT_FALSE(enterprise.ok());
  EXPECT_EQ(enterprise.status().code(), StatusCode::kFailedPrecondition);
  EXPECT_NE(enterprise.status().message().find("never share a ring"), std::string::npos);
  // Another issuer URL in the same database is another ring, and fine.
  auto other_tenant = KeyRing::Open(Enterprise(kTenantA), {}, {env.master, store, env.audit, &env.clock});
  ASSERT_TRUE(other_tenant.ok());
}

TEST(KeyRingTest, AttachingNeverOverwritesAnotherIssuersKid) {
  Env env;
  auto ring = KeyRing::Open(Enterprise(kTenantA), {}, {env.master, nullptr, env.audit, &env.clock});
  ASSERT_TRUE(ring.ok());
  ASSERT_TRUE((*ring)->Tick().ok());
  std::string kid = (*ring)->Keys()[0].kid;
  // A trust store in which that kid already names a consumer key.
  auto other = crypto::PrivateKey::Generate(crypto::Algorithm::kES256).value();
  token::TrustedKeySpec spec;
  spec.kid = kid;
  spec.issuer = IssuerOf(kConsumerTenant);
  spec.kind = IssuerKind::kConsumer;
  spec.key = other.public_key();
  ASSERT_TRUE(env.trust->Add(spec).ok());
  Status s = (*ring)->AttachTrustStore(env.trust);
  EXPECT_EQ(s.code(), StatusCode::kPermissionDenied) << s.ToString();
  EXPECT_EQ(env.trust->Find(kid)->spec().issuer, IssuerOf(kConsumerTenant));
  EXPECT_TRUE(env.trust->Find(kid)->key().Equals(other.public_key()));
}

// ---- JWKS, trust store, other algorithms ----

TEST(KeyRingTest, JwksCarriesWhatTheTrustStoreNeedsToBindEachKey) {
  Env env;
  auto ring = env.Open(Enterprise(kTenantA));
  ASSERT_TRUE(ring->Tick().ok());
  std::string jwks = ring->Jwks();
  for (std::string_view member :
       {R"("kty":"EC")", R"("crv":"P-256")", R"("alg":"ES256")", R"("use":"sig")",
        R"("issuer_kind":"enterprise")"}) {
    EXPECT_NE(jwks.find(member), std::string::npos) << member << " in " << jwks;
  }
  EXPECT_NE(jwks.find(fmt::format(R"("issuer":"{}")", IssuerOf(kTenantA))), std::string::npos);
  EXPECT_NE(jwks.find(fmt::format(R"("tid":"{}")", kTenantA)), std::string::npos);
  EXPECT_EQ(jwks.find(R"("d":)"), std::string::npos);
  // Read back with a default issuer of another tenant: the "issuer" member wins.
  auto store = token::TrustStore::FromJwks(jwks, IssuerOf(kTenantB), IssuerKind::kConsumer, "x");
  ASSERT_TRUE(store.ok()) << store.status().ToString();
  auto k = (*store)->Keys().at(0);
  EXPECT_EQ(k->spec().issuer, IssuerOf(kTenantA));
  EXPECT_EQ(k->spec().kind, IssuerKind::kEnterprise);
  EXPECT_EQ(k->spec().tenant_id, kTenantA);

  auto specs = ring->ToTrustedKeys();
  ASSERT_EQ(specs.size(), 1u);
  EXPECT_EQ(specs[0].not_before, kT0 + kDay);
  EXPECT_EQ(specs[0].not_after, kT0 + 90 * kDay);
  EXPECT_EQ(specs[0].state, token::KeyState::kActive);
}

TEST(KeyRingTest, PublishedKeyVerifiesNothingBeforeItsTime) {
  Env env;
  auto ring = env.Open(Enterprise(kTenantA));
  ASSERT_TRUE(ring->Tick().ok());
  std::string kid = ring->Keys()[0].kid;
  ASSERT_TRUE(JwksKids(*ring).count(kid));
  // The key is published but does not sign until tomorrow, so the trust store refuses any token
  // naming it until then, before the signature is even looked at.
  std::string token = SignWith(crypto::PrivateKey::Generate(crypto::Algorithm::kES256).value(),
                               crypto::Algorithm::kES256, kid,
                               ClaimsFor(Enterprise(kTenantA), env.now()));
  EXPECT_EQ(env.MakeVerifier()->Verify(token).reason, Reason::kKeyNotYetValid);
}

TEST(KeyRingTest, EdDsaAndRsaRingsWork) {
  for (crypto::Algorithm alg : {crypto::Algorithm::kEdDSA, crypto::Algorithm::kRS256}) {
    SCOPED_TRACE(crypto::AlgorithmName(alg));
    Env env;
    KeyRingPolicy p;
    p.algorithm = alg;
    auto ring = env.Open(Enterprise(kTenantA), p);
    ASSERT_TRUE(ring->Tick().ok());
    env.Advance(kDay);
    auto token = ring->SignJwt(ClaimsFor(Enterprise(kTenantA), env.now()));
    ASSERT_TRUE(token.ok()) << token.status().ToString();
    auto r = env.MakeVerifier()->Verify(*token);
    EXPECT_TRUE(r.ok()) << r.detail;
    EXPECT_NE(ring->Jwks().find(fmt::format(R"("alg":"{}")", crypto::AlgorithmName(alg))),
              std::string::npos);
  }
}

TEST(KeyRingTest, ConcurrentSigningWhileTheClockRuns) {
  Env env;
  auto ring = env.Open(Enterprise(kTenantA), Fast());
  ASSERT_TRUE(ring->Tick().ok());
  std::atomic<bool> stop{false};
  std::atomic<int> failures{0};
  std::atomic<int64_t> signed_count{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 3; ++t) {
    threads.emplace_back([&] {
      while (!stop.load()) {
        auto key = ring->SigningKey();
        bool known = false;
        if (key.ok()) {
          for (const auto& r : ring->Keys()) known |= r.kid == key->kid;
        }
        if (!known || ring->Jwks().empty() || ring->ToTrustedKeys().empty()) ++failures;
        ++signed_count;
      }
    });
  }
  for (int i = 0; i < 150; ++i) {
    env.Advance(40 * 60);
    if (!ring->Tick().ok()) ++failures;
    // Let the signers run between ticks.
    int64_t target = signed_count.load() + 3;
    while (signed_count.load() < target) std::this_thread::yield();
  }
  stop = true;
  for (auto& th : threads) th.join();
  EXPECT_EQ(failures.load(), 0);
  EXPECT_GE(signed_count.load(), 450);
  size_t active = 0;
  for (const auto& r : ring->Keys()) active += r.state == SigningKeyState::kActive;
  EXPECT_EQ(active, 1u);
  EXPECT_EQ(env.Emergencies(), 1u);  // only the first signature, before any key matured
}

// ---- Audit ----

TEST(KeyRingTest, AgeWarningIsAuditedAndLogged) {
  std::vector<std::string> lines;
  std::mutex mu;
  SetLogSink(
      [&](LogLevel level, std::string_view line) {
        std::lock_guard lock(mu);
        if (level == LogLevel::kWarning) lines.emplace_back(line);
      },
      LogLevel::kInfo);
  Env env;
  auto ring = env.Open(Enterprise(kTenantA), LateRotation());
  ASSERT_TRUE(ring->Tick().ok());
  env.Advance(kDay);
  std::string kid = ring->SigningKey()->kid;
  env.Set(kT0 + 72 * kDay - 1);
  ASSERT_TRUE(ring->Tick().ok());
  EXPECT_EQ(env.audit->Count(AuditEventType::kKeyAgeWarning), 0u);
  env.Set(kT0 + 72 * kDay);
  auto ev = ring->Tick();
  ASSERT_TRUE(ev.ok());
  ASSERT_EQ(env.audit->Count(AuditEventType::kKeyAgeWarning, kid), 1u);
  SetLogSink(nullptr);
  bool logged = false;
  for (const auto& l : lines) logged |= l.find("key_age_warning") != std::string::npos &&
                                        l.find(kid) != std::string::npos;
  EXPECT_TRUE(logged);
  for (const auto& e : *ev) {
    if (e.type == AuditEventType::kKeyAgeWarning) {
      EXPECT_NE(e.detail.find("72 days old"), std::string::npos) << e.detail;
      EXPECT_NE(e.detail.find("the maximum is 90 days"), std::string::npos) << e.detail;
    }
  }
}

TEST(FileAuditSinkTest, WritesOneJsonObjectPerLine) {
  testing::TempDir dir;
  std::string path = dir.File("audit.jsonl");
  {
    auto sink = FileAuditSink::Open(path, /*fsync_each=*/true);
    ASSERT_TRUE(sink.ok()) << sink.status().ToString();
    std::shared_ptr<AuditSink> shared = std::move(sink).value();
    FakeClock clock(kT0 * 1000);
    auto ring = KeyRing::Open(Enterprise(kTenantA), {},
                              {std::make_shared<MasterKey>(MasterKey::Generate()), nullptr,
                               shared, &clock});
    ASSERT_TRUE(ring.ok());
    ASSERT_TRUE((*ring)->Tick().ok());
    ASSERT_TRUE((*ring)->Revoke((*ring)->Keys()[0].kid, "test \"quoted\" reason").ok());
  }
  std::string text = testing::ReadAllOrEmpty(path);
  std::vector<std::string> lines;
  size_t start = 0;
  while (start < text.size()) {
    size_t nl = text.find('\n', start);
    ASSERT_NE(nl, std::string::npos) << "last line not terminated";
    lines.push_back(text.substr(start, nl - start));
    start = nl + 1;
  }
  ASSERT_EQ(lines.size(), 3u);  // generated, published, revoked
  json::StrictParser parser;
  const char* types[] = {"key_generated", "key_published", "key_revoked"};
  for (size_t i = 0; i < lines.size(); ++i) {
    auto e = parser.Parse(lines[i]);
    ASSERT_TRUE(e.ok()) << lines[i];
    json::Object o = e->get_object().value();
    EXPECT_EQ(*json::GetString(o, "type"), types[i]);
    EXPECT_EQ(*json::GetString(o, "time"), "2023-11-14T22:13:20Z");
    EXPECT_EQ(*json::GetInt64(o, "unix_time"), kT0);
    EXPECT_EQ(*json::GetString(o, "issuer"), IssuerOf(kTenantA));
    EXPECT_EQ(*json::GetString(o, "issuer_kind"), "enterprise");
    EXPECT_EQ(*json::GetString(o, "tenant"), kTenantA);
  }
  struct stat st;
  ASSERT_EQ(::stat(path.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600u);
  // Appends: a second sink adds to the same file.
  auto again = FileAuditSink::Open(path);
  ASSERT_TRUE(again.ok());
  AuditEvent ev;
  ev.time = kT0;
  ev.kid = "k";
  (*again)->Record(ev);
  EXPECT_EQ(testing::ReadAllOrEmpty(path).size(), text.size() + ev.ToJson().size() + 1);
}

}  // namespace
}  // namespace kw::identity
