#include "detect/condition.h"

#include <gtest/gtest.h>

namespace kw::detect {
namespace {

// Evaluates a parsed condition with the given identifier truth values.
bool Eval(const Condition& c, int node, const std::vector<bool>& truth) {
  const CondNode& n = c.nodes[node];
  switch (n.kind) {
    case CondNode::Kind::kRef: return truth[n.ref];
    case CondNode::Kind::kConst: return n.ref == 1;
    case CondNode::Kind::kNot: return !Eval(c, n.children[0], truth);
    case CondNode::Kind::kAnd:
      for (int k : n.children) if (!Eval(c, k, truth)) return false;
      return true;
    case CondNode::Kind::kOr:
      for (int k : n.children) if (Eval(c, k, truth)) return true;
      return false;
  }
  return false;
}

struct Case {
  const char* text;
  std::vector<bool> truth;  // for identifiers a, b, sel_1, sel_2, _x
  bool expect;
};

TEST(ConditionTest, Table) {
  const std::vector<std::string> ids = {"a", "b", "sel_1", "sel_2", "_x"};
  const Case cases[] = {
      {"a", {1, 0, 0, 0, 0}, true},
      {"a and b", {1, 0, 0, 0, 0}, false},
      {"a or b", {0, 1, 0, 0, 0}, true},
      {"not a", {0, 0, 0, 0, 0}, true},
      {"a or b and sel_1", {1, 0, 0, 0, 0}, true},
      {"(a or b) and sel_1", {1, 0, 0, 0, 0}, false},
      {"not a or b", {1, 1, 0, 0, 0}, true},
      {"not (a or b)", {1, 0, 0, 0, 0}, false},
      {"not not a", {1, 0, 0, 0, 0}, true},
      {"1 of sel_*", {0, 0, 0, 1, 0}, true},
      {"any of sel_*", {0, 0, 0, 1, 0}, true},
      {"all of sel_*", {0, 0, 0, 1, 0}, false},
      {"all of sel_*", {0, 0, 1, 1, 0}, true},
      {"1 of them", {0, 0, 0, 0, 1}, false},
      {"all of them", {1, 1, 1, 1, 0}, true},
      {"a and not 1 of sel_*", {1, 0, 0, 1, 0}, false},
      {"A AND NOT B", {1, 0, 0, 0, 0}, false},  // identifiers are case-sensitive
      {"a AND NOT b", {1, 0, 0, 0, 0}, true},
      {"((a))", {1, 0, 0, 0, 0}, true},
      {"1 of *", {0, 0, 0, 0, 1}, true},
  };
  for (const Case& c : cases) {
    Condition cond;
    auto root = ParseCondition(c.text, ids, &cond);
    if (std::string(c.text) == "A AND NOT B") {
      EXPECT_FALSE(root.ok());
      continue;
    }
    ASSERT_TRUE(root.ok()) << c.text << ": " << root.status().ToString();
    EXPECT_EQ(Eval(cond, *root, c.truth), c.expect) << c.text;
  }
}

TEST(ConditionTest, Errors) {
  const std::vector<std::string> ids = {"a", "b"};
  for (const char* bad : {"", "a and", "(a", "a)", "a b", "2 of a", "1 of c*", "a | count() > 1",
                          "a near b", "and", "a or or b", "a $ b"}) {
    Condition cond;
    EXPECT_FALSE(ParseCondition(bad, ids, &cond).ok()) << bad;
  }
}

TEST(ConditionTest, RequiredRefs) {
  const std::vector<std::string> ids = {"a", "b", "c"};
  Condition cond;
  auto root = ParseCondition("a and (b or c) and not c", ids, &cond);
  ASSERT_TRUE(root.ok());
  EXPECT_EQ(RequiredRefs(cond, *root), std::vector<int>{0});
}

}  // namespace
}  // namespace kw::detect
