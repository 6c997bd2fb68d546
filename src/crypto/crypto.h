// Signature keys and JWS signature algorithms, on OpenSSL 3's EVP interface only.
//
// Supported JWS algorithms (RFC 7518, RFC 8037): ES256 (ECDSA P-256 + SHA-256, signatures in the
// JWS raw R||S form), EdDSA (Ed25519 only), RS256 (RSASSA-PKCS1-v1_5 + SHA-256) and PS256
// (RSASSA-PSS + SHA-256, MGF1-SHA-256, 32-byte salt). Nothing symmetric: an HMAC "key" made of a
// public key is the classic confusion attack, so HS* does not exist here at all.
//
// Key acceptance rules (applied on every import path: JWK, PEM, DER):
//  - EC: curve P-256 only, point validated on the curve.
//  - OKP: Ed25519 only, 32-byte public key.
//  - RSA: modulus of at least 2048 bits (at most 8192), public exponent odd and in [3, 2^32),
//    and not a ROCA-vulnerable modulus (CVE-2017-15361 fingerprint).
//
// Thread safety: PublicKey and PrivateKey are immutable after construction and may be shared by
// any number of threads (they hold a reference-counted EVP_PKEY); Verify and Sign are reentrant.
#pragma once

#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "core/json.h"
#include "core/status.h"

typedef struct evp_pkey_st EVP_PKEY;

namespace kw::crypto {

enum class Algorithm { kES256, kEdDSA, kRS256, kPS256 };
inline constexpr Algorithm kAllAlgorithms[] = {Algorithm::kES256, Algorithm::kEdDSA,
                                              Algorithm::kRS256, Algorithm::kPS256};

// "ES256", "EdDSA", "RS256", "PS256".
std::string_view AlgorithmName(Algorithm alg);
// Exact, case-sensitive match of a JWS "alg" value; nullopt for anything else ("none", "HS256"...).
std::optional<Algorithm> ParseAlgorithm(std::string_view name);

enum class KeyType { kEC, kOKP, kRSA };
std::string_view KeyTypeName(KeyType t);  // "EC", "OKP", "RSA"

// The key type an algorithm needs.
KeyType KeyTypeFor(Algorithm alg);

class PublicKey {
 public:
  // Parses a JWK (RFC 7517) holding a public key; private members, if present, are ignored.
  // Rejects: unknown kty/crv, "use" other than "sig", "key_ops" with only non-signature
  // operations, an "alg" not usable with the key, and keys failing the acceptance rules above.
  static Result<PublicKey> FromJwk(std::string_view json);
  static Result<PublicKey> FromJwkObject(json::Object jwk);
  // PEM "PUBLIC KEY" (SubjectPublicKeyInfo) or a certificate's key is not accepted: SPKI only.
  static Result<PublicKey> FromPem(std::string_view pem);
  // DER SubjectPublicKeyInfo.
  static Result<PublicKey> FromDer(std::string_view der);

  KeyType type() const { return type_; }
  int bits() const;
  // True if `alg` can be used with this key (ES256 for P-256, EdDSA for Ed25519, RS256/PS256 RSA).
  bool Supports(Algorithm alg) const { return KeyTypeFor(alg) == type_; }

  // The public JWK with only the RFC 7638 required members ("crv","kty","x","y" / "e","kty","n" /
  // "crv","kty","x") in lexicographic order, so it doubles as the thumbprint input.
  std::string ToJwk() const;
  // RFC 7638 SHA-256 thumbprint, base64url.
  std::string Thumbprint() const;
  std::string ToPem() const;
  std::string ToDer() const;

  // Constant-time not required: compares public material.
  bool Equals(const PublicKey& other) const;

  EVP_PKEY* raw() const { return pkey_.get(); }

 private:
  PublicKey(std::shared_ptr<EVP_PKEY> pkey, KeyType type) : pkey_(std::move(pkey)), type_(type) {}
  friend class PrivateKey;
  friend Result<PublicKey> AdoptPublic(EVP_PKEY* pkey);
  std::shared_ptr<EVP_PKEY> pkey_;
  KeyType type_;
};

class PrivateKey {
 public:
  // A fresh key for `alg` (P-256, Ed25519, or RSA-2048 with e = 65537 for RS256/PS256).
  static Result<PrivateKey> Generate(Algorithm alg, int rsa_bits = 2048);
  // PEM "PRIVATE KEY" (PKCS#8, unencrypted).
  static Result<PrivateKey> FromPem(std::string_view pem);
  // A JWK with the private members ("d", and for RSA "p","q","dp","dq","qi").
  static Result<PrivateKey> FromJwk(std::string_view json);
  static Result<PrivateKey> FromJwkObject(json::Object jwk);

  KeyType type() const { return pub_.type(); }
  const PublicKey& public_key() const { return pub_; }
  bool Supports(Algorithm alg) const { return pub_.Supports(alg); }

  // Signs `input` and returns the JWS-form signature (ES256: 64-byte R||S).
  Result<std::string> Sign(Algorithm alg, std::string_view input) const;

  std::string ToPem() const;  // PKCS#8
  // The full private JWK (public members in RFC 7638 order, then the private ones).
  std::string ToJwk() const;

  EVP_PKEY* raw() const { return pkey_.get(); }

 private:
  PrivateKey(std::shared_ptr<EVP_PKEY> pkey, PublicKey pub)
      : pkey_(std::move(pkey)), pub_(std::move(pub)) {}
  std::shared_ptr<EVP_PKEY> pkey_;
  PublicKey pub_;
};

// Outcome of a signature check, finer than a bool so callers can report why.
enum class SignatureCheck {
  kValid,
  kWrongKeyType,      // the key cannot be used with this algorithm
  kBadEncoding,       // ES256: not 64 bytes, r or s zero or >= n; RSA: wrong length; Ed25519: not 64 bytes
  kInvalid,           // well-formed but does not verify
};

// Verifies a JWS signature over `input`. Reentrant; allocates nothing on the heap for ES256,
// EdDSA and RS256 beyond OpenSSL's own per-call context.
SignatureCheck VerifySignature(Algorithm alg, const PublicKey& key, std::string_view input,
                               std::string_view signature);

// ES256 helpers, exposed for tests: JWS R||S <-> DER ECDSA-Sig-Value. RawToDer returns false for a
// wrong length, r or s equal to zero or not below the group order n.
bool EcdsaRawToDer(std::string_view raw, std::string* der);
Result<std::string> EcdsaDerToRaw(std::string_view der);

// HMAC-SHA-256. No verifier path accepts HMAC: this exists so that tests and the simulator can
// build the classic "HS256 signed with the public key" confusion attack and show it refused.
std::string HmacSha256(std::string_view key, std::string_view data);

// SHA-256 of `data` (raw 32 bytes).
std::string Sha256(std::string_view data);

// Cryptographically secure random bytes.
std::string RandomBytes(size_t n);

// The most recent OpenSSL error as text ("" if none), clearing the queue.
std::string TakeOpenSslError();

}  // namespace kw::crypto
