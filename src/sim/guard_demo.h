// The token-guard demonstration behind `keyward demo`: builds, in memory, a consumer issuer and
// two enterprise tenants with their own keys, then presents the mail resource's verifier with a
// legitimate token and each forgery of the 2023 campaign (consumer key for an enterprise mailbox,
// another tenant's key, alg none, HS256 with the public key, revoked and expired keys, ...).
// For each it reports the strict verifier's reason code and whether a 2023-style check
// ("the signature matches some published key") would have accepted the token.
#pragma once

#include <string>
#include <vector>

#include "core/status.h"
#include "token/reason.h"

namespace kw::sim {

struct GuardCase {
  std::string name;
  token::Reason expected;
  token::Reason actual;
  std::string detail;
  bool legacy_2023_accepts;  // signature valid under any published key, binding ignored
};

struct GuardDemoReport {
  std::vector<GuardCase> cases;
  int forged = 0, forged_refused = 0, legacy_accepted = 0;
  bool all_as_expected = false;
};

Result<GuardDemoReport> RunGuardDemo();
std::string FormatGuardDemo(const GuardDemoReport& report);

}  // namespace kw::sim
