// GrantStore: authorization codes (RFC 6749 §4.1 with PKCE, RFC 7636) and rotating refresh
// tokens with reuse detection (OAuth 2.0 Security BCP, RFC 9700 §4.14), on the embedded store.
//
// Codes and refresh tokens are 32 random bytes, base64url; only their SHA-256 is stored, so a
// copy of the database redeems nothing. Tables (STRICT; times are Unix seconds):
//
//   auth_codes   code_hash TEXT PRIMARY KEY, client_id, tenant_id, user_id, username,
//                redirect_uri, code_challenge, scope, audience, nonce TEXT, auth_time,
//                expires INTEGER, used_at INTEGER (0: not yet), family_id TEXT ('' until used)
//   refresh_tokens token_hash TEXT PRIMARY KEY, family_id TEXT, expires INTEGER,
//                used_at INTEGER (0: the family's current token)
//   refresh_families family_id TEXT PRIMARY KEY, client_id, tenant_id, user_id, username, scope,
//                audience TEXT, auth_time, created, expires INTEGER, revoked_at INTEGER,
//                revoked_reason TEXT
//   family_jtis  jti TEXT PRIMARY KEY, family_id TEXT, exp INTEGER: the access tokens issued
//                in a family, so that revoking the family revokes them too
//
// Rules enforced here (the token endpoint maps each refusal to invalid_grant):
//  - A code is redeemed once, by the client it was issued to, with the same redirect_uri, within
//    its lifetime, with a code_verifier whose S256 hash is the code_challenge. A second redemption
//    is a replay: it fails and revokes the family the first redemption started (RFC 6749 §4.1.2).
//  - A refresh token is used once: using it returns a new one of the same family and marks the
//    old one used. Using a used token again is reuse (a stolen copy, or the victim after the
//    thief): the whole family is revoked, with the access tokens it issued.
//
// Thread safety: all methods are thread-safe; each redemption is one SQLite transaction, so two
// concurrent redemptions of one code or refresh token cannot both succeed.
#pragma once

#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <vector>

#include "core/clock.h"
#include "core/sqlite.h"
#include "core/status.h"

namespace kw::identity {

// What a code or a refresh family grants: who, to which client, for what.
struct Grant {
  std::string client_id;
  std::string tenant_id;
  std::string user_id;
  std::string username;
  std::string scope;     // space-separated, as granted
  std::string audience;  // the access token's aud
  std::string nonce;     // OpenID Connect nonce (codes only; echoed in the ID token)
  int64_t auth_time = 0;
};

// Why a redemption failed. Every one is invalid_grant to the client; the distinction is for the
// audit record.
enum class GrantRefusal {
  kNone,
  kUnknown,          // no such code or refresh token
  kExpired,
  kWrongClient,      // issued to another client
  kWrongRedirect,    // redirect_uri differs from the authorization request's
  kPkceMismatch,     // code_verifier malformed or not matching the challenge
  kCodeReplayed,     // a used code; its family is now revoked
  kRefreshReused,    // a used refresh token; its family is now revoked
  kFamilyRevoked,    // the family was revoked earlier
};
std::string_view GrantRefusalName(GrantRefusal r);  // "unknown", "pkce_mismatch", ...

class GrantStore {
 public:
  static constexpr int64_t kCodeLifetimeSeconds = 60;
  static constexpr int64_t kRefreshLifetimeSeconds = 14 * 24 * 3600;

  // Creates the tables in `db` if missing. `db` must be a connection of the GrantStore's own:
  // its transactions would interleave with another user's statements.
  static Result<std::unique_ptr<GrantStore>> Open(std::shared_ptr<sqlite::Db> db,
                                                  const Clock* clock = Clock::System());

  // A new code for `grant`, bound to redirect_uri and the S256 `code_challenge` (43 base64url
  // characters, checked by the caller). Returns the code (shown once).
  Result<std::string> IssueCode(const Grant& grant, std::string_view redirect_uri,
                                std::string_view code_challenge);

  struct Redeemed {
    GrantRefusal refusal = GrantRefusal::kNone;
    Grant grant;            // when refusal == kNone
    std::string family_id;  // the new refresh family (kNone), or the family revoked by a replay
    std::string refresh_token;  // the family's first refresh token (kNone)
    std::vector<std::string> revoked_jtis;  // access tokens to revoke (kCodeReplayed)
  };
  // Redeems a code. Store errors are Status errors; a refused redemption is a Redeemed with its
  // refusal. On success the code is spent and a refresh family started.
  Result<Redeemed> RedeemCode(std::string_view code, std::string_view client_id,
                              std::string_view redirect_uri, std::string_view code_verifier);

  // Redeems a refresh token for its successor (Redeemed::refresh_token, same family).
  // kRefreshReused revokes the family and lists its access tokens in revoked_jtis.
  Result<Redeemed> RotateRefresh(std::string_view refresh_token, std::string_view client_id);

  // Records that access token `jti` (expiring at `exp`) was issued in `family_id`.
  Status AddFamilyJti(std::string_view family_id, std::string_view jti, int64_t exp);

  // Revokes a family (RFC 7009 revocation of one of its refresh tokens). Returns its live access
  // tokens' jtis. NotFound for an unknown refresh token.
  Result<std::vector<std::string>> RevokeFamilyOf(std::string_view refresh_token,
                                                  std::string_view client_id,
                                                  std::string_view reason);

  // Deletes expired codes, refresh tokens and families. Returns rows removed.
  Result<int64_t> Prune();

 private:
  GrantStore(std::shared_ptr<sqlite::Db> db, const Clock* clock)
      : db_(std::move(db)), clock_(clock) {}
  // REQUIRES: inside a transaction.
  Result<std::vector<std::string>> RevokeFamilyLocked(const std::string& family_id,
                                                      std::string_view reason, int64_t now);
  Result<std::string> NewRefreshLocked(const std::string& family_id, int64_t expires);

  std::mutex mu_;  // one statement or transaction at a time on db_
  std::shared_ptr<sqlite::Db> db_;
  const Clock* clock_;
};

// BASE64URL(SHA-256(verifier)) as RFC 7636 §4.2 S256 defines it.
std::string PkceS256(std::string_view code_verifier);
// RFC 7636 §4.1: 43..128 characters of [A-Za-z0-9-._~].
bool ValidCodeVerifier(std::string_view v);
// 43 base64url characters (a SHA-256 digest).
bool ValidS256Challenge(std::string_view c);

}  // namespace kw::identity
