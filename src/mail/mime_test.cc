#include "mail/mime.h"

#include <gtest/gtest.h>

#include <fmt/format.h>

#include "mail/test_util.h"

namespace kw::mail {
namespace {

using testing::Crlf;

TEST(MimeTest, PlainMessage) {
  auto e = ParseMessage(Crlf(testing::kPlain));
  ASSERT_TRUE(e.ok()) << e.status().ToString();
  EXPECT_EQ(e->message_id, "q1@fabrikam.test");
  EXPECT_EQ(e->subject, "Quarterly numbers");
  EXPECT_TRUE(e->has_sent_at);
  EXPECT_EQ(FormatUtcDate(e->sent_at), "2023-06-16T09:00:00Z");
  EXPECT_EQ(e->from.Serialize(), R"([{"name":"Bob Example","email":"bob@fabrikam.test"}])");
  EXPECT_TRUE(e->cc.is_null());
  EXPECT_EQ(e->preview, "The quarterly numbers are attached below. Regards, Bob");
  EXPECT_FALSE(e->has_attachment);
  ASSERT_EQ(e->text_body.as_array().size(), 1u);
  EXPECT_EQ(e->text_body.as_array()[0].Find("partId")->as_string(), "1");
  EXPECT_EQ(e->body_values.Find("1")->as_string(),
            "The quarterly numbers are attached below.\r\nRegards, Bob\r\n");
  // Raw header values keep the leading space after the colon (RFC 8621 §4.1.2.1).
  EXPECT_EQ(e->headers.as_array()[2].Find("value")->as_string(), " Quarterly numbers");
}

TEST(MimeTest, AlternativeWithAttachment) {
  auto e = ParseMessage(Crlf(testing::kAlternativeWithAttachment));
  ASSERT_TRUE(e.ok()) << e.status().ToString();
  EXPECT_TRUE(e->has_attachment);
  ASSERT_EQ(e->text_body.as_array().size(), 1u);
  ASSERT_EQ(e->html_body.as_array().size(), 1u);
  ASSERT_EQ(e->attachments.as_array().size(), 1u);
  EXPECT_EQ(e->text_body.as_array()[0].Find("type")->as_string(), "text/plain");
  EXPECT_EQ(e->html_body.as_array()[0].Find("type")->as_string(), "text/html");
  const Value& att = e->attachments.as_array()[0];
  EXPECT_EQ(att.Find("name")->as_string(), "agenda.pdf");
  EXPECT_EQ(att.Find("disposition")->as_string(), "attachment");
  EXPECT_EQ(e->body_structure.Find("type")->as_string(), "multipart/mixed");
  EXPECT_EQ(e->to.as_array().size(), 2u);
  EXPECT_EQ(e->preview, "Agenda: hiking, then dinner.");
  // The attachment's blob is the decoded PDF bytes.
  bool found = false;
  for (const auto& [id, data] : e->blobs) {
    if (id == att.Find("blobId")->as_string()) {
      found = true;
      EXPECT_EQ(data.substr(0, 8), "%PDF-1.4");
    }
  }
  EXPECT_TRUE(found);
  EXPECT_EQ(FormatUtcDate(e->sent_at), "2023-06-19T06:30:00Z");
}

TEST(MimeTest, NonUtf8Charsets) {
  auto e = ParseMessage(Crlf(testing::kCharsets));
  ASSERT_TRUE(e.ok()) << e.status().ToString();
  EXPECT_EQ(e->subject, "Résumé for François");
  EXPECT_EQ(e->from.as_array()[0].Find("name")->as_string(), "田中太郎");
  EXPECT_EQ(e->preview, "Café crème brûlée.");
  EXPECT_EQ(DecodeHeaderText(" =?ISO-8859-1?Q?R=E9sum=E9?="), "Résumé");
}

TEST(MimeTest, MalformedIsBestEffort) {
  auto e = ParseMessage(std::string(testing::kMalformed));
  ASSERT_TRUE(e.ok()) << e.status().ToString();
  EXPECT_FALSE(e->has_sent_at);
  // Every string is valid UTF-8: the JSON of every part serializes and re-parses.
  EXPECT_TRUE(ParseJson(e->headers.Serialize()).ok());
  EXPECT_TRUE(ParseJson(e->body_structure.Serialize()).ok());
  EXPECT_TRUE(ParseJson(e->body_values.Serialize()).ok());
  EXPECT_NE(e->subject.find("broken"), std::string::npos);
}

TEST(MimeTest, Refusals) {
  EXPECT_FALSE(ParseMessage("").ok());
  ParseLimits small;
  small.max_bytes = 10;
  EXPECT_FALSE(ParseMessage(Crlf(testing::kPlain), small).ok());
  std::string many = "From: a@b\r\nContent-Type: multipart/mixed; boundary=x\r\n\r\n";
  for (int i = 0; i < 50; ++i) many += "--x\r\nContent-Type: text/plain\r\n\r\nhi\r\n";
  many += "--x--\r\n";
  ParseLimits few;
  few.max_parts = 10;
  EXPECT_FALSE(ParseMessage(many, few).ok());
  EXPECT_TRUE(ParseMessage(many).ok());
}

TEST(MimeTest, DeepNestingIsCut) {
  std::string m = "From: a@b\r\nContent-Type: multipart/mixed; boundary=b0\r\n\r\n";
  for (int i = 1; i < 100; ++i) {
    m += fmt::format("--b{}\r\nContent-Type: multipart/mixed; boundary=b{}\r\n\r\n", i - 1, i);
  }
  m += "--b99\r\nContent-Type: text/plain\r\n\r\ndeep\r\n";
  auto e = ParseMessage(m);
  ASSERT_TRUE(e.ok()) << e.status().ToString();
  // Cut at max_depth levels: the stored structure stays readable by the strict parser.
  EXPECT_TRUE(ParseJson(e->body_structure.Serialize()).ok());
}

TEST(MimeTest, Utf8Sanitizing) {
  EXPECT_EQ(SanitizeUtf8("a\xff" "b"), "a\xEF\xBF\xBD" "b");
  EXPECT_EQ(SanitizeUtf8("\xc0\x80"), "\xEF\xBF\xBD\xEF\xBF\xBD");
  EXPECT_EQ(SanitizeUtf8("h\xc3\xa9"), "h\xc3\xa9");
  EXPECT_EQ(SanitizeUtf8(std::string("a\0b", 3)), "ab");
}

TEST(MimeTest, Dates) {
  int64_t t;
  ASSERT_TRUE(ParseUtcDate("2023-06-16T09:00:00Z", &t));
  EXPECT_EQ(FormatUtcDate(t), "2023-06-16T09:00:00Z");
  ASSERT_TRUE(ParseUtcDate("2023-06-16T11:00:00.5+02:00", &t));
  EXPECT_EQ(FormatUtcDate(t), "2023-06-16T09:00:00Z");
  EXPECT_FALSE(ParseUtcDate("2023-06-16 09:00:00", &t));
  EXPECT_FALSE(ParseUtcDate("2023-13-16T09:00:00Z", &t));
}

TEST(MimeTest, EncodeHeaders) {
  EXPECT_EQ(EncodeHeaderText("plain"), "plain");
  std::string enc = EncodeHeaderText("Résumé");
  EXPECT_EQ(enc.rfind("=?", 0), 0u);
  EXPECT_EQ(DecodeHeaderText(enc), "Résumé");
  EXPECT_EQ(FormatAddress("", "a@b.test"), "a@b.test");
  EXPECT_NE(FormatAddress("Bob", "bob@b.test").find("<bob@b.test>"), std::string::npos);
}

}  // namespace
}  // namespace kw::mail
