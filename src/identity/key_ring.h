// KeyRing: the signing keys of one issuer, rotated automatically on a clock.
//
// The 2023 intrusion used a consumer signing key that was seven years old, expired on paper,
// never rotated and still trusted, and that could sign for enterprise tenants. A KeyRing makes
// each of those impossible:
//  - A ring belongs to exactly one issuer (URL, consumer or enterprise, tenant). Every key it
//    creates is bound to that issuer in its record, in its sealed blob's associated data, in the
//    JWKS ("issuer" member) and in the TrustStore. A ring refuses to load a key of any other
//    issuer or kind, so consumer and enterprise keys never share a ring.
//  - Keys rotate by themselves (policy below) and can never be used past a hard maximum age,
//    whether or not anyone calls Tick(): every signing and publishing decision is taken from
//    the clock at that moment, and the TrustStore carries each key's not_after.
//  - Keys that approach the maximum age raise a key_age_warning audit event and a log warning.
//  - Revoke() reaches every Verifier in the process (through the TrustStore) before it returns.
//
// Life of a key (times from the policy; P = pre-publication period, R = rotation interval,
// L = maximum token lifetime + clock skew, M = maximum key age):
//
//   created ── published (in JWKS, does not sign) ── at not_before = created + P: active (signs)
//     ── when its successor activates (R after it did), or at not_after − L at the latest:
//        retiring (verifies only) ── L later: retired (gone from JWKS and trust store)
//   revoked: from any state, at once, final.   not_after = created + M: nothing, whatever happens.
//
// A successor is generated P before it is due, so it is in the JWKS at least P before it signs.
// When no key can sign (first start before any key matured, all keys revoked, the ring neglected
// past a key's signing deadline), SigningKey() generates and activates a key at once, without
// pre-publication, and says so in a key_generated event and a warning.
//
// Thread safety: all methods are thread-safe (one mutex per ring). AuditSink::Record and
// TrustStore updates run under that mutex. One ring per issuer per database: two rings for the
// same issuer (in one process or two) would rotate independently.
#pragma once

#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "core/clock.h"
#include "core/status.h"
#include "crypto/crypto.h"
#include "identity/audit_sink.h"
#include "identity/key_store.h"
#include "identity/master_key.h"
#include "token/trust_store.h"

namespace kw::identity {

struct KeyRingPolicy {
  // Algorithm of new keys. ES256 by default; EdDSA, RS256 and PS256 are allowed.
  crypto::Algorithm algorithm = crypto::Algorithm::kES256;
  // How long a new key is in the JWKS before it signs.
  int64_t pre_publication_seconds = 24 * 3600;
  // How long a key signs before a new one takes over.
  int64_t rotation_interval_seconds = 30 * 24 * 3600;
  // The longest lifetime of a token signed with a ring key (SignJwt enforces it); a retiring key
  // verifies this long (plus the clock skew) after its last signature.
  int64_t max_token_lifetime_seconds = 3600;
  // Clock skew tolerated by verifiers; added to the verification tail of a retiring key.
  int64_t clock_skew_seconds = 60;
  // Hard maximum key age: from created + this, a key never signs or verifies.
  int64_t max_key_age_seconds = 90 * 24 * 3600;
  // A key still in the JWKS at this fraction of the maximum age raises a key_age_warning.
  double age_warning_fraction = 0.8;

