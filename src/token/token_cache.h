// VerifiedTokenCache: remembers tokens that passed full verification, so that a token presented
// again (every JMAP request carries the same bearer token) costs a hash and a memcmp instead of
// a signature check.
//
// Invariants:
//  - Only the Verifier inserts, and only after a token passed every check.
//  - Keyed by the whole token: a seeded 64-bit hash finds the entry, then the stored token is
//    compared byte for byte, so a hash collision can cost a miss but never a wrong hit.
//  - An entry is never returned after its token's "exp", nor once its signing key is revoked,
//    retired or removed: the key's state is read on every hit (so revocation is effective the
//    moment TrustStore::SetState returns) and the store's listener erases the entries eagerly.
//  - Memory is bounded: at most `max_entries` entries; a full shard evicts its oldest entry.
// Thread safety: all methods are thread-safe. The table is split into shards, each with its own
// mutex, chosen by hash bits, so concurrent requests rarely touch the same lock.
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <unordered_map>
#include <deque>
#include <vector>

#include "core/clock.h"
#include "token/jws.h"
#include "token/trust_store.h"

namespace kw::token {

// What a successful verification yields. Immutable and shared.
struct VerifiedToken {
  Claims claims;
  crypto::Algorithm alg;
  std::string kid;
  std::shared_ptr<const TrustedKey> key;
};

class VerifiedTokenCache {
 public:
  struct Options {
    size_t max_entries = 100'000;
    size_t shards = 64;  // rounded up to a power of two
  };
  struct Stats {
    uint64_t hits, misses, inserts, evictions, invalidations;
    size_t entries;
  };

  explicit VerifiedTokenCache(Options options, const Clock* clock = Clock::System());
  VerifiedTokenCache(const VerifiedTokenCache&) = delete;
  VerifiedTokenCache& operator=(const VerifiedTokenCache&) = delete;

  // The verified token, or null when absent, expired, or its key is no longer active.
  std::shared_ptr<const VerifiedToken> Lookup(std::string_view token) const;
  // REQUIRES: `value` is the result of a successful verification of exactly `token`.
  void Insert(std::string_view token, std::shared_ptr<const VerifiedToken> value);
  // Drops every entry verified with key `kid`.
  void EraseKey(std::string_view kid);
  void Clear();

  Stats stats() const;

  // The seeded hash used for lookups (exposed for tests and benchmarks).
  uint64_t HashToken(std::string_view token) const;

 private:
  struct Entry {
    std::string token;
    int64_t exp = 0;
    std::shared_ptr<const VerifiedToken> value;
  };
  struct alignas(64) Shard {
    mutable std::mutex mu;
    std::unordered_map<uint64_t, Entry> map;
    std::deque<uint64_t> order;  // insertion order, for eviction; may hold erased hashes
    // Per shard, so that threads hitting different tokens share no cache line.
    mutable std::atomic<uint64_t> hits{0}, misses{0};
  };

  Shard& ShardFor(uint64_t h) const { return shards_[h & shard_mask_]; }

  const Clock* clock_;
  uint64_t seed_;
  size_t per_shard_;
  size_t shard_mask_;
  std::unique_ptr<Shard[]> shards_;
  std::atomic<uint64_t> inserts_{0}, evictions_{0}, invalidations_{0};
};

}  // namespace kw::token
