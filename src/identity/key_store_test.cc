#include "identity/key_store.h"

#include <gtest/gtest.h>
#include <sqlite3.h>
#include <sys/stat.h>

#include <fmt/format.h>

#include "core/base64url.h"
#include "core/json.h"
#include "identity/key_ring.h"
#include "identity/test_util.h"
#include "token/verifier.h"

namespace kw::identity {
namespace {

using token::IssuerKind;

constexpr int64_t kDay = 24 * 3600;
constexpr int64_t kT0 = 1'700'000'000;
constexpr std::string_view kTenant = "72f988bf-86f1-41af-91ab-2d7cd011db47";
const std::string kIssuer = fmt::format("https://login.keyward.test/{}/v2.0", kTenant);

IssuerIdentity Tenant() { return {kIssuer, IssuerKind::kEnterprise, std::string(kTenant)}; }

KeyRecord Record(std::string kid, IssuerIdentity who = Tenant()) {
  KeyRecord r;
  r.kid = std::move(kid);
  r.issuer = std::move(who);
  r.created = kT0;
  r.not_before = kT0 + kDay;
  r.not_after = kT0 + 90 * kDay;
  r.sealed_private = std::string("\x01sealed\x00bytes", 13);
  r.master_key_id = "0011223344556677";
  r.public_jwk = R"({"crv":"P-256","kty":"EC","x":"x","y":"y"})";
  return r;
}

// Runs one SQL statement on the database file behind the store's back.
void RawSql(const std::string& path, const std::string& sql) {
  sqlite3* db = nullptr;
  ASSERT_EQ(sqlite3_open(path.c_str(), &db), SQLITE_OK);
  char* err = nullptr;
  int rc = sqlite3_exec(db, sql.c_str(), nullptr, nullptr, &err);
  std::string msg = err ? err : "";
  sqlite3_free(err);
  sqlite3_close(db);
  ASSERT_EQ(rc, SQLITE_OK) << msg;
}

// Overwrites one key's sealed blob on the database file behind the store's back.
void SetBlob(const std::string& path, const std::string& kid, const std::string& blob) {
  sqlite3* db = nullptr;
  ASSERT_EQ(sqlite3_open(path.c_str(), &db), SQLITE_OK);
  sqlite3_stmt* st = nullptr;
  ASSERT_EQ(sqlite3_prepare_v2(db, "UPDATE keys SET sealed_private = ? WHERE kid = ?", -1, &st,
                               nullptr),
            SQLITE_OK);
  sqlite3_bind_blob(st, 1, blob.data(), static_cast<int>(blob.size()), SQLITE_TRANSIENT);
  sqlite3_bind_text(st, 2, kid.data(), static_cast<int>(kid.size()), SQLITE_TRANSIENT);
  int rc = sqlite3_step(st);
  sqlite3_finalize(st);
  sqlite3_close(db);
  ASSERT_EQ(rc, SQLITE_DONE);
}

class SqliteKeyStoreTest : public ::testing::Test {
 protected:
  void SetUp() override {
    path_ = dir_.File("keys.db");
    auto s = SqliteKeyStore::OpenFile(path_);
    ASSERT_TRUE(s.ok()) << s.status().ToString();
    store_ = std::move(s).value();
  }
  testing::TempDir dir_;
  std::string path_;
  std::shared_ptr<SqliteKeyStore> store_;
};

TEST_F(SqliteKeyStoreTest, SaveLoadUpdate) {
  KeyRecord a = Record("a");
  KeyRecord b = Record("b");
  b.created = kT0 - 10;  // older: loads first
  ASSERT_TRUE(store_->Save(a).ok());
  ASSERT_TRUE(store_->Save(b).ok());
  auto loaded = store_->Load(kIssuer);
  ASSERT_TRUE(loaded.ok()) << loaded.status().ToString();
  ASSERT_EQ(loaded->size(), 2u);
  EXPECT_EQ((*loaded)[0].kid, "b");
  const KeyRecord& got = (*loaded)[1];
  EXPECT_EQ(got.issuer, a.issuer);
  EXPECT_EQ(got.sealed_private, a.sealed_private);  // a BLOB: embedded NUL kept
  EXPECT_EQ(got.public_jwk, a.public_jwk);
  EXPECT_EQ(got.not_after, a.not_after);
  EXPECT_EQ(got.state, SigningKeyState::kPublished);

  a.state = SigningKeyState::kRevoked;
  a.revoked_at = kT0 + 5;
  a.revoked_reason = "leaked";
  ASSERT_TRUE(store_->Update(a).ok());
  loaded = store_->Load(kIssuer);
  EXPECT_EQ((*loaded)[1].state, SigningKeyState::kRevoked);
  EXPECT_EQ((*loaded)[1].revoked_reason, "leaked");
  EXPECT_EQ((*loaded)[1].revoked_at, kT0 + 5);
  EXPECT_TRUE(store_->Load("https://other.example")->empty());
}

TEST_F(SqliteKeyStoreTest, KidsAreUniqueAcrossIssuersAndNeverChangeIssuer) {
  ASSERT_TRUE(store_->Save(Record("k")).ok());
  IssuerIdentity consumer{"https://login.keyward.test/consumers/v2.0", IssuerKind::kConsumer, ""};
  EXPECT_EQ(store_->Save(Record("k", consumer)).code(), StatusCode::kAlreadyExists);
  // An update naming another issuer (or kind, or tenant) finds nothing to update.
  KeyRecord moved = Record("k", consumer);
  moved.state = SigningKeyState::kActive;
  EXPECT_EQ(store_->Update(moved).code(), StatusCode::kNotFound);
  KeyRecord other_tenant = Record("k", {kIssuer, IssuerKind::kEnterprise, "other"});
  EXPECT_EQ(store_->Update(other_tenant).code(), StatusCode::kNotFound);
  EXPECT_EQ(store_->Load(kIssuer)->at(0).state, SigningKeyState::kPublished);
}

TEST_F(SqliteKeyStoreTest, DatabaseIsWalAndPrivateToItsOwner) {
  ASSERT_TRUE(store_->Save(Record("k")).ok());
  struct stat st;
  ASSERT_EQ(::stat(path_.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600u);
  auto mode = store_->db()->Prepare("PRAGMA journal_mode");
  ASSERT_TRUE(mode.ok());
  ASSERT_TRUE(*mode->Step());
  EXPECT_EQ(mode->Text(0), "wal");
}

TEST_F(SqliteKeyStoreTest, CorruptRowsAreDataLoss) {
  ASSERT_TRUE(store_->Save(Record("k")).ok());
  RawSql(path_, "PRAGMA ignore_check_constraints = ON; UPDATE keys SET alg = 'HS256'");
  auto r = store_->Load(kIssuer);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), StatusCode::kDataLoss);
  EXPECT_NE(r.status().message().find("key 'k' has an invalid alg 'HS256'"), std::string::npos)
      << r.status().message();
}

// ---- A key ring on the store ----

class PersistedRingTest : public SqliteKeyStoreTest {
 protected:
  Result<std::unique_ptr<KeyRing>> OpenRing(std::shared_ptr<const MasterKey> master,
                                            KeyRingPolicy policy = {}) {
    return KeyRing::Open(Tenant(), policy, {std::move(master), store_, audit_, &clock_});
  }
  // A ring with keys in several states: one retired, one active, one published.
  std::unique_ptr<KeyRing> RingWithHistory() {
    auto ring = OpenRing(master_);
    EXPECT_TRUE(ring.ok()) << ring.status().ToString();
    for (int64_t t : {int64_t{0}, kDay, 30 * kDay, 31 * kDay, 32 * kDay, 60 * kDay}) {
      clock_.SetMillis((kT0 + t) * 1000);
      EXPECT_TRUE((*ring)->Tick().ok());
    }
    return std::move(ring).value();
  }

