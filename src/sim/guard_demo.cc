#include "sim/guard_demo.h"

#include <memory>

#include <fmt/format.h>

#include "core/base64url.h"
#include "core/clock.h"
#include "crypto/crypto.h"
#include "identity/directory.h"
#include "token/jws.h"
#include "token/verifier.h"

namespace kw::sim {
namespace {

constexpr std::string_view kConsumerTenant = identity::kConsumerTenantId;
constexpr std::string_view kTenantA = "72f988bf-86f1-41af-91ab-2d7cd011db47";
constexpr std::string_view kTenantB = "4a1c2f3e-5b6d-4e7f-8a9b-0c1d2e3f4a5b";
constexpr std::string_view kAudience = "https://mail.keyward.test";

std::string Issuer(std::string_view tenant) {
  return identity::IssuerUrl("https://login.keyward.test", tenant);
}

std::string Claims(std::string_view iss, std::string_view tid, int64_t now,
                   std::string_view extra = "") {
  return fmt::format(
      R"({{"iss":"{}","tid":"{}","aud":"{}","sub":"user-1","azp":"mail-web","scp":"Mail.Read",)"
      R"("iat":{},"nbf":{},"exp":{}{}}})",
      iss, tid, kAudience, now, now, now + 3600, extra);
}

std::string Unsigned(std::string_view header, std::string_view claims) {
  return Base64UrlEncode(header) + "." + Base64UrlEncode(claims);
}

}  // namespace

Result<GuardDemoReport> RunGuardDemo() {
  FakeClock clock(1'690'000'000'000);  // mid-2023
  const int64_t now = clock.NowSeconds();
  auto store = std::make_shared<token::TrustStore>();

  struct Key {
    std::string kid;
    std::optional<crypto::PrivateKey> priv;
  };
  auto make = [&](std::string kid, std::string issuer, token::IssuerKind kind, std::string_view tenant,
                  int64_t not_after = 0) -> Result<Key> {
    KW_ASSIGN_OR_RETURN(auto priv, crypto::PrivateKey::Generate(crypto::Algorithm::kES256));
    token::TrustedKeySpec spec;
    spec.kid = kid;
    spec.issuer = std::move(issuer);
    spec.kind = kind;
    spec.tenant_id = std::string(tenant);
    spec.alg = crypto::Algorithm::kES256;
    spec.key = priv.public_key();
    spec.not_after = not_after;
    KW_RETURN_IF_ERROR(store->Add(std::move(spec)));
    return Key{kid, std::move(priv)};
  };
  KW_ASSIGN_OR_RETURN(Key consumer, make("msa-2016", Issuer(kConsumerTenant),
                                         token::IssuerKind::kConsumer, kConsumerTenant));
  KW_ASSIGN_OR_RETURN(Key tenant_a, make("tenant-a-1", Issuer(kTenantA),
                                         token::IssuerKind::kEnterprise, kTenantA));
  KW_ASSIGN_OR_RETURN(Key tenant_b, make("tenant-b-1", Issuer(kTenantB),
                                         token::IssuerKind::kEnterprise, kTenantB));
  KW_ASSIGN_OR_RETURN(Key revoked, make("tenant-a-0", Issuer(kTenantA),
                                        token::IssuerKind::kEnterprise, kTenantA));
  KW_ASSIGN_OR_RETURN(Key expired, make("tenant-a-2021", Issuer(kTenantA),
                                        token::IssuerKind::kEnterprise, kTenantA, now - 86400 * 800));
  KW_RETURN_IF_ERROR(store->SetState(revoked.kid, token::KeyState::kRevoked));

  token::VerifierPolicy policy;
  policy.issuers = {"https://login.keyward.test/{tenantid}/v2.0"};
  policy.audiences = {std::string(kAudience)};
  token::Verifier verifier(store, policy, &clock);

  auto sign = [&](const Key& k, std::string_view claims) {
    return token::SignCompact(*k.priv, crypto::Algorithm::kES256, k.kid, claims);
  };
  const std::string iss_a = Issuer(kTenantA);
  GuardDemoReport report;
  auto add = [&](std::string name, token::Reason expected, Result<std::string> tok) -> Status {
    if (!tok.ok()) return tok.status();
    token::VerifyResult r = verifier.Verify(*tok);
    // The 2023 check: any published key whose signature verifies, whoever it belongs to.
    bool legacy = false;
    token::ParsedJws jws;
    if (token::ParseCompactJws(*tok, {}, &jws, nullptr) == token::Reason::kOk) {
      for (auto& key : store->Keys()) {
        if (crypto::VerifySignature(jws.alg, key->key(), jws.signing_input, jws.signature) ==
            crypto::SignatureCheck::kValid) {
          legacy = true;
        }
      }
    }
    report.cases.push_back({std::move(name), expected, r.reason, r.detail, legacy});
    return Status::Ok();
  };

  using R = token::Reason;
  KW_RETURN_IF_ERROR(add("legitimate token, tenant A key", R::kOk, sign(tenant_a, Claims(iss_a, kTenantA, now))));
  KW_RETURN_IF_ERROR(add("consumer key signs a tenant A token (Storm-0558)", R::kKeyIssuerMismatch,
                         sign(consumer, Claims(iss_a, kTenantA, now))));
  KW_RETURN_IF_ERROR(add("tenant B key signs a tenant A token", R::kKeyIssuerMismatch,
                         sign(tenant_b, Claims(iss_a, kTenantA, now))));
  KW_RETURN_IF_ERROR(add("tid says tenant B, iss says tenant A", R::kTenantMismatch,
                         sign(tenant_a, Claims(iss_a, kTenantB, now))));
  KW_RETURN_IF_ERROR(add("consumer token presented to enterprise mail", R::kConsumerTokenRefused,
                         sign(consumer, Claims(Issuer(kConsumerTenant), kConsumerTenant, now))));
  KW_RETURN_IF_ERROR(add("revoked tenant A key", R::kKeyRevoked, sign(revoked, Claims(iss_a, kTenantA, now))));
  KW_RETURN_IF_ERROR(add("tenant A key past its not-after", R::kKeyExpired,
                         sign(expired, Claims(iss_a, kTenantA, now))));
  KW_RETURN_IF_ERROR(add("alg none, no signature", R::kAlgNotAllowed,
                         Unsigned(R"({"alg":"none","kid":"tenant-a-1"})", Claims(iss_a, kTenantA, now)) + "."));
  {
    std::string input = Unsigned(R"({"alg":"HS256","kid":"tenant-a-1"})", Claims(iss_a, kTenantA, now));
    std::string mac = crypto::HmacSha256(tenant_a.priv->public_key().ToPem(), input);
    KW_RETURN_IF_ERROR(add("HS256 keyed with tenant A's public key", R::kAlgNotAllowed,
                           input + "." + Base64UrlEncode(mac)));
  }
  {
    KW_ASSIGN_OR_RETURN(auto attacker, crypto::PrivateKey::Generate(crypto::Algorithm::kES256));
    std::string header = R"({"alg":"ES256","kid":"tenant-a-1","jwk":)" + attacker.public_key().ToJwk() + "}";
    std::string input = Unsigned(header, Claims(iss_a, kTenantA, now));
    KW_ASSIGN_OR_RETURN(std::string sig, attacker.Sign(crypto::Algorithm::kES256, input));
    KW_RETURN_IF_ERROR(add("attacker key embedded in the header (jwk)", R::kKeyReferenceNotAllowed,
                           input + "." + Base64UrlEncode(sig)));
  }
  KW_RETURN_IF_ERROR(add("token for another audience", R::kAudienceMismatch,
                         sign(tenant_a, fmt::format(R"({{"iss":"{}","tid":"{}","aud":"https://files.keyward.test","iat":{},"exp":{}}})",
                                                    iss_a, kTenantA, now, now + 600))));

  report.all_as_expected = true;
  for (const auto& c : report.cases) {
    if (c.expected != token::Reason::kOk) {
      ++report.forged;
      if (c.actual != token::Reason::kOk) ++report.forged_refused;
      if (c.legacy_2023_accepts) ++report.legacy_accepted;
    }
    if (c.actual != c.expected) report.all_as_expected = false;
  }
  return report;
}

std::string FormatGuardDemo(const GuardDemoReport& report) {
  std::string out = "Keyward token guard: the 2023 forged-token attempts against the strict verifier\n\n";
  out += fmt::format("  {:<50} {:<26} {:<10} {}\n", "attempt", "strict verifier", "expected", "2023-style check");
  out += fmt::format("  {:-<50} {:-<26} {:-<10} {:-<16}\n", "", "", "", "");
  for (const auto& c : report.cases) {
    out += fmt::format("  {:<50} {:<26} {:<10} {}\n", c.name,
                       c.actual == token::Reason::kOk ? "ACCEPTED" : std::string(token::ReasonCode(c.actual)),
                       c.actual == c.expected ? "yes" : "NO",
                       c.legacy_2023_accepts ? "accepted" : "refused");
  }
  out += fmt::format(
      "\n  forged or invalid tokens: {}, refused by Keyward: {}, accepted by a 2023-style check: {}\n",
      report.forged, report.forged_refused, report.legacy_accepted);
  out += report.all_as_expected ? "  every outcome as expected\n" : "  SOME OUTCOMES DIFFER FROM EXPECTED\n";
  return out;
}

}  // namespace kw::sim
