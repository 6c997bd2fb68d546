// The published JOSE examples, run through Keyward's public API:
//   - RFC 8037 Appendix A: the Ed25519 key (A.1, A.2), its RFC 7638 thumbprint (A.3) and the
//     EdDSA JWS (A.4). Ed25519 is deterministic, so signing must reproduce A.4 byte for byte.
//   - RFC 7520 Section 4: the "Frodo" payload signed with the Section 3 keys. 4.1 (RS256) must
//     verify and, PKCS#1 v1.5 being deterministic, be reproduced by SignCompact. 4.2 is PS384 and
//     4.3 is ES512 on P-521, neither of which Keyward supports: both must be refused with
//     alg_not_allowed. PS256 is exercised with the same Section 3.4 RSA key instead.

#include <gtest/gtest.h>

#include <string>
#include <string_view>

#include "core/base64url.h"
#include "crypto/crypto.h"
#include "token/jws.h"
#include "token/reason.h"

namespace kw::token {
namespace {

using crypto::Algorithm;
using crypto::PrivateKey;
using crypto::PublicKey;

// ---- RFC 8037 Appendix A ----

// A.1: the private key.
constexpr std::string_view kEd25519PrivateJwk =
    R"({"kty":"OKP","crv":"Ed25519",)"
    R"("d":"nWGxne_9WmC6hEr0kuwsxERJxWl7MmkZcDusAxyuf2A",)"
    R"("x":"11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"})";
// A.2: the public key.
constexpr std::string_view kEd25519PublicJwk =
    R"({"kty":"OKP","crv":"Ed25519","x":"11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"})";
// A.3: the thumbprint input (required members in lexicographic order) and its SHA-256 thumbprint.
constexpr std::string_view kEd25519ThumbprintInput =
    R"({"crv":"Ed25519","kty":"OKP","x":"11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"})";
constexpr std::string_view kEd25519Thumbprint = "kPrK_qmxVWaYVA9wwBF6Iuo3vVzz7TxHCTwXBygrS4k";
// A.4: the protected header {"alg":"EdDSA"}, this payload, and the resulting compact JWS.
constexpr std::string_view kEd25519Payload = "Example of Ed25519 signing";
constexpr std::string_view kEd25519Jws =
    "eyJhbGciOiJFZERTQSJ9.RXhhbXBsZSBvZiBFZDI1NTE5IHNpZ25pbmc."
    "hgyY0il_MGCjP0JzlnLWG1PPOt7-09PGcvMg3AIbQR6dWbhijcNR4ki4iylGjg5BhVsPt9g7sVvpAr_MuM0KAg";

// ---- RFC 7520 ----

constexpr std::string_view kBilboKid = "bilbo.baggins@hobbiton.example";

// Section 3.4: the RSA key (2048-bit), public part and full private key.
constexpr std::string_view kRsaPublicJwk =
    R"({"kty":"RSA","kid":"bilbo.baggins@hobbiton.example","use":"sig",)"
    R"("n":"n4EPtAOCc9AlkeQHPzHStgAbgs7bTZLwUBZdR8_KuKPEHLd4rHVTeT-O-XV2jRojdNhxJWTDvNd7nqQ0VEi)"
    R"(ZQHz_AJmSCpMaJMRBSFKrKb2wqVwGU_NsYOYL-QtiWN2lbzcEe6XC0dApr5ydQLrHqkHHig3RBordaZ6Aj-oBHqF)"
    R"(EHYpPe7Tpe-OfVfHd1E6cS6M1FZcD1NNLYD5lFHpPI9bTwJlsde3uhGqC0ZCuEHg8lhzwOHrtIQbS0FVbb9k3-tV)"
    R"(TU4fg_3L_vniUFAKwuCLqKnS2BYwdq_mzSnbLY7h_qixoR7jig3__kRhuaxwUkRz5iaiQkqgc5gHdrNP5zw",)"
    R"("e":"AQAB"})";