  FakeClock clock_{kT0 * 1000};
  std::shared_ptr<const MasterKey> master_ = std::make_shared<MasterKey>(MasterKey::Generate());
  std::shared_ptr<MemoryAuditSink> audit_ = std::make_shared<MemoryAuditSink>();
};

TEST_F(PersistedRingTest, ReloadGivesTheSameKeys) {
  auto ring = RingWithHistory();
  std::vector<KeyRecord> before = ring->Keys();
  ASSERT_EQ(before.size(), 3u);
  EXPECT_EQ(before[0].state, SigningKeyState::kRetired);
  EXPECT_EQ(before[1].state, SigningKeyState::kActive);
  EXPECT_EQ(before[2].state, SigningKeyState::kPublished);
  auto signer = ring->SigningKey();
  ASSERT_TRUE(signer.ok());

  audit_->Clear();
  auto again = OpenRing(master_);
  ASSERT_TRUE(again.ok()) << again.status().ToString();
  EXPECT_EQ((*again)->Jwks(), ring->Jwks());
  std::vector<KeyRecord> after = (*again)->Keys();
  ASSERT_EQ(after.size(), before.size());
  for (size_t i = 0; i < after.size(); ++i) {
    EXPECT_EQ(after[i].kid, before[i].kid);
    EXPECT_EQ(after[i].state, before[i].state);
    EXPECT_EQ(after[i].public_jwk, before[i].public_jwk);
  }
  // Only the live keys were unsealed, each with an audit event.
  EXPECT_EQ(audit_->Count(AuditEventType::kKeyUnsealed), 2u);
  EXPECT_EQ(audit_->Count(AuditEventType::kKeyUnsealed, before[0].kid), 0u);
  EXPECT_EQ(audit_->Count(AuditEventType::kKeyUnsealed, before[1].kid), 1u);

  // The reloaded ring signs with the same key, verifiable against the first ring's keys.
  auto signer2 = (*again)->SigningKey();
  ASSERT_TRUE(signer2.ok());
  EXPECT_EQ(signer2->kid, signer->kid);
  EXPECT_TRUE(signer2->key.public_key().Equals(signer->key.public_key()));
  auto trust = std::make_shared<token::TrustStore>();
  ASSERT_TRUE(ring->AttachTrustStore(trust).ok());
  token::VerifierPolicy p;
  p.issuers = {kIssuer};
  token::Verifier verifier(trust, p, &clock_);
  auto token = (*again)->SignJwt(fmt::format(R"({{"iss":"{}","tid":"{}","iat":{},"exp":{}}})",
                                             kIssuer, kTenant, clock_.NowSeconds(),
                                             clock_.NowSeconds() + 600));
  ASSERT_TRUE(token.ok()) << token.status().ToString();
  auto r = verifier.Verify(*token);
  EXPECT_TRUE(r.ok()) << r.detail;
}

TEST_F(PersistedRingTest, RevocationIsPersisted) {
  auto ring = RingWithHistory();
  std::string kid = ring->Keys()[1].kid;
  ASSERT_TRUE(ring->Revoke(kid, "incident 42").ok());
  auto again = OpenRing(master_);
  ASSERT_TRUE(again.ok());
  auto keys = (*again)->Keys();
  EXPECT_EQ(keys[1].state, SigningKeyState::kRevoked);
  EXPECT_EQ(keys[1].revoked_reason, "incident 42");
  EXPECT_EQ(keys[1].revoked_at, clock_.NowSeconds());
  EXPECT_NE((*again)->SigningKey()->kid, kid);
}

TEST_F(PersistedRingTest, WrongMasterKeyIsReportedAsSuch) {
  RingWithHistory();
  auto wrong = std::make_shared<MasterKey>(MasterKey::Generate());
  auto r = OpenRing(wrong);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), StatusCode::kFailedPrecondition);
  const std::string m = r.status().message();
  EXPECT_NE(m.find("wrong master key file?"), std::string::npos) << m;
  EXPECT_NE(m.find(master_->Fingerprint()), std::string::npos) << m;
  EXPECT_NE(m.find(wrong->Fingerprint()), std::string::npos) << m;
}

