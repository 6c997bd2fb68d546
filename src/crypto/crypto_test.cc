#include "crypto/crypto.h"

#include <gtest/gtest.h>
#include <openssl/bn.h>
#include <openssl/core_names.h>
#include <openssl/ec.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rsa.h>
#include <openssl/x509.h>

#include <memory>
#include <optional>
#include <string>
#include <string_view>

#include "core/base64url.h"

namespace kw::crypto {
namespace {

// The modulus of the RFC 7638 §3.1 example key (e = AQAB); its thumbprint is given there.
constexpr std::string_view kRfc7638N =
    "0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc"
    "_BJECPebWKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQ"
    "R0_FDW2QvzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-bF"
    "TWhAI4vMQFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw";

// The P-256 order n, big-endian.
const std::string kP256N =
    *HexDecode("ffffffff00000000ffffffffffffffffbce6faada7179e84f3b9cac2fc632551");

struct PkeyFree {
  void operator()(EVP_PKEY* p) const { EVP_PKEY_free(p); }
};
using PkeyPtr = std::unique_ptr<EVP_PKEY, PkeyFree>;

std::string BnParam(EVP_PKEY* pkey, const char* name) {
  BIGNUM* bn = nullptr;
  if (EVP_PKEY_get_bn_param(pkey, name, &bn) != 1) return {};
  std::string out(static_cast<size_t>(BN_num_bytes(bn)), '\0');
  BN_bn2bin(bn, reinterpret_cast<unsigned char*>(out.data()));
  BN_free(bn);
  return out;
}

std::string Der(EVP_PKEY* pkey) {
  unsigned char* buf = nullptr;
  int len = i2d_PUBKEY(pkey, &buf);
  std::string out(reinterpret_cast<char*>(buf), static_cast<size_t>(len > 0 ? len : 0));
  OPENSSL_free(buf);
  return out;
}

std::string Pem(EVP_PKEY* pkey) {
  BIO* bio = BIO_new(BIO_s_mem());
  PEM_write_bio_PUBKEY(bio, pkey);
  char* data = nullptr;
  long len = BIO_get_mem_data(bio, &data);
  std::string out(data, static_cast<size_t>(len));
  BIO_free(bio);
  return out;
}

std::string RsaJwk(std::string_view n_b64, std::string_view e_b64) {
  return std::string(R"({"kty":"RSA","n":")") + std::string(n_b64) + R"(","e":")" +
         std::string(e_b64) + R"("})";
}

PrivateKey MustGenerate(Algorithm alg) {
  auto key = PrivateKey::Generate(alg);
  EXPECT_TRUE(key.ok()) << AlgorithmName(alg) << ": " << key.status().ToString();
  return std::move(key).value();
}

std::string AlgParamName(const testing::TestParamInfo<Algorithm>& info) {
  return std::string(AlgorithmName(info.param));
}

class PerAlgorithmTest : public testing::TestWithParam<Algorithm> {};

TEST_P(PerAlgorithmTest, SignVerifyRoundTrip) {
  const Algorithm alg = GetParam();
  PrivateKey key = MustGenerate(alg);
  ASSERT_TRUE(key.Supports(alg));
  EXPECT_EQ(key.type(), KeyTypeFor(alg));
  const std::string input = "eyJhbGciOiJFUzI1NiJ9.eyJzdWIiOiJhbGljZSJ9";
  auto sig = key.Sign(alg, input);
  ASSERT_TRUE(sig.ok()) << sig.status().ToString();
  const size_t expected_len = KeyTypeFor(alg) == KeyType::kRSA ? 256 : 64;
  EXPECT_EQ(sig->size(), expected_len);

  EXPECT_EQ(VerifySignature(alg, key.public_key(), input, *sig), SignatureCheck::kValid);
  EXPECT_EQ(VerifySignature(alg, key.public_key(), input + "x", *sig), SignatureCheck::kInvalid);
  std::string flipped = *sig;
  flipped[flipped.size() / 2] ^= 0x01;
  EXPECT_NE(VerifySignature(alg, key.public_key(), input, flipped), SignatureCheck::kValid);
  PrivateKey other = MustGenerate(alg);
  EXPECT_EQ(VerifySignature(alg, other.public_key(), input, *sig), SignatureCheck::kInvalid);
}