constexpr std::string_view kRsaPrivateJwk =
    R"({"kty":"RSA","kid":"bilbo.baggins@hobbiton.example","use":"sig",)"
    R"("n":"n4EPtAOCc9AlkeQHPzHStgAbgs7bTZLwUBZdR8_KuKPEHLd4rHVTeT-O-XV2jRojdNhxJWTDvNd7nqQ0VEi)"
    R"(ZQHz_AJmSCpMaJMRBSFKrKb2wqVwGU_NsYOYL-QtiWN2lbzcEe6XC0dApr5ydQLrHqkHHig3RBordaZ6Aj-oBHqF)"
    R"(EHYpPe7Tpe-OfVfHd1E6cS6M1FZcD1NNLYD5lFHpPI9bTwJlsde3uhGqC0ZCuEHg8lhzwOHrtIQbS0FVbb9k3-tV)"
    R"(TU4fg_3L_vniUFAKwuCLqKnS2BYwdq_mzSnbLY7h_qixoR7jig3__kRhuaxwUkRz5iaiQkqgc5gHdrNP5zw",)"
    R"("e":"AQAB",)"
    R"("d":"bWUC9B-EFRIo8kpGfh0ZuyGPvMNKvYWNtB_ikiH9k20eT-O1q_I78eiZkpXxXQ0UTEs2LsNRS-8uJbvQ-A1)"
    R"(irkwMSMkK1J3XTGgdrhCku9gRldY7sNA_AKZGh-Q661_42rINLRCe8W-nZ34ui_qOfkLnK9QWDDqpaIsA-bMwWWSDF)"
    R"(u2MUBYwkHTMEzLYGqOe04noqeq1hExBTHBOBdkMXiuFhUq1BU6l-DqEiWxqg82sXt2h-LMnT3046AOYJoRioz75tSU)"
    R"(QfGCshWTBnP5uDjd18kKhyv07lhfSJdrPdM5Plyl21hsFf4L_mHCuoFau7gdsPfHPxxjVOcOpBrQzwQ",)"
    R"("p":"3Slxg_DwTXJcb6095RoXygQCAZ5RnAvZlno1yhHtnUex_fp7AZ_9nRaO7HX_-SFfGQeutao2TDjDAWU4Vupk8r)"
    R"(w9JR0AzZ0N2fvuIAmr_WCsmGpeNqQnev1T7IyEsnh8UMt-n5CafhkikzhEsrmndH6LxOrvRJlsPp6Zv8bUq0k",)"
    R"("q":"uKE2dh-cTf6ERF4k4e_jy78GfPYUIaUyoSSJuBzp3Cubk3OCqs6grT8bR_cu0Dm1MZwWmtdqDyI95HrUeq3MP1)"
    R"(5vMMON8lHTeZu2lmKvwqW7anV5UzhM1iZ7z4yMkuUwFWoBvyY898EXvRD-hdqRxHlSqAZ192zB3pVFJ0s7pFc",)"
    R"("dp":"B8PVvXkvJrj2L-GYQ7v3y9r6Kw5g9SahXBwsWUzp19TVlgI-YV85q1NIb1rxQtD-IsXXR3-TanevuRPRt5OBO)"
    R"(diMGQp8pbt26gljYfKU_E9xn-RULHz0-ed9E9gXLKD4VGngpz-PfQ_q29pk5xWHoJp009Qf1HvChixRX59ehik",)"
    R"("dq":"CLDmDGduhylc9o7r84rEUVn7pzQ6PF83Y-iBZx5NT-TpnOZKF1pErAMVeKzFEl41DlHHqqBLSM0W1sOFbwTxY)"
    R"(WZDm6sI6og5iTbwQGIC3gnJKbi_7k_vJgGHwHxgPaX2PnvP-zyEkDERuf-ry4c_Z11Cq9AqC2yeL6kdKT1cYF8",)"
    R"("qi":"3PiqvXQN0zwMeE-sBvZgi289XP9XCQF3VWqPzMKnIgQp7_Tugo6-NZBKCQsMf3HaEGBjTVJs_jcK8-TRXvaKe-)"
    R"(7ZMaQj8VfBdYkssbu0NKDDhjJ-GtiseaDVWt7dcH0cfwxgFUHpQh7FoCrjFJ6h6ZEpMF6xmujs4qMpPz8aaI4"})";

