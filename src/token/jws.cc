#include "token/jws.h"

#include <cmath>
#include <memory>

#include <fmt/format.h>

#include "core/base64url.h"

namespace kw::token {
namespace {

constexpr int64_t kMaxNumericDate = 253402300799;  // 9999-12-31T23:59:59Z
constexpr size_t kMaxKidBytes = 256;

Reason Fail(Reason r, std::string* detail, std::string_view msg) {
  if (detail) detail->assign(msg);
  return r;
}

// Per-thread parser and decode buffer: the verifier is called from many threads at once. The
// parser is rebuilt when a caller asks for another depth limit (policies rarely differ).
struct ThreadState {
  std::unique_ptr<json::StrictParser> parser;
  std::string buf;
};
json::StrictParser& Parser(ThreadState& st, size_t max_depth) {
  if (!st.parser || st.parser->max_depth() != max_depth) {
    st.parser = std::make_unique<json::StrictParser>(64 * 1024, max_depth);
  }
  return *st.parser;
}
ThreadState& State() {
  thread_local ThreadState s;
  return s;
}

// Decodes into `buf` leaving simdjson's padding available after the data.
bool DecodePadded(std::string_view b64, std::string* buf) {
  buf->reserve(b64.size() + simdjson::SIMDJSON_PADDING);
  return Base64UrlDecodeInto(b64, buf);
}

bool EqualsIgnoreCase(std::string_view a, std::string_view b) {
  if (a.size() != b.size()) return false;
  for (size_t i = 0; i < a.size(); ++i) {
    char x = a[i], y = b[i];
    if (x >= 'A' && x <= 'Z') x = static_cast<char>(x - 'A' + 'a');
    if (y >= 'A' && y <= 'Z') y = static_cast<char>(y - 'A' + 'a');
    if (x != y) return false;
  }
  return true;
}

}  // namespace

Reason ParseCompactJws(std::string_view token, const JwsLimits& limits, ParsedJws* out,
                       std::string* detail) {
  if (token.size() > limits.max_token_bytes) {
    return Fail(Reason::kOversized, detail,
                fmt::format("token of {} bytes exceeds the limit of {}", token.size(),
                            limits.max_token_bytes));
  }
  size_t d1 = token.find('.');
  if (d1 == std::string_view::npos) return Fail(Reason::kMalformed, detail, "token has no '.'");
  size_t d2 = token.find('.', d1 + 1);
  if (d2 == std::string_view::npos) {
    return Fail(Reason::kMalformed, detail, "token has 2 segments; a JWS has 3");
  }
  size_t d3 = token.find('.', d2 + 1);
  if (d3 != std::string_view::npos) {
    size_t dots = 3;
    for (size_t p = token.find('.', d3 + 1); p != std::string_view::npos; p = token.find('.', p + 1)) ++dots;
    if (dots == 4) {
      return Fail(Reason::kEncryptedToken, detail, "token has 5 segments: a JWE, not a JWS");
    }
    return Fail(Reason::kMalformed, detail, fmt::format("token has {} segments; a JWS has 3", dots + 1));
  }
  std::string_view h64 = token.substr(0, d1);
  std::string_view p64 = token.substr(d1 + 1, d2 - d1 - 1);
  std::string_view s64 = token.substr(d2 + 1);
  if (h64.empty()) return Fail(Reason::kMalformed, detail, "empty header segment");

  ThreadState& st = State();
  if (!DecodePadded(h64, &st.buf)) {
    return Fail(Reason::kMalformed, detail, "header is not canonical base64url");
  }
  auto parsed = Parser(st, limits.max_json_depth).ParsePadded(st.buf);
  if (!parsed.ok()) {
    return Fail(Reason::kMalformed, detail, "header: " + parsed.status().message());
  }
  auto obj_r = parsed->get_object();
  if (obj_r.error()) return Fail(Reason::kMalformed, detail, "header is not a JSON object");
  json::Object header = obj_r.value_unsafe();

  // Encryption and nesting first: a JWE header also has "alg" (a key-management algorithm).
  if (json::Has(header, "enc")) {
    return Fail(Reason::kEncryptedToken, detail, "header has \"enc\": a JWE, not a JWS");
  }
  auto alg_el = header.at_key("alg");
  if (alg_el.error()) return Fail(Reason::kMalformed, detail, "header has no \"alg\"");
  auto alg_s = alg_el.value_unsafe().get_string();
  if (alg_s.error()) return Fail(Reason::kMalformed, detail, "header \"alg\" is not a string");
  auto alg = crypto::ParseAlgorithm(alg_s.value_unsafe());
  if (!alg) {
    return Fail(Reason::kAlgNotAllowed, detail,
                fmt::format("algorithm '{}' is not allowed", alg_s.value_unsafe()));
  }
  if (json::Has(header, "crit")) {
    return Fail(Reason::kCritUnsupported, detail,
                "header has \"crit\"; no critical extension is supported");
  }
  if (json::Has(header, "b64")) {
    return Fail(Reason::kB64Unsupported, detail, "header has \"b64\" (RFC 7797), not supported");
  }
  for (std::string_view m : {"jku", "x5u", "jwk", "x5c"}) {
    if (json::Has(header, m)) {
      return Fail(Reason::kKeyReferenceNotAllowed, detail,
                  fmt::format("header has \"{}\"; keys come only from the trust store", m));
    }
  }
  out->typ.clear();
  if (json::Has(header, "cty")) {
    auto cty = json::FindString(header, "cty");
    if (!cty) return Fail(Reason::kMalformed, detail, "header \"cty\" is not a string");
    if (EqualsIgnoreCase(*cty, "JWT")) {
      return Fail(Reason::kNestedToken, detail, "header \"cty\" is JWT: nested tokens are refused");
    }
  }
  if (json::Has(header, "typ")) {
    auto typ = json::FindString(header, "typ");
    if (!typ) return Fail(Reason::kMalformed, detail, "header \"typ\" is not a string");
    out->typ.assign(*typ);
  }
  out->has_kid = false;
  out->kid.clear();
  if (json::Has(header, "kid")) {
    auto kid = json::FindString(header, "kid");
    if (!kid) return Fail(Reason::kMalformed, detail, "header \"kid\" is not a string");
    if (kid->size() > kMaxKidBytes) {
      return Fail(Reason::kMalformed, detail, "header \"kid\" is longer than 256 bytes");
    }
    out->kid.assign(*kid);
    out->has_kid = true;
  }
  out->alg = *alg;
  out->header_json.assign(st.buf);

  if (!Base64UrlDecodeInto(p64, &out->payload)) {
    return Fail(Reason::kMalformed, detail, "payload is not canonical base64url");
  }
  if (s64.empty()) return Fail(Reason::kMalformed, detail, "empty signature segment");
  if (!Base64UrlDecodeInto(s64, &out->signature)) {
    return Fail(Reason::kMalformed, detail, "signature is not canonical base64url");
  }
  out->signing_input = token.substr(0, d2);
  return Reason::kOk;
}

Reason VerifyJwsWithKey(std::string_view token, const crypto::PublicKey& key,
                        crypto::Algorithm alg, const JwsLimits& limits, std::string* detail) {
  ParsedJws jws;
  Reason r = ParseCompactJws(token, limits, &jws, detail);
  if (r != Reason::kOk) return r;
  if (jws.alg != alg || !key.Supports(alg)) {
    return Fail(Reason::kAlgNotAllowed, detail,
                fmt::format("token algorithm {} is not the key's {}", crypto::AlgorithmName(jws.alg),
                            crypto::AlgorithmName(alg)));
  }
  if (crypto::VerifySignature(alg, key, jws.signing_input, jws.signature) !=
      crypto::SignatureCheck::kValid) {
    return Fail(Reason::kBadSignature, detail, "signature does not verify");
  }
  return Reason::kOk;
}

namespace {

Reason ReadNumericDate(json::Object o, std::string_view name, std::optional<int64_t>* out,
                       std::string* detail) {
  out->reset();
  auto el = o.at_key(name);
  if (el.error()) return Reason::kOk;
  json::Element v = el.value_unsafe();
  int64_t value = 0;
  if (v.is_int64()) {
    value = v.get_int64().value_unsafe();
  } else if (v.is_double()) {
    double d = v.get_double().value_unsafe();
    if (!std::isfinite(d) || d < 0 || d > static_cast<double>(kMaxNumericDate)) {
      return Fail(Reason::kInvalidClaim, detail, fmt::format("claim \"{}\" is out of range", name));
    }
    value = static_cast<int64_t>(std::floor(d));
  } else if (v.is_uint64()) {
    return Fail(Reason::kInvalidClaim, detail, fmt::format("claim \"{}\" is out of range", name));
  } else {
    return Fail(Reason::kInvalidClaim, detail, fmt::format("claim \"{}\" must be a number", name));
  }
  if (value < 0 || value > kMaxNumericDate) {
    return Fail(Reason::kInvalidClaim, detail, fmt::format("claim \"{}\" is out of range", name));
  }
  *out = value;
  return Reason::kOk;
}

Reason ReadString(json::Object o, std::string_view name, std::string* out, std::string* detail) {
  out->clear();
  auto el = o.at_key(name);
  if (el.error()) return Reason::kOk;
  auto s = el.value_unsafe().get_string();
  if (s.error()) {
    return Fail(Reason::kInvalidClaim, detail, fmt::format("claim \"{}\" must be a string", name));
  }
  out->assign(s.value_unsafe());
  return Reason::kOk;
}

}  // namespace

Reason ParseClaims(std::string_view payload, const JwsLimits& limits, Claims* out,
                   std::string* detail) {
  ThreadState& st = State();
  st.buf.reserve(payload.size() + simdjson::SIMDJSON_PADDING);
  st.buf.assign(payload);
  json::StrictParser& parser = Parser(st, limits.max_json_depth);
  auto parsed = parser.ParsePadded(st.buf);
  if (!parsed.ok()) {
    auto e = parser.last_error();
    // A number JSON cannot hold in 64 bits (an "exp" of 1e400 or 2^70) is a claim out of
    // range, not a syntax error.
    if (e == simdjson::NUMBER_OUT_OF_RANGE ||
        e == simdjson::NUMBER_ERROR) {
      return Fail(Reason::kInvalidClaim, detail, "claims: " + parsed.status().message());
    }
    return Fail(Reason::kMalformed, detail, "claims: " + parsed.status().message());
  }
  auto obj_r = parsed->get_object();
  if (obj_r.error()) return Fail(Reason::kMalformed, detail, "claims are not a JSON object");
  json::Object o = obj_r.value_unsafe();
  Reason r;
  if ((r = ReadString(o, "iss", &out->iss, detail)) != Reason::kOk) return r;
  if ((r = ReadString(o, "sub", &out->sub, detail)) != Reason::kOk) return r;
  if ((r = ReadString(o, "tid", &out->tid, detail)) != Reason::kOk) return r;
  if ((r = ReadString(o, "jti", &out->jti, detail)) != Reason::kOk) return r;
  if ((r = ReadString(o, "azp", &out->azp, detail)) != Reason::kOk) return r;
  if (out->azp.empty() && (r = ReadString(o, "appid", &out->azp, detail)) != Reason::kOk) return r;
  if ((r = ReadString(o, "scp", &out->scp, detail)) != Reason::kOk) return r;
  if ((r = ReadNumericDate(o, "exp", &out->exp, detail)) != Reason::kOk) return r;
  if ((r = ReadNumericDate(o, "nbf", &out->nbf, detail)) != Reason::kOk) return r;
  if ((r = ReadNumericDate(o, "iat", &out->iat, detail)) != Reason::kOk) return r;
  out->aud.clear();
  auto aud = o.at_key("aud");
  if (!aud.error()) {
    json::Element a = aud.value_unsafe();
    if (a.is_string()) {
      out->aud.emplace_back(a.get_string().value_unsafe());
    } else if (a.is_array()) {
      json::Array arr = a.get_array().value_unsafe();
      for (auto item : arr) {
        auto s = item.get_string();
        if (s.error()) return Fail(Reason::kInvalidClaim, detail, "claim \"aud\" has a non-string entry");
        out->aud.emplace_back(s.value_unsafe());
      }
    } else {
      return Fail(Reason::kInvalidClaim, detail, "claim \"aud\" must be a string or an array");
    }
  }
  out->json.assign(payload);
  return Reason::kOk;
}

Result<std::string> SignCompact(const crypto::PrivateKey& key, crypto::Algorithm alg,
                                std::string_view kid, std::string_view payload,
                                std::string_view typ) {
  json::Writer h;
  h.BeginObject().Key("alg").String(crypto::AlgorithmName(alg));
  if (!kid.empty()) h.Key("kid").String(kid);
  if (!typ.empty()) h.Key("typ").String(typ);
  h.EndObject();
  std::string token = Base64UrlEncode(h.str());
  token += '.';
  token += Base64UrlEncode(payload);
  KW_ASSIGN_OR_RETURN(std::string sig, key.Sign(alg, token));
  token += '.';
  token += Base64UrlEncode(sig);
  return token;
}

}  // namespace kw::token
