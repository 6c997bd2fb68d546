// Project Wycheproof JOSE vectors (C2SP/wycheproof, testvectors_v1) run through
// crypto::PublicKey::FromJwkObject and token::VerifyJwsWithKey.
//
// json_web_signature_test.json: each group holds one JWK and compact tokens. Groups whose key we
// cannot support by design (symmetric keys, RS384/RS512/PS384/PS512, ES512 on P-521) are "not
// applicable"; their tokens, and "valid" tokens signed with an algorithm we do not implement, must
// still be refused under every key the file lets us import. Every other token must verify exactly
// when Wycheproof calls it valid, with the algorithm pinned by the key's "alg".
//
// json_web_key_test.json: each group holds a key set. A token is accepted when exactly one member
// of the set carries its "kid", that key imports under our acceptance rules, and the token
// verifies under it with the key's "alg". Keys we refuse (symmetric, small or ROCA RSA, exponent
// 1, wrong use, bad point, wrong curve or kty) simply take no part; a "kid" that appears twice in
// the set makes it ambiguous, so its tokens are refused. Valid HMAC tokens are not applicable.

#include <fmt/format.h>
#include <gtest/gtest.h>

#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "core/base64url.h"
#include "core/file.h"
#include "core/json.h"
#include "crypto/crypto.h"
#include "token/jws.h"

namespace kw::token {
namespace {

using crypto::Algorithm;
using crypto::PublicKey;

const std::string kVectorDir = KEYWARD_SHARED_DIR "/testdata/wycheproof/";

struct Tally {
  int valid = 0, valid_accepted = 0;
  int invalid = 0, invalid_rejected = 0;
  int acceptable = 0;
  int na_valid = 0, na_invalid = 0, na_rejected = 0;

  // Counts one applicable vector and asserts its outcome; `file` names the vector file.
  void Record(std::string_view file, std::string_view result, bool accepted,
              const std::string& where, const std::string& why) {
    if (result == "valid") {
      ++valid;
      valid_accepted += accepted;
      EXPECT_TRUE(accepted) << where << ": valid token rejected: " << why;
    } else if (result == "invalid") {
      ++invalid;
      invalid_rejected += !accepted;
      EXPECT_FALSE(accepted) << where << ": invalid token accepted";
    } else {
      ++acceptable;
      fmt::print("wycheproof {} acceptable {}: {}\n", file, where, accepted ? "accepted" : "rejected");
    }
  }
};

void PrintTally(std::string_view name, const Tally& t) {
  fmt::print(
      "wycheproof {}: {}/{} valid accepted, {}/{} invalid rejected, {} acceptable, "
      "{} not applicable ({} valid, {} invalid; {}/{} rejected)\n",
      name, t.valid_accepted, t.valid, t.invalid_rejected, t.invalid, t.acceptable,
      t.na_valid + t.na_invalid, t.na_valid, t.na_invalid, t.na_rejected,
      t.na_valid + t.na_invalid);
  std::fflush(stdout);
}

Result<json::Object> AsObject(json::Element e) {
  auto r = e.get_object();
  if (r.error()) return InvalidArgumentError("expected a JSON object");
  return r.value_unsafe();
}

// One parsed vector file; the DOM lives as long as this object.
class VectorFile {
 public:
  Status Load(const std::string& name) {
    KW_ASSIGN_OR_RETURN(text_, ReadFile(kVectorDir + name));
    KW_ASSIGN_OR_RETURN(json::Element doc, parser_.Parse(text_));
    KW_ASSIGN_OR_RETURN(json::Object root, AsObject(doc));
    auto declared = root.at_key("numberOfTests").get_int64();
    if (declared.error()) return InvalidArgumentError("numberOfTests is not an integer");
    declared_ = declared.value_unsafe();
    KW_ASSIGN_OR_RETURN(groups_, json::GetArray(root, "testGroups"));
    return Status::Ok();
  }
  json::Array groups() const { return groups_; }
  int64_t declared() const { return declared_; }

