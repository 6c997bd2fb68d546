#include "http/form.h"

#include <gtest/gtest.h>

#include <string>
#include <vector>

namespace kw::http {
namespace {

struct FormCase {
  const char* name;
  std::string input;
  bool ok;
  Params want;                  // when ok
  std::string error_substring;  // when !ok
};

// One row per accepted or refused body; a new edge case is one more row.
const std::vector<FormCase>& FormCases() {
  static const auto* cases = new std::vector<FormCase>{
      {"empty", "", true, {}, ""},
      {"one", "a=1", true, {{"a", "1"}}, ""},
      {"oauth_token_request",
       "grant_type=authorization_code&code=Splx10BeZQQYbYS6WxSbIA"
       "&redirect_uri=https%3A%2F%2Fclient%2Eexample%2Ecom%2Fcb",
       true,
       {{"grant_type", "authorization_code"},
        {"code", "Splx10BeZQQYbYS6WxSbIA"},
        {"redirect_uri", "https://client.example.com/cb"}},
       ""},
      {"plus_is_space", "scope=openid+mail%20read", true, {{"scope", "openid mail read"}}, ""},
      {"encoded_plus", "a=1%2B1", true, {{"a", "1+1"}}, ""},
      {"empty_value", "a=&b=2", true, {{"a", ""}, {"b", "2"}}, ""},
      {"no_equals", "flag", true, {{"flag", ""}}, ""},
      {"equals_in_value", "a=b=c", true, {{"a", "b=c"}}, ""},
      {"utf8", "name=%C3%A9t%C3%A9", true, {{"name", "\xC3\xA9t\xC3\xA9"}}, ""},
      {"lower_hex", "a=%2f", true, {{"a", "/"}}, ""},
      {"raw_reserved_chars_tolerated",
       "redirect_uri=https://c.example/cb?x",
       true,
       {{"redirect_uri", "https://c.example/cb?x"}},
       ""},
      {"duplicate", "a=1&b=2&a=3", false, {}, "duplicate parameter 'a'"},
      {"duplicate_after_decoding", "a=1&%61=2", false, {}, "duplicate parameter 'a'"},
      {"duplicate_same_value", "scope=x&scope=x", false, {}, "duplicate parameter 'scope'"},
      {"bad_hex", "a=%zz", false, {}, "bad percent-encoding in parameter 'a'"},
      {"truncated_escape", "code=abc%4", false, {}, "bad percent-encoding in parameter 'code'"},
      {"lone_percent", "code=%", false, {}, "bad percent-encoding in parameter 'code'"},
      {"bad_escape_in_name", "a%g1=1", false, {}, "bad percent-encoding in parameter 'a%g1'"},
      {"trailing_amp", "a=1&", false, {}, "empty parameter"},
      {"leading_amp", "&a=1", false, {}, "empty parameter"},
      {"double_amp", "a=1&&b=2", false, {}, "empty parameter"},
      {"empty_name", "=1", false, {}, "empty name"},
      {"raw_space", "a=1 2", false, {}, "invalid character 0x20 in parameter 'a'"},
      {"raw_newline", "a=1\n", false, {}, "invalid character 0x0a in parameter 'a'"},
      {"raw_non_ascii", "a=\xC3\xA9", false, {}, "invalid character 0xc3 in parameter 'a'"},
      {"encoded_nul", "a=x%00y", false, {}, "parameter 'a' contains a NUL byte"},
      {"invalid_utf8", "a=%C3%28", false, {}, "parameter 'a' is not valid UTF-8"},
      {"overlong_utf8", "a=%C0%AF", false, {}, "not valid UTF-8"},
      {"quote_in_name_escaped", "a'%zz=1", false, {}, "parameter 'a\\x27%zz'"},
  };
  return *cases;
}

TEST(FormTest, Table) {
  for (const FormCase& c : FormCases()) {
    SCOPED_TRACE(c.name);
    auto got = ParseFormBody(c.input);
    ASSERT_EQ(got.ok(), c.ok) << got.status().ToString();
    if (c.ok) {
      EXPECT_EQ(*got, c.want);
    } else {
      EXPECT_EQ(got.status().code(), StatusCode::kInvalidArgument);
      EXPECT_NE(got.status().message().find(c.error_substring), std::string::npos)
          << got.status().message();
      EXPECT_EQ(got.status().message().rfind("form body: ", 0), 0u) << got.status().message();
    }
  }
}

TEST(FormTest, QueryUsesTheSameGrammar) {
  auto q = ParseQuery("client_id=c1&state=a%2Bb");
  ASSERT_TRUE(q.ok()) << q.status().ToString();
  EXPECT_EQ(q->at("client_id"), "c1");
  EXPECT_EQ(q->at("state"), "a+b");
  auto dup = ParseQuery("x=1&x=2");
  ASSERT_FALSE(dup.ok());
  EXPECT_EQ(dup.status().message(), "query: duplicate parameter 'x'");
}

TEST(FormTest, SizeLimit) {
  std::string body = "a=" + std::string(100, 'x');
  EXPECT_TRUE(ParseFormBody(body, body.size()).ok());
  auto r = ParseFormBody(body, body.size() - 1);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), StatusCode::kResourceExhausted);
}

TEST(FormTest, LongNamesAreCutInMessages) {
  std::string name(500, 'n');
  auto r = ParseFormBody(name + "=1&" + name + "=2");
  ASSERT_FALSE(r.ok());
  EXPECT_LT(r.status().message().size(), 120u) << r.status().message();
  EXPECT_NE(r.status().message().find("..."), std::string::npos);
}

TEST(FormTest, FormRequestChecksContentType) {
  struct Row {
    const char* content_type;  // nullptr: no header
    bool ok;
  };
  const Row rows[] = {
      {"application/x-www-form-urlencoded", true},
      {"Application/X-WWW-Form-Urlencoded", true},
      {"application/x-www-form-urlencoded; charset=UTF-8", true},
      {"application/x-www-form-urlencoded;charset=\"utf-8\"", true},
      {"application/x-www-form-urlencoded; charset=iso-8859-1", false},
      {"application/json", false},
      {"multipart/form-data; boundary=x", false},
      {nullptr, false},
  };
  for (const Row& row : rows) {
    SCOPED_TRACE(row.content_type ? row.content_type : "(none)");
    Request req;
    req.body = "a=1";
    if (row.content_type) req.headers.emplace("content-type", row.content_type);
    auto r = ParseFormRequest(req);
    EXPECT_EQ(r.ok(), row.ok) << r.status().ToString();
    if (r.ok()) {
      EXPECT_EQ(r->at("a"), "1");
    }
  }
}

TEST(FormTest, PercentDecode) {
  EXPECT_EQ(PercentDecode("a%20b+c", false).value(), "a b+c");
  EXPECT_EQ(PercentDecode("a%20b+c", true).value(), "a b c");
  EXPECT_FALSE(PercentDecode("%", false).ok());
  EXPECT_FALSE(PercentDecode("%1", false).ok());
  EXPECT_FALSE(PercentDecode("%1g", false).ok());
}

}  // namespace
}  // namespace kw::http
