#include "token/jws.h"

#include <gtest/gtest.h>

#include "core/base64url.h"

namespace kw::token {
namespace {

TEST(JwsTest, SignAndParseRoundTrip) {
  for (auto alg : crypto::kAllAlgorithms) {
    auto key = crypto::PrivateKey::Generate(alg).value();
    auto token = SignCompact(key, alg, "kid-1", R"({"sub":"x"})").value();
    ParsedJws jws;
    std::string detail;
    ASSERT_EQ(ParseCompactJws(token, {}, &jws, &detail), Reason::kOk) << detail;
    EXPECT_EQ(jws.alg, alg);
    EXPECT_EQ(jws.kid, "kid-1");
    EXPECT_TRUE(jws.has_kid);
    EXPECT_EQ(jws.typ, "JWT");
    EXPECT_EQ(jws.payload, R"({"sub":"x"})");
    EXPECT_EQ(token.substr(0, jws.signing_input.size()), jws.signing_input);
    EXPECT_EQ(VerifyJwsWithKey(token, key.public_key(), alg), Reason::kOk);
    // The same token under the wrong algorithm or key is refused.
    auto other = crypto::PrivateKey::Generate(alg).value();
    EXPECT_EQ(VerifyJwsWithKey(token, other.public_key(), alg), Reason::kBadSignature);
  }
}

TEST(JwsTest, DetailsNameTheProblem) {
  struct Row {
    std::string token;
    Reason reason;
    std::string detail_contains;
  } rows[] = {
      {"abc", Reason::kMalformed, "no '.'"},
      {"a.b", Reason::kMalformed, "2 segments"},
      {"a.b.c.d", Reason::kMalformed, "4 segments"},
      {"a.b.c.d.e.f", Reason::kMalformed, "6 segments"},
      {".b.c", Reason::kMalformed, "empty header"},
      {"a=.b.c", Reason::kMalformed, "base64url"},
      {Base64UrlEncode(R"({"alg":"ES256"})") + ".e30.", Reason::kMalformed, "empty signature"},
      {Base64UrlEncode(R"({"alg":"ES256","kid":7})") + ".e30.AA", Reason::kMalformed, "kid"},
      {Base64UrlEncode(R"({"alg":"ES256","kid":")" + std::string(300, 'k') + R"("})") + ".e30.AA",
       Reason::kMalformed, "256"},
      {Base64UrlEncode(R"({"kid":"x"})") + ".e30.AA", Reason::kMalformed, "no \"alg\""},
      {Base64UrlEncode(R"({"alg":"RS512"})") + ".e30.AA", Reason::kAlgNotAllowed, "RS512"},
      {Base64UrlEncode(R"({"alg":"ES256","cty":"jwt"})") + ".e30.AA", Reason::kNestedToken, "nested"},
  };
  for (const auto& row : rows) {
    ParsedJws jws;
    std::string detail;
    EXPECT_EQ(ParseCompactJws(row.token, {}, &jws, &detail), row.reason) << row.token;
    EXPECT_NE(detail.find(row.detail_contains), std::string::npos) << row.token << " -> " << detail;
  }
}

TEST(JwsTest, SizeLimitIsConfigurable) {
  JwsLimits small;
  small.max_token_bytes = 10;
  ParsedJws jws;
  EXPECT_EQ(ParseCompactJws("aaaaaa.bbbbbb.cccccc", small, &jws, nullptr), Reason::kOversized);
}

TEST(JwsTest, ClaimsTypes) {
  Claims c;
  std::string d;
  EXPECT_EQ(ParseClaims(R"({"aud":["a","b"],"exp":1.5,"appid":"app"})", {}, &c, &d), Reason::kOk);
  EXPECT_EQ(c.aud.size(), 2u);
  EXPECT_EQ(*c.exp, 1);
  EXPECT_EQ(c.azp, "app");
  EXPECT_EQ(ParseClaims(R"({"aud":{"x":1}})", {}, &c, &d), Reason::kInvalidClaim);
  EXPECT_EQ(ParseClaims(R"({"nbf":true})", {}, &c, &d), Reason::kInvalidClaim);
  EXPECT_EQ(ParseClaims(R"({"iat":253402300800})", {}, &c, &d), Reason::kInvalidClaim);
  EXPECT_EQ(ParseClaims(R"([1])", {}, &c, &d), Reason::kMalformed);
  EXPECT_EQ(ParseClaims(R"({"a":1,)", {}, &c, &d), Reason::kMalformed);
}

}  // namespace
}  // namespace kw::token
