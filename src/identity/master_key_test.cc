#include "identity/master_key.h"

#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <string>

#include "core/base64url.h"
#include "identity/test_util.h"

namespace kw::identity {
namespace {

using testing::TempDir;
using testing::WriteWithMode;

const std::string kHexKey = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";

class MasterKeyFileTest : public ::testing::Test {
 protected:
  TempDir dir_;
};

TEST_F(MasterKeyFileTest, MissingFileIsNotFoundAndNamesThePath) {
  std::string path = dir_.File("nope.key");
  auto r = MasterKey::Load(path);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), StatusCode::kNotFound);
  EXPECT_NE(r.status().message().find(path), std::string::npos) << r.status().message();
  EXPECT_NE(r.status().message().find("does not exist"), std::string::npos);
}

// Every content the loader must refuse, and one it must accept per encoding.
struct ContentCase {
  const char* name;
  std::string content;
  bool ok;
};

TEST_F(MasterKeyFileTest, ContentIsExactlyOneEncodedKey) {
  std::string raw32(32, '\x5a');
  std::string b64 = Base64UrlEncode(raw32);
  ASSERT_EQ(b64.size(), 43u);
  const ContentCase cases[] = {
      {"hex", kHexKey, true},
      {"hex upper case", "00112233445566778899AABBCCDDEEFF00112233445566778899AABBCCDDEEFF", true},
      {"hex + LF", kHexKey + "\n", true},
      {"hex + CRLF", kHexKey + "\r\n", true},
      {"base64url", b64, true},
      {"base64url + LF", b64 + "\n", true},
      {"empty", "", false},
      {"hex, 31 bytes", kHexKey.substr(0, 62), false},
      {"hex, 33 bytes", kHexKey + "00", false},
      {"hex with a non-hex digit", kHexKey.substr(0, 63) + "g", false},
      {"hex + two newlines", kHexKey + "\n\n", false},
      {"leading space", " " + kHexKey, false},
      {"inner space", kHexKey.substr(0, 32) + " " + kHexKey.substr(32, 31), false},
      {"base64 with padding", b64 + "=", false},
      {"base64 standard alphabet", std::string(42, 'A') + "+", false},
      {"non-canonical base64url (low bits set)", b64.substr(0, 42) + "B", false},
      {"base64url of 31 bytes", Base64UrlEncode(std::string(31, 'x')), false},
      {"far too long", std::string(4096, 'a'), false},
  };
  for (const auto& c : cases) {
    SCOPED_TRACE(c.name);
    std::string path = dir_.File("k");
    WriteWithMode(path, c.content, 0600);
    auto r = MasterKey::Load(path);
    EXPECT_EQ(r.ok(), c.ok) << r.status().ToString();
    if (!r.ok()) {
      EXPECT_EQ(r.status().code(), StatusCode::kInvalidArgument);
      EXPECT_NE(r.status().message().find(path), std::string::npos);
      // The refusal never repeats what was in the file.
      if (c.content.size() >= 8) {
        EXPECT_EQ(r.status().message().find(c.content.substr(0, 8)), std::string::npos)
            << r.status().message();
      }
    }
  }
}

TEST_F(MasterKeyFileTest, SameKeyInEitherEncodingHasTheSameFingerprint) {
  std::string raw = HexDecode(kHexKey).value();
  WriteWithMode(dir_.File("hex"), kHexKey + "\n", 0600);
  WriteWithMode(dir_.File("b64"), Base64UrlEncode(raw), 0400);
  auto a = MasterKey::Load(dir_.File("hex"));
  auto b = MasterKey::Load(dir_.File("b64"));
  ASSERT_TRUE(a.ok()) << a.status().ToString();
  ASSERT_TRUE(b.ok()) << b.status().ToString();
  EXPECT_EQ(a->Fingerprint(), b->Fingerprint());
  EXPECT_EQ(a->Fingerprint().size(), 16u);
  // The fingerprint is not the key, nor a piece of it.
  EXPECT_EQ(kHexKey.find(a->Fingerprint()), std::string::npos);
  EXPECT_NE(a->Fingerprint(), MasterKey::Generate().Fingerprint());
}

struct ModeCase {
  unsigned mode;
  const char* problem;  // expected in the message; nullptr = accepted
};

TEST_F(MasterKeyFileTest, GroupOrOtherPermissionBitsAreRefused) {
  const ModeCase cases[] = {
      {0600, nullptr},
      {0400, nullptr},
      {0700, nullptr},
      {0644, "readable by group or others (mode 0644); chmod 600 it"},
      {0640, "readable by group or others (mode 0640); chmod 600 it"},
      {0604, "readable by group or others (mode 0604); chmod 600 it"},
      {0620, "writable or executable by group or others (mode 0620); chmod 600 it"},
      {0602, "writable or executable by group or others (mode 0602); chmod 600 it"},
      {0601, "writable or executable by group or others (mode 0601); chmod 600 it"},
  };
  for (const auto& c : cases) {
    SCOPED_TRACE(c.mode);
    std::string path = dir_.File("mode.key");
    WriteWithMode(path, kHexKey, c.mode);
    auto r = MasterKey::Load(path);
    if (!c.problem) {
      EXPECT_TRUE(r.ok()) << r.status().ToString();
      continue;
    }
    ASSERT_FALSE(r.ok());
    EXPECT_EQ(r.status().code(), StatusCode::kPermissionDenied);
    EXPECT_EQ(r.status().message(), "master key file " + path + " is " + c.problem)
        << r.status().message();
  }
}

