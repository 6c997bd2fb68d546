// The condition expression of a Sigma detection, parsed into a small tree over search
// identifiers. Internal to kw_detect.
#pragma once

#include <string>
#include <string_view>
#include <vector>

#include "core/status.h"

namespace kw::detect {

struct CondNode {
  enum class Kind : uint8_t { kAnd, kOr, kNot, kRef, kConst };
  Kind kind;
  int ref = -1;               // kRef: index of the search identifier; kConst: 0 or 1
  std::vector<int> children;  // kAnd/kOr: any number; kNot: one
};

struct Condition {
  std::vector<CondNode> nodes;
  int root = -1;
};

// Parses `text` against the detection's search identifiers (in the order given; `identifiers`
// holds their names). Appends to `out->nodes` and returns the root node index; several calls
// on one Condition build a condition list (the caller ORs the roots). Errors name the position.
Result<int> ParseCondition(std::string_view text, const std::vector<std::string>& identifiers,
                           Condition* out);

// Indices of the search identifiers that must match for the condition to be true (reached
// from the root through AND nodes only). Used to choose index keys.
std::vector<int> RequiredRefs(const Condition& c, int root);

}  // namespace kw::detect
