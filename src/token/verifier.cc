#include "token/verifier.h"

#include "core/base64url.h"
#include "core/json.h"

#include <algorithm>

#include <fmt/format.h>

namespace kw::token {
namespace {

Reason Reject(VerifyResult* r, Reason reason, std::string detail) {
  r->reason = reason;
  r->detail = std::move(detail);
  return reason;
}

// Matches `iss` against an issuer pattern; on a template match sets *tenant to the substituted
// part.
bool MatchIssuer(std::string_view pattern, std::string_view iss, std::string_view* tenant) {
  size_t p = pattern.find(kTenantPlaceholder);
  if (p == std::string_view::npos) {
    *tenant = {};
    return pattern == iss;
  }
  std::string_view prefix = pattern.substr(0, p);
  std::string_view suffix = pattern.substr(p + kTenantPlaceholder.size());
  if (iss.size() <= prefix.size() + suffix.size() || !iss.starts_with(prefix) ||
      !iss.ends_with(suffix)) {
    return false;
  }
  std::string_view t = iss.substr(prefix.size(), iss.size() - prefix.size() - suffix.size());
  if (t.find('/') != std::string_view::npos) return false;  // one path segment only
  *tenant = t;
  return true;
}

}  // namespace

Verifier::Verifier(std::shared_ptr<TrustStore> store, VerifierPolicy policy, const Clock* clock)
    : store_(std::move(store)), policy_(std::move(policy)), clock_(clock) {
  if (policy_.cache.max_entries > 0) {
    cache_ = std::make_shared<VerifiedTokenCache>(policy_.cache, clock_);
    std::weak_ptr<VerifiedTokenCache> weak = cache_;
    store_->AddListener([weak](const TrustedKey& key) {
      if (auto c = weak.lock()) c->EraseKey(key.kid());
    });
  }
}

Verifier::~Verifier() = default;

VerifyResult Verifier::Verify(std::string_view token) const {
  if (cache_ && token.size() <= policy_.limits.max_token_bytes) {
    if (auto hit = cache_->Lookup(token)) {
      VerifyResult r;
      r.token = std::move(hit);
      r.from_cache = true;
      return r;
    }
  }
  VerifyResult r = VerifyUncached(token);
  if (r.ok() && cache_) cache_->Insert(token, r.token);
  return r;
}

Reason Verifier::CheckIssuer(const Claims& c, std::string* detail) const {
  if (policy_.issuers.empty()) return Reason::kOk;  // bound by the key check below
  for (const std::string& pattern : policy_.issuers) {
    std::string_view tenant;
    if (!MatchIssuer(pattern, c.iss, &tenant)) continue;
    if (!tenant.empty() && tenant != c.tid) {
      *detail = c.tid.empty()
                    ? fmt::format("issuer names tenant '{}' but the token has no tid", tenant)
                    : fmt::format("tid '{}' does not match tenant '{}' in the issuer", c.tid, tenant);
      return Reason::kTenantMismatch;
    }
    return Reason::kOk;
  }
  *detail = fmt::format("issuer '{}' is not accepted", c.iss);
  return Reason::kIssuerMismatch;
}

void ReadAssertedFacts(std::string_view token, const JwsLimits& limits, VerifyResult* r) {
  if (token.size() > limits.max_token_bytes) return;
  size_t dot1 = token.find('.');
  size_t dot2 = dot1 == std::string_view::npos ? dot1 : token.find('.', dot1 + 1);
  if (dot2 == std::string_view::npos) return;
  std::string header, payload;
  if (!Base64UrlDecodeInto(token.substr(0, dot1), &header)) return;
  thread_local json::StrictParser parser(limits.max_token_bytes, limits.max_json_depth);
  if (auto h = parser.Parse(header); h.ok() && h->is_object()) {
    json::Object o = h->get_object().value_unsafe();
    if (auto kid = json::FindString(o, "kid")) r->kid = std::string(kid->substr(0, 256));
    if (auto alg = json::FindString(o, "alg")) r->alg = std::string(alg->substr(0, 32));
  }
  if (!Base64UrlDecodeInto(token.substr(dot1 + 1, dot2 - dot1 - 1), &payload)) return;
  Claims c;
  if (ParseClaims(payload, limits, &c, nullptr) != Reason::kOk) return;
  r->iss = c.iss;
  r->tid = c.tid;
  r->claims_json = c.json;
}

VerifyResult Verifier::VerifyUncached(std::string_view token) const {
  VerifyResult r;
  ParsedJws jws;
  Reason reason = ParseCompactJws(token, policy_.limits, &jws, &r.detail);
  if (reason != Reason::kOk) {
    r.reason = reason;
    ReadAssertedFacts(token, policy_.limits, &r);
    return r;
  }
  r.kid = jws.kid;
  r.alg.assign(crypto::AlgorithmName(jws.alg));
  if (std::find(policy_.algorithms.begin(), policy_.algorithms.end(), jws.alg) ==
      policy_.algorithms.end()) {
    Reject(&r, Reason::kAlgNotAllowed, fmt::format("algorithm {} is not allowed by policy", r.alg));
    return r;
  }

  auto claims = std::make_shared<VerifiedToken>();
  Claims& c = claims->claims;
  reason = ParseClaims(jws.payload, policy_.limits, &c, &r.detail);
  if (reason != Reason::kOk) {
    r.reason = reason;
    return r;
  }
  r.iss = c.iss;
  r.tid = c.tid;
  r.claims_json = c.json;
  if (c.iss.empty()) {
    Reject(&r, Reason::kMissingClaim, "claim \"iss\" is missing");
    return r;
  }
  if ((reason = CheckIssuer(c, &r.detail)) != Reason::kOk) {
    r.reason = reason;
    return r;
  }
  if (!policy_.allowed_tenants.empty() &&
      std::find(policy_.allowed_tenants.begin(), policy_.allowed_tenants.end(), c.tid) ==
          policy_.allowed_tenants.end()) {
    Reject(&r, Reason::kTenantNotAllowed, fmt::format("tenant '{}' is not allowed", c.tid));
    return r;
  }

  if (!jws.has_kid) {
    Reject(&r, Reason::kMissingKid, "header has no kid");
    return r;
  }
  auto key = store_->Find(jws.kid);
  if (!key && store_->MaybeReload()) key = store_->Find(jws.kid);
  if (!key) {
    Reject(&r, Reason::kUnknownKid, "no trusted key has this kid");
    return r;
  }
  const TrustedKeySpec& spec = key->spec();
  if (!key->BoundTo(c.iss, c.tid)) {
    Reject(&r, Reason::kKeyIssuerMismatch,
           fmt::format("key '{}' belongs to {} issuer '{}'{}, not to issuer '{}' tenant '{}'",
                       spec.kid, IssuerKindName(spec.kind), spec.issuer,
                       spec.tenant_id.empty() ? "" : fmt::format(" tenant '{}'", spec.tenant_id),
                       c.iss, c.tid));
    return r;
  }
  if (jws.alg != spec.alg) {
    Reject(&r, Reason::kAlgNotAllowed,
           fmt::format("key '{}' is pinned to {}, token uses {}", spec.kid,
                       crypto::AlgorithmName(spec.alg), r.alg));
    return r;
  }
  switch (key->state()) {
    case KeyState::kRevoked:
      Reject(&r, Reason::kKeyRevoked, fmt::format("key '{}' is revoked", spec.kid));
      return r;
    case KeyState::kRetired:
      Reject(&r, Reason::kKeyRetired, fmt::format("key '{}' is retired", spec.kid));
      return r;
    case KeyState::kActive:
      break;
  }
  const int64_t now = clock_->NowSeconds();
  if (spec.not_after && now >= spec.not_after) {
    Reject(&r, Reason::kKeyExpired, fmt::format("key '{}' expired at {}", spec.kid, spec.not_after));
    return r;
  }
  if (spec.not_before && now < spec.not_before) {
    Reject(&r, Reason::kKeyNotYetValid,
           fmt::format("key '{}' is valid only from {}", spec.kid, spec.not_before));
    return r;
  }
  if (spec.kind == IssuerKind::kConsumer && policy_.enterprise_resource &&
      !policy_.allow_consumer_tokens) {
    Reject(&r, Reason::kConsumerTokenRefused, "consumer-issuer token at an enterprise resource");
    return r;
  }

  if (crypto::VerifySignature(jws.alg, key->key(), jws.signing_input, jws.signature) !=
      crypto::SignatureCheck::kValid) {
    Reject(&r, Reason::kBadSignature, fmt::format("signature does not verify with key '{}'", spec.kid));
    return r;
  }

  const int64_t skew = policy_.clock_skew_seconds;
  if (!c.exp) {
    Reject(&r, Reason::kMissingClaim, "claim \"exp\" is missing");
    return r;
  }
  if (now >= *c.exp + skew) {
    Reject(&r, Reason::kExpired, fmt::format("token expired at {} (now {})", *c.exp, now));
    return r;
  }
  if (c.nbf && *c.nbf > now + skew) {
    Reject(&r, Reason::kNotYetValid, fmt::format("token is valid only from {} (now {})", *c.nbf, now));
    return r;
  }
  if (c.iat && *c.iat > now + skew) {
    Reject(&r, Reason::kIssuedInFuture, fmt::format("token issued at {}, in the future (now {})", *c.iat, now));
    return r;
  }
  int64_t start = c.iat ? *c.iat : (c.nbf ? *c.nbf : now);
  if (*c.exp - start > policy_.max_lifetime_seconds) {
    Reject(&r, Reason::kLifetimeTooLong,
           fmt::format("token lifetime {} s exceeds {} s", *c.exp - start, policy_.max_lifetime_seconds));
    return r;
  }
  if (!policy_.audiences.empty()) {
    bool match = false;
    for (const auto& a : c.aud) {
      if (std::find(policy_.audiences.begin(), policy_.audiences.end(), a) != policy_.audiences.end()) {
        match = true;
        break;
      }
    }
    if (!match) {
      Reject(&r, Reason::kAudienceMismatch,
             c.aud.empty() ? std::string("token has no aud") : "token audience is not accepted here");
      return r;
    }
  }
  claims->alg = jws.alg;
  claims->kid = jws.kid;
  claims->key = std::move(key);
  r.token = std::move(claims);
  return r;
}

}  // namespace kw::token