TEST_F(PersistedRingTest, SealedBlobsCannotBeSwappedOrAltered) {
  auto ring = RingWithHistory();
  auto keys = ring->Keys();
  const std::string active = keys[1].kid, published = keys[2].kid;
  const std::string active_blob = keys[1].sealed_private;
  const std::string published_blob = keys[2].sealed_private;
  ring.reset();

  // Swap the sealed private keys of the two live rows: each blob is bound to its own kid.
  SetBlob(path_, active, published_blob);
  SetBlob(path_, published, active_blob);
  auto r = OpenRing(master_);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), StatusCode::kDataLoss);
  EXPECT_NE(r.status().message().find("cannot unseal the private key of key '" + active + "'"),
            std::string::npos)
      << r.status().message();

  // Put them back: the ring opens again.
  SetBlob(path_, active, active_blob);
  SetBlob(path_, published, published_blob);
  ASSERT_TRUE(OpenRing(master_).ok());

  // Any single flipped byte is refused.
  for (size_t i : {size_t{0}, size_t{5}, active_blob.size() / 2, active_blob.size() - 1}) {
    std::string bad = active_blob;
    bad[i] = static_cast<char>(bad[i] ^ 0x04);
    SetBlob(path_, active, bad);
    r = OpenRing(master_);
    ASSERT_FALSE(r.ok()) << i;
    EXPECT_EQ(r.status().code(), StatusCode::kDataLoss);
  }
  SetBlob(path_, active, active_blob);

  // A key moved to another tenant's rows is refused too.
  RawSql(path_, fmt::format("UPDATE keys SET tenant_id = 'other' WHERE kid = '{}'", published));
  r = OpenRing(master_);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), StatusCode::kFailedPrecondition);
}