// Section 3.2: the P-521 key (public part), used by the ES512 example.
constexpr std::string_view kP521PublicJwk =
    R"({"kty":"EC","kid":"bilbo.baggins@hobbiton.example","use":"sig","crv":"P-521",)"
    R"("x":"AHKZLLOsCOzz5cY97ewNUajB957y-C-U88c3v13nmGZx6sYl_oJXu9A5RkTKqjqvjyekWF-7ytDyRXYgCF5)"
    R"(cj0Kt",)"
    R"("y":"AdymlHvOiLxXkEhayXQnNCvDX4h9htZaCJN34kfmC6pV5OhQHiraVySsUdaQkAgDPrwQrJmbnX9cwlGfP-H)"
    R"(qHZR1"})";

// Section 4 payload (Figure 7): two U+2019 quotation marks, one ASCII apostrophe, no newline in
// the signed bytes (the RFC wraps the text for display only).
constexpr std::string_view kFrodoPayload =
    "It\xe2\x80\x99s a dangerous business, Frodo, going out your door. You step onto the road, "
    "and if you don't keep your feet, there\xe2\x80\x99s no knowing where you might be swept off "
    "to.";
constexpr std::string_view kFrodoPayloadB64 =
    "SXTigJlzIGEgZGFuZ2Vyb3VzIGJ1c2luZXNzLCBGcm9kbywgZ29pbmcgb3V0IHlvdXIgZG9vci4gWW91IHN0ZXAgb2"
    "50byB0aGUgcm9hZCwgYW5kIGlmIHlvdSBkb24ndCBrZWVwIHlvdXIgZmVldCwgdGhlcmXigJlzIG5vIGtub3dpbmcg"
    "d2hlcmUgeW91IG1pZ2h0IGJlIHN3ZXB0IG9mZiB0by4";

// Section 4.1, Figure 13: RS256, header {"alg":"RS256","kid":"bilbo.baggins@hobbiton.example"}.
const std::string kRs256Jws =
    std::string("eyJhbGciOiJSUzI1NiIsImtpZCI6ImJpbGJvLmJhZ2dpbnNAaG9iYml0b24uZXhhbXBsZSJ9.") +
    std::string(kFrodoPayloadB64) + "." +
    "MRjdkly7_-oTPTS3AXP41iQIGKa80A0ZmTuV5MEaHoxnW2e5CZ5NlKtainoFmKZopdHM1O2U4mwzJdQx996ivp83xu"
    "glII7PNDi84wnB-BDkoBwA78185hX-Es4JIwmDLJK3lfWRa-XtL0RnltuYv746iYTh_qHRD68BNt1uSNCrUCTJDt5aA"
    "E6x8wW1Kt9eRo4QPocSadnHXFxnt8Is9UzpERV0ePPQdLuW3IS_de3xyIrDaLGdjluPxUAhb6L2aXic1U12podGU0KL"
    "UQSE_oI-ZnmKJ3F4uOZDnd6QZWJushZ41Axf_fcIe8u9ipH84ogoree7vjbU5y18kDquDg";

