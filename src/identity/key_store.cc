#include "identity/key_store.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include <fmt/format.h>

#include "core/json.h"
#include "identity/audit_sink.h"

namespace kw::identity {
namespace {

constexpr std::string_view kSchema = R"sql(
CREATE TABLE IF NOT EXISTS keys (
  kid TEXT PRIMARY KEY,
  issuer TEXT NOT NULL,
  issuer_kind TEXT NOT NULL CHECK (issuer_kind IN ('consumer', 'enterprise')),
  tenant_id TEXT NOT NULL,
  alg TEXT NOT NULL,
  created INTEGER NOT NULL,
  not_before INTEGER NOT NULL,
  not_after INTEGER NOT NULL,
  state TEXT NOT NULL
    CHECK (state IN ('published', 'active', 'retiring', 'retired', 'revoked')),
  sealed_private BLOB NOT NULL,
  master_key_id TEXT NOT NULL,
  public_jwk TEXT NOT NULL,
  revoked_reason TEXT NOT NULL DEFAULT '',
  activated_at INTEGER NOT NULL DEFAULT 0,
  retiring_at INTEGER NOT NULL DEFAULT 0,
  verify_until INTEGER NOT NULL DEFAULT 0,
  retired_at INTEGER NOT NULL DEFAULT 0,
  revoked_at INTEGER NOT NULL DEFAULT 0,
  first_used_at INTEGER NOT NULL DEFAULT 0,
  age_warned_at INTEGER NOT NULL DEFAULT 0
) STRICT;
CREATE INDEX IF NOT EXISTS keys_by_issuer ON keys (issuer);
)sql";

constexpr std::string_view kColumns =
    "kid, issuer, issuer_kind, tenant_id, alg, created, not_before, not_after, state, "
    "sealed_private, master_key_id, public_jwk, revoked_reason, activated_at, retiring_at, "
    "verify_until, retired_at, revoked_at, first_used_at, age_warned_at";

Result<KeyRecord> ReadRow(const sqlite::Statement& st) {
  KeyRecord r;
  r.kid = st.Text(0);
  auto bad = [&](std::string_view column, const std::string& value) {
    return DataLossError(
        fmt::format("key store: key '{}' has an invalid {} '{}'", r.kid, column, value));
  };
  r.issuer.issuer = st.Text(1);
  std::string kind = st.Text(2);
  auto parsed_kind = token::ParseIssuerKind(kind);
  if (!parsed_kind) return bad("issuer_kind", kind);
  r.issuer.kind = *parsed_kind;
  r.issuer.tenant_id = st.Text(3);
  std::string alg = st.Text(4);
  auto parsed_alg = crypto::ParseAlgorithm(alg);
  if (!parsed_alg) return bad("alg", alg);
  r.alg = *parsed_alg;
  r.created = st.Int(5);
  r.not_before = st.Int(6);
  r.not_after = st.Int(7);
  std::string state = st.Text(8);
  auto parsed_state = ParseSigningKeyState(state);
  if (!parsed_state) return bad("state", state);
  r.state = *parsed_state;
  r.sealed_private = st.Blob(9);
  r.master_key_id = st.Text(10);
  r.public_jwk = st.Text(11);
  r.revoked_reason = st.Text(12);
  r.activated_at = st.Int(13);
  r.retiring_at = st.Int(14);
  r.verify_until = st.Int(15);
  r.retired_at = st.Int(16);
  r.revoked_at = st.Int(17);
  r.first_used_at = st.Int(18);
  r.age_warned_at = st.Int(19);
  return r;
}

}  // namespace

// ---- IssuerIdentity ----

Status IssuerIdentity::Validate() const {
  if (issuer.empty()) return InvalidArgumentError("key ring issuer is empty");
  if (issuer.find(token::kTenantPlaceholder) != std::string::npos) {
    return InvalidArgumentError(fmt::format(
        "key ring issuer '{}' is a tenant template; every tenant gets its own ring and issuer",
        issuer));
  }
  if (kind == token::IssuerKind::kEnterprise && tenant_id.empty()) {
    return InvalidArgumentError(
        fmt::format("enterprise key ring for issuer '{}' needs its tenant id", issuer));
  }
  return Status::Ok();
}

std::string IssuerIdentity::Describe() const {
  if (tenant_id.empty()) {
    return fmt::format("{} issuer '{}'", token::IssuerKindName(kind), issuer);
  }
  return fmt::format("{} issuer '{}' (tenant '{}')", token::IssuerKindName(kind), issuer,
                     tenant_id);
}

// ---- SigningKeyState ----

std::string_view SigningKeyStateName(SigningKeyState s) {
  switch (s) {
    case SigningKeyState::kPublished: return "published";
    case SigningKeyState::kActive: return "active";
    case SigningKeyState::kRetiring: return "retiring";
    case SigningKeyState::kRetired: return "retired";
    case SigningKeyState::kRevoked: return "revoked";
  }
  return "?";
}