TEST_F(PersistedRingTest, PrivateKeysAreNeverStoredInTheClear) {
  auto file_sink = FileAuditSink::Open(dir_.File("audit.jsonl"));
  ASSERT_TRUE(file_sink.ok());
  std::shared_ptr<AuditSink> file_audit = std::move(file_sink).value();
  for (crypto::Algorithm alg : {crypto::Algorithm::kES256, crypto::Algorithm::kEdDSA}) {
    SCOPED_TRACE(crypto::AlgorithmName(alg));
    KeyRingPolicy policy;
    policy.algorithm = alg;
    IssuerIdentity who = Tenant();
    who.issuer += alg == crypto::Algorithm::kES256 ? "/es" : "/ed";
    auto ring = KeyRing::Open(who, policy, {master_, store_, file_audit, &clock_});
    ASSERT_TRUE(ring.ok()) << ring.status().ToString();
    ASSERT_TRUE((*ring)->Tick().ok());
    auto key = (*ring)->SigningKey();  // an emergency key plus the published one: two keys
    ASSERT_TRUE(key.ok());

    std::string jwk = key->key.ToJwk();
    json::StrictParser parser;
    json::Object o = parser.Parse(jwk)->get_object().value();
    std::string d(*json::GetString(o, "d"));
    std::string x(*json::GetString(o, "x"));
    std::string raw_d = Base64UrlDecode(d).value();
    std::string pem = key->key.ToPem();
    // A line of the PEM body (base64 of the PKCS#8 DER, which contains raw d).
    std::string pem_line = pem.substr(pem.find('\n') + 1, 40);
    ASSERT_EQ(raw_d.size(), 32u);

    std::string bytes;
    for (const char* suffix : {"", "-wal", "-shm"}) {
      bytes += testing::ReadAllOrEmpty(path_ + suffix);
    }
    bytes += testing::ReadAllOrEmpty(dir_.File("audit.jsonl"));
    ASSERT_NE(bytes.find(x), std::string::npos) << "the check must see the stored public key";
    EXPECT_EQ(bytes.find(d), std::string::npos) << "JWK \"d\" stored in the clear";
    EXPECT_EQ(bytes.find(raw_d), std::string::npos) << "raw private key stored in the clear";
    EXPECT_EQ(bytes.find(pem_line), std::string::npos) << "PEM private key stored in the clear";
  }
}

TEST_F(PersistedRingTest, AKeyThatCannotBeStoredIsNeverUsed) {
  auto ring = OpenRing(master_);
  ASSERT_TRUE(ring.ok());
  // Make every insert fail.
  RawSql(path_, "CREATE TRIGGER no_inserts BEFORE INSERT ON keys "
                "BEGIN SELECT RAISE(ABORT, 'disk on fire'); END");
  auto ev = (*ring)->Tick();
  EXPECT_FALSE(ev.ok());
  auto key = (*ring)->SigningKey();
  ASSERT_FALSE(key.ok());
  EXPECT_NE(key.status().message().find("storing a new signing key"), std::string::npos)
      << key.status().ToString();
  EXPECT_TRUE((*ring)->Keys().empty());
  EXPECT_EQ((*ring)->Jwks(), R"({"keys":[]})");
}

}  // namespace
}  // namespace kw::identity
