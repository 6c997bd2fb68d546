#include "token/token_cache.h"

#include <gtest/gtest.h>

#include <thread>

namespace kw::token {
namespace {

std::shared_ptr<TrustedKey> MakeKey(const std::string& kid) {
  static auto priv = crypto::PrivateKey::Generate(crypto::Algorithm::kES256).value();
  TrustedKeySpec spec;
  spec.kid = kid;
  spec.issuer = "https://i/t/v2.0";
  spec.tenant_id = "t";
  spec.key = priv.public_key();
  return std::make_shared<TrustedKey>(std::move(spec));
}

std::shared_ptr<VerifiedToken> Entry(const std::shared_ptr<TrustedKey>& key, int64_t exp) {
  auto v = std::make_shared<VerifiedToken>();
  v->claims.exp = exp;
  v->kid = key->kid();
  v->key = key;
  return v;
}

TEST(TokenCacheTest, HitRequiresTheWholeToken) {
  FakeClock clock(1000 * 1000);
  VerifiedTokenCache cache({.max_entries = 100, .shards = 4}, &clock);
  auto key = MakeKey("k");
  cache.Insert("aaa.bbb.ccc", Entry(key, 2000));
  EXPECT_TRUE(cache.Lookup("aaa.bbb.ccc"));
  EXPECT_FALSE(cache.Lookup("aaa.bbb.ccd"));
  EXPECT_FALSE(cache.Lookup("aaa.bbb.cc"));
  EXPECT_FALSE(cache.Lookup(""));
}

TEST(TokenCacheTest, EntryExpiresWithTheToken) {
  FakeClock clock(1000 * 1000);
  VerifiedTokenCache cache({}, &clock);
  auto key = MakeKey("k");
  cache.Insert("t", Entry(key, 1010));
  EXPECT_TRUE(cache.Lookup("t"));
  clock.AdvanceSeconds(10);
  EXPECT_FALSE(cache.Lookup("t"));
}

TEST(TokenCacheTest, TokensWithoutExpAreNotCached) {
  VerifiedTokenCache cache({});
  auto v = std::make_shared<VerifiedToken>();
  v->key = MakeKey("k");
  cache.Insert("t", v);
  EXPECT_EQ(cache.stats().entries, 0u);
}

TEST(TokenCacheTest, EraseKeyDropsOnlyThatKeysEntries) {
  FakeClock clock(1000 * 1000);
  VerifiedTokenCache cache({}, &clock);
  auto k1 = MakeKey("k1"), k2 = MakeKey("k2");
  for (int i = 0; i < 50; ++i) {
    cache.Insert("a" + std::to_string(i), Entry(k1, 5000));
    cache.Insert("b" + std::to_string(i), Entry(k2, 5000));
  }
  cache.EraseKey("k1");
  EXPECT_EQ(cache.stats().entries, 50u);
  EXPECT_FALSE(cache.Lookup("a3"));
  EXPECT_TRUE(cache.Lookup("b3"));
}

TEST(TokenCacheTest, MemoryIsBounded) {
  FakeClock clock(1000 * 1000);
  VerifiedTokenCache cache({.max_entries = 256, .shards = 8}, &clock);
  auto key = MakeKey("k");
  for (int i = 0; i < 10'000; ++i) cache.Insert("token-" + std::to_string(i), Entry(key, 5000));
  auto s = cache.stats();
  EXPECT_LE(s.entries, 256u);
  EXPECT_GT(s.evictions, 9000u);
  EXPECT_TRUE(cache.Lookup("token-9999"));  // the newest survive
  // Eviction keeps working after keys are erased under it.
  cache.EraseKey("k");
  for (int i = 0; i < 1000; ++i) cache.Insert("again-" + std::to_string(i), Entry(key, 5000));
  EXPECT_LE(cache.stats().entries, 256u);
}

TEST(TokenCacheTest, ConcurrentInsertLookupErase) {
  VerifiedTokenCache cache({.max_entries = 1000, .shards = 16});
  auto key = MakeKey("k");
  int64_t exp = Clock::System()->NowSeconds() + 3600;
  std::vector<std::thread> threads;
  std::atomic<int> wrong{0};
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < 5000; ++i) {
        std::string tok = "t" + std::to_string(t) + "-" + std::to_string(i % 300);
        cache.Insert(tok, Entry(key, exp));
        auto hit = cache.Lookup(tok);
        if (hit && hit->kid != "k") ++wrong;
        if (i % 1000 == 0) cache.EraseKey("other");
      }
    });
  }
  for (auto& th : threads) th.join();
  EXPECT_EQ(wrong.load(), 0);
  EXPECT_LE(cache.stats().entries, 1000u);
}

TEST(TokenCacheTest, HashIsSeededPerInstance) {
  VerifiedTokenCache a({}), b({});
  EXPECT_NE(a.HashToken("same token"), b.HashToken("same token"));
  EXPECT_EQ(a.HashToken("same token"), a.HashToken("same token"));
}

}  // namespace
}  // namespace kw::token