TEST_F(MasterKeyFileTest, DirectoryIsNotARegularFile) {
  std::string path = dir_.File("d");
  ASSERT_EQ(::mkdir(path.c_str(), 0700), 0);
  auto r = MasterKey::Load(path);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), StatusCode::kPermissionDenied);
  EXPECT_NE(r.status().message().find("is a directory; it must be a regular file"),
            std::string::npos)
      << r.status().message();
}

TEST_F(MasterKeyFileTest, FifoIsRefusedWithoutBlocking) {
  std::string path = dir_.File("fifo");
  ASSERT_EQ(::mkfifo(path.c_str(), 0600), 0);
  auto r = MasterKey::Load(path);
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find("is a FIFO"), std::string::npos) << r.status().message();
}

TEST_F(MasterKeyFileTest, SymlinkIsJudgedByItsTarget) {
  std::string target = dir_.File("target.key");
  std::string link = dir_.File("link.key");
  WriteWithMode(target, kHexKey, 0644);
  ASSERT_EQ(::symlink(target.c_str(), link.c_str()), 0);
  EXPECT_EQ(MasterKey::Load(link).status().code(), StatusCode::kPermissionDenied);
  ::chmod(target.c_str(), 0600);
  EXPECT_TRUE(MasterKey::Load(link).ok());
}

TEST_F(MasterKeyFileTest, FileOwnedByAnotherUserIsRefused) {
  std::string path = dir_.File("other.key");
  WriteWithMode(path, kHexKey, 0600);
  if (::geteuid() != 0) GTEST_SKIP() << "needs root to give the file to another user";
  ASSERT_EQ(::chown(path.c_str(), 65534, 65534), 0);
  auto r = MasterKey::Load(path);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), StatusCode::kPermissionDenied);
  EXPECT_NE(r.status().message().find("is owned by uid 65534"), std::string::npos)
      << r.status().message();
}

TEST_F(MasterKeyFileTest, CreateWritesA0600FileThatLoadsToTheSameKey) {
  std::string path = dir_.File("new.key");
  auto created = MasterKey::Create(path);
  ASSERT_TRUE(created.ok()) << created.status().ToString();
  struct stat st;
  ASSERT_EQ(::stat(path.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 07777, 0600u);
  std::string text = testing::ReadAllOrEmpty(path);
  EXPECT_EQ(text.size(), 65u);
  EXPECT_EQ(text.back(), '\n');
  auto loaded = MasterKey::Load(path);
  ASSERT_TRUE(loaded.ok()) << loaded.status().ToString();
  EXPECT_EQ(loaded->Fingerprint(), created->Fingerprint());
  // Nothing is left behind next to it.
  size_t files = 0;
  for (auto& e : std::filesystem::directory_iterator(dir_.path())) {
    (void)e;
    ++files;
  }
  EXPECT_EQ(files, 1u);
}

TEST_F(MasterKeyFileTest, CreateNeverOverwrites) {
  std::string path = dir_.File("exists.key");
  WriteWithMode(path, kHexKey, 0600);
  auto r = MasterKey::Create(path);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), StatusCode::kAlreadyExists);
  EXPECT_EQ(testing::ReadAllOrEmpty(path), kHexKey);
  // Two creates: the second refuses, the first key stays.
  std::string fresh = dir_.File("fresh.key");
  auto first = MasterKey::Create(fresh);
  ASSERT_TRUE(first.ok());
  EXPECT_EQ(MasterKey::Create(fresh).status().code(), StatusCode::kAlreadyExists);
  EXPECT_EQ(MasterKey::Load(fresh)->Fingerprint(), first->Fingerprint());
}

TEST(MasterKeyTest, MovedFromKeyIsCleansed) {
  MasterKey a = MasterKey::Generate();
  std::string fp = a.Fingerprint();
  MasterKey b = std::move(a);
  EXPECT_EQ(b.Fingerprint(), fp);
  const uint8_t* old = a.bytes_for_sealing();  // NOLINT(bugprone-use-after-move): the point
  for (size_t i = 0; i < MasterKey::kSize; ++i) EXPECT_EQ(old[i], 0) << i;
}

TEST(SecretBytesTest, HoldsAndReleasesBytes) {
  SecretBytes s(std::string(100, 'k'));
  EXPECT_EQ(s.view(), std::string(100, 'k'));
  SecretBytes t = std::move(s);
  EXPECT_TRUE(s.empty());  // NOLINT(bugprone-use-after-move)
  EXPECT_EQ(t.size(), 100u);
  std::string small = "tiny";
  SecretBytes u(std::move(small));
  EXPECT_EQ(u.view(), "tiny");
  EXPECT_TRUE(small.empty());  // NOLINT(bugprone-use-after-move)
}

}  // namespace
}  // namespace kw::identity