std::optional<SigningKeyState> ParseSigningKeyState(std::string_view s) {
  if (s == "published") return SigningKeyState::kPublished;
  if (s == "active") return SigningKeyState::kActive;
  if (s == "retiring") return SigningKeyState::kRetiring;
  if (s == "retired") return SigningKeyState::kRetired;
  if (s == "revoked") return SigningKeyState::kRevoked;
  return std::nullopt;
}

// ---- SqliteKeyStore ----

Result<std::unique_ptr<SqliteKeyStore>> SqliteKeyStore::Open(std::shared_ptr<sqlite::Db> db) {
  if (!db) return InvalidArgumentError("SqliteKeyStore needs a database");
  KW_RETURN_IF_ERROR(db->Exec(kSchema).WithContext("key store schema"));
  return std::unique_ptr<SqliteKeyStore>(new SqliteKeyStore(std::move(db)));
}

Result<std::unique_ptr<SqliteKeyStore>> SqliteKeyStore::OpenFile(const std::string& path) {
  // Create the file ourselves so that it starts with mode 0600 (SQLite gives the -wal and -shm
  // files the database file's permissions). The private keys in it are sealed, but the public
  // keys, kids and schedule are nobody else's business either.
  int fd = ::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600);
  if (fd < 0) {
    return UnavailableError(
        fmt::format("cannot open key database {}: {}", path, std::strerror(errno)));
  }
  ::close(fd);
  KW_ASSIGN_OR_RETURN(std::unique_ptr<sqlite::Db> db, sqlite::Db::Open(path));
  return Open(std::shared_ptr<sqlite::Db>(std::move(db)));
}

Result<std::vector<KeyRecord>> SqliteKeyStore::Load(std::string_view issuer) {
  std::lock_guard lock(mu_);
  KW_ASSIGN_OR_RETURN(
      sqlite::Statement st,
      db_->Prepare(fmt::format("SELECT {} FROM keys WHERE issuer = ? ORDER BY created, kid",
                               kColumns)));
  st.Bind(1, issuer);
  std::vector<KeyRecord> out;
  while (true) {
    KW_ASSIGN_OR_RETURN(bool row, st.Step());
    if (!row) break;
    KW_ASSIGN_OR_RETURN(KeyRecord r, ReadRow(st));
    out.push_back(std::move(r));
  }
  return out;
}

std::string KeyRecordsJson(const std::vector<KeyRecord>& records, int64_t now) {
  json::Writer w;
  w.BeginObject().Key("keys").BeginArray();
  for (const KeyRecord& r : records) {
    w.BeginObject()
        .Key("kid").String(r.kid)
        .Key("issuer").String(r.issuer.issuer)
        .Key("issuer_kind").String(token::IssuerKindName(r.issuer.kind))
        .Key("tenant").String(r.issuer.tenant_id)
        .Key("alg").String(crypto::AlgorithmName(r.alg))
        .Key("state").String(SigningKeyStateName(r.state))
        .Key("created").Int(r.created)
        .Key("not_before").Int(r.not_before)
        .Key("not_after").Int(r.not_after)
        .Key("age_days").Int((now - r.created) / 86400)
        .Key("activated_at").Int(r.activated_at)
        .Key("retiring_at").Int(r.retiring_at)
        .Key("verify_until").Int(r.verify_until)
        .Key("retired_at").Int(r.retired_at)
        .Key("revoked_at").Int(r.revoked_at)
        .Key("revoked_reason").String(r.revoked_reason)
        .Key("first_used_at").Int(r.first_used_at)
        .Key("master_key_id").String(r.master_key_id)
        .EndObject();
  }
  w.EndArray().EndObject();
  return w.Take();
}

Result<std::vector<KeyRecord>> SqliteKeyStore::LoadAll() {
  std::lock_guard lock(mu_);
  KW_ASSIGN_OR_RETURN(
      sqlite::Statement st,
      db_->Prepare(fmt::format("SELECT {} FROM keys ORDER BY created, kid", kColumns)));
  std::vector<KeyRecord> out;
  while (true) {
    KW_ASSIGN_OR_RETURN(bool row, st.Step());
    if (!row) break;
    KW_ASSIGN_OR_RETURN(KeyRecord r, ReadRow(st));
    out.push_back(std::move(r));
  }
  return out;
}

Result<KeyRecord> SqliteKeyStore::LoadKid(std::string_view kid) {
  std::lock_guard lock(mu_);
  KW_ASSIGN_OR_RETURN(sqlite::Statement st,
                      db_->Prepare(fmt::format("SELECT {} FROM keys WHERE kid = ?", kColumns)));
  st.Bind(1, kid);
  KW_ASSIGN_OR_RETURN(bool row, st.Step());
  if (!row) return NotFoundError(fmt::format("no key '{}'", kid));
  return ReadRow(st);
}

