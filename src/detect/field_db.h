// Hyperscan databases: every string pattern tested on one event field, across all rules, is
// compiled into one database for that field, so an event value is scanned once per event
// whatever the number of rules and values (SigmaHQ's Windows rules hold thousands of
// `Image|endswith` and `CommandLine|contains` values). Internal to kw_detect.
//
// Each compiled ValueTest (one Sigma value with its windash/base64/expand variants) gets one
// value id. Every pattern is a Hyperscan expression of its own (a pattern id, mapped to its
// value id by HsPattern). Exact, prefix and suffix values are compiled as plain literals, which
// Hyperscan's literal matchers scan fastest, and the match offset decides (a prefix must end at
// its length, a suffix at the end of the text); anchored expressions were several times slower.
// A scan marks the value ids that matched the value (any array element), which is exactly the
// truth of "some element matches this value".
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "core/status.h"
#include "detect/pattern.h"

struct hs_database;
struct hs_scratch;

namespace kw::detect::internal {

// True if `p` can be expressed for Hyperscan (everything except match-anything and the empty
// exact string, which need no scan).
bool HsEligible(const StringPattern& p);

// What a pattern id stands for.
struct HsPattern {
  uint32_t value_id;
  uint32_t length;  // literal length (exact, prefix)
  StringPattern::Kind kind;
};

// True if a match of `p` ending at offset `to` in a text of `text_len` bytes is a match of the
// Sigma pattern.
inline bool HsAccept(const HsPattern& p, unsigned long long to, size_t text_len) {
  switch (p.kind) {
    case StringPattern::Kind::kExact: return to == text_len && p.length == text_len;
    case StringPattern::Kind::kPrefix: return to == p.length;
    case StringPattern::Kind::kSuffix: return to == text_len;
    default: return true;
  }
}

class FieldDb {
 public:
  struct Expr {
    std::string regex;
    unsigned flags;
    unsigned id;
  };
  // Compiles; an error names the offending pattern.
  static Result<std::unique_ptr<FieldDb>> Compile(const std::vector<Expr>& exprs);
  // The Hyperscan expression (and flags) for one pattern, reporting `pattern_id`.
  // REQUIRES HsEligible(p).
  static Expr ToExpr(const StringPattern& p, unsigned pattern_id);
  ~FieldDb();

  const hs_database* db() const { return db_; }

 private:
  FieldDb() = default;
  hs_database* db_ = nullptr;
};

// Per-thread Hyperscan scratch space fitting every database of a RuleSet.
class HsScratch {
 public:
  HsScratch() = default;
  ~HsScratch();
  HsScratch(const HsScratch&) = delete;
  HsScratch& operator=(const HsScratch&) = delete;
  // Grows the scratch to fit `db`.
  Status Fit(const FieldDb& db);
  hs_scratch* get() const { return s_; }

 private:
  hs_scratch* s_ = nullptr;
};

// Scans `text` with `db`, calling on_match(id) for each matching id (once per id per scan).
// Returns false if Hyperscan reports an error.
bool HsScan(const FieldDb& db, HsScratch& scratch, std::string_view text,
            int (*on_match)(unsigned id, unsigned long long, unsigned long long, unsigned, void*),
            void* ctx);

}  // namespace kw::detect::internal
