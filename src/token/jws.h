// JWS compact serialization (RFC 7515) and JWT claims (RFC 7519), parsed strictly.
//
// Grammar accepted (everything else is refused with a reason code):
//   token     = header "." payload "." signature      ; exactly two dots, no whitespace anywhere
//   header    = b64url(JSON object)                   ; canonical base64url: no '=', URL alphabet,
//   payload   = b64url(bytes)                         ;   zero spare bits (see core/base64url.h)
//   signature = b64url(bytes)                         ; non-empty
// Header rules: "alg" is a string naming a supported algorithm (exact case); "enc" means JWE;
// "crit" and "b64" are refused (no extension is supported); "jku", "x5u", "jwk", "x5c" are refused
// (key material never comes from the token); "cty" of "JWT" means a nested token and is refused;
// "kid", if present, is a string of at most 256 bytes. JSON everywhere is strict (core/json.h):
// no duplicate member names at any depth, bounded depth, valid UTF-8.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "core/json.h"
#include "crypto/crypto.h"
#include "token/reason.h"

namespace kw::token {

struct JwsLimits {
  size_t max_token_bytes = 16 * 1024;
  size_t max_json_depth = 16;
};

// A compact JWS split and decoded. `signing_input` points into the caller's token.
struct ParsedJws {
  std::string_view signing_input;  // ASCII(BASE64URL(header) "." BASE64URL(payload))
  crypto::Algorithm alg = crypto::Algorithm::kES256;
  std::string kid;                 // empty when absent
  bool has_kid = false;
  std::string typ;                 // empty when absent
  std::string header_json;         // decoded header
  std::string payload;             // decoded payload bytes
  std::string signature;           // decoded signature bytes
};

// Parses and checks a compact JWS. On failure returns the reason and sets *detail (if non-null)
// to a sentence naming what was wrong. Reentrant (uses a per-thread JSON parser).
Reason ParseCompactJws(std::string_view token, const JwsLimits& limits, ParsedJws* out,
                       std::string* detail);

// Parses and verifies a JWS against one known key and algorithm (no claims, no trust store):
// for callers that hold the key themselves, and for test vectors.
Reason VerifyJwsWithKey(std::string_view token, const crypto::PublicKey& key,
                        crypto::Algorithm alg, const JwsLimits& limits = {},
                        std::string* detail = nullptr);

// Registered claims Keyward uses; the full JSON is kept in `json`.
struct Claims {
  std::string iss, sub, tid, jti, azp, scp;
  std::vector<std::string> aud;
  std::optional<int64_t> exp, nbf, iat;
  std::string json;  // the claims object as received (decoded payload)
};

// Parses the payload as a JWT claims set: a JSON object; iss/sub/tid/jti/azp/scp strings if
// present (azp falls back to "appid"); aud a string or array of strings; exp/nbf/iat numbers in
// [0, 253402300799] (year 9999). Wrong types or ranges give kInvalidClaim, bad JSON kMalformed.
Reason ParseClaims(std::string_view payload, const JwsLimits& limits, Claims* out,
                   std::string* detail);

// Builds a compact JWS: header {"alg","kid","typ"} (kid and typ omitted when empty).
Result<std::string> SignCompact(const crypto::PrivateKey& key, crypto::Algorithm alg,
                                std::string_view kid, std::string_view payload,
                                std::string_view typ = "JWT");

}  // namespace kw::token