// Section 4.2, Figure 20: the RSASSA-PSS example, which RFC 7520 signs with PS384.
const std::string kPs384Jws =
    std::string("eyJhbGciOiJQUzM4NCIsImtpZCI6ImJpbGJvLmJhZ2dpbnNAaG9iYml0b24uZXhhbXBsZSJ9.") +
    std::string(kFrodoPayloadB64) + "." +
    "cu22eBqkYDKgIlTpzDXGvaFfz6WGoz7fUDcfT0kkOy42miAh2qyBzk1xEsnk2IpN6-tPid6VrklHkqsGqDqHCdP6O8"
    "TTB5dDDItllVo6_1OLPpcbUrhiUSMxbbXUvdvWXzg-UD8biiReQFlfz28zGWVsdiNAUf8ZnyPEgVFn442ZdNqiVJRm"
    "BqrYRXe8P_ijQ7p8Vdz0TTrxUeT3lm8d9shnr2lfJT8ImUjvAA2Xez2Mlp8cBE5awDzT0qI0n6uiP1aCN_2_jLAeQT"
    "lqRHtfa64QQSUmFAAjVKPbByi7xho0uTOcbH510a6GYmJUAfmWjwZ6oD4ifKo8DYM-X72Eaw";

// Section 4.3, Figure 27: ES512 with the P-521 key.
const std::string kEs512Jws =
    std::string("eyJhbGciOiJFUzUxMiIsImtpZCI6ImJpbGJvLmJhZ2dpbnNAaG9iYml0b24uZXhhbXBsZSJ9.") +
    std::string(kFrodoPayloadB64) + "." +
    "AE_R_YZCChjn4791jSQCrdPZCNYqHXCTZH0-JZGYNlaAjP2kqaluUIIUnC9qvbu9Plon7KRTzoNEuT4Va2cmL1eJAQ"
    "y3mtPBu_u_sDDyYjnAMDxXPn7XrT0lw-kvAD890jl8e2puQens_IEKBpHABlsbEPX6sFY8OcGDqoRuBomu9xQ2";

// ---- Helpers ----

PublicKey MustPublic(std::string_view jwk) {
  auto k = PublicKey::FromJwk(jwk);
  EXPECT_TRUE(k.ok()) << k.status().message();
  return std::move(k).value();
}

PrivateKey MustPrivate(std::string_view jwk) {
  auto k = PrivateKey::FromJwk(jwk);
  EXPECT_TRUE(k.ok()) << k.status().message();
  return std::move(k).value();
}

// The token with one byte in the middle of its signature inverted (still canonical base64url).
std::string FlipSignatureByte(std::string_view token) {
  size_t d2 = token.rfind('.');
  std::string sig = Base64UrlDecode(token.substr(d2 + 1)).value();
  sig[sig.size() / 2] = static_cast<char>(sig[sig.size() / 2] ^ 0xff);
  return std::string(token.substr(0, d2 + 1)) + Base64UrlEncode(sig);
}

// The token with its payload segment replaced, header and signature kept.
std::string ReplacePayload(std::string_view token, std::string_view payload) {
  size_t d1 = token.find('.');
  size_t d2 = token.rfind('.');
  return std::string(token.substr(0, d1 + 1)) + Base64UrlEncode(payload) +
         std::string(token.substr(d2));
}

// ---- RFC 8037 ----

TEST(Rfc8037Test, PublishedEd25519JwsVerifies) {
  PublicKey key = MustPublic(kEd25519PublicJwk);
  std::string detail;
  EXPECT_EQ(VerifyJwsWithKey(kEd25519Jws, key, Algorithm::kEdDSA, {}, &detail), Reason::kOk)
      << detail;

  ParsedJws jws;
  ASSERT_EQ(ParseCompactJws(kEd25519Jws, {}, &jws, &detail), Reason::kOk) << detail;
  EXPECT_EQ(jws.alg, Algorithm::kEdDSA);
  EXPECT_EQ(jws.header_json, R"({"alg":"EdDSA"})");
  EXPECT_FALSE(jws.has_kid);
  EXPECT_EQ(jws.payload, kEd25519Payload);
}

