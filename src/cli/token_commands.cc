#include <unistd.h>

#include <iostream>
#include <memory>
#include <string>
#include <vector>

#include <fmt/format.h>

#include "cli/commands.h"
#include "core/base64url.h"
#include "core/clock.h"
#include "core/file.h"
#include "core/json.h"
#include "crypto/crypto.h"
#include "token/jws.h"
#include "token/verifier.h"

namespace kw::cli {
namespace {

std::string Trim(std::string s) {
  auto ws = [](char c) { return c == ' ' || c == '\n' || c == '\r' || c == '\t'; };
  while (!s.empty() && ws(s.back())) s.pop_back();
  size_t i = 0;
  while (i < s.size() && ws(s[i])) ++i;
  return s.substr(i);
}

// The token from the argument, or stdin when the argument is empty or "-".
Result<std::string> ReadToken(const std::string& arg) {
  if (!arg.empty() && arg != "-") return Trim(arg);
  if (isatty(0)) return InvalidArgumentError("no token given (pass it as an argument or on stdin)");
  std::string all((std::istreambuf_iterator<char>(std::cin)), std::istreambuf_iterator<char>());
  if (all.size() > (1u << 20)) return InvalidArgumentError("stdin holds more than 1 MiB");
  all = Trim(all);
  if (all.empty()) return InvalidArgumentError("no token given (stdin was empty)");
  return all;
}

int Fail(const Status& s) {
  std::cerr << "keyward: " << s.message() << "\n";
  return kExitUsage;
}

// "@path" reads a file; anything else is taken literally.
Result<std::string> ReadArgOrFile(const std::string& v) {
  if (!v.empty() && v[0] == '@') return ReadFile(v.substr(1));
  return v;
}

struct VerifyOptions {
  std::string token, jwks, trust_store, issuer_kind = "enterprise", key_tenant;
  std::vector<std::string> issuers, audiences, tenants;
  bool allow_consumer = false, json = false;
  int64_t skew = 60, max_lifetime = 24 * 3600, now = 0;
};

int RunVerify(const VerifyOptions& o) {
  auto token = ReadToken(o.token);
  if (!token.ok()) return Fail(token.status());
  if (o.jwks.empty() == o.trust_store.empty()) {
    return Fail(InvalidArgumentError("give exactly one of --jwks or --trust-store"));
  }
  std::shared_ptr<token::TrustStore> store;
  if (!o.trust_store.empty()) {
    auto text = ReadFile(o.trust_store);
    if (!text.ok()) return Fail(text.status());
    auto s = token::TrustStore::FromJson(*text);
    if (!s.ok()) return Fail(s.status().WithContext(o.trust_store));
    store = std::move(s).value();
  } else {
    auto text = ReadFile(o.jwks);
    if (!text.ok()) return Fail(text.status());
    auto kind = token::ParseIssuerKind(o.issuer_kind);
    if (!kind) return Fail(InvalidArgumentError("--issuer-kind must be consumer or enterprise"));
    // Without an "issuer" member per key, the keys belong to the one --issuer given.
    std::string default_issuer = o.issuers.size() == 1 ? o.issuers[0] : "";
    auto s = token::TrustStore::FromJwks(*text, default_issuer, *kind, o.key_tenant);
    if (!s.ok()) return Fail(s.status().WithContext(o.jwks));
    store = std::move(s).value();
  }
  token::VerifierPolicy policy;
  policy.issuers = o.issuers;
  policy.audiences = o.audiences;
  policy.allowed_tenants = o.tenants;
  policy.allow_consumer_tokens = o.allow_consumer;
  policy.clock_skew_seconds = o.skew;
  policy.max_lifetime_seconds = o.max_lifetime;
  policy.cache.max_entries = 0;
  FakeClock fixed(o.now * 1000);
  const Clock* clock = o.now ? static_cast<const Clock*>(&fixed) : Clock::System();
  token::Verifier verifier(store, policy, clock);
  token::VerifyResult r = verifier.Verify(*token);
  if (o.json) {
    json::Writer w;
    w.BeginObject().Key("valid").Bool(r.ok()).Key("reason").String(token::ReasonCode(r.reason));
    if (!r.ok()) w.Key("detail").String(r.detail);
    if (r.ok()) {
      w.Key("kid").String(r.token->kid).Key("alg").String(crypto::AlgorithmName(r.token->alg));
      w.Key("claims").Raw(r.token->claims.json);
    }
    w.EndObject();
    std::cout << w.str() << "\n";
  } else if (r.ok()) {
    json::StrictParser p;
    auto e = p.Parse(r.token->claims.json);
    std::cout << (e.ok() ? json::Pretty(*e) : r.token->claims.json) << "\n";
  } else {
    std::cerr << "rejected: " << token::ReasonCode(r.reason) << ": " << r.detail << "\n";
  }
  return r.ok() ? kExitOk : kExitRejected;
}

int RunInspect(const std::string& arg) {
  auto token = ReadToken(arg);
  if (!token.ok()) return Fail(token.status());
  token::ParsedJws jws;
  std::string detail;
  token::JwsLimits limits;
  limits.max_token_bytes = 1 << 20;
  token::Reason r = token::ParseCompactJws(*token, limits, &jws, &detail);
  if (r != token::Reason::kOk) {
    std::cerr << "cannot decode: " << token::ReasonCode(r) << ": " << detail << "\n";
    return kExitRejected;
  }
  json::StrictParser hp, pp;
  auto h = hp.Parse(jws.header_json);
  auto p = pp.Parse(jws.payload);
  json::Writer w;
  w.BeginObject().Key("verified").Bool(false);
  w.Key("header").Raw(h.ok() ? json::Minify(*h) : "null");
  if (p.ok()) {
    w.Key("claims").Raw(json::Minify(*p));
  } else {
    w.Key("payload_base64url").String(Base64UrlEncode(jws.payload));
  }
  w.Key("signature_bytes").Uint(jws.signature.size());
  w.EndObject();
  json::StrictParser out;
  auto e = out.Parse(w.str());
  std::cout << (e.ok() ? json::Pretty(*e) : w.str()) << "\n";
  std::cerr << "note: decoded without verification; nothing here is trusted\n";
  return kExitOk;
}

struct SignOptions {
  std::string key, alg, kid, claims;
  int64_t lifetime = 0;
};

int RunSign(const SignOptions& o) {
  auto key_text = ReadFile(o.key);
  if (!key_text.ok()) return Fail(key_text.status());
  auto key = key_text->find("-----BEGIN") != std::string::npos
                 ? crypto::PrivateKey::FromPem(*key_text)
                 : crypto::PrivateKey::FromJwk(*key_text);
  if (!key.ok()) return Fail(key.status().WithContext(o.key));
  std::string kid = o.kid, alg_name = o.alg;
  if (key_text->find("-----BEGIN") == std::string::npos) {
    json::StrictParser p;
    auto e = p.Parse(*key_text);
    if (e.ok() && e->is_object()) {
      json::Object obj = e->get_object().value_unsafe();
      if (kid.empty()) kid = std::string(json::FindString(obj, "kid").value_or(""));
      if (alg_name.empty()) alg_name = std::string(json::FindString(obj, "alg").value_or(""));
    }
  }
  if (alg_name.empty()) return Fail(InvalidArgumentError("--alg is required (the key names none)"));
  auto alg = crypto::ParseAlgorithm(alg_name);
  if (!alg) return Fail(InvalidArgumentError(fmt::format("unsupported --alg '{}'", alg_name)));
  auto claims = ReadArgOrFile(o.claims);
  if (!claims.ok()) return Fail(claims.status());
  json::StrictParser p;
  auto e = p.Parse(*claims);
  if (!e.ok() || !e->is_object()) {
    return Fail(InvalidArgumentError("--claims must be a JSON object: " +
                                     (e.ok() ? std::string("not an object") : e.status().message())));
  }
  std::string payload = json::Minify(*e);
  if (o.lifetime > 0) {
    // Adds iat/nbf/exp for convenience; the object must not have them already.
    json::Object obj = e->get_object().value_unsafe();
    for (auto m : {"iat", "nbf", "exp"}) {
      if (json::Has(obj, m)) return Fail(InvalidArgumentError(fmt::format("--lifetime given but claims already have \"{}\"", m)));
    }
    int64_t now = Clock::System()->NowSeconds();
    payload.pop_back();
    if (payload.size() > 1) payload += ',';
    payload += fmt::format("\"iat\":{},\"nbf\":{},\"exp\":{}}}", now, now, now + o.lifetime);
  }
  auto token = token::SignCompact(*key, *alg, kid, payload);
  if (!token.ok()) return Fail(token.status());
  std::cout << *token << "\n";
  return kExitOk;
}

}  // namespace

void RegisterTokenCommands(CLI::App& app, int* exit_code) {
  auto* tok = app.add_subcommand("token", "Verify, inspect and sign JWS/JWT tokens");
  tok->require_subcommand(1);

  auto vo = std::make_shared<VerifyOptions>();
  auto* verify = tok->add_subcommand(
      "verify",
      "Verify a token strictly. Exit 0: valid (claims printed); 1: rejected (reason code "
      "printed); 2: usage or input error");
  verify->add_option("token", vo->token, "The compact JWS; read from stdin if absent or '-'");
  verify->add_option("--jwks", vo->jwks, "JWKS file. Each key is bound to its \"issuer\" member (or the one --issuer), its \"issuer_kind\" member (or --issuer-kind) and its \"tid\" member (or --key-tenant)");
  verify->add_option("--trust-store", vo->trust_store, "Keyward trust-store JSON file");
  verify->add_option("--issuer", vo->issuers, "Accepted issuer (repeatable; may contain {tenantid})")->allow_extra_args(false);
  verify->add_option("--audience", vo->audiences, "Accepted audience (repeatable)")->allow_extra_args(false);
  verify->add_option("--tenant", vo->tenants, "Allowed tenant id (repeatable; default any)")->allow_extra_args(false);
  verify->add_option("--issuer-kind", vo->issuer_kind, "Kind of the --jwks issuer: consumer or enterprise")
      ->check(CLI::IsMember({"consumer", "enterprise"}));
  verify->add_option("--key-tenant", vo->key_tenant, "Tenant of the --jwks keys (exact enterprise issuer)");
  verify->add_flag("--allow-consumer", vo->allow_consumer, "Accept consumer-issuer tokens");
  verify->add_option("--skew", vo->skew, "Clock skew tolerance in seconds")->check(CLI::Range(0, 3600));
  verify->add_option("--max-lifetime", vo->max_lifetime, "Longest accepted token lifetime in seconds");
  verify->add_option("--now", vo->now, "Verify as of this Unix time (for offline investigation)");
  verify->add_flag("--json", vo->json, "Print the outcome as one JSON object");
  verify->callback([vo, exit_code] { *exit_code = RunVerify(*vo); });

  auto inspect_token = std::make_shared<std::string>();
  auto* inspect = tok->add_subcommand("inspect", "Decode a token without trusting it");
  inspect->add_option("token", *inspect_token, "The compact JWS; read from stdin if absent or '-'");
  inspect->callback([inspect_token, exit_code] { *exit_code = RunInspect(*inspect_token); });

  auto so = std::make_shared<SignOptions>();
  auto* sign = tok->add_subcommand("sign", "Sign a claims object with a private key (JWK or PEM)");
  sign->add_option("--key", so->key, "Private key file (JWK with d, or PKCS#8 PEM)")->required();
  sign->add_option("--alg", so->alg, "ES256, EdDSA, RS256 or PS256 (default: the JWK's alg)");
  sign->add_option("--kid", so->kid, "Key id for the header (default: the JWK's kid)");
  sign->add_option("--claims", so->claims, "Claims JSON object, or @file")->required();
  sign->add_option("--lifetime", so->lifetime, "Add iat, nbf and exp = now + this many seconds");
  sign->callback([so, exit_code] { *exit_code = RunSign(*so); });
}

}  // namespace kw::cli