  // InvalidArgument unless: all periods positive (pre-publication and skew may be zero),
  // pre_publication + rotation + token lifetime + skew <= max age (a key can live its normal
  // life), and 0 < age_warning_fraction < 1.
  Status Validate() const;
  int64_t age_warning_seconds() const;
  // Token lifetime plus clock skew: how long a key verifies after its last signature.
  int64_t verify_tail_seconds() const { return max_token_lifetime_seconds + clock_skew_seconds; }
};

// The key to sign with now. `key` shares the ring's private key (a reference-counted OpenSSL
// handle): sign with it and drop it; ask SigningKey() again for the next token, since the key to
// use changes with time and a revoked key must not be used after Revoke().
struct ActiveKey {
  std::string kid;
  crypto::Algorithm alg = crypto::Algorithm::kES256;
  crypto::PrivateKey key;
  IssuerIdentity issuer;
  // Tokens signed now must expire no later than this: now + max token lifetime, and never
  // after the key's own not_after.
  int64_t latest_exp = 0;
};

// Unseals the private key of a stored record and checks it against the record's public JWK.
// KeyRing::Open uses it for live keys. Outside the ring it is for tooling that plays the thief
// who holds the master key and the database (the campaign simulator's premise, the interop
// test's forged token): no service path calls it. DataLoss for a blob that does not
// authenticate or a key that does not match.
Result<crypto::PrivateKey> UnsealKeyRecord(const MasterKey& master, const KeyRecord& record);

class KeyRing {
 public:
  struct Deps {
    std::shared_ptr<const MasterKey> master;  // required: seals and unseals private keys
    std::shared_ptr<KeyStore> store;          // optional: null keeps the ring in memory only
    std::shared_ptr<AuditSink> audit;         // optional
    const Clock* clock = Clock::System();     // must outlive the ring
  };

  // Opens the ring of `issuer`, loading its keys from deps.store and unsealing the private key
  // of every key that is still published, active or retiring (one key_unsealed event each).
  // Does not advance the life cycle: call Tick() next. Errors:
  //  - InvalidArgument: bad issuer (IssuerIdentity::Validate) or policy, no master key.
  //  - FailedPrecondition: the store holds, under this issuer URL, a key of another issuer kind
  //    or tenant ("consumer and enterprise keys never share a ring"); or a key sealed under a
  //    different master key (naming both fingerprints: the wrong master key file was loaded).
  //  - DataLoss: a sealed key does not authenticate (altered or swapped between rows), or its
  //    private key does not match its public JWK.
  //  - whatever the store returns.
  static Result<std::unique_ptr<KeyRing>> Open(IssuerIdentity issuer, KeyRingPolicy policy,
                                               Deps deps);

  KeyRing(const KeyRing&) = delete;
  KeyRing& operator=(const KeyRing&) = delete;
  ~KeyRing();

  // Advances the life cycle to the clock's current time: activates, retires, generates the
  // successor when it is due, warns about old keys, persists every change and pushes it to the
  // attached trust stores. Idempotent: a second call at the same time changes nothing and
  // returns no events. Returns the events produced (also sent to the audit sink). On a store
  // error the in-memory state still advances (a key past its age must stop being used even if
  // the database is down) and the error is returned.
  Result<std::vector<AuditEvent>> Tick();

  // The key to sign with now: active, past its not_before, before its signing deadline, never
  // revoked. Advances the life cycle first (as Tick does). If no key can sign, generates one
  // and activates it at once (event key_generated with "emergency" in its detail). Emits
  // key_first_used the first time a key is handed out. Errors: key generation or store errors.
  Result<ActiveKey> SigningKey();

  // Signs a JWT whose claims are `claims_json` (a JSON object) with SigningKey(), header
  // {"alg","kid","typ":"JWT"}. InvalidArgument unless "iss" is this ring's issuer, an
  // enterprise ring's "tid" (if present) is its tenant, and "exp" is an integer with
  // now < exp <= ActiveKey::latest_exp. The ring never signs for another issuer.
  Result<std::string> SignJwt(std::string_view claims_json);

  // Revokes a key of this ring at once: it leaves the JWKS, every attached TrustStore marks it
  // revoked (so every Verifier refuses it, cached tokens included) before this returns, and its
  // private key is dropped from memory. Revoking a revoked key is a no-op. NotFound for a kid
  // that is not this ring's; InvalidArgument for an empty reason. If persisting fails the key
  // is still revoked in this process and the error is returned.
  Status Revoke(std::string_view kid, std::string_view reason);

