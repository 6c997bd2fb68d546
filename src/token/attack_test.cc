// The attack catalogue: every known way to forge or bend a bearer token, one row each, with the
// reason code the verifier must give. A new attack is one more row.
#include <gtest/gtest.h>

#include <functional>

#include "token/test_util.h"

namespace kw::token {
namespace {

using testing::Claims;
using testing::Fixture;
using testing::IssuerOf;
using testing::kNow;
using testing::kTenantA;
using testing::kTenantB;
using testing::SignRaw;
using A = crypto::Algorithm;

std::string B64(std::string_view s) { return Base64UrlEncode(s); }

const std::string kIssA = IssuerOf(kTenantA);

// Replaces the signature segment of a token with `sig` (raw bytes).
std::string WithSignature(const std::string& token, std::string_view sig) {
  return token.substr(0, token.rfind('.') + 1) + B64(sig);
}

std::string RawSignature(const std::string& token) {
  return Base64UrlDecode(token.substr(token.rfind('.') + 1)).value();
}

// An ES256 R||S signature with chosen r and s (32 bytes each, big-endian hex).
std::string EcSig(std::string_view r_hex, std::string_view s_hex) {
  return HexDecode(r_hex).value() + HexDecode(s_hex).value();
}
constexpr std::string_view kN = "ffffffff00000000ffffffffffffffffbce6faada7179e84f3b9cac2fc632551";
constexpr std::string_view kNPlus1 = "ffffffff00000000ffffffffffffffffbce6faada7179e84f3b9cac2fc632552";
constexpr std::string_view kZero = "0000000000000000000000000000000000000000000000000000000000000000";
constexpr std::string_view kOne = "0000000000000000000000000000000000000000000000000000000000000001";

// HS256 over the signing input with `secret` as the HMAC key: the algorithm-confusion attack.
std::string Hs256(std::string_view header, std::string_view claims, std::string_view secret) {
  std::string input = B64(header) + "." + B64(claims);
  return input + "." + B64(crypto::HmacSha256(secret, input));
}

std::string Unsigned(std::string_view header, std::string_view claims, std::string_view sig = "") {
  return B64(header) + "." + B64(claims) + "." + B64(sig);
}

// The claims with one member replaced by raw JSON text.
std::string ClaimsWith(std::string_view extra_members) {
  return fmt::format(R"({{"iss":"{}","tid":"{}","aud":"https://mail.keyward.test","sub":"alice",{}}})",
                     kIssA, kTenantA, extra_members);
}

struct Attack {
  std::string name;
  std::function<std::string(const Fixture&)> make;
  Reason expected;
};

std::vector<Attack> Catalogue() {
  const std::string hdr_es = R"({"alg":"ES256","kid":"a-es"})";
  const std::string good_claims = Claims(kIssA, kTenantA);
  auto es = [](const Fixture& f, std::string_view header, std::string_view claims) {
    return SignRaw(f.Private("a-es"), A::kES256, header, claims);
  };
  std::vector<Attack> v;
  auto add = [&](std::string name, Reason r, std::function<std::string(const Fixture&)> make) {
    v.push_back({std::move(name), std::move(make), r});
  };

  // --- alg "none" in every casing, with and without a signature ---
  for (std::string none : {"none", "None", "NONE", "nOnE"}) {
    std::string h = fmt::format(R"({{"alg":"{}","kid":"a-es"}})", none);
    add("alg " + none + " without signature", Reason::kAlgNotAllowed,
        [=](const Fixture&) { return B64(h) + "." + B64(good_claims) + "."; });
    add("alg " + none + " with a signature", Reason::kAlgNotAllowed,
        [=](const Fixture& f) { return Unsigned(h, good_claims, RawSignature(f.Good())); });
  }
  // --- HS256 keyed with the public key (algorithm confusion) ---
  const std::string hdr_hs = R"({"alg":"HS256","kid":"a-es"})";
  add("HS256 with the PEM public key as secret", Reason::kAlgNotAllowed, [=](const Fixture& f) {
    return Hs256(hdr_hs, good_claims, f.Private("a-es").public_key().ToPem());
  });
  add("HS256 with the DER public key as secret", Reason::kAlgNotAllowed, [=](const Fixture& f) {
    return Hs256(hdr_hs, good_claims, f.Private("a-es").public_key().ToDer());
  });
  add("HS256 with the JWK public key as secret", Reason::kAlgNotAllowed, [=](const Fixture& f) {
    return Hs256(hdr_hs, good_claims, f.Private("a-es").public_key().ToJwk());
  });
  add("HS256 with the RSA PEM public key as secret", Reason::kAlgNotAllowed, [=](const Fixture& f) {
    return Hs256(R"({"alg":"HS256","kid":"a-rs"})", good_claims, f.Private("a-rs").public_key().ToPem());
  });
  add("HS512", Reason::kAlgNotAllowed, [=](const Fixture&) {
    return Hs256(R"({"alg":"HS512","kid":"a-es"})", good_claims, "secret");
  });
  add("alg es256 (wrong case)", Reason::kAlgNotAllowed, [=](const Fixture& f) {
    return es(f, R"({"alg":"es256","kid":"a-es"})", good_claims);
  });
  // --- ECDSA signature encodings ---
  add("ES256 r = 0", Reason::kBadSignature, [=](const Fixture& f) { return WithSignature(f.Good(), EcSig(kZero, kOne)); });
  add("ES256 s = 0", Reason::kBadSignature, [=](const Fixture& f) { return WithSignature(f.Good(), EcSig(kOne, kZero)); });
  add("ES256 r = s = 0 (psychic signature)", Reason::kBadSignature,
      [=](const Fixture& f) { return WithSignature(f.Good(), EcSig(kZero, kZero)); });
  add("ES256 r = n", Reason::kBadSignature, [=](const Fixture& f) { return WithSignature(f.Good(), EcSig(kN, kOne)); });
  add("ES256 s = n + 1", Reason::kBadSignature, [=](const Fixture& f) { return WithSignature(f.Good(), EcSig(kOne, kNPlus1)); });
  add("ES256 signature of 63 bytes", Reason::kBadSignature,
      [=](const Fixture& f) { return WithSignature(f.Good(), RawSignature(f.Good()).substr(0, 63)); });
  add("ES256 signature of 65 bytes", Reason::kBadSignature,
      [=](const Fixture& f) { return WithSignature(f.Good(), RawSignature(f.Good()) + "\x01"); });
  add("ES256 signature in DER instead of R||S", Reason::kBadSignature, [=](const Fixture& f) {
    std::string der;
    crypto::EcdsaRawToDer(RawSignature(f.Good()), &der);
    return WithSignature(f.Good(), der);
  });
  add("RS256 signature one byte short", Reason::kBadSignature, [=](const Fixture& f) {
    std::string t = f.Good("a-rs");
    return WithSignature(t, RawSignature(t).substr(1));
  });
  add("signature over another payload", Reason::kBadSignature, [=](const Fixture& f) {
    std::string other = f.Sign("a-es", Claims(kIssA, kTenantA, kNow, R"(,"roles":["admin"])"));
    return WithSignature(f.Good(), RawSignature(other));
  });
  // --- kid abuse: never a path, never a query ---
  for (std::string kid : {std::string("../../../../../../dev/null"), std::string("a-es' OR '1'='1"),
                          std::string("a-es\"; DROP TABLE keys; --"), std::string("/etc/passwd"),
                          std::string("a-es\0", 5)}) {
    add("kid injection " + kid.substr(0, 12), Reason::kUnknownKid, [=](const Fixture& f) {
      std::string h;
      json::Writer w;
      w.BeginObject().Key("alg").String("ES256").Key("kid").String(kid).EndObject();
      return es(f, w.str(), good_claims);
    });
  }
  add("missing kid", Reason::kMissingKid, [=](const Fixture& f) { return es(f, R"({"alg":"ES256"})", good_claims); });
  // --- key material from the token itself ---
  for (std::string member : {"jku", "x5u"}) {
    add(member + " pointing at an attacker key set", Reason::kKeyReferenceNotAllowed, [=](const Fixture& f) {
      return es(f, fmt::format(R"({{"alg":"ES256","kid":"a-es","{}":"https://attacker.example/keys"}})", member),
                good_claims);
    });
  }
  add("embedded jwk with the attacker's key", Reason::kKeyReferenceNotAllowed, [=](const Fixture&) {
    auto attacker = crypto::PrivateKey::Generate(A::kES256).value();
    std::string h = R"({"alg":"ES256","jwk":)" + attacker.public_key().ToJwk() + "}";
    return SignRaw(attacker, A::kES256, h, good_claims);
  });
  add("x5c with the attacker's certificate chain", Reason::kKeyReferenceNotAllowed, [=](const Fixture& f) {
    return es(f, R"({"alg":"ES256","kid":"a-es","x5c":["MIIB"]})", good_claims);
  });
  // --- the 2023 campaign: keys of other issuers ---
  add("consumer key signs an enterprise token (Storm-0558)", Reason::kKeyIssuerMismatch,
      [=](const Fixture& f) { return f.Sign("consumer-1", Claims(kIssA, kTenantA)); });
  add("tenant B key signs a tenant A token", Reason::kKeyIssuerMismatch,
      [=](const Fixture& f) { return f.Sign("b-es", Claims(kIssA, kTenantA)); });
  add("tenant B key with iss A and tid B", Reason::kTenantMismatch,
      [=](const Fixture& f) { return f.Sign("b-es", Claims(kIssA, kTenantB)); });
  add("tid does not match iss", Reason::kTenantMismatch,
      [=](const Fixture& f) { return f.Sign("a-es", Claims(kIssA, kTenantB)); });
  add("tid missing for an enterprise issuer", Reason::kTenantMismatch, [=](const Fixture& f) {
    return f.Sign("a-es", fmt::format(R"({{"iss":"{}","aud":"https://mail.keyward.test","exp":{}}})", kIssA, kNow + 600));
  });
  add("consumer token at an enterprise resource", Reason::kConsumerTokenRefused, [=](const Fixture& f) {
    return f.Sign("consumer-1", Claims(IssuerOf(testing::kConsumerTenant), testing::kConsumerTenant));
  });
  add("issuer on another host", Reason::kIssuerMismatch, [=](const Fixture& f) {
    return f.Sign("a-es", Claims(fmt::format("https://login.attacker.example/{}/v2.0", kTenantA), kTenantA));
  });
  add("issuer with an extra path segment", Reason::kIssuerMismatch, [=](const Fixture& f) {
    return f.Sign("a-es", Claims(fmt::format("https://login.keyward.test/x/{}/v2.0", kTenantA), kTenantA));
  });
  // --- key state ---
  add("revoked key", Reason::kKeyRevoked, [=](const Fixture& f) { return f.Good("a-revoked"); });
  add("retired key", Reason::kKeyRetired, [=](const Fixture& f) { return f.Good("a-retired"); });
  add("key past its not-after", Reason::kKeyExpired, [=](const Fixture& f) { return f.Good("a-expired"); });
  add("key before its not-before", Reason::kKeyNotYetValid, [=](const Fixture& f) { return f.Good("a-future"); });
  add("RS256 token under an ES256-pinned kid", Reason::kAlgNotAllowed, [=](const Fixture& f) {
    return SignRaw(f.Private("a-rs"), A::kRS256, R"({"alg":"RS256","kid":"a-es"})", good_claims);
  });
  add("PS256 token under an RS256-pinned kid", Reason::kAlgNotAllowed, [=](const Fixture& f) {
    return SignRaw(f.Private("a-rs"), A::kPS256, R"({"alg":"PS256","kid":"a-rs"})", good_claims);
  });
  // --- time claims ---
  add("missing exp", Reason::kMissingClaim, [=](const Fixture& f) { return es(f, hdr_es, ClaimsWith(R"("iat":1700000000)")); });
  add("exp beyond int64", Reason::kInvalidClaim,
      [=](const Fixture& f) { return es(f, hdr_es, ClaimsWith(R"("exp":99999999999999999999999)")); });
  add("exp of 2^63", Reason::kInvalidClaim,
      [=](const Fixture& f) { return es(f, hdr_es, ClaimsWith(R"("exp":9223372036854775808)")); });
  add("exp of 1e400", Reason::kInvalidClaim, [=](const Fixture& f) { return es(f, hdr_es, ClaimsWith(R"("exp":1e400)")); });
  add("exp negative", Reason::kInvalidClaim, [=](const Fixture& f) { return es(f, hdr_es, ClaimsWith(R"("exp":-1)")); });
  add("exp as a string", Reason::kInvalidClaim, [=](const Fixture& f) { return es(f, hdr_es, ClaimsWith(R"("exp":"1700003600")")); });
  add("exp in the past", Reason::kExpired, [=](const Fixture& f) {
    return es(f, hdr_es, ClaimsWith(fmt::format(R"("iat":{},"exp":{})", kNow - 7200, kNow - 3600)));
  });
  add("nbf in the future", Reason::kNotYetValid, [=](const Fixture& f) {
    return es(f, hdr_es, ClaimsWith(fmt::format(R"("nbf":{},"exp":{})", kNow + 600, kNow + 3600)));
  });
  add("iat in the future", Reason::kIssuedInFuture, [=](const Fixture& f) {
    return es(f, hdr_es, ClaimsWith(fmt::format(R"("iat":{},"exp":{})", kNow + 600, kNow + 3600)));
  });
  add("lifetime of ten years", Reason::kLifetimeTooLong, [=](const Fixture& f) {
    return es(f, hdr_es, ClaimsWith(fmt::format(R"("iat":{},"exp":{})", kNow, kNow + 315360000)));
  });
  add("missing iss", Reason::kMissingClaim, [=](const Fixture& f) {
    return es(f, hdr_es, fmt::format(R"({{"tid":"{}","aud":"https://mail.keyward.test","exp":{}}})", kTenantA, kNow + 60));
  });
  add("iss as a number", Reason::kInvalidClaim, [=](const Fixture& f) {
    return es(f, hdr_es, fmt::format(R"({{"iss":1,"exp":{}}})", kNow + 60));
  });
  // --- audience ---
  add("wrong audience", Reason::kAudienceMismatch, [=](const Fixture& f) {
    return es(f, hdr_es, fmt::format(R"({{"iss":"{}","tid":"{}","aud":"https://files.keyward.test","exp":{}}})", kIssA, kTenantA, kNow + 600));
  });
  add("no audience", Reason::kAudienceMismatch, [=](const Fixture& f) {
    return es(f, hdr_es, fmt::format(R"({{"iss":"{}","tid":"{}","exp":{}}})", kIssA, kTenantA, kNow + 600));
  });
  add("audience array of the wrong type", Reason::kInvalidClaim, [=](const Fixture& f) {
    return es(f, hdr_es, fmt::format(R"({{"iss":"{}","tid":"{}","aud":[1],"exp":{}}})", kIssA, kTenantA, kNow + 600));
  });
  // --- duplicate members: two parsers, two meanings ---
  add("duplicate alg in the header", Reason::kMalformed,
      [=](const Fixture& f) { return es(f, R"({"alg":"none","alg":"ES256","kid":"a-es"})", good_claims); });
  add("duplicate kid in the header", Reason::kMalformed,
      [=](const Fixture& f) { return es(f, R"({"alg":"ES256","kid":"b-es","kid":"a-es"})", good_claims); });
  add("duplicate iss in the claims", Reason::kMalformed, [=](const Fixture& f) {
    return es(f, hdr_es, ClaimsWith(R"("iss":"https://login.keyward.test/other/v2.0","exp":1700003600)"));
  });
  add("duplicate tid in the claims", Reason::kMalformed,
      [=](const Fixture& f) { return es(f, hdr_es, ClaimsWith(fmt::format(R"("tid":"{}","exp":1700003600)", kTenantB))); });
  add("duplicate member escaped differently", Reason::kMalformed,
      [=](const Fixture& f) { return es(f, hdr_es, ClaimsWith(R"("\u0065xp":1,"exp":1700003600)")); });
  add("duplicate member in a nested object", Reason::kMalformed,
      [=](const Fixture& f) { return es(f, hdr_es, ClaimsWith(R"("cnf":{"a":1,"a":2},"exp":1700003600)")); });
  // --- base64url canonical form ---
  add("padded header", Reason::kMalformed, [=](const Fixture& f) {
    std::string t = f.Good();
    std::string h = t.substr(0, t.find('.'));
    while (h.size() % 4) h += '=';
    return h + t.substr(t.find('.'));
  });
  add("padded signature", Reason::kMalformed, [=](const Fixture& f) { return f.Good() + "=="; });
  add("space inside the token", Reason::kMalformed, [=](const Fixture& f) {
    std::string t = f.Good();
    return t.insert(10, " ");
  });
  add("newline inside the token", Reason::kMalformed, [=](const Fixture& f) {
    std::string t = f.Good();
    return t.insert(t.find('.') + 5, "\n");
  });
  add("trailing newline", Reason::kMalformed, [=](const Fixture& f) { return f.Good() + "\n"; });
  add("standard alphabet in the signature", Reason::kMalformed, [=](const Fixture& f) {
    std::string t = f.Good();
    size_t dot = t.rfind('.');
    for (size_t i = dot + 1; i < t.size(); ++i) {
      if (t[i] == '-') t[i] = '+';
      if (t[i] == '_') t[i] = '/';
    }
    if (t.find('+', dot) == std::string::npos && t.find('/', dot) == std::string::npos) t[dot + 1] = '+';
    return t;
  });
  add("non-zero spare bits in the signature", Reason::kMalformed, [=](const Fixture& f) {
    // 64 bytes encode to 86 characters; the last one carries 2 spare bits.
    std::string t = f.Good();
    char& last = t.back();
    static constexpr char kAlphabet[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    int v = static_cast<int>(std::string_view(kAlphabet).find(last));
    last = kAlphabet[v | 1];
    return t;
  });
  // --- structure ---
  add("empty token", Reason::kMalformed, [=](const Fixture&) { return std::string(); });
  add("two segments", Reason::kMalformed, [=](const Fixture& f) {
    std::string t = f.Good();
    return t.substr(0, t.rfind('.'));
  });
  add("four segments", Reason::kMalformed, [=](const Fixture& f) { return f.Good() + ".AAAA"; });
  add("JWE compact (five segments)", Reason::kEncryptedToken, [=](const Fixture&) {
    return B64(R"({"alg":"RSA-OAEP","enc":"A256GCM"})") + ".AAAA.AAAA.AAAA.AAAA";
  });
  add("JWE header in three segments", Reason::kEncryptedToken,
      [=](const Fixture& f) { return es(f, R"({"alg":"ES256","enc":"A256GCM","kid":"a-es"})", good_claims); });
  add("nested token (cty JWT)", Reason::kNestedToken,
      [=](const Fixture& f) { return es(f, R"({"alg":"ES256","kid":"a-es","cty":"JWT"})", f.Good()); });
  add("header is a JSON array", Reason::kMalformed, [=](const Fixture& f) { return es(f, R"(["ES256"])", good_claims); });
  add("claims are not JSON", Reason::kMalformed, [=](const Fixture& f) { return es(f, hdr_es, "not json"); });
  add("oversized token (17 KiB)", Reason::kOversized, [=](const Fixture& f) {
    return es(f, hdr_es, ClaimsWith(fmt::format(R"("pad":"{}","exp":{})", std::string(17 * 1024, 'x'), kNow + 60)));
  });
  add("deeply nested claims", Reason::kMalformed, [=](const Fixture& f) {
    return es(f, hdr_es, ClaimsWith(R"("deep":)" + std::string(100, '[') + std::string(100, ']') + R"(,"exp":1700003600)"));
  });
  add("deeply nested header", Reason::kMalformed, [=](const Fixture& f) {
    return es(f, R"({"alg":"ES256","kid":"a-es","x":)" + std::string(40, '[') + std::string(40, ']') + "}", good_claims);
  });
  add("invalid UTF-8 in the claims", Reason::kMalformed,
      [=](const Fixture& f) { return es(f, hdr_es, ClaimsWith("\"name\":\"\xff\xfe\",\"exp\":1700003600")); });
  // --- extensions ---
  add("unknown crit entry", Reason::kCritUnsupported,
      [=](const Fixture& f) { return es(f, R"({"alg":"ES256","kid":"a-es","crit":["exp"],"exp":1})", good_claims); });
  add("b64 false with crit", Reason::kCritUnsupported,
      [=](const Fixture& f) { return es(f, R"({"alg":"ES256","kid":"a-es","b64":false,"crit":["b64"]})", good_claims); });
  add("b64 false without crit", Reason::kB64Unsupported,
      [=](const Fixture& f) { return es(f, R"({"alg":"ES256","kid":"a-es","b64":false})", good_claims); });
  return v;
}

class AttackCatalogue : public testing::SharedFixtureTest {};

TEST_F(AttackCatalogue, EveryAttackIsRejectedWithItsReason) {
  auto verifier = fixture_->MakeVerifier();
  auto attacks = Catalogue();
  int checked = 0;
  for (const Attack& a : attacks) {
    SCOPED_TRACE(a.name);
    std::string token = a.make(*fixture_);
    VerifyResult r = verifier->Verify(token);
    EXPECT_EQ(ReasonCode(r.reason), ReasonCode(a.expected)) << a.name << ": " << r.detail;
    EXPECT_FALSE(r.token) << a.name;
    // A second presentation must not be served from the cache.
    VerifyResult again = verifier->Verify(token);
    EXPECT_EQ(again.reason, r.reason) << a.name;
    EXPECT_FALSE(again.from_cache);
    ++checked;
  }
  std::printf("attack catalogue: %d cases\n", checked);
  EXPECT_GE(checked, 40);
}

TEST_F(AttackCatalogue, LegitimateTokensPassForEveryAlgorithm) {
  auto verifier = fixture_->MakeVerifier();
  for (std::string kid : {"a-es", "a-ed", "a-rs", "a-ps"}) {
    VerifyResult r = verifier->Verify(fixture_->Good(kid));
    EXPECT_TRUE(r.ok()) << kid << ": " << ReasonCode(r.reason) << " " << r.detail;
  }
  // A multi-tenant template key signs for any tenant, but only for the tenant in iss.
  EXPECT_TRUE(verifier->Verify(fixture_->Sign("t-es", Claims(IssuerOf(kTenantB), kTenantB))).ok());
  EXPECT_EQ(verifier->Verify(fixture_->Sign("t-es", Claims(IssuerOf(kTenantB), kTenantA))).reason,
            Reason::kTenantMismatch);
}

TEST_F(AttackCatalogue, RejectionsCarryWhatTheTokenAsserted) {
  auto verifier = fixture_->MakeVerifier();
  VerifyResult r = verifier->Verify(fixture_->Sign("consumer-1", Claims(kIssA, kTenantA)));
  ASSERT_EQ(r.reason, Reason::kKeyIssuerMismatch);
  EXPECT_EQ(r.kid, "consumer-1");
  EXPECT_EQ(r.iss, kIssA);
  EXPECT_EQ(r.tid, kTenantA);
  EXPECT_NE(r.claims_json.find("alice"), std::string::npos);
  EXPECT_NE(r.detail.find("consumer"), std::string::npos);
}

}  // namespace
}  // namespace kw::token
