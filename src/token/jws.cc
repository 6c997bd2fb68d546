#include "token/jws.h"

#include <cmath>
#include <memory>
#include <optional>
#include <utility>

#include <fmt/format.h>

#include "core/ascii.h"
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

// The header members ParseCompactJws looks at (and below, the claims ParseClaims reads), each
// found in one pass over the object. An at_key() per name scans the members once per name: for
// the claims of a typical access token some 80 key comparisons, which made it the largest cost of
// verification after base64url decoding and JSON parsing. Names are unique (the strict parser
// refuses duplicates); keeping the first match anyway makes each slot what at_key() returns.
struct HeaderMembers {
  std::optional<json::Element> alg, enc, crit, b64, jku, x5u, jwk, x5c, cty, typ, kid;

  explicit HeaderMembers(json::Object o) {
    for (auto field : o) {
      std::optional<json::Element>* slot = Slot(field.key);
      if (slot && !*slot) *slot = field.value;
    }
  }

  std::optional<json::Element>* Slot(std::string_view k) {
    if (k.size() != 3) return k == "crit" ? &crit : nullptr;
    switch (k[0]) {
      case 'a':
        return k == "alg" ? &alg : nullptr;
      case 'b':
        return k == "b64" ? &b64 : nullptr;
      case 'c':
        return k == "cty" ? &cty : nullptr;
      case 'e':
        return k == "enc" ? &enc : nullptr;
      case 'j':
        return k == "jku" ? &jku : k == "jwk" ? &jwk : nullptr;
      case 'k':
        return k == "kid" ? &kid : nullptr;
      case 't':
        return k == "typ" ? &typ : nullptr;
      case 'x':
        return k == "x5u" ? &x5u : k == "x5c" ? &x5c : nullptr;
      default:
        return nullptr;
    }
  }
};

// The claims ParseClaims reads, found in one pass (see HeaderMembers).
struct ClaimMembers {
  std::optional<json::Element> iss, sub, tid, jti, azp, appid, scp, exp, nbf, iat, aud;

  explicit ClaimMembers(json::Object o) {
    for (auto field : o) {
      std::optional<json::Element>* slot = Slot(field.key);
      if (slot && !*slot) *slot = field.value;
    }
  }

  std::optional<json::Element>* Slot(std::string_view k) {
    if (k.size() != 3) return k == "appid" ? &appid : nullptr;
    switch (k[0]) {
      case 'a':
        return k == "azp" ? &azp : k == "aud" ? &aud : nullptr;
      case 'e':
        return k == "exp" ? &exp : nullptr;
      case 'i':
        return k == "iss" ? &iss : k == "iat" ? &iat : nullptr;
      case 'j':
        return k == "jti" ? &jti : nullptr;
      case 'n':
        return k == "nbf" ? &nbf : nullptr;
      case 's':
        return k == "sub" ? &sub : k == "scp" ? &scp : nullptr;
      case 't':
        return k == "tid" ? &tid : nullptr;
      default:
        return nullptr;
    }
  }
};

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
  const HeaderMembers h(obj_r.value_unsafe());

  // Encryption and nesting first: a JWE header also has "alg" (a key-management algorithm).
  if (h.enc) {
    return Fail(Reason::kEncryptedToken, detail, "header has \"enc\": a JWE, not a JWS");
  }
  if (!h.alg) return Fail(Reason::kMalformed, detail, "header has no \"alg\"");
  auto alg_s = h.alg->get_string();
  if (alg_s.error()) return Fail(Reason::kMalformed, detail, "header \"alg\" is not a string");
  auto alg = crypto::ParseAlgorithm(alg_s.value_unsafe());
  if (!alg) {
    return Fail(Reason::kAlgNotAllowed, detail,
                fmt::format("algorithm '{}' is not allowed", alg_s.value_unsafe()));
  }
  if (h.crit) {
    return Fail(Reason::kCritUnsupported, detail,
                "header has \"crit\"; no critical extension is supported");
  }
  if (h.b64) {
    return Fail(Reason::kB64Unsupported, detail, "header has \"b64\" (RFC 7797), not supported");
  }
  for (const auto& [name, member] : {std::pair{"jku", &h.jku}, std::pair{"x5u", &h.x5u},
                                     std::pair{"jwk", &h.jwk}, std::pair{"x5c", &h.x5c}}) {
    if (*member) {
      return Fail(Reason::kKeyReferenceNotAllowed, detail,
                  fmt::format("header has \"{}\"; keys come only from the trust store", name));
    }
  }
  out->typ.clear();
  if (h.cty) {
    auto cty = h.cty->get_string();
    if (cty.error()) return Fail(Reason::kMalformed, detail, "header \"cty\" is not a string");
    if (AsciiEqualsIgnoreCase(cty.value_unsafe(), "JWT")) {
      return Fail(Reason::kNestedToken, detail, "header \"cty\" is JWT: nested tokens are refused");
    }
  }
  if (h.typ) {
    auto typ = h.typ->get_string();
    if (typ.error()) return Fail(Reason::kMalformed, detail, "header \"typ\" is not a string");
    out->typ.assign(typ.value_unsafe());
  }
  out->has_kid = false;
  out->kid.clear();
  if (h.kid) {
    auto kid = h.kid->get_string();
    if (kid.error()) return Fail(Reason::kMalformed, detail, "header \"kid\" is not a string");
    if (kid.value_unsafe().size() > kMaxKidBytes) {
      return Fail(Reason::kMalformed, detail, "header \"kid\" is longer than 256 bytes");
    }
    out->kid.assign(kid.value_unsafe());
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

Reason ReadNumericDate(const std::optional<json::Element>& el, std::string_view name,
                       std::optional<int64_t>* out, std::string* detail) {
  out->reset();
  if (!el) return Reason::kOk;
  json::Element v = *el;
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

Reason ReadString(const std::optional<json::Element>& el, std::string_view name, std::string* out,
                  std::string* detail) {
  out->clear();
  if (!el) return Reason::kOk;
  auto s = el->get_string();
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
  const ClaimMembers m(obj_r.value_unsafe());
  Reason r;
  if ((r = ReadString(m.iss, "iss", &out->iss, detail)) != Reason::kOk) return r;
  if ((r = ReadString(m.sub, "sub", &out->sub, detail)) != Reason::kOk) return r;
  if ((r = ReadString(m.tid, "tid", &out->tid, detail)) != Reason::kOk) return r;
  if ((r = ReadString(m.jti, "jti", &out->jti, detail)) != Reason::kOk) return r;
  if ((r = ReadString(m.azp, "azp", &out->azp, detail)) != Reason::kOk) return r;
  if (out->azp.empty() && (r = ReadString(m.appid, "appid", &out->azp, detail)) != Reason::kOk) {
    return r;
  }
  if ((r = ReadString(m.scp, "scp", &out->scp, detail)) != Reason::kOk) return r;
  if ((r = ReadNumericDate(m.exp, "exp", &out->exp, detail)) != Reason::kOk) return r;
  if ((r = ReadNumericDate(m.nbf, "nbf", &out->nbf, detail)) != Reason::kOk) return r;
  if ((r = ReadNumericDate(m.iat, "iat", &out->iat, detail)) != Reason::kOk) return r;
  out->aud.clear();
  if (m.aud) {
    json::Element a = *m.aud;
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
