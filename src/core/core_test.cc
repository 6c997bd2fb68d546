#include <gtest/gtest.h>

#include "core/base64url.h"
#include "core/clock.h"
#include "core/html.h"
#include "core/json.h"
#include "core/status.h"

namespace kw {
namespace {

TEST(Base64UrlTest, RoundTripsEveryLength) {
  std::string bytes;
  for (int n = 0; n < 70; ++n) {
    std::string enc = Base64UrlEncode(bytes);
    EXPECT_EQ(enc.find('='), std::string::npos);
    auto dec = Base64UrlDecode(enc);
    ASSERT_TRUE(dec.ok()) << n;
    EXPECT_EQ(*dec, bytes);
    bytes.push_back(static_cast<char>(n * 37 + 11));
  }
}

TEST(Base64UrlTest, RejectsNonCanonicalInput) {
  struct Row {
    std::string in;
    std::string why;
  } rows[] = {
      {"QQ==", "padding"},       {"QQ=", "padding"},        {"Q", "length 1 mod 4"},
      {"QR", "spare bits"},      {"QUF", "spare bits"},     {"a+b/", "standard alphabet"},
      {"QU E", "space"},         {"QUE\n", "newline"},      {"QU\tE", "tab"},
      {"QUE\xc3\xa9", "non-ASCII"}, {std::string("QU\0E", 4), "NUL"},
  };
  for (const auto& row : rows) {
    EXPECT_FALSE(Base64UrlDecode(row.in).ok()) << row.why;
  }
  EXPECT_EQ(*Base64UrlDecode("QQ"), "A");
  EXPECT_EQ(*Base64UrlDecode("QUE"), "AA");
  EXPECT_NE(Base64UrlDecode("QQ==").status().message().find("padding"), std::string::npos);
}

TEST(HexTest, Strict) {
  EXPECT_EQ(*HexDecode("00ff10"), std::string("\x00\xff\x10", 3));
  EXPECT_FALSE(HexDecode("abc").ok());
  EXPECT_FALSE(HexDecode("zz").ok());
  EXPECT_EQ(HexEncode(std::string("\x01\xab", 2)), "01ab");
}

TEST(JsonTest, StrictParserRejectsDuplicatesAtAnyDepth) {
  json::StrictParser p;
  EXPECT_TRUE(p.Parse(R"({"a":1,"b":{"a":2}})").ok());
  EXPECT_FALSE(p.Parse(R"({"a":1,"a":2})").ok());
  EXPECT_FALSE(p.Parse(R"({"x":[{"k":1,"k":1}]})").ok());
  EXPECT_FALSE(p.Parse(R"({"k":1,"\u006b":2})").ok());
  std::string many = "{";
  for (int i = 0; i < 40; ++i) many += "\"m" + std::to_string(i) + "\":1,";
  EXPECT_TRUE(p.Parse(many + "\"end\":1}").ok());
  EXPECT_FALSE(p.Parse(many + "\"m7\":1}").ok());
}

TEST(JsonTest, DepthAndSizeLimits) {
  json::StrictParser p(100, 4);
  EXPECT_TRUE(p.Parse("[[[1]]]").ok());
  EXPECT_FALSE(p.Parse("[[[[[1]]]]]").ok());
  EXPECT_EQ(p.Parse(std::string(200, ' ') + "1").status().code(), StatusCode::kResourceExhausted);
  EXPECT_FALSE(p.Parse("{\"a\":\"\xff\"}").ok());  // invalid UTF-8
}

TEST(JsonTest, WriterEscapes) {
  json::Writer w;
  w.BeginObject().Key("s").String("a\"b\\c\n\x01").Key("n").Int(-5).Key("arr").BeginArray().Bool(true).Null().EndArray().EndObject();
  EXPECT_EQ(w.str(), R"({"s":"a\"b\\c\n\u0001","n":-5,"arr":[true,null]})");
  json::StrictParser p;
  EXPECT_TRUE(p.Parse(w.str()).ok());
}

Result<int> Half(int x) {
  if (x % 2) return InvalidArgumentError("odd");
  return x / 2;
}
Result<int> Quarter(int x) {
  KW_ASSIGN_OR_RETURN(int h, Half(x));
  return Half(h);
}

TEST(StatusTest, MacrosPropagate) {
  EXPECT_EQ(*Quarter(8), 2);
  EXPECT_EQ(Quarter(6).status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(Quarter(6).status().ToString(), "invalid_argument: odd");
  EXPECT_EQ(Status(StatusCode::kNotFound, "x").WithContext("file f").message(), "file f: x");
  EXPECT_TRUE(Status::Ok().ok());
}

}  // namespace
}  // namespace kw