TEST_P(PerAlgorithmTest, ExportImportRoundTrip) {
  const Algorithm alg = GetParam();
  PrivateKey key = MustGenerate(alg);
  const PublicKey& pub = key.public_key();

  auto priv_pem = PrivateKey::FromPem(key.ToPem());
  ASSERT_TRUE(priv_pem.ok()) << priv_pem.status().ToString();
  EXPECT_TRUE(priv_pem->public_key().Equals(pub));
  auto priv_jwk = PrivateKey::FromJwk(key.ToJwk());
  ASSERT_TRUE(priv_jwk.ok()) << priv_jwk.status().ToString();
  EXPECT_TRUE(priv_jwk->public_key().Equals(pub));
  // The private half survived too: signatures from the re-imported keys verify under `pub`.
  for (const PrivateKey* imported : {&*priv_pem, &*priv_jwk}) {
    auto sig = imported->Sign(alg, "input");
    ASSERT_TRUE(sig.ok()) << sig.status().ToString();
    EXPECT_EQ(VerifySignature(alg, pub, "input", *sig), SignatureCheck::kValid);
  }

  auto pub_pem = PublicKey::FromPem(pub.ToPem());
  ASSERT_TRUE(pub_pem.ok()) << pub_pem.status().ToString();
  EXPECT_TRUE(pub_pem->Equals(pub));
  auto pub_jwk = PublicKey::FromJwk(pub.ToJwk());
  ASSERT_TRUE(pub_jwk.ok()) << pub_jwk.status().ToString();
  EXPECT_TRUE(pub_jwk->Equals(pub));
  EXPECT_EQ(pub_jwk->Thumbprint(), pub.Thumbprint());
  auto pub_der = PublicKey::FromDer(pub.ToDer());
  ASSERT_TRUE(pub_der.ok()) << pub_der.status().ToString();
  EXPECT_TRUE(pub_der->Equals(pub));
  // A private JWK also imports as a public key (private members are ignored).
  auto pub_from_priv = PublicKey::FromJwk(key.ToJwk());
  ASSERT_TRUE(pub_from_priv.ok()) << pub_from_priv.status().ToString();
  EXPECT_TRUE(pub_from_priv->Equals(pub));

  EXPECT_FALSE(MustGenerate(alg).public_key().Equals(pub));
}

TEST_P(PerAlgorithmTest, OtherAlgorithmsGiveWrongKeyType) {
  const Algorithm alg = GetParam();
  PrivateKey key = MustGenerate(alg);
  auto sig = key.Sign(alg, "input");
  ASSERT_TRUE(sig.ok());
  for (Algorithm other : kAllAlgorithms) {
    if (KeyTypeFor(other) == KeyTypeFor(alg)) continue;
    EXPECT_FALSE(key.Supports(other));
    EXPECT_EQ(VerifySignature(other, key.public_key(), "input", *sig),
              SignatureCheck::kWrongKeyType)
        << AlgorithmName(alg) << " key used for " << AlgorithmName(other);
    EXPECT_FALSE(key.Sign(other, "input").ok());
  }
}

INSTANTIATE_TEST_SUITE_P(Crypto, PerAlgorithmTest, testing::ValuesIn(kAllAlgorithms), AlgParamName);

TEST(CryptoTest, Rfc7638Thumbprint) {
  const std::string jwk = R"({"kty":"RSA","n":")" + std::string(kRfc7638N) +
                          R"(","e":"AQAB","alg":"RS256","kid":"2011-04-29"})";
  auto key = PublicKey::FromJwk(jwk);
  ASSERT_TRUE(key.ok()) << key.status().ToString();
  EXPECT_EQ(key->Thumbprint(), "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs");
  EXPECT_EQ(key->ToJwk(),
            std::string(R"({"e":"AQAB","kty":"RSA","n":")") + std::string(kRfc7638N) + R"("})");
  EXPECT_EQ(key->bits(), 2048);
}

