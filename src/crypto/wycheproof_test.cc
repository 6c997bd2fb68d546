// Project Wycheproof signature vectors (C2SP/wycheproof, testvectors_v1) run through
// crypto::VerifySignature, with each group's key imported from DER and cross-checked against its
// PEM and JWK forms. The JWK/JWS vector files need the token module and run in
// token/wycheproof_jws_test.cc.
//
// Every "valid" vector must verify and every "invalid" one must not; "acceptable" vectors are
// counted and their outcome printed, not asserted. A group whose key fails our acceptance rules
// counts all its vectors as rejected, which is a failure for any "valid" vector in it.

#include <fmt/format.h>
#include <gtest/gtest.h>

#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <string>
#include <string_view>

#include "core/base64url.h"
#include "core/file.h"
#include "core/json.h"
#include "crypto/crypto.h"

namespace kw::crypto {
namespace {

const std::string kVectorDir = KEYWARD_SHARED_DIR "/testdata/wycheproof/";

struct Suite {
  const char* file;
  Algorithm alg;
};

constexpr Suite kSuites[] = {
    {"ecdsa_secp256r1_sha256_p1363_test.json", Algorithm::kES256},
    {"ed25519_test.json", Algorithm::kEdDSA},
    {"rsa_signature_2048_sha256_test.json", Algorithm::kRS256},
    {"rsa_pss_2048_sha256_mgf1_32_test.json", Algorithm::kPS256},
};

struct Tally {
  int valid = 0, valid_accepted = 0;
  int invalid = 0, invalid_rejected = 0;
  int acceptable = 0, acceptable_accepted = 0;
};

// Member accessors for the vector files; a missing or mistyped member is a broken file.
Result<std::string> HexMember(json::Object o, std::string_view key) {
  KW_ASSIGN_OR_RETURN(std::string_view hex, json::GetString(o, key));
  return HexDecode(hex);
}

class WycheproofSignatureTest : public testing::TestWithParam<Suite> {};

TEST_P(WycheproofSignatureTest, Vectors) {
  if (!std::filesystem::is_directory(kVectorDir)) {
    GTEST_SKIP() << "Wycheproof vectors not found in " << kVectorDir;
  }
  const Suite& suite = GetParam();
  const std::string_view alg_name = AlgorithmName(suite.alg);
  auto text = ReadFile(kVectorDir + suite.file);
  ASSERT_TRUE(text.ok()) << text.status().ToString();
  json::StrictParser parser(/*max_bytes=*/8 << 20, /*max_depth=*/16);
  auto doc = parser.Parse(*text);
  ASSERT_TRUE(doc.ok()) << suite.file << ": " << doc.status().ToString();
  auto root_r = doc->get_object();
  ASSERT_FALSE(root_r.error()) << suite.file << ": not a JSON object";
  json::Object root = root_r.value_unsafe();
  auto declared = json::GetInt64(root, "numberOfTests");
  ASSERT_TRUE(declared.ok()) << declared.status().ToString();
  auto groups = json::GetArray(root, "testGroups");
  ASSERT_TRUE(groups.ok()) << groups.status().ToString();

  Tally t;
  for (json::Element group_el : *groups) {
    auto group_r = group_el.get_object();
    ASSERT_FALSE(group_r.error()) << "test group is not an object";
    json::Object group = group_r.value_unsafe();
    auto tests = json::GetArray(group, "tests");
    ASSERT_TRUE(tests.ok()) << tests.status().ToString();

    auto der = HexMember(group, "publicKeyDer");
    ASSERT_TRUE(der.ok()) << der.status().ToString();
    Result<PublicKey> key = PublicKey::FromDer(*der);
    if (key.ok()) {
      EXPECT_TRUE(key->Supports(suite.alg)) << alg_name << ": imported key cannot verify this alg";
      auto pem = json::GetString(group, "publicKeyPem");
      ASSERT_TRUE(pem.ok()) << pem.status().ToString();
      auto from_pem = PublicKey::FromPem(*pem);
      ASSERT_TRUE(from_pem.ok()) << alg_name << ": PEM rejected: " << from_pem.status().ToString();
      EXPECT_TRUE(from_pem->Equals(*key)) << alg_name << ": PEM and DER keys differ";
      for (std::string_view member : {"publicKeyJwk", "keyJwk"}) {
        if (!json::Has(group, member)) continue;
        auto jwk = json::GetObject(group, member);
        ASSERT_TRUE(jwk.ok()) << jwk.status().ToString();
        auto from_jwk = PublicKey::FromJwkObject(*jwk);
        ASSERT_TRUE(from_jwk.ok())
            << alg_name << ": " << member << " rejected: " << from_jwk.status().ToString();
        EXPECT_TRUE(from_jwk->Equals(*key)) << alg_name << ": " << member << " and DER keys differ";
      }
    }

    for (json::Element test_el : *tests) {
      auto test_r = test_el.get_object();
      ASSERT_FALSE(test_r.error()) << "test vector is not an object";
      json::Object test = test_r.value_unsafe();
      auto id = json::GetInt64(test, "tcId");
      auto result = json::GetString(test, "result");
      auto msg = HexMember(test, "msg");
      auto sig = HexMember(test, "sig");
      ASSERT_TRUE(id.ok() && result.ok() && msg.ok() && sig.ok())
          << suite.file << ": malformed test vector near tcId " << id.value_or(-1);
      std::string comment(json::FindString(test, "comment").value_or(""));

      SignatureCheck check = SignatureCheck::kInvalid;
      if (key.ok()) check = VerifySignature(suite.alg, *key, *msg, *sig);
      const bool accepted = check == SignatureCheck::kValid;
      if (*result == "valid") {
        ++t.valid;
        t.valid_accepted += accepted;
        EXPECT_TRUE(accepted) << alg_name << " tcId " << *id << " (" << comment
                              << "): valid vector rejected"
                              << (key.ok() ? ""
                                           : "; key import failed: " + key.status().ToString());
      } else if (*result == "invalid") {
        ++t.invalid;
        t.invalid_rejected += !accepted;
        EXPECT_FALSE(accepted) << alg_name << " tcId " << *id << " (" << comment
                               << "): invalid vector accepted";
      } else {
        ASSERT_EQ(*result, "acceptable") << alg_name << " tcId " << *id;
        ++t.acceptable;
        t.acceptable_accepted += accepted;
        fmt::print("wycheproof {} acceptable tcId {} ({}): {}\n", alg_name, *id, comment,
                   accepted ? "accepted" : "rejected");
      }
    }
  }

  fmt::print(
      "wycheproof {}: {}/{} valid accepted, {}/{} invalid rejected, {} acceptable ({} accepted)\n",
      alg_name, t.valid_accepted, t.valid, t.invalid_rejected, t.invalid, t.acceptable,
      t.acceptable_accepted);
  std::fflush(stdout);
  EXPECT_GT(t.valid, 0) << alg_name << ": no valid vectors ran";
  EXPECT_GT(t.invalid, 0) << alg_name << ": no invalid vectors ran";
  EXPECT_EQ(t.valid + t.invalid + t.acceptable, *declared)
      << alg_name << ": vector count differs from the file's numberOfTests";
}

INSTANTIATE_TEST_SUITE_P(Wycheproof, WycheproofSignatureTest, testing::ValuesIn(kSuites),
                         [](const testing::TestParamInfo<Suite>& info) {
                           return std::string(AlgorithmName(info.param.alg));
                         });

}  // namespace
}  // namespace kw::crypto
