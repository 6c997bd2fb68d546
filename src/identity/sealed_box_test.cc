#include "identity/sealed_box.h"

#include <gtest/gtest.h>

#include <set>
#include <string>

namespace kw::identity {
namespace {

const std::string kPlain =
    "-----BEGIN PRIVATE KEY-----\nthis stands for a private key that must never be stored\n";
const std::string kAad = KeyBlobAssociatedData("kid-1", "https://login.keyward.test/t/v2.0",
                                               "enterprise", "t", "ES256");

TEST(SealedBoxTest, RoundTrip) {
  MasterKey m = MasterKey::Generate();
  auto blob = Seal(m, kPlain, kAad);
  ASSERT_TRUE(blob.ok()) << blob.status().ToString();
  EXPECT_EQ(blob->size(), kPlain.size() + kSealedBoxOverhead);
  EXPECT_EQ(static_cast<uint8_t>((*blob)[0]), kSealedBoxVersion);
  auto plain = Unseal(m, *blob, kAad);
  ASSERT_TRUE(plain.ok()) << plain.status().ToString();
  EXPECT_EQ(plain->view(), kPlain);
}

TEST(SealedBoxTest, EmptyPlaintextAndEmptyAssociatedData) {
  MasterKey m = MasterKey::Generate();
  auto blob = Seal(m, "", "");
  ASSERT_TRUE(blob.ok());
  EXPECT_EQ(blob->size(), kSealedBoxOverhead);
  auto plain = Unseal(m, *blob, "");
  ASSERT_TRUE(plain.ok());
  EXPECT_TRUE(plain->empty());
  EXPECT_FALSE(Unseal(m, *blob, "x").ok());
}

TEST(SealedBoxTest, BlobNeverContainsThePlaintext) {
  MasterKey m = MasterKey::Generate();
  std::string blob = Seal(m, kPlain, kAad).value();
  // No 8-byte window of the plaintext appears in the blob.
  for (size_t i = 0; i + 8 <= kPlain.size(); ++i) {
    ASSERT_EQ(blob.find(kPlain.substr(i, 8)), std::string::npos) << i;
  }
}

TEST(SealedBoxTest, EverySealUsesAFreshNonce) {
  MasterKey m = MasterKey::Generate();
  std::set<std::string> blobs;
  for (int i = 0; i < 50; ++i) blobs.insert(Seal(m, kPlain, kAad).value());
  EXPECT_EQ(blobs.size(), 50u);
}

TEST(SealedBoxTest, TamperingAnyByteFails) {
  MasterKey m = MasterKey::Generate();
  std::string blob = Seal(m, kPlain, kAad).value();
  for (size_t i = 0; i < blob.size(); ++i) {
    for (uint8_t flip : {0x01, 0x80}) {
      std::string bad = blob;
      bad[i] = static_cast<char>(bad[i] ^ flip);
      auto r = Unseal(m, bad, kAad);
      ASSERT_FALSE(r.ok()) << "byte " << i;
      EXPECT_EQ(r.status().code(), StatusCode::kDataLoss);
    }
  }
  // Truncated, extended, empty.
  EXPECT_EQ(Unseal(m, blob.substr(0, blob.size() - 1), kAad).status().code(),
            StatusCode::kDataLoss);
  EXPECT_EQ(Unseal(m, blob + "x", kAad).status().code(), StatusCode::kDataLoss);
  EXPECT_EQ(Unseal(m, "", kAad).status().code(), StatusCode::kDataLoss);
  EXPECT_EQ(Unseal(m, blob.substr(0, kSealedBoxOverhead - 1), kAad).status().code(),
            StatusCode::kDataLoss);
}

TEST(SealedBoxTest, WrongAssociatedDataFails) {
  MasterKey m = MasterKey::Generate();
  std::string blob = Seal(m, kPlain, kAad).value();
  const std::string others[] = {
      KeyBlobAssociatedData("kid-2", "https://login.keyward.test/t/v2.0", "enterprise", "t",
                            "ES256"),
      KeyBlobAssociatedData("kid-1", "https://login.keyward.test/u/v2.0", "enterprise", "t",
                            "ES256"),
      KeyBlobAssociatedData("kid-1", "https://login.keyward.test/t/v2.0", "consumer", "t",
                            "ES256"),
      KeyBlobAssociatedData("kid-1", "https://login.keyward.test/t/v2.0", "enterprise", "u",
                            "ES256"),
      KeyBlobAssociatedData("kid-1", "https://login.keyward.test/t/v2.0", "enterprise", "t",
                            "RS256"),
      "",
  };
  for (const auto& aad : others) {
    auto r = Unseal(m, blob, aad);
    ASSERT_FALSE(r.ok());
    EXPECT_EQ(r.status().code(), StatusCode::kDataLoss);
  }
}

TEST(SealedBoxTest, AssociatedDataFieldsCannotBeShifted) {
  // "ab" + "c" and "a" + "bc" must not give the same associated data.
  EXPECT_NE(KeyBlobAssociatedData("ab", "c", "", "", ""),
            KeyBlobAssociatedData("a", "bc", "", "", ""));
}

TEST(SealedBoxTest, WrongMasterKeyFails) {
  MasterKey m = MasterKey::Generate();
  MasterKey other = MasterKey::Generate();
  std::string blob = Seal(m, kPlain, kAad).value();
  auto r = Unseal(other, blob, kAad);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), StatusCode::kDataLoss);
  EXPECT_NE(r.status().message().find("wrong master key"), std::string::npos);
}

}  // namespace
}  // namespace kw::identity