// R||S built from two 32-byte big-endian halves.
std::string RawSig(std::string_view r_hex, std::string_view s_hex) {
  auto pad = [](std::string_view hex) {
    std::string bytes = *HexDecode(hex);
    return std::string(32 - bytes.size(), '\0') + bytes;
  };
  return pad(r_hex) + pad(s_hex);
}

TEST(EcdsaTest, MalformedSignaturesAreBadEncoding) {
  PrivateKey key = MustGenerate(Algorithm::kES256);
  const std::string input = "input";
  auto good = key.Sign(Algorithm::kES256, input);
  ASSERT_TRUE(good.ok());
  ASSERT_EQ(good->size(), 64u);
  const std::string r = good->substr(0, 32), s = good->substr(32);
  const std::string zero(32, '\0');
  struct Case {
    const char* name;
    std::string sig;
  };
  const Case cases[] = {
      {"63 bytes", good->substr(0, 63)},
      {"65 bytes", *good + '\0'},
      {"empty", ""},
      {"DER instead of raw",
       [&] {
         std::string der;
         EcdsaRawToDer(*good, &der);
         return der;
       }()},
      {"r = 0", zero + s},
      {"s = 0", r + zero},
      {"r = n", kP256N + s},
      {"s = n", r + kP256N},
      {"r = 2^256 - 1", std::string(32, '\xff') + s},
  };
  for (const Case& c : cases) {
    EXPECT_EQ(VerifySignature(Algorithm::kES256, key.public_key(), input, c.sig),
              SignatureCheck::kBadEncoding)
        << c.name;
    std::string der;
    EXPECT_FALSE(EcdsaRawToDer(c.sig, &der)) << c.name;
  }
  EXPECT_EQ(VerifySignature(Algorithm::kES256, key.public_key(), input, *good),
            SignatureCheck::kValid);
}

TEST(EcdsaTest, RawDerRoundTrip) {
  struct Case {
    const char* name;
    std::string raw;
    std::string der_hex;  // empty: only the round trip is checked
  };
  const std::string n_minus_1 = "ffffffff00000000ffffffffffffffffbce6faada7179e84f3b9cac2fc632550";
  const Case cases[] = {
      {"r = s = 1", RawSig("01", "01"), "3006020101020101"},
      {"high bit set gets a 0x00 pad", RawSig("80", "7f"), "30070202008002017f"},
      {"full-width r", RawSig("80" + std::string(62, '0'), "01"),
       "302602210080" + std::string(62, '0') + "020101"},
      {"n - 1", RawSig(n_minus_1, n_minus_1), ""},
  };
  for (const Case& c : cases) {
    std::string der;
    ASSERT_TRUE(EcdsaRawToDer(c.raw, &der)) << c.name;
    if (!c.der_hex.empty()) {
      EXPECT_EQ(HexEncode(der), c.der_hex) << c.name;
    }
    auto raw = EcdsaDerToRaw(der);
    ASSERT_TRUE(raw.ok()) << c.name << ": " << raw.status().ToString();
    EXPECT_EQ(*raw, c.raw) << c.name;
  }
  PrivateKey key = MustGenerate(Algorithm::kES256);
  for (int i = 0; i < 16; ++i) {
    auto sig = key.Sign(Algorithm::kES256, "message " + std::to_string(i));
    ASSERT_TRUE(sig.ok());
    std::string der;
    ASSERT_TRUE(EcdsaRawToDer(*sig, &der));
    EXPECT_EQ(EcdsaDerToRaw(der).value_or(""), *sig);
  }
  EXPECT_FALSE(EcdsaDerToRaw("not der").ok());
}

TEST(Ed25519Test, WrongLengthSignatureIsBadEncoding) {
  PrivateKey key = MustGenerate(Algorithm::kEdDSA);
  auto good = key.Sign(Algorithm::kEdDSA, "input");
  ASSERT_TRUE(good.ok());
  for (const std::string& sig : {std::string(), good->substr(0, 63), *good + '\0', *good + *good}) {
    EXPECT_EQ(VerifySignature(Algorithm::kEdDSA, key.public_key(), "input", sig),
              SignatureCheck::kBadEncoding)
        << sig.size() << " bytes";
  }
  EXPECT_EQ(VerifySignature(Algorithm::kEdDSA, key.public_key(), "input", std::string(64, '\0')),
            SignatureCheck::kInvalid);
}

