// LegacyVerifier: a reproduction of the token check that let the 2023 campaign in, for the
// campaign simulator's `legacy-2023` mode only. It lives in kw_sim, which `keyward serve` does
// not link: the shipped service cannot be started with it.
//
// What it does, as the flawed mail service did: parse the JWS, find the key named by "kid"
// among every key the identity service publishes (any issuer, consumer keys included, retired
// keys included: the stolen 2016 consumer key had expired in 2021 and still worked), check the
// signature with that key's algorithm, then check exp/nbf and the audience. What it does NOT do:
// check that the key belongs to the issuer and tenant the token names (TrustedKey::BoundTo),
// refuse consumer tokens at an enterprise resource, or refuse keys past their validity.
// Revoked keys are refused (a revoked key leaves the published set), as are alg "none", HMAC and
// any algorithm other than the key's own.
#pragma once

#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "core/clock.h"
#include "token/trust_store.h"
#include "token/verifier.h"

namespace kw::sim {

class LegacyVerifier {
 public:
  LegacyVerifier(std::shared_ptr<token::TrustStore> store, std::vector<std::string> audiences,
                 const Clock* clock)
      : store_(std::move(store)), audiences_(std::move(audiences)), clock_(clock) {}

  token::VerifyResult Verify(std::string_view token) const;

 private:
  std::shared_ptr<token::TrustStore> store_;
  std::vector<std::string> audiences_;
  const Clock* clock_;
};

}  // namespace kw::sim
