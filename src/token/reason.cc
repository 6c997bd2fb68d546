#include "token/reason.h"

namespace kw::token {
namespace {

struct Entry {
  std::string_view code;
  std::string_view description;
};

constexpr Entry kEntries[kReasonCount] = {
    {"ok", "the token verified"},
    {"oversized", "the token is longer than the configured limit"},
    {"malformed", "the token is not a well-formed compact JWS with JSON header and claims"},
    {"encrypted_token", "the token is a JWE; only signed tokens are accepted"},
    {"nested_token", "the token declares a nested token (cty JWT)"},
    {"alg_not_allowed", "the algorithm is not allowed (none, HMAC, unknown, or not the key's pinned algorithm)"},
    {"crit_unsupported", "the header lists critical extensions, none of which is supported"},
    {"b64_unsupported", "the header carries b64 (unencoded payload), which is not supported"},
    {"key_reference_not_allowed", "the header carries jku, x5u, jwk or x5c; keys come only from the trust store"},
    {"missing_kid", "the header has no kid"},
    {"unknown_kid", "no trusted key has this kid"},
    {"key_issuer_mismatch", "the signing key belongs to a different issuer or tenant than the token claims"},
    {"key_revoked", "the signing key was revoked"},
    {"key_retired", "the signing key was retired"},
    {"key_expired", "the signing key is past its not-after time"},
    {"key_not_yet_valid", "the signing key is before its not-before time"},
    {"bad_signature", "the signature does not verify with the key"},
    {"missing_claim", "a required claim is missing"},
    {"invalid_claim", "a claim has the wrong type or an out-of-range value"},
    {"issuer_mismatch", "the issuer is not accepted by this verifier"},
    {"tenant_mismatch", "the tid claim does not match the tenant in the issuer"},
    {"tenant_not_allowed", "the tenant is not on the allow-list"},
    {"consumer_token_refused", "a consumer token was presented to an enterprise resource"},
    {"expired", "the token has expired"},
    {"not_yet_valid", "the token's nbf is in the future"},
    {"issued_in_future", "the token's iat is in the future"},
    {"lifetime_too_long", "the token's lifetime exceeds the allowed maximum"},
    {"audience_mismatch", "the token is not for this audience"},
};

}  // namespace

std::string_view ReasonCode(Reason r) {
  int i = static_cast<int>(r);
  return (i >= 0 && i < kReasonCount) ? kEntries[i].code : "unknown";
}

std::string_view ReasonDescription(Reason r) {
  int i = static_cast<int>(r);
  return (i >= 0 && i < kReasonCount) ? kEntries[i].description : "unknown";
}

std::optional<Reason> ParseReasonCode(std::string_view code) {
  for (int i = 0; i < kReasonCount; ++i) {
    if (kEntries[i].code == code) return static_cast<Reason>(i);
  }
  return std::nullopt;
}

}  // namespace kw::token