TEST(RsaTest, WrongLengthSignatureIsBadEncoding) {
  for (Algorithm alg : {Algorithm::kRS256, Algorithm::kPS256}) {
    PrivateKey key = MustGenerate(alg);
    auto good = key.Sign(alg, "input");
    ASSERT_TRUE(good.ok());
    EXPECT_EQ(VerifySignature(alg, key.public_key(), "input", good->substr(1)),
              SignatureCheck::kBadEncoding);
    EXPECT_EQ(VerifySignature(alg, key.public_key(), "input", '\0' + *good),
              SignatureCheck::kBadEncoding);
  }
}

TEST(RsaTest, PkcsAndPssSignaturesAreNotInterchangeable) {
  PrivateKey key = MustGenerate(Algorithm::kRS256);
  auto pkcs = key.Sign(Algorithm::kRS256, "input");
  auto pss = key.Sign(Algorithm::kPS256, "input");
  ASSERT_TRUE(pkcs.ok() && pss.ok());
  EXPECT_EQ(VerifySignature(Algorithm::kPS256, key.public_key(), "input", *pkcs),
            SignatureCheck::kInvalid);
  EXPECT_EQ(VerifySignature(Algorithm::kRS256, key.public_key(), "input", *pss),
            SignatureCheck::kInvalid);
}

TEST(RsaTest, SmallModulusRejectedOnEveryPath) {
  EXPECT_FALSE(PrivateKey::Generate(Algorithm::kRS256, 1024).ok());
  PkeyPtr small(EVP_RSA_gen(1024));
  ASSERT_TRUE(small);
  EXPECT_FALSE(PublicKey::FromDer(Der(small.get())).ok());
  EXPECT_FALSE(PublicKey::FromPem(Pem(small.get())).ok());
  const std::string n = BnParam(small.get(), OSSL_PKEY_PARAM_RSA_N);
  ASSERT_EQ(n.size(), 128u);
  EXPECT_FALSE(PublicKey::FromJwk(RsaJwk(Base64UrlEncode(n), "AQAB")).ok());
  // The same encoding path accepts a 2048-bit modulus.
  PkeyPtr big(EVP_RSA_gen(2048));
  ASSERT_TRUE(big);
  const std::string big_n = BnParam(big.get(), OSSL_PKEY_PARAM_RSA_N);
  EXPECT_TRUE(PublicKey::FromJwk(RsaJwk(Base64UrlEncode(big_n), "AQAB")).ok());
  EXPECT_TRUE(PublicKey::FromDer(Der(big.get())).ok());
}

TEST(RsaTest, PublicExponentRules) {
  struct Case {
    const char* name;
    const char* e;  // base64url, big-endian
    bool accepted;
  };
  const Case cases[] = {
      {"e = 1", "AQ", false},      {"e = 2", "Ag", false},
      {"e = 3", "Aw", true},       {"e = 65536 (even)", "AQAA", false},
      {"e = 65537", "AQAB", true}, {"e = 2^32 + 1", "AQAAAAE", false},
  };
  for (const Case& c : cases) {
    EXPECT_EQ(PublicKey::FromJwk(RsaJwk(kRfc7638N, c.e)).ok(), c.accepted) << c.name;
  }
}