Result<int64_t> SqliteKeyStore::DataVersion() {
  std::lock_guard lock(mu_);
  KW_ASSIGN_OR_RETURN(sqlite::Statement st, db_->Prepare("PRAGMA data_version"));
  KW_ASSIGN_OR_RETURN(bool row, st.Step());
  if (!row) return InternalError("PRAGMA data_version returned no row");
  return st.Int(0);
}

Status SqliteKeyStore::Save(const KeyRecord& r) {
  std::lock_guard lock(mu_);
  KW_ASSIGN_OR_RETURN(
      sqlite::Statement st,
      db_->Prepare(fmt::format("INSERT INTO keys ({}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, "
                               "?, ?, ?, ?, ?, ?, ?, ?, ?)",
                               kColumns)));
  st.Bind(1, r.kid)
      .Bind(2, r.issuer.issuer)
      .Bind(3, token::IssuerKindName(r.issuer.kind))
      .Bind(4, r.issuer.tenant_id)
      .Bind(5, crypto::AlgorithmName(r.alg))
      .Bind(6, r.created)
      .Bind(7, r.not_before)
      .Bind(8, r.not_after)
      .Bind(9, SigningKeyStateName(r.state))
      .BindBlob(10, r.sealed_private)
      .Bind(11, r.master_key_id)
      .Bind(12, r.public_jwk)
      .Bind(13, r.revoked_reason)
      .Bind(14, r.activated_at)
      .Bind(15, r.retiring_at)
      .Bind(16, r.verify_until)
      .Bind(17, r.retired_at)
      .Bind(18, r.revoked_at)
      .Bind(19, r.first_used_at)
      .Bind(20, r.age_warned_at);
  Status s = st.Run();
  // A taken kid (by any issuer) is a constraint violation: AlreadyExists, with SQLite's words.
  return s.WithContext(fmt::format("key store: saving key '{}'", r.kid));
}

Status SqliteKeyStore::Update(const KeyRecord& r) {
  std::lock_guard lock(mu_);
  // RETURNING instead of sqlite3_changes(): the connection may be shared with other threads.
  KW_ASSIGN_OR_RETURN(
      sqlite::Statement st,
      db_->Prepare("UPDATE keys SET state = ?, revoked_reason = ?, activated_at = ?, "
                   "retiring_at = ?, verify_until = ?, retired_at = ?, revoked_at = ?, "
                   "first_used_at = ?, age_warned_at = ? "
                   "WHERE kid = ? AND issuer = ? AND issuer_kind = ? AND tenant_id = ? "
                   "RETURNING kid"));
  st.Bind(1, SigningKeyStateName(r.state))
      .Bind(2, r.revoked_reason)
      .Bind(3, r.activated_at)
      .Bind(4, r.retiring_at)
      .Bind(5, r.verify_until)
      .Bind(6, r.retired_at)
      .Bind(7, r.revoked_at)
      .Bind(8, r.first_used_at)
      .Bind(9, r.age_warned_at)
      .Bind(10, r.kid)
      .Bind(11, r.issuer.issuer)
      .Bind(12, token::IssuerKindName(r.issuer.kind))
      .Bind(13, r.issuer.tenant_id);
  auto row = st.Step();
  if (!row.ok()) return row.status().WithContext(fmt::format("key store: updating key '{}'", r.kid));
  if (!*row) {
    return NotFoundError(
        fmt::format("key store: no key '{}' of {}", r.kid, r.issuer.Describe()));
  }
  return st.Run().WithContext(fmt::format("key store: updating key '{}'", r.kid));
}

Result<KeyRecord> RevokeStoredKey(SqliteKeyStore& store, std::string_view kid,
                                  std::string_view reason, int64_t now, AuditSink* audit) {
  if (reason.empty()) return InvalidArgumentError("a revocation needs a reason");
  KW_ASSIGN_OR_RETURN(KeyRecord r, store.LoadKid(kid));
  if (r.state == SigningKeyState::kRevoked) return r;
  SigningKeyState was = r.state;
  r.state = SigningKeyState::kRevoked;
  r.revoked_at = now;
  r.revoked_reason.assign(reason);
  KW_RETURN_IF_ERROR(store.Update(r));
  if (audit) {
    AuditEvent e;
    e.time = now;
    e.type = AuditEventType::kKeyRevoked;
    e.issuer = r.issuer.issuer;
    e.issuer_kind = r.issuer.kind;
    e.tenant_id = r.issuer.tenant_id;
    e.kid = r.kid;
    e.detail = fmt::format("revoked in the key store while {}: {}", SigningKeyStateName(was), reason);
    audit->Record(e);
  }
  return r;
}

}  // namespace kw::identity
