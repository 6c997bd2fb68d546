#include "sim/legacy_verifier.h"

#include <algorithm>

namespace kw::sim {

token::VerifyResult LegacyVerifier::Verify(std::string_view token) const {
  token::VerifyResult out;
  auto refuse = [&](token::Reason r, std::string detail) {
    out.reason = r;
    out.detail = std::move(detail);
    return out;
  };
  token::ParsedJws jws;
  std::string detail;
  token::JwsLimits limits;
  token::Reason r = token::ParseCompactJws(token, limits, &jws, &detail);
  if (r != token::Reason::kOk) {
    token::ReadAssertedFacts(token, limits, &out);
    return refuse(r, detail);
  }
  out.kid = jws.kid;
  out.alg = std::string(crypto::AlgorithmName(jws.alg));
  token::Claims claims;
  if (token::ParseClaims(jws.payload, limits, &claims, nullptr) == token::Reason::kOk) {
    out.iss = claims.iss;
    out.tid = claims.tid;
    out.claims_json = claims.json;
  }
  auto key = store_->Find(jws.kid);
  if (!key) return refuse(token::Reason::kUnknownKid, "no published key has this kid");
  if (key->state() == token::KeyState::kRevoked) {
    return refuse(token::Reason::kKeyRevoked, "the key was revoked");
  }
  r = token::VerifyJwsWithKey(token, key->key(), key->spec().alg, limits, &detail);
  if (r != token::Reason::kOk) return refuse(r, detail);
  r = token::ParseClaims(jws.payload, limits, &claims, &detail);
  if (r != token::Reason::kOk) return refuse(r, detail);
  int64_t now = clock_->NowSeconds();
  if (!claims.exp || *claims.exp + 60 < now) return refuse(token::Reason::kExpired, "expired");
  if (claims.nbf && *claims.nbf - 60 > now) return refuse(token::Reason::kNotYetValid, "not yet valid");
  bool aud_ok = std::any_of(claims.aud.begin(), claims.aud.end(), [&](const std::string& a) {
    return std::find(audiences_.begin(), audiences_.end(), a) != audiences_.end();
  });
  if (!aud_ok) return refuse(token::Reason::kAudienceMismatch, "audience");
  auto verified = std::make_shared<token::VerifiedToken>();
  verified->claims = std::move(claims);
  verified->alg = key->spec().alg;
  verified->kid = jws.kid;
  verified->key = key;
  out.token = std::move(verified);
  out.reason = token::Reason::kOk;
  return out;
}

}  // namespace kw::sim