TEST(JwkTest, ImportRules) {
  // A real P-384 point, so the only thing wrong with it is the curve.
  PkeyPtr p384(EVP_EC_gen("P-384"));
  ASSERT_TRUE(p384);
  const std::string p384_jwk =
      R"({"kty":"EC","crv":"P-384","x":")" +
      Base64UrlEncode(BnParam(p384.get(), OSSL_PKEY_PARAM_EC_PUB_X)) + R"(","y":")" +
      Base64UrlEncode(BnParam(p384.get(), OSSL_PKEY_PARAM_EC_PUB_Y)) + R"("})";
  EXPECT_FALSE(PublicKey::FromDer(Der(p384.get())).ok()) << "P-384 via DER";

  // RFC 7515 A.3 (P-256) and RFC 8037 A.2 (Ed25519) public keys.
  const std::string ec = R"("kty":"EC","crv":"P-256",)"
                         R"("x":"f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU",)"
                         R"("y":"x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0")";
  const std::string okp = R"("kty":"OKP","crv":"Ed25519",)"
                          R"("x":"11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo")";
  struct Case {
    const char* name;
    std::string jwk;
    bool accepted;
  };
  const Case cases[] = {
      {"EC P-256", "{" + ec + "}", true},
      {"EC with alg ES256, use sig", "{" + ec + R"(,"alg":"ES256","use":"sig"})", true},
      {"EC with key_ops verify", "{" + ec + R"(,"key_ops":["verify"]})", true},
      {"OKP Ed25519", "{" + okp + "}", true},
      {"OKP with alg EdDSA", "{" + okp + R"(,"alg":"EdDSA"})", true},
      {"kty oct", R"({"kty":"oct","k":"AyM1SysPpbyDfgZld3umj1qzKObwVMkoqQ-EstJQLr8"})", false},
      {"kty oct with alg HS256", R"({"kty":"oct","alg":"HS256","k":"c2VjcmV0"})", false},
      {"EC P-384", p384_jwk, false},
      {"EC P-521 name",
       "{" + ec.substr(0, ec.find("P-256")) + "P-521" + ec.substr(ec.find("P-256") + 5) + "}",
       false},
      {"EC point off the curve",
       R"({"kty":"EC","crv":"P-256","x":"f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU",)"
       R"("y":"x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a4"})",
       false},
      {"EC short x", R"({"kty":"EC","crv":"P-256","x":"AQ","y":"AQ"})", false},
      {"OKP X25519",
       "{" + okp.substr(0, okp.find("Ed25519")) + "X25519" + okp.substr(okp.find("Ed25519") + 7) +
           "}",
       false},
      {"use enc", "{" + ec + R"(,"use":"enc"})", false},
      {"key_ops encrypt", "{" + ec + R"(,"key_ops":["encrypt","decrypt"]})", false},
      {"alg HS256 on an EC key", "{" + ec + R"(,"alg":"HS256"})", false},
      {"alg RS256 on an EC key", "{" + ec + R"(,"alg":"RS256"})", false},
      {"alg ES384", "{" + ec + R"(,"alg":"ES384"})", false},
      {"alg none", "{" + ec + R"(,"alg":"none"})", false},
      {"kty missing", R"({"crv":"P-256","x":"f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU"})",
       false},
      {"kty lower case", R"({"kty":"ec","crv":"P-256","x":"AQ","y":"AQ"})", false},
      {"duplicate member", "{" + ec + R"(,"kty":"RSA"})", false},
  };
  for (const Case& c : cases) {
    auto key = PublicKey::FromJwk(c.jwk);
    EXPECT_EQ(key.ok(), c.accepted) << c.name << ": " << key.status().ToString();
  }
}

TEST(AlgorithmTest, ParseIsExactAndCaseSensitive) {
  struct Case {
    const char* name;
    std::optional<Algorithm> alg;
  };
  const Case cases[] = {
      {"ES256", Algorithm::kES256}, {"EdDSA", Algorithm::kEdDSA}, {"RS256", Algorithm::kRS256},
      {"PS256", Algorithm::kPS256}, {"none", std::nullopt},       {"None", std::nullopt},
      {"HS256", std::nullopt},      {"es256", std::nullopt},      {"EDDSA", std::nullopt},
      {"Ed25519", std::nullopt},    {"ES384", std::nullopt},      {"ES256 ", std::nullopt},
      {"", std::nullopt},
  };
  for (const Case& c : cases) {
    EXPECT_EQ(ParseAlgorithm(c.name), c.alg) << '"' << c.name << '"';
  }
  for (Algorithm alg : kAllAlgorithms) {
    EXPECT_EQ(ParseAlgorithm(AlgorithmName(alg)), alg);
  }
}

}  // namespace
}  // namespace kw::crypto
