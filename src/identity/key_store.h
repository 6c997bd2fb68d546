// Signing-key records and where they are kept.
//
// A KeyRecord is one signing key of one issuer: its public half in the clear, its private half
// only as a sealed-box blob (sealed_box.h) bound to the key's kid, issuer, issuer kind, tenant
// and algorithm, plus the times that drive its life cycle (see key_ring.h). A KeyStore keeps
// records; it never sees a private key in the clear.
//
// SqliteKeyStore schema (table `keys`, one row per key, STRICT; times are Unix seconds, 0 for
// "not yet"):
//   kid TEXT PRIMARY KEY       -- unique across every issuer, so a kid is never ambiguous
//   issuer TEXT, issuer_kind TEXT ('consumer'|'enterprise'), tenant_id TEXT ('' if none)
//   alg TEXT ('ES256'|'EdDSA'|'RS256'|'PS256')
//   created, not_before, not_after INTEGER
//   state TEXT ('published'|'active'|'retiring'|'retired'|'revoked')
//   sealed_private BLOB        -- Seal(master, PKCS#8 PEM, KeyBlobAssociatedData(...))
//   master_key_id TEXT         -- MasterKey::Fingerprint() of the key that sealed it
//   public_jwk TEXT            -- RFC 7638 members only
//   revoked_reason TEXT
//   activated_at, retiring_at, verify_until, retired_at, revoked_at, first_used_at,
//   age_warned_at INTEGER
// with an index on issuer. Only the life-cycle columns ever change after insertion: Update
// matches on kid *and* issuer, kind and tenant, so a key can never be moved to another issuer.
#pragma once

#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "core/sqlite.h"
#include "core/status.h"
#include "crypto/crypto.h"
#include "identity/audit_sink.h"
#include "token/trust_store.h"

namespace kw::identity {

// The issuer a key ring (and each of its keys) belongs to.
struct IssuerIdentity {
  std::string issuer;  // exact issuer URL; never a "{tenantid}" template
  token::IssuerKind kind = token::IssuerKind::kEnterprise;
  std::string tenant_id;  // required for enterprise; optional for consumer

  // InvalidArgument: empty issuer, a "{tenantid}" template (each tenant gets its own ring, so one
  // stolen key never signs for two tenants), or an enterprise issuer without a tenant.
  Status Validate() const;
  // "enterprise issuer 'https://...' (tenant 'T')" / "consumer issuer 'https://...'".
  std::string Describe() const;
  bool operator==(const IssuerIdentity&) const = default;
};

// The life-cycle states of a signing key, in order. Revoked can follow any state and is final.
enum class SigningKeyState {
  kPublished,  // in the JWKS; does not sign yet (pre-publication)
  kActive,     // the key that signs
  kRetiring,   // signs no more; verifies until its last token has expired
  kRetired,    // verifies nothing; gone from the JWKS
  kRevoked,    // verifies nothing, at once; gone from the JWKS
};

std::string_view SigningKeyStateName(SigningKeyState s);  // "published", "active", ...
std::optional<SigningKeyState> ParseSigningKeyState(std::string_view s);

struct KeyRecord {
  std::string kid;
  IssuerIdentity issuer;
  crypto::Algorithm alg = crypto::Algorithm::kES256;
  int64_t created = 0;
  int64_t not_before = 0;  // first moment the key may sign (created + pre-publication period)
  int64_t not_after = 0;   // created + maximum key age: never signs or verifies from then on
  SigningKeyState state = SigningKeyState::kPublished;
  std::string sealed_private;  // sealed-box blob; never the private key in the clear
  std::string master_key_id;   // fingerprint of the master key that sealed it
  std::string public_jwk;
  std::string revoked_reason;
  int64_t activated_at = 0;
  int64_t retiring_at = 0;
  int64_t verify_until = 0;  // retiring keys: when the last token they signed expires
  int64_t retired_at = 0;
  int64_t revoked_at = 0;
  int64_t first_used_at = 0;
  int64_t age_warned_at = 0;
};

// {"keys":[{kid, issuer, issuer_kind, tenant, alg, state, created, not_before, not_after,
// age_days, activated_at, retiring_at, verify_until, retired_at, revoked_at, revoked_reason,
// first_used_at, master_key_id}, ...]}: what operators see of keys (never a sealed blob).
std::string KeyRecordsJson(const std::vector<KeyRecord>& records, int64_t now);

// Persistence of key records. Implementations must be thread-safe.
class KeyStore {
 public:
  virtual ~KeyStore() = default;
  // Every record stored under this issuer URL (whatever its kind or tenant: the caller checks
  // that they are its own), oldest first. DataLoss for a row that cannot be read back.
  virtual Result<std::vector<KeyRecord>> Load(std::string_view issuer) = 0;
  // Inserts a new record. AlreadyExists if the kid is taken, by any issuer.
  virtual Status Save(const KeyRecord& record) = 0;
  // Rewrites the life-cycle fields (state, revoked_reason and the *_at / verify_until times) of
  // the record with this kid, issuer, kind and tenant. NotFound if there is none.
  virtual Status Update(const KeyRecord& record) = 0;
};

// KeyStore on an SQLite database (WAL mode; see core/sqlite.h). The `keys` table may share a
// database with other identity tables (the directory).
class SqliteKeyStore final : public KeyStore {
 public:
  // Creates the table if missing. `db` may be shared with other users of the same database.
  static Result<std::unique_ptr<SqliteKeyStore>> Open(std::shared_ptr<sqlite::Db> db);
  // Opens (creating with mode 0600 if missing) the database file at `path`.
  static Result<std::unique_ptr<SqliteKeyStore>> OpenFile(const std::string& path);

  Result<std::vector<KeyRecord>> Load(std::string_view issuer) override;
  Status Save(const KeyRecord& record) override;
  Status Update(const KeyRecord& record) override;

  // Every record of every issuer, oldest first (for `keyward keys list`).
  Result<std::vector<KeyRecord>> LoadAll();
  // The record with this kid. NotFound if there is none.
  Result<KeyRecord> LoadKid(std::string_view kid);
  // SQLite's data_version of this connection: it changes whenever another connection (another
  // process, e.g. `keyward keys revoke`) commits to the database, and only then. A cheap test of
  // whether RefreshFromStore has anything to find.
  Result<int64_t> DataVersion();

  const std::shared_ptr<sqlite::Db>& db() const { return db_; }

 private:
  explicit SqliteKeyStore(std::shared_ptr<sqlite::Db> db) : db_(std::move(db)) {}
  std::mutex mu_;  // one statement at a time on the shared connection
  std::shared_ptr<sqlite::Db> db_;
};

// Revokes key `kid` directly in `store`, for an operator working beside a running service (the
// service applies it within its key refresh interval, see service.h) or with none running.
// Records a key_revoked event in `audit` (if not null). Returns the record as stored. NotFound
// for an unknown kid; InvalidArgument for an empty reason; an already revoked key is returned
// unchanged.
Result<KeyRecord> RevokeStoredKey(SqliteKeyStore& store, std::string_view kid,
                                  std::string_view reason, int64_t now, AuditSink* audit);

}  // namespace kw::identity
