// Hyperscan databases: every string pattern tested on one event field, across all rules, is
// compiled into one database for that field, so an event value is scanned once per event
// whatever the number of rules and values (SigmaHQ's Windows rules hold thousands of
// `Image|endswith` and `CommandLine|contains` values). Internal to kw_detect.
//
// Each compiled ValueTest (one Sigma value with its windash/base64/expand variants) gets one
// Hyperscan id; all its variants report that id. A scan marks the ids whose pattern matched the
// value (any array element), which is exactly the truth of "some element matches this value".
#pragma once

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

class FieldDb {
 public:
  struct Expr {
    std::string regex;
    unsigned flags;
    unsigned id;
  };
  // Compiles; an error names the offending pattern.
  static Result<std::unique_ptr<FieldDb>> Compile(const std::vector<Expr>& exprs);
  // The Hyperscan expression (and flags) for one pattern. REQUIRES HsEligible(p).
  static Expr ToExpr(const StringPattern& p, unsigned id);
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
