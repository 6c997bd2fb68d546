#include <iostream>
#include <memory>
#include <string>

#include <fmt/format.h>

#include "cli/commands.h"
#include "core/base64url.h"
#include "core/file.h"
#include "core/json.h"
#include "crypto/crypto.h"

namespace kw::cli {
namespace {

struct GenerateOptions {
  std::string alg = "ES256", kid, out, format = "jwk", issuer;
  int rsa_bits = 2048;
};

// Adds "kid", "alg", "use" (and "issuer") members to a JWK text.
std::string WithMetadata(const std::string& jwk, const GenerateOptions& o, std::string_view alg) {
  std::string out = jwk.substr(0, jwk.size() - 1);
  out += fmt::format(",\"kid\":\"{}\",\"alg\":\"{}\",\"use\":\"sig\"", o.kid, alg);
  if (!o.issuer.empty()) {
    std::string q;
    json::AppendQuoted(&q, o.issuer);
    out += ",\"issuer\":" + q;
  }
  out += '}';
  return out;
}

int RunGenerate(GenerateOptions o) {
  auto alg = crypto::ParseAlgorithm(o.alg);
  if (!alg) {
    std::cerr << "keyward: unsupported --alg '" << o.alg << "' (ES256, EdDSA, RS256, PS256)\n";
    return kExitUsage;
  }
  auto key = crypto::PrivateKey::Generate(*alg, o.rsa_bits);
  if (!key.ok()) {
    std::cerr << "keyward: " << key.status().message() << "\n";
    return kExitUsage;
  }
  if (o.kid.empty()) o.kid = key->public_key().Thumbprint();
  std::string priv = o.format == "pem" ? key->ToPem() : WithMetadata(key->ToJwk(), o, o.alg) + "\n";
  std::string pub = o.format == "pem" ? key->public_key().ToPem()
                                      : WithMetadata(key->public_key().ToJwk(), o, o.alg) + "\n";
  if (o.out.empty()) {
    std::cout << priv;
    return kExitOk;
  }
  // Private keys are written 0600 and atomically: never a world-readable or half-written key.
  Status s = WriteFileAtomic(o.out, priv, 0600);
  if (!s.ok()) {
    std::cerr << "keyward: " << s.message() << "\n";
    return kExitUsage;
  }
  std::cout << pub;
  std::cerr << "private key written to " << o.out << " (mode 0600); public key on stdout\n";
  return kExitOk;
}

}  // namespace

void RegisterKeysCommands(CLI::App& app, int* exit_code) {
  auto* keys = app.add_subcommand("keys", "Signing key tools");
  keys->require_subcommand(1);
  auto o = std::make_shared<GenerateOptions>();
  auto* gen = keys->add_subcommand(
      "generate", "Generate a signing key. With --out: private key to the file (0600), public "
                  "key on stdout; without: private key on stdout");
  gen->add_option("--alg", o->alg, "ES256 (default), EdDSA, RS256 or PS256");
  gen->add_option("--kid", o->kid, "Key id (default: the RFC 7638 thumbprint)");
  gen->add_option("--issuer", o->issuer, "Issuer to record in the JWK's \"issuer\" member");
  gen->add_option("--out", o->out, "File for the private key");
  gen->add_option("--format", o->format, "jwk (default) or pem")->check(CLI::IsMember({"jwk", "pem"}));
  gen->add_option("--rsa-bits", o->rsa_bits, "RSA modulus size")->check(CLI::Range(2048, 8192));
  gen->callback([o, exit_code] { *exit_code = RunGenerate(*o); });
}

}  // namespace kw::cli
