#include "detect/pattern.h"

#include <gtest/gtest.h>

namespace kw::detect {
namespace {

TEST(PatternTest, Classification) {
  struct Case {
    const char* raw;
    StringPattern::Kind kind;
    const char* literal;
  } cases[] = {
      {"abc", StringPattern::Kind::kExact, "abc"},
      {"abc*", StringPattern::Kind::kPrefix, "abc"},
      {"*abc", StringPattern::Kind::kSuffix, "abc"},
      {"*ABC*", StringPattern::Kind::kContains, "abc"},
      {"*", StringPattern::Kind::kAny, ""},
      {"a*c", StringPattern::Kind::kGlob, ""},
      {"a\\*c", StringPattern::Kind::kExact, "a*c"},
      {"a?", StringPattern::Kind::kGlob, ""},
  };
  for (const auto& c : cases) {
    StringPattern p = StringPattern::Compile(ParseSigmaString(c.raw), false);
    EXPECT_EQ(p.kind(), c.kind) << c.raw;
    if (c.kind != StringPattern::Kind::kGlob) {
      EXPECT_EQ(p.literal(), c.literal) << c.raw;
    }
  }
}

TEST(PatternTest, SpecEscapes) {
  // The escape table of the rules specification.
  auto lit = [](const char* raw) { return LiteralBytes(ParseSigmaString(raw)); };
  EXPECT_EQ(lit("C:\\Windows"), "C:\\Windows");     // plain backslash
  EXPECT_EQ(lit("C:\\\\Windows"), "C:\\Windows");   // double backslash is one
  EXPECT_EQ(lit("a\\*"), "a*");                      // escaped wildcard
  EXPECT_EQ(lit("\\\\\\*"), "\\*");                  // three backslashes: backslash, plain star
  EXPECT_EQ(lit("\\\\\\\\"), "\\\\");                // four backslashes: two
  SigmaString s = ParseSigmaString("\\\\*");          // backslash then wildcard
  ASSERT_EQ(s.size(), 2u);
  EXPECT_EQ(s[1].kind, SigmaChar::Kind::kStar);
}

TEST(PatternTest, GlobBacktracking) {
  StringPattern p = StringPattern::Compile(ParseSigmaString("*a*b?c*"), false);
  EXPECT_TRUE(p.Match("xxaxxbzc"));
  EXPECT_FALSE(p.Match("xxaxxbc"));
  StringPattern utf = StringPattern::Compile(ParseSigmaString("a?b"), false);
  EXPECT_TRUE(utf.Match("a\xC3\xA9" "b"));  // ? is one code point
}

TEST(PatternTest, Base64Offset) {
  // pySigma's documented variants for "/bin/bash".
  auto v = Base64OffsetVariants("/bin/bash");
  ASSERT_EQ(v.size(), 3u);
  EXPECT_EQ(v[0], "L2Jpbi9iYXNo");
  EXPECT_EQ(v[1], "9iaW4vYmFza");
  EXPECT_EQ(v[2], "vYmluL2Jhc2");
}

TEST(PatternTest, Windash) {
  auto v = WindashVariants(ParseSigmaString("-a /b"));
  ASSERT_TRUE(v.ok());
  EXPECT_EQ(v->size(), 25u);
  std::string big;
  for (int i = 0; i < 10; ++i) big += " -x";
  EXPECT_FALSE(WindashVariants(ParseSigmaString(big)).ok());
}

TEST(PatternTest, Cidr) {
  auto c = Cidr::Parse("fe80::/10");
  ASSERT_TRUE(c.ok());
  EXPECT_TRUE(c->Contains("fe80::1%eth0"));
  EXPECT_FALSE(c->Contains("::1"));
  EXPECT_FALSE(Cidr::Parse("1.2.3.4/").ok());
  EXPECT_FALSE(Cidr::Parse("1.2.3/8").ok());
}

}  // namespace
}  // namespace kw::detect