 private:
  std::string text_;
  json::StrictParser parser_{/*max_bytes=*/8 << 20, /*max_depth=*/16};
  json::Array groups_;
  int64_t declared_ = 0;
};

// One test vector's members.
struct Vector {
  int64_t id = 0;
  std::string_view jws;  // the raw string (compact, or JSON serialization text)
  std::string_view result;
  std::string_view comment;
};

Result<Vector> ReadVector(json::Element e) {
  KW_ASSIGN_OR_RETURN(json::Object o, AsObject(e));
  Vector v;
  auto id = o.at_key("tcId").get_int64();
  if (id.error()) return InvalidArgumentError("tcId is not an integer");
  v.id = id.value_unsafe();
  KW_ASSIGN_OR_RETURN(v.jws, json::GetString(o, "jws"));
  KW_ASSIGN_OR_RETURN(v.result, json::GetString(o, "result"));
  v.comment = json::FindString(o, "comment").value_or("");
  return v;
}

// A string member of a compact token's header, read only to classify vectors (verification
// parses the token itself); nullopt when the header cannot be read.
std::optional<std::string> HeaderString(std::string_view jws, std::string_view name) {
  size_t dot = jws.find('.');
  if (dot == std::string_view::npos) return std::nullopt;
  auto header = Base64UrlDecode(jws.substr(0, dot));
  if (!header.ok()) return std::nullopt;
  json::StrictParser parser(64 * 1024, 16);
  auto doc = parser.Parse(*header);
  if (!doc.ok()) return std::nullopt;
  auto obj = AsObject(*doc);
  if (!obj.ok()) return std::nullopt;
  auto value = json::FindString(*obj, name);
  if (!value) return std::nullopt;
  return std::string(*value);
}

// The algorithms a token may be verified with under `jwk`: its "alg" when present, otherwise
// every algorithm the key type allows.
std::vector<Algorithm> CandidateAlgorithms(json::Object jwk, const PublicKey& key) {
  std::vector<Algorithm> out;
  if (auto alg = json::FindString(jwk, "alg")) {
    if (auto parsed = crypto::ParseAlgorithm(*alg)) out.push_back(*parsed);
    return out;
  }
  for (Algorithm alg : crypto::kAllAlgorithms) {
    if (key.Supports(alg)) out.push_back(alg);
  }
  return out;
}

// Why a JWS group's key is outside what Keyward supports by design, or nullopt if it is in scope.
std::optional<std::string> NotApplicableReason(json::Object jwk) {
  auto kty = json::FindString(jwk, "kty");
  if (kty && *kty == "oct") return "symmetric key";
  auto crv = json::FindString(jwk, "crv");
  if (crv && *crv == "P-521") return "curve P-521";
  auto alg = json::FindString(jwk, "alg");
  if (alg && !crypto::ParseAlgorithm(*alg)) return fmt::format("algorithm {}", *alg);
  return std::nullopt;
}

// True if the JWK says it is for encryption: "use" is "enc" or "key_ops" names encrypt/decrypt.
bool IsEncryptionKey(json::Object jwk) {
  if (json::FindString(jwk, "use").value_or("") == "enc") return true;
  auto ops = jwk.at_key("key_ops").get_array();
  if (ops.error()) return false;
  for (json::Element op : ops.value_unsafe()) {
    auto name = op.get_string();
    if (!name.error() && (name.value_unsafe() == "encrypt" || name.value_unsafe() == "decrypt")) {
      return true;
    }
  }
  return false;
}

bool VectorsPresent() { return std::filesystem::is_directory(kVectorDir); }

struct JwsGroup {
  json::Object jwk;
  std::optional<std::string> not_applicable;
  Result<PublicKey> key = InvalidArgumentError("not imported");
  std::vector<Algorithm> algs;
  std::string name;  // for messages: comment and kid
};

TEST(WycheproofJwsTest, JsonWebSignature) {
  if (!VectorsPresent()) GTEST_SKIP() << "Wycheproof vectors not found in " << kVectorDir;
  VectorFile file;
  Status loaded = file.Load("json_web_signature_test.json");
  ASSERT_TRUE(loaded.ok()) << loaded.ToString();

  // First pass: classify every group and import its key, so that tokens from groups we do not
  // support can be tried against every key the file lets us import, each with its pinned "alg".
  std::vector<JwsGroup> groups;
  struct PoolKey {
    PublicKey key;
    std::vector<Algorithm> algs;
    std::string name;
  };
  std::vector<PoolKey> pool;
  for (json::Element group_el : file.groups()) {
    auto group = AsObject(group_el);
    ASSERT_TRUE(group.ok());
    auto jwk = json::GetObject(*group, "private");
    ASSERT_TRUE(jwk.ok()) << jwk.status().ToString();
    JwsGroup g{.jwk = *jwk};
    g.name = fmt::format("group '{}' kid '{}'", json::FindString(*group, "comment").value_or(""),
                         json::FindString(*jwk, "kid").value_or(""));
    g.not_applicable = NotApplicableReason(*jwk);
    g.key = PublicKey::FromJwkObject(*jwk);
    if (g.key.ok()) {
      g.algs = CandidateAlgorithms(*jwk, *g.key);
      pool.push_back({*g.key, g.algs, g.name});
      auto priv = crypto::PrivateKey::FromJwkObject(*jwk);
      EXPECT_TRUE(priv.ok()) << g.name << ": private JWK rejected: " << priv.status().ToString();
      if (priv.ok()) {
        EXPECT_TRUE(priv->public_key().Equals(*g.key)) << g.name;
      }
    } else {
      fmt::print("wycheproof JWS key rejected: {}: {}\n", g.name, g.key.status().message());
    }
    EXPECT_FALSE(IsEncryptionKey(*jwk) && g.key.ok()) << g.name << ": encryption key imported";
    EXPECT_FALSE(g.not_applicable && g.key.ok())
        << g.name << ": a key outside our scope (" << *g.not_applicable << ") was imported";
    groups.push_back(std::move(g));
  }
  fmt::print("wycheproof JWS keys: {}/{} imported\n", pool.size(), groups.size());
  ASSERT_FALSE(pool.empty());

  Tally t;
  size_t gi = 0;
  for (json::Element group_el : file.groups()) {
    const JwsGroup& g = groups[gi++];
    auto tests = json::GetArray(*AsObject(group_el), "tests");
    ASSERT_TRUE(tests.ok()) << tests.status().ToString();
    for (json::Element test_el : *tests) {
      auto v = ReadVector(test_el);
      ASSERT_TRUE(v.ok()) << v.status().ToString();
      const std::string where = fmt::format("tcId {} ({}, {})", v->id, v->comment, g.name);

      auto header_alg = HeaderString(v->jws, "alg");
      const bool unsupported_alg_valid =
          v->result == "valid" && header_alg && !crypto::ParseAlgorithm(*header_alg);
      if (g.not_applicable || unsupported_alg_valid) {
        (v->result == "valid" ? t.na_valid : t.na_invalid)++;
        bool rejected = true;
        for (const PoolKey& k : pool) {
          for (Algorithm alg : k.algs) {
            Reason r = VerifyJwsWithKey(v->jws, k.key, alg);
            EXPECT_NE(r, Reason::kOk)
                << where << ": accepted under " << k.name << " with " << crypto::AlgorithmName(alg);
            rejected &= r != Reason::kOk;
          }
        }
        t.na_rejected += rejected;
        continue;
      }

      bool accepted = false;
      std::string detail;
      if (g.key.ok()) {
        for (Algorithm alg : g.algs) {
          accepted |= VerifyJwsWithKey(v->jws, *g.key, alg, {}, &detail) == Reason::kOk;
        }
      } else {
        detail = "key import failed: " + g.key.status().message();
      }
      t.Record("JWS", v->result, accepted, where, detail);
    }
  }
  PrintTally("JWS", t);
  EXPECT_GT(t.valid, 0);
  EXPECT_GT(t.invalid, 0);
  EXPECT_EQ(t.valid + t.invalid + t.acceptable + t.na_valid + t.na_invalid, file.declared());
}

TEST(WycheproofJwsTest, JsonWebKeySet) {
  if (!VectorsPresent()) GTEST_SKIP() << "Wycheproof vectors not found in " << kVectorDir;
  VectorFile file;
  Status loaded = file.Load("json_web_key_test.json");
  ASSERT_TRUE(loaded.ok()) << loaded.ToString();

  struct Imported {
    std::string kid;
    PublicKey key;
    std::optional<Algorithm> alg;
  };
  Tally t;
  int keys_total = 0, keys_imported = 0;
  for (json::Element group_el : file.groups()) {
    auto group = AsObject(group_el);
    ASSERT_TRUE(group.ok());
    const std::string group_name(json::FindString(*group, "comment").value_or(""));
    auto jwks = json::GetObject(*group, "private");
    ASSERT_TRUE(jwks.ok()) << jwks.status().ToString();
    auto keys = json::GetArray(*jwks, "keys");
    ASSERT_TRUE(keys.ok()) << keys.status().ToString();

    std::map<std::string, int> kid_count;  // over every member of the set, importable or not
    std::vector<Imported> imported;
    for (json::Element key_el : *keys) {
      auto jwk = AsObject(key_el);
      ASSERT_TRUE(jwk.ok());
      ++keys_total;
      std::string kid(json::FindString(*jwk, "kid").value_or(""));
      if (json::Has(*jwk, "kid")) ++kid_count[kid];
      auto key = PublicKey::FromJwkObject(*jwk);
      if (!key.ok()) {
        fmt::print("wycheproof JWK key skipped: group '{}' kid '{}': {}\n", group_name, kid,
                   key.status().message());
        continue;
      }
      ++keys_imported;
      std::optional<Algorithm> alg;
      if (auto alg_name = json::FindString(*jwk, "alg")) alg = crypto::ParseAlgorithm(*alg_name);
      imported.push_back({kid, *key, alg});
    }

    auto tests = json::GetArray(*group, "tests");
    ASSERT_TRUE(tests.ok()) << tests.status().ToString();
    for (json::Element test_el : *tests) {
      auto v = ReadVector(test_el);
      ASSERT_TRUE(v.ok()) << v.status().ToString();
      const std::string where =
          fmt::format("tcId {} ({}, group '{}')", v->id, v->comment, group_name);
      bool accepted = false;
      std::string why = "no imported key carries the token's kid";
      auto kid = HeaderString(v->jws, "kid");
      if (!kid) {
        why = "token has no readable kid";
      } else if (kid_count[*kid] > 1) {
        why = "kid appears more than once in the key set";
      } else {
        const Imported* match = nullptr;
        for (const Imported& k : imported) {
          if (k.kid == *kid) match = &k;
        }
        if (match && !match->alg) {
          why = "the key has no usable alg";
        } else if (match) {
          Reason r = VerifyJwsWithKey(v->jws, match->key, *match->alg, {}, &why);
          accepted = r == Reason::kOk;
        }
      }

      auto header_alg = HeaderString(v->jws, "alg");
      const bool hmac = header_alg && header_alg->starts_with("HS");
      if (v->result == "valid" && hmac) {
        ++t.na_valid;
        t.na_rejected += !accepted;
        EXPECT_FALSE(accepted) << where << ": HMAC token accepted";
      } else {
        t.Record("JWK", v->result, accepted, where, why);
      }
    }
  }
  fmt::print("wycheproof JWK keys: {}/{} imported\n", keys_imported, keys_total);
  PrintTally("JWK", t);
  EXPECT_GT(t.valid, 0);
  EXPECT_GT(t.invalid, 0);
  EXPECT_GT(keys_imported, 0);
  EXPECT_EQ(t.valid + t.invalid + t.acceptable + t.na_valid + t.na_invalid, file.declared());
}

}  // namespace
}  // namespace kw::token