#include "core/sqlite.h"

namespace kw {
namespace {

TEST(SqliteTest, RoundTripAndErrors) {
  auto db = sqlite::Db::Open(":memory:");
  ASSERT_TRUE(db.ok()) << db.status().ToString();
  ASSERT_TRUE((*db)->Exec("CREATE TABLE t (k TEXT PRIMARY KEY, v BLOB, n INTEGER)").ok());
  auto ins = (*db)->Prepare("INSERT INTO t VALUES (?, ?, ?)");
  ASSERT_TRUE(ins.ok());
  std::string blob("a\0b", 3);
  ASSERT_TRUE(ins->Bind(1, "key").BindBlob(2, blob).Bind(3, int64_t{42}).Run().ok());
  ASSERT_TRUE(ins->Reset().ok());
  EXPECT_EQ(ins->Bind(1, "key").BindBlob(2, blob).Bind(3, int64_t{1}).Run().code(),
            StatusCode::kAlreadyExists);
  auto sel = (*db)->Prepare("SELECT v, n FROM t WHERE k = ?");
  ASSERT_TRUE(sel.ok());
  sel->Bind(1, "key");
  ASSERT_TRUE(*sel->Step());
  EXPECT_EQ(sel->Blob(0), blob);
  EXPECT_EQ(sel->Int(1), 42);
  EXPECT_FALSE(*sel->Step());
  EXPECT_FALSE((*db)->Prepare("SELECT nope FROM t").ok());
  Status rolled = (*db)->Transaction([&] {
    (void)(*db)->Exec("DELETE FROM t");
    return InvalidArgumentError("abort");
  });
  EXPECT_FALSE(rolled.ok());
  auto count = (*db)->Prepare("SELECT count(*) FROM t");
  ASSERT_TRUE(*count->Step());
  EXPECT_EQ(count->Int(0), 1);  // the delete was rolled back
}

}  // namespace
}  // namespace kw

namespace kw {
namespace {

TEST(TextTest, HtmlEscapeCoversTextAndQuotedAttributes) {
  EXPECT_EQ(HtmlEscape(R"(<a href="x" title='y'>Tom & Jerry</a>)"),
            "&lt;a href=&quot;x&quot; title=&#39;y&#39;&gt;Tom &amp; Jerry&lt;/a&gt;");
  EXPECT_EQ(HtmlEscape("plain \xc3\xa9t\xc3\xa9"), "plain \xc3\xa9t\xc3\xa9");
  EXPECT_EQ(HtmlEscape(""), "");
}

TEST(ClockTest, Rfc5322DatesForHttpAndMail) {
  EXPECT_EQ(FormatDateRfc5322(784111777, "GMT"), "Sun, 06 Nov 1994 08:49:37 GMT");  // RFC 9110's example
  EXPECT_EQ(FormatDateRfc5322(1683504000, "+0000"), "Mon, 08 May 2023 00:00:00 +0000");
  EXPECT_EQ(FormatDateRfc5322(0, "GMT"), "Thu, 01 Jan 1970 00:00:00 GMT");
}

}  // namespace
}  // namespace kw