  // Operator-initiated rotation. Scheduled (immediate = false): a successor is generated now and
  // signs after the pre-publication period, superseding the active key then; if a successor is
  // already pending, nothing new is generated and its kid is returned. Immediate: a new key
  // signs at once (no pre-publication: for a suspected compromise of the active key), the
  // active key starts retiring (its tokens verify until they expire; revoke it to stop that)
  // and pending successors are retired unused. Returns the kid of the key that will sign next.
  // Events key_generated/key_published(/key_activated, key_retiring) name `reason`.
  // InvalidArgument for an empty reason; store errors as GenerateLocked.
  Result<std::string> Rotate(bool immediate, std::string_view reason);

  // Applies revocations made by another process (`keyward keys revoke`, another server on the
  // same database) to this ring: every key the store holds as revoked but this ring does not is
  // revoked here, in every attached TrustStore at once, with a key_revoked event. Returns the
  // kids newly revoked. The service calls it every key_refresh_interval, which bounds the time a
  // revocation takes to reach another process.
  Result<std::vector<std::string>> RefreshFromStore();

  // The JWKS ({"keys":[...]}) of the keys that verify now or will soon: published, active and
  // retiring keys before their not_after (and, if retiring, before their verify_until). Each JWK
  // has the key's public members and "kid", "alg", "use":"sig", "issuer", "issuer_kind" and,
  // when the ring has a tenant, "tid" — what TrustStore::FromJwks reads to bind each key.
  std::string Jwks() const;

  // Every key of the ring as a trust-store entry: published, active and retiring keys as
  // kActive with the key's not_before and not_after (a retiring key's not_after is its
  // verify_until); retired keys as kRetired; revoked keys as kRevoked.
  std::vector<token::TrustedKeySpec> ToTrustedKeys() const;

  // Pushes ToTrustedKeys() into `store` (Upsert for changes, SetState for retirement and
  // revocation) now, and again after every change until the ring is destroyed. A kid already in
  // the store under another issuer is never overwritten: PermissionDenied. The ring keeps a
  // reference to the store.
  Status AttachTrustStore(std::shared_ptr<token::TrustStore> store);

  // A snapshot of every key record (sealed blobs included, private keys never), oldest first.
  std::vector<KeyRecord> Keys() const;

  const IssuerIdentity& issuer() const { return issuer_; }
  const KeyRingPolicy& policy() const { return policy_; }

 private:
  struct Entry;
  KeyRing(IssuerIdentity issuer, KeyRingPolicy policy, Deps deps);

  // All REQUIRE mu_ held.
  Status AdvanceLocked(int64_t now, std::vector<AuditEvent>* events);
  // A new key with this not_before (ignored for an emergency key, which is active at once),
  // saved to the store before it is used. `emergency` skips pre-publication.
  Result<Entry*> GenerateLocked(int64_t now, int64_t not_before, bool emergency,
                                std::vector<AuditEvent>* events);
  void RetireLocked(Entry* e, int64_t now, std::string detail, std::vector<AuditEvent>* events);
  void StartRetiringLocked(Entry* e, int64_t now, std::string detail,
                           std::vector<AuditEvent>* events);
  Status PersistLocked(const Entry& e);
  Status SyncLocked(token::TrustStore& store) const;
  Status SyncAllLocked() const;
  token::TrustedKeySpec TrustedSpecLocked(const Entry& e) const;
  bool InJwksLocked(const Entry& e, int64_t now) const;
  int64_t SigningDeadline(const KeyRecord& r) const;
  AuditEvent MakeEvent(int64_t now, AuditEventType type, const std::string& kid,
                       std::string detail) const;
  void EmitLocked(std::vector<AuditEvent>* events, size_t from) const;

  const IssuerIdentity issuer_;
  const KeyRingPolicy policy_;
  const Deps deps_;

  mutable std::mutex mu_;
  std::vector<std::unique_ptr<Entry>> keys_;  // oldest first
  std::vector<std::shared_ptr<token::TrustStore>> trust_stores_;
};

}  // namespace kw::identity