TEST(Rfc8037Test, ThumbprintMatchesAppendixA3) {
  PublicKey pub = MustPublic(kEd25519PublicJwk);
  EXPECT_EQ(pub.ToJwk(), kEd25519ThumbprintInput);
  EXPECT_EQ(pub.Thumbprint(), kEd25519Thumbprint);
  // The private JWK carries the same public key.
  PrivateKey priv = MustPrivate(kEd25519PrivateJwk);
  EXPECT_TRUE(priv.public_key().Equals(pub));
  EXPECT_EQ(priv.public_key().Thumbprint(), kEd25519Thumbprint);
}

TEST(Rfc8037Test, SigningReproducesAppendixA4) {
  PrivateKey priv = MustPrivate(kEd25519PrivateJwk);
  // SignCompact with no kid and no typ writes exactly the header {"alg":"EdDSA"} of A.4.
  auto token = SignCompact(priv, Algorithm::kEdDSA, "", kEd25519Payload, "");
  ASSERT_TRUE(token.ok()) << token.status().message();
  EXPECT_EQ(*token, kEd25519Jws);
}

TEST(Rfc8037Test, TamperedEd25519JwsIsRefused) {
  PublicKey key = MustPublic(kEd25519PublicJwk);
  struct Case {
    const char* name;
    std::string token;
    Algorithm alg;
    Reason want;
  };
  const Case cases[] = {
      {"signature byte flipped", FlipSignatureByte(kEd25519Jws), Algorithm::kEdDSA,
       Reason::kBadSignature},
      {"payload replaced", ReplacePayload(kEd25519Jws, "Example of Ed25519 signinG"),
       Algorithm::kEdDSA, Reason::kBadSignature},
      {"pinned to ES256", std::string(kEd25519Jws), Algorithm::kES256, Reason::kAlgNotAllowed},
  };
  for (const Case& c : cases) {
    EXPECT_EQ(VerifyJwsWithKey(c.token, key, c.alg), c.want) << c.name;
  }
}

// ---- RFC 7520 ----

TEST(Rfc7520Test, PublishedExamplesUnderPinnedAlgorithm) {
  // Every example is checked against the Section 3.4 RSA key (the only one Keyward can import).
  PublicKey rsa = MustPublic(kRsaPublicJwk);
  EXPECT_EQ(rsa.bits(), 2048);
  struct Case {
    const char* name;
    std::string token;
    Algorithm alg;  // the algorithm the caller pins
    Reason want;
  };
  const Case cases[] = {
      {"4.1 RS256 verifies", kRs256Jws, Algorithm::kRS256, Reason::kOk},
      {"4.1 RS256 pinned to PS256", kRs256Jws, Algorithm::kPS256, Reason::kAlgNotAllowed},
      {"4.1 RS256 signature byte flipped", FlipSignatureByte(kRs256Jws), Algorithm::kRS256,
       Reason::kBadSignature},
      {"4.1 RS256 payload replaced", ReplacePayload(kRs256Jws, "It's a dangerous business."),
       Algorithm::kRS256, Reason::kBadSignature},
      {"4.2 PS384 refused", kPs384Jws, Algorithm::kPS256, Reason::kAlgNotAllowed},
      {"4.2 PS384 refused under RS256", kPs384Jws, Algorithm::kRS256, Reason::kAlgNotAllowed},
      {"4.3 ES512 refused", kEs512Jws, Algorithm::kRS256, Reason::kAlgNotAllowed},
  };
  for (const Case& c : cases) {
    std::string detail;
    Reason got = VerifyJwsWithKey(c.token, rsa, c.alg, {}, &detail);
    EXPECT_EQ(got, c.want) << c.name << ": got " << ReasonCode(got) << " (" << detail << ")";
  }
}

