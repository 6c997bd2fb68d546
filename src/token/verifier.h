// Verifier: decides whether a bearer token is acceptable, and if not, says why.
//
// Order of checks (each failure returns its reason code; see docs/reason-codes.md):
//   1. size, structure, header (jws.h): oversized, malformed, encrypted_token, nested_token,
//      alg_not_allowed, crit_unsupported, b64_unsupported, key_reference_not_allowed
//   2. policy algorithm list                                    -> alg_not_allowed
//   3. claims JSON and types; "iss" present                     -> malformed, invalid_claim, missing_claim
//   4. "iss" is one of the policy's issuers; for a template issuer the tenant in "iss" equals
//      "tid"; the tenant allow-list                             -> issuer_mismatch, tenant_mismatch, tenant_not_allowed
//   5. "kid" present and in the trust store (reload hook, rate-limited, on a miss)
//                                                               -> missing_kid, unknown_kid
//   6. the key is bound to the token's issuer and tenant (the Storm-0558 check; there is no
//      option to turn it off)                                   -> key_issuer_mismatch
//   7. the token's alg is the key's pinned alg                  -> alg_not_allowed
//   8. key state and validity window                            -> key_revoked, key_retired, key_expired, key_not_yet_valid
//   9. consumer tokens at an enterprise resource                -> consumer_token_refused
//  10. signature                                                -> bad_signature
//  11. exp (required), nbf, iat, lifetime bound, audience       -> missing_claim, expired, not_yet_valid,
//                                                                  issued_in_future, lifetime_too_long, audience_mismatch
// Time claims are checked after the signature on purpose: a reason of "expired" then means the
// token was genuinely issued (a replayed old token), which an investigator must tell apart from a
// forgery ("bad_signature", "key_issuer_mismatch").
//
// Thread safety: Verify() is const and thread-safe; one Verifier serves a whole server.
#pragma once

#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "core/clock.h"
#include "token/jws.h"
#include "token/reason.h"
#include "token/token_cache.h"
#include "token/trust_store.h"

namespace kw::token {

struct VerifierPolicy {
  // Accepted issuers, exact or with "{tenantid}". Empty: any issuer that has keys in the trust
  // store (the key-issuer binding still applies in full).
  std::vector<std::string> issuers;
  // The token's "aud" must contain one of these. Empty: the audience is not checked (only for
  // tools such as `keyward token verify` without --audience; services always set it).
  std::vector<std::string> audiences;
  // If non-empty, only these tenants ("tid") are accepted.
  std::vector<std::string> allowed_tenants;
  std::vector<crypto::Algorithm> algorithms = {crypto::Algorithm::kES256, crypto::Algorithm::kEdDSA,
                                               crypto::Algorithm::kRS256, crypto::Algorithm::kPS256};
  int64_t clock_skew_seconds = 60;
  int64_t max_lifetime_seconds = 24 * 3600;
  // The resource serves enterprise tenants; consumer-issuer tokens are refused unless allowed.
  bool enterprise_resource = true;
  bool allow_consumer_tokens = false;
  JwsLimits limits;
  // Verified-token cache; max_entries = 0 disables it.
  VerifiedTokenCache::Options cache;
};

struct VerifyResult {
  Reason reason = Reason::kOk;
  std::string detail;                          // a sentence for logs; empty on success
  std::shared_ptr<const VerifiedToken> token;  // set iff reason == kOk
  bool from_cache = false;
  // What the token asserted, as far as it could be read, for the audit record of a rejection.
  std::string kid, alg, iss, tid, claims_json;

  bool ok() const { return reason == Reason::kOk; }
};

class Verifier {
 public:
  // `store` must outlive nothing: the verifier shares ownership. `clock` must outlive the verifier.
  Verifier(std::shared_ptr<TrustStore> store, VerifierPolicy policy,
           const Clock* clock = Clock::System());
  ~Verifier();
  Verifier(const Verifier&) = delete;
  Verifier& operator=(const Verifier&) = delete;

  VerifyResult Verify(std::string_view token) const;

  const VerifierPolicy& policy() const { return policy_; }
  TrustStore& store() const { return *store_; }
  // Null when the cache is disabled.
  VerifiedTokenCache* cache() const { return cache_.get(); }

 private:
  VerifyResult VerifyUncached(std::string_view token) const;
  // Returns the tenant named by `iss` per the policy's issuer list, or a reason.
  Reason CheckIssuer(const Claims& c, std::string* detail) const;

  std::shared_ptr<TrustStore> store_;
  VerifierPolicy policy_;
  const Clock* clock_;
  std::shared_ptr<VerifiedTokenCache> cache_;
};

// For a token refused before its header was accepted (alg "none", HS256, a jku header...): fills
// r->kid, alg, iss, tid and claims_json with what the token asserted, best effort, so that the
// audit record of the refusal names the tenant, issuer, key and claims it claimed. Nothing read
// here is verified; it must never be used for a decision.
void ReadAssertedFacts(std::string_view token, const JwsLimits& limits, VerifyResult* r);

}  // namespace kw::token
