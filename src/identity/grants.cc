#include "identity/grants.h"

#include <fmt/format.h>

#include <openssl/crypto.h>

#include "core/base64url.h"
#include "crypto/crypto.h"

namespace kw::identity {
namespace {

std::string HashSecret(std::string_view secret) {
  return Base64UrlEncode(crypto::Sha256(secret));
}

std::string NewSecret() { return Base64UrlEncode(crypto::RandomBytes(32)); }

bool IsUnreserved(char c) {
  return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' ||
         c == '.' || c == '_' || c == '~';
}

bool EqualConstantTime(std::string_view a, std::string_view b) {
  return a.size() == b.size() && CRYPTO_memcmp(a.data(), b.data(), a.size()) == 0;
}

}  // namespace

std::string_view GrantRefusalName(GrantRefusal r) {
  switch (r) {
    case GrantRefusal::kNone: return "none";
    case GrantRefusal::kUnknown: return "unknown";
    case GrantRefusal::kExpired: return "expired";
    case GrantRefusal::kWrongClient: return "wrong_client";
    case GrantRefusal::kWrongRedirect: return "wrong_redirect_uri";
    case GrantRefusal::kPkceMismatch: return "pkce_mismatch";
    case GrantRefusal::kCodeReplayed: return "code_replayed";
    case GrantRefusal::kRefreshReused: return "refresh_token_reused";
    case GrantRefusal::kFamilyRevoked: return "family_revoked";
  }
  return "unknown";
}

std::string PkceS256(std::string_view code_verifier) {
  return Base64UrlEncode(crypto::Sha256(code_verifier));
}

bool ValidCodeVerifier(std::string_view v) {
  if (v.size() < 43 || v.size() > 128) return false;
  for (char c : v) {
    if (!IsUnreserved(c)) return false;
  }
  return true;
}

bool ValidS256Challenge(std::string_view c) {
  if (c.size() != 43) return false;
  auto decoded = Base64UrlDecode(c);
  return decoded.ok() && decoded->size() == 32;
}

Result<std::unique_ptr<GrantStore>> GrantStore::Open(std::shared_ptr<sqlite::Db> db,
                                                     const Clock* clock) {
  KW_RETURN_IF_ERROR(db->Exec(
      "CREATE TABLE IF NOT EXISTS auth_codes (code_hash TEXT PRIMARY KEY, client_id TEXT NOT NULL, "
      "tenant_id TEXT NOT NULL, user_id TEXT NOT NULL, username TEXT NOT NULL, "
      "redirect_uri TEXT NOT NULL, code_challenge TEXT NOT NULL, scope TEXT NOT NULL, "
      "audience TEXT NOT NULL, nonce TEXT NOT NULL, auth_time INTEGER NOT NULL, "
      "expires INTEGER NOT NULL, used_at INTEGER NOT NULL, family_id TEXT NOT NULL) STRICT;"
      "CREATE TABLE IF NOT EXISTS refresh_families (family_id TEXT PRIMARY KEY, "
      "client_id TEXT NOT NULL, tenant_id TEXT NOT NULL, user_id TEXT NOT NULL, "
      "username TEXT NOT NULL, scope TEXT NOT NULL, audience TEXT NOT NULL, "
      "auth_time INTEGER NOT NULL, created INTEGER NOT NULL, expires INTEGER NOT NULL, "
      "revoked_at INTEGER NOT NULL, revoked_reason TEXT NOT NULL) STRICT;"
      "CREATE TABLE IF NOT EXISTS refresh_tokens (token_hash TEXT PRIMARY KEY, "
      "family_id TEXT NOT NULL, expires INTEGER NOT NULL, used_at INTEGER NOT NULL) STRICT;"
      "CREATE INDEX IF NOT EXISTS refresh_tokens_family ON refresh_tokens (family_id);"
      "CREATE TABLE IF NOT EXISTS family_jtis (jti TEXT PRIMARY KEY, family_id TEXT NOT NULL, "
      "exp INTEGER NOT NULL) STRICT;"
      "CREATE INDEX IF NOT EXISTS family_jtis_family ON family_jtis (family_id);"));
  return std::unique_ptr<GrantStore>(new GrantStore(std::move(db), clock));
}

Result<std::string> GrantStore::IssueCode(const Grant& g, std::string_view redirect_uri,
                                          std::string_view code_challenge) {
  std::lock_guard lock(mu_);
  std::string code = NewSecret();
  KW_ASSIGN_OR_RETURN(
      sqlite::Statement st,
      db_->Prepare("INSERT INTO auth_codes VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 0, '')"));
  st.Bind(1, HashSecret(code))
      .Bind(2, g.client_id)
      .Bind(3, g.tenant_id)
      .Bind(4, g.user_id)
      .Bind(5, g.username)
      .Bind(6, redirect_uri)
      .Bind(7, code_challenge)
      .Bind(8, g.scope)
      .Bind(9, g.audience)
      .Bind(10, g.nonce)
      .Bind(11, g.auth_time)
      .Bind(12, clock_->NowSeconds() + kCodeLifetimeSeconds);
  KW_RETURN_IF_ERROR(st.Run().WithContext("storing an authorization code"));
  return code;
}

Result<std::string> GrantStore::NewRefreshLocked(const std::string& family_id, int64_t expires) {
  std::string token = NewSecret();
  KW_ASSIGN_OR_RETURN(sqlite::Statement st,
                      db_->Prepare("INSERT INTO refresh_tokens VALUES (?, ?, ?, 0)"));
  KW_RETURN_IF_ERROR(st.Bind(1, HashSecret(token)).Bind(2, family_id).Bind(3, expires).Run());
  return token;
}

Result<std::vector<std::string>> GrantStore::RevokeFamilyLocked(const std::string& family_id,
                                                                std::string_view reason,
                                                                int64_t now) {
  KW_ASSIGN_OR_RETURN(sqlite::Statement up,
                      db_->Prepare("UPDATE refresh_families SET revoked_at = ?, revoked_reason = ? "
                                   "WHERE family_id = ? AND revoked_at = 0"));
  KW_RETURN_IF_ERROR(up.Bind(1, now).Bind(2, reason).Bind(3, family_id).Run());
  KW_ASSIGN_OR_RETURN(sqlite::Statement q,
                      db_->Prepare("SELECT jti FROM family_jtis WHERE family_id = ? AND exp >= ?"));
  q.Bind(1, family_id).Bind(2, now);
  std::vector<std::string> jtis;
  while (true) {
    KW_ASSIGN_OR_RETURN(bool row, q.Step());
    if (!row) break;
    jtis.push_back(q.Text(0));
  }
  return jtis;
}

Result<GrantStore::Redeemed> GrantStore::RedeemCode(std::string_view code,
                                                    std::string_view client_id,
                                                    std::string_view redirect_uri,
                                                    std::string_view code_verifier) {
  std::lock_guard lock(mu_);
  Redeemed out;
  const int64_t now = clock_->NowSeconds();
  Status s = db_->Transaction([&]() -> Status {
    KW_ASSIGN_OR_RETURN(
        sqlite::Statement q,
        db_->Prepare("SELECT client_id, tenant_id, user_id, username, redirect_uri, "
                     "code_challenge, scope, audience, nonce, auth_time, expires, used_at, "
                     "family_id FROM auth_codes WHERE code_hash = ?"));
    q.Bind(1, HashSecret(code));
    KW_ASSIGN_OR_RETURN(bool row, q.Step());
    if (!row) {
      out.refusal = GrantRefusal::kUnknown;
      return Status::Ok();
    }
    Grant g{q.Text(0), q.Text(1), q.Text(2), q.Text(3), q.Text(6), q.Text(7), q.Text(8), q.Int(9)};
    const std::string stored_redirect = q.Text(4);
    const std::string challenge = q.Text(5);
    const int64_t expires = q.Int(10);
    const int64_t used_at = q.Int(11);
    const std::string family = q.Text(12);
    if (used_at != 0) {
      out.refusal = GrantRefusal::kCodeReplayed;
      out.family_id = family;
      if (!family.empty()) {
        KW_ASSIGN_OR_RETURN(out.revoked_jtis,
                            RevokeFamilyLocked(family, "authorization code replayed", now));
      }
      return Status::Ok();
    }
    if (g.client_id != client_id) {
      out.refusal = GrantRefusal::kWrongClient;
    } else if (now >= expires) {
      out.refusal = GrantRefusal::kExpired;
    } else if (stored_redirect != redirect_uri) {
      out.refusal = GrantRefusal::kWrongRedirect;
    } else if (!ValidCodeVerifier(code_verifier) ||
               !EqualConstantTime(PkceS256(code_verifier), challenge)) {
      out.refusal = GrantRefusal::kPkceMismatch;
    }
    // A failed attempt spends the code too: a code that met a wrong verifier may be in the hands
    // of someone guessing.
    out.family_id = Base64UrlEncode(crypto::RandomBytes(16));
    KW_ASSIGN_OR_RETURN(sqlite::Statement spend,
                        db_->Prepare("UPDATE auth_codes SET used_at = ?, family_id = ? "
                                     "WHERE code_hash = ?"));
    KW_RETURN_IF_ERROR(spend.Bind(1, now)
                           .Bind(2, out.refusal == GrantRefusal::kNone ? out.family_id : "")
                           .Bind(3, HashSecret(code))
                           .Run());
    if (out.refusal != GrantRefusal::kNone) {
      out.family_id.clear();
      return Status::Ok();
    }
    const int64_t family_expires = now + kRefreshLifetimeSeconds;
    KW_ASSIGN_OR_RETURN(
        sqlite::Statement fam,
        db_->Prepare("INSERT INTO refresh_families VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 0, '')"));
    KW_RETURN_IF_ERROR(fam.Bind(1, out.family_id)
                           .Bind(2, g.client_id)
                           .Bind(3, g.tenant_id)
                           .Bind(4, g.user_id)
                           .Bind(5, g.username)
                           .Bind(6, g.scope)
                           .Bind(7, g.audience)
                           .Bind(8, g.auth_time)
                           .Bind(9, now)
                           .Bind(10, family_expires)
                           .Run());
    KW_ASSIGN_OR_RETURN(out.refresh_token, NewRefreshLocked(out.family_id, family_expires));
    out.grant = std::move(g);
    return Status::Ok();
  });
  KW_RETURN_IF_ERROR(s.WithContext("redeeming an authorization code"));
  return out;
}

Result<GrantStore::Redeemed> GrantStore::RotateRefresh(std::string_view refresh_token,
                                                       std::string_view client_id) {
  std::lock_guard lock(mu_);
  Redeemed out;
  const int64_t now = clock_->NowSeconds();
  Status s = db_->Transaction([&]() -> Status {
    KW_ASSIGN_OR_RETURN(
        sqlite::Statement q,
        db_->Prepare("SELECT t.family_id, t.expires, t.used_at, f.client_id, f.tenant_id, "
                     "f.user_id, f.username, f.scope, f.audience, f.auth_time, f.expires, "
                     "f.revoked_at FROM refresh_tokens t JOIN refresh_families f "
                     "ON f.family_id = t.family_id WHERE t.token_hash = ?"));
    q.Bind(1, HashSecret(refresh_token));
    KW_ASSIGN_OR_RETURN(bool row, q.Step());
    if (!row) {
      out.refusal = GrantRefusal::kUnknown;
      return Status::Ok();
    }
    out.family_id = q.Text(0);
    const int64_t expires = q.Int(1);
    const int64_t used_at = q.Int(2);
    Grant g{q.Text(3), q.Text(4), q.Text(5), q.Text(6), q.Text(7), q.Text(8), "", q.Int(9)};
    const int64_t family_expires = q.Int(10);
    const int64_t revoked_at = q.Int(11);
    if (g.client_id != client_id) {
      out.refusal = GrantRefusal::kWrongClient;
    } else if (revoked_at != 0) {
      out.refusal = GrantRefusal::kFamilyRevoked;
    } else if (used_at != 0) {
      out.refusal = GrantRefusal::kRefreshReused;
      KW_ASSIGN_OR_RETURN(out.revoked_jtis,
                          RevokeFamilyLocked(out.family_id, "refresh token reused", now));
    } else if (now >= expires) {
      out.refusal = GrantRefusal::kExpired;
    }
    if (out.refusal != GrantRefusal::kNone) return Status::Ok();
    KW_ASSIGN_OR_RETURN(sqlite::Statement spend,
                        db_->Prepare("UPDATE refresh_tokens SET used_at = ? WHERE token_hash = ?"));
    KW_RETURN_IF_ERROR(spend.Bind(1, now).Bind(2, HashSecret(refresh_token)).Run());
    KW_ASSIGN_OR_RETURN(out.refresh_token, NewRefreshLocked(out.family_id, family_expires));
    out.grant = std::move(g);
    return Status::Ok();
  });
  KW_RETURN_IF_ERROR(s.WithContext("rotating a refresh token"));
  return out;
}

Status GrantStore::AddFamilyJti(std::string_view family_id, std::string_view jti, int64_t exp) {
  std::lock_guard lock(mu_);
  KW_ASSIGN_OR_RETURN(sqlite::Statement st,
                      db_->Prepare("INSERT OR IGNORE INTO family_jtis VALUES (?, ?, ?)"));
  return st.Bind(1, jti).Bind(2, family_id).Bind(3, exp).Run();
}

Result<std::vector<std::string>> GrantStore::RevokeFamilyOf(std::string_view refresh_token,
                                                            std::string_view client_id,
                                                            std::string_view reason) {
  std::lock_guard lock(mu_);
  std::vector<std::string> jtis;
  bool found = false;
  Status s = db_->Transaction([&]() -> Status {
    KW_ASSIGN_OR_RETURN(
        sqlite::Statement q,
        db_->Prepare("SELECT t.family_id FROM refresh_tokens t JOIN refresh_families f "
                     "ON f.family_id = t.family_id WHERE t.token_hash = ? AND f.client_id = ?"));
    q.Bind(1, HashSecret(refresh_token)).Bind(2, client_id);
    KW_ASSIGN_OR_RETURN(bool row, q.Step());
    if (!row) return Status::Ok();
    found = true;
    KW_ASSIGN_OR_RETURN(jtis, RevokeFamilyLocked(q.Text(0), reason, clock_->NowSeconds()));
    return Status::Ok();
  });
  KW_RETURN_IF_ERROR(s);
  if (!found) return NotFoundError("no such refresh token for this client");
  return jtis;
}

Result<int64_t> GrantStore::Prune() {
  std::lock_guard lock(mu_);
  const int64_t now = clock_->NowSeconds();
  int64_t removed = 0;
  for (const char* sql : {"DELETE FROM auth_codes WHERE expires < ? - 86400",
                          "DELETE FROM refresh_tokens WHERE expires < ?",
                          "DELETE FROM refresh_families WHERE expires < ?",
                          "DELETE FROM family_jtis WHERE exp < ?"}) {
    KW_ASSIGN_OR_RETURN(sqlite::Statement st, db_->Prepare(sql));
    KW_RETURN_IF_ERROR(st.Bind(1, now).Run());
    removed += db_->Changes();
  }
  return removed;
}

}  // namespace kw::identity
