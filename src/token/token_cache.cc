#include "token/token_cache.h"

#include <cstring>

#include "crypto/crypto.h"

namespace kw::token {
namespace {

inline uint64_t Read64(const unsigned char* p) {
  uint64_t v;
  std::memcpy(&v, p, 8);
  return v;
}

inline uint64_t Mix(uint64_t a, uint64_t b) {
  __uint128_t r = static_cast<__uint128_t>(a) * b;
  return static_cast<uint64_t>(r) ^ static_cast<uint64_t>(r >> 64);
}

// A wyhash-style multiply-mix hash, seeded per process from the CSPRNG so that an attacker
// cannot precompute colliding tokens to pile into one bucket.
uint64_t SeededHash(std::string_view s, uint64_t seed) {
  constexpr uint64_t k0 = 0xa0761d6478bd642full, k1 = 0xe7037ed1a0b428dbull,
                     k2 = 0x8ebc6af09c88c6e3ull, k3 = 0x589965cc75374cc3ull;
  const auto* p = reinterpret_cast<const unsigned char*>(s.data());
  size_t n = s.size();
  uint64_t h = seed ^ Mix(seed ^ k0, k1);
  size_t i = 0;
  for (; i + 16 <= n; i += 16) h = Mix(Read64(p + i) ^ k1, Read64(p + i + 8) ^ h);
  uint64_t a = 0, b = 0;
  size_t rest = n - i;
  if (rest >= 8) {
    a = Read64(p + i);
    std::memcpy(&b, p + i + 8, rest - 8);
  } else {
    std::memcpy(&a, p + i, rest);
  }
  h = Mix(a ^ k2, b ^ h);
  return Mix(h ^ n, k3 ^ seed);
}

}  // namespace

VerifiedTokenCache::VerifiedTokenCache(Options options, const Clock* clock) : clock_(clock) {
  size_t shards = 1;
  while (shards < options.shards) shards <<= 1;
  while (shards > 1 && shards > options.max_entries) shards >>= 1;
  shard_mask_ = shards - 1;
  // Rounded down, so that the shards together never hold more than max_entries.
  per_shard_ = std::max<size_t>(1, options.max_entries / shards);
  shards_ = std::make_unique<Shard[]>(shards);
  std::string seed = crypto::RandomBytes(8);
  std::memcpy(&seed_, seed.data(), 8);
}

uint64_t VerifiedTokenCache::HashToken(std::string_view token) const {
  return SeededHash(token, seed_);
}

std::shared_ptr<const VerifiedToken> VerifiedTokenCache::Lookup(std::string_view token) const {
  uint64_t h = HashToken(token);
  Shard& shard = ShardFor(h);
  std::shared_ptr<const VerifiedToken> value;
  int64_t exp;
  {
    std::lock_guard lock(shard.mu);
    auto it = shard.map.find(h);
    if (it == shard.map.end() || it->second.token.size() != token.size() ||
        std::memcmp(it->second.token.data(), token.data(), token.size()) != 0) {
      shard.misses.fetch_add(1, std::memory_order_relaxed);
      return nullptr;
    }
    value = it->second.value;
    exp = it->second.exp;
  }
  // Checked outside the lock: the key's state is an atomic, and time only moves forward.
  if (clock_->NowSeconds() >= exp || value->key->state() != KeyState::kActive) {
    shard.misses.fetch_add(1, std::memory_order_relaxed);
    return nullptr;
  }
  shard.hits.fetch_add(1, std::memory_order_relaxed);
  return value;
}

void VerifiedTokenCache::Insert(std::string_view token, std::shared_ptr<const VerifiedToken> value) {
  if (!value || !value->claims.exp) return;  // only tokens with a known end of life
  uint64_t h = HashToken(token);
  Shard& shard = ShardFor(h);
  std::lock_guard lock(shard.mu);
  auto it = shard.map.find(h);
  if (it != shard.map.end()) {
    it->second.token.assign(token);
    it->second.exp = *value->claims.exp;
    it->second.value = std::move(value);
    return;
  }
  if (shard.map.size() >= per_shard_) {
    // Evict in insertion order; hashes whose entry is already gone are skipped. The loop ends:
    // every entry in the map has its hash somewhere in `order`.
    while (!shard.order.empty()) {
      uint64_t victim = shard.order.front();
      shard.order.pop_front();
      if (shard.map.erase(victim)) {
        evictions_.fetch_add(1, std::memory_order_relaxed);
        break;
      }
    }
  }
  if (shard.order.size() >= 2 * per_shard_) {
    // Stale hashes (erased by EraseKey) piled up: rebuild from the live entries.
    shard.order.clear();
    for (auto& [key, entry] : shard.map) shard.order.push_back(key);
  }
  shard.order.push_back(h);
  Entry e;
  e.token.assign(token);
  e.exp = *value->claims.exp;
  e.value = std::move(value);
  shard.map.emplace(h, std::move(e));
  inserts_.fetch_add(1, std::memory_order_relaxed);
}

void VerifiedTokenCache::EraseKey(std::string_view kid) {
  for (size_t i = 0; i <= shard_mask_; ++i) {
    Shard& shard = shards_[i];
    std::lock_guard lock(shard.mu);
    for (auto it = shard.map.begin(); it != shard.map.end();) {
      if (it->second.value->kid == kid) {
        it = shard.map.erase(it);
        invalidations_.fetch_add(1, std::memory_order_relaxed);
      } else {
        ++it;
      }
    }
  }
}

void VerifiedTokenCache::Clear() {
  for (size_t i = 0; i <= shard_mask_; ++i) {
    std::lock_guard lock(shards_[i].mu);
    shards_[i].map.clear();
    shards_[i].order.clear();
  }
}

VerifiedTokenCache::Stats VerifiedTokenCache::stats() const {
  Stats s{0, 0, inserts_.load(), evictions_.load(), invalidations_.load(), 0};
  for (size_t i = 0; i <= shard_mask_; ++i) {
    s.hits += shards_[i].hits.load(std::memory_order_relaxed);
    s.misses += shards_[i].misses.load(std::memory_order_relaxed);
    std::lock_guard lock(shards_[i].mu);
    s.entries += shards_[i].map.size();
  }
  return s;
}

}  // namespace kw::token
