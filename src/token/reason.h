// Why a token was refused. Codes are stable: the audit log, alerts, metrics and the CLI's output
// carry the snake_case names, and docs/reason-codes.md documents each one. Never renumber or
// rename; add new codes at the end.
#pragma once

#include <optional>
#include <string_view>

namespace kw::token {

enum class Reason {
  kOk = 0,
  kOversized,              // token longer than the policy's byte limit
  kMalformed,              // not a compact JWS: segments, base64url, JSON, types
  kEncryptedToken,         // a JWE (five segments or an "enc" header): never accepted
  kNestedToken,            // "cty": "JWT" (a token inside a token)
  kAlgNotAllowed,          // "none", HS*, unknown, outside the policy, or not the key's pinned alg
  kCritUnsupported,        // "crit" present (no extension is understood)
  kB64Unsupported,         // "b64" header (RFC 7797 unencoded payload)
  kKeyReferenceNotAllowed, // "jku", "x5u", "jwk" or "x5c" header present
  kMissingKid,             // no "kid" header
  kUnknownKid,             // "kid" not in the trust store (after the reload hook)
  kKeyIssuerMismatch,      // the key belongs to another issuer or tenant than the token names
  kKeyRevoked,
  kKeyRetired,
  kKeyExpired,             // now is past the key's not-after
  kKeyNotYetValid,         // now is before the key's not-before
  kBadSignature,
  kMissingClaim,           // a required claim (iss, exp, tid for enterprise tokens) is absent
  kInvalidClaim,           // a claim has the wrong type or an out-of-range value
  kIssuerMismatch,         // "iss" is not an issuer this verifier accepts
  kTenantMismatch,         // "tid" does not match the tenant named by "iss"
  kTenantNotAllowed,       // the tenant is not on the policy's allow-list
  kConsumerTokenRefused,   // a consumer-issuer token presented to an enterprise resource
  kExpired,
  kNotYetValid,            // "nbf" in the future (beyond skew)
  kIssuedInFuture,         // "iat" in the future (beyond skew)
  kLifetimeTooLong,        // exp - iat (or exp - now) above the policy bound
  kAudienceMismatch,
};

// "ok", "oversized", "malformed", ... (see the table in docs/reason-codes.md).
std::string_view ReasonCode(Reason r);
// Inverse of ReasonCode.
std::optional<Reason> ParseReasonCode(std::string_view code);
// One human sentence for each code.
std::string_view ReasonDescription(Reason r);

inline constexpr int kReasonCount = static_cast<int>(Reason::kAudienceMismatch) + 1;

}  // namespace kw::token