TEST(Rfc7520Test, Rs256ExampleDecodesToFigure7Payload) {
  ParsedJws jws;
  std::string detail;
  ASSERT_EQ(ParseCompactJws(kRs256Jws, {}, &jws, &detail), Reason::kOk) << detail;
  EXPECT_EQ(jws.alg, Algorithm::kRS256);
  EXPECT_TRUE(jws.has_kid);
  EXPECT_EQ(jws.kid, kBilboKid);
  EXPECT_EQ(jws.payload, kFrodoPayload);
  EXPECT_EQ(jws.signature.size(), 256u);
}

TEST(Rfc7520Test, Rs256SigningReproducesFigure13) {
  PrivateKey priv = MustPrivate(kRsaPrivateJwk);
  EXPECT_TRUE(priv.public_key().Equals(MustPublic(kRsaPublicJwk)));
  // RSASSA-PKCS1-v1_5 is deterministic, and SignCompact with this kid and no typ writes the
  // header of Figure 10 byte for byte, so the whole token must come out as Figure 13.
  auto token = SignCompact(priv, Algorithm::kRS256, kBilboKid, kFrodoPayload, "");
  ASSERT_TRUE(token.ok()) << token.status().message();
  EXPECT_EQ(*token, kRs256Jws);
}

TEST(Rfc7520Test, AlgorithmsOutsideTheSupportedSetAreRefusedAtParse) {
  struct Case {
    const char* name;
    std::string token;
  };
  const Case cases[] = {{"4.2 PS384", kPs384Jws}, {"4.3 ES512", kEs512Jws}};
  for (const Case& c : cases) {
    ParsedJws jws;
    std::string detail;
    EXPECT_EQ(ParseCompactJws(c.token, {}, &jws, &detail), Reason::kAlgNotAllowed)
        << c.name << ": " << detail;
  }
  // The ES512 example's key cannot even be imported: P-256 is the only curve.
  EXPECT_FALSE(PublicKey::FromJwk(kP521PublicJwk).ok());
  // Nor does pinning ES256 under a P-256 key let the ES512 token through.
  auto p256 = PrivateKey::Generate(Algorithm::kES256);
  ASSERT_TRUE(p256.ok());
  EXPECT_EQ(VerifyJwsWithKey(kEs512Jws, p256->public_key(), Algorithm::kES256),
            Reason::kAlgNotAllowed);
}

TEST(Rfc7520Test, Ps256WithSection34KeyRoundTrips) {
  // RFC 7520's own PSS example is PS384 (refused above); PS256 is checked with the same key.
  // PSS is randomized: two signatures differ, and both verify.
  PrivateKey priv = MustPrivate(kRsaPrivateJwk);
  PublicKey pub = MustPublic(kRsaPublicJwk);
  auto t1 = SignCompact(priv, Algorithm::kPS256, kBilboKid, kFrodoPayload, "");
  auto t2 = SignCompact(priv, Algorithm::kPS256, kBilboKid, kFrodoPayload, "");
  ASSERT_TRUE(t1.ok() && t2.ok());
  EXPECT_NE(*t1, *t2);
  for (const std::string& t : {*t1, *t2}) {
    std::string detail;
    EXPECT_EQ(VerifyJwsWithKey(t, pub, Algorithm::kPS256, {}, &detail), Reason::kOk) << detail;
    EXPECT_EQ(VerifyJwsWithKey(t, pub, Algorithm::kRS256), Reason::kAlgNotAllowed);
    EXPECT_EQ(VerifyJwsWithKey(FlipSignatureByte(t), pub, Algorithm::kPS256),
              Reason::kBadSignature);
    // A PSS signature is not a PKCS#1 v1.5 one over the same input.
    ParsedJws jws;
    ASSERT_EQ(ParseCompactJws(t, {}, &jws, nullptr), Reason::kOk);
    EXPECT_EQ(crypto::VerifySignature(Algorithm::kRS256, pub, jws.signing_input, jws.signature),
              crypto::SignatureCheck::kInvalid);
  }
}

}  // namespace
}  // namespace kw::token
