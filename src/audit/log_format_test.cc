#include "audit/log_format.h"

#include <gtest/gtest.h>

#include <random>

#include "audit/test_util.h"

namespace kw::audit {
namespace {

TEST(LogFormatTest, ToJsonFromJsonRoundTrip) {
  std::mt19937_64 rng(7);
  for (int i = 0; i < 300; ++i) {
    AuditRecord r = testing::RandomRecord(rng);
    r.seq = rng() % 1000000;
    r.prev_hash = internal::Sha256Hex("p" + std::to_string(i));
    r.hash = internal::Sha256Hex("h" + std::to_string(i));
    if (!r.detail.empty()) r.detail = R"({"k":"v","n":[1,2,{"x":null}],"b":true})";
    std::string json = ToJson(r);
    auto back = FromJson(json);
    ASSERT_TRUE(back.ok()) << back.status().ToString() << "\n" << json;
    EXPECT_EQ(*back, r);
    EXPECT_EQ(json.find('\n'), std::string::npos);
  }
}

TEST(LogFormatTest, ToJsonOfAnInvalidDetailKeepsItAsText) {
  AuditRecord r = testing::MailRead(1);
  r.detail = "not json";
  std::string json = ToJson(r);
  EXPECT_NE(json.find(R"("detail_text":"not json")"), std::string::npos);
  auto back = FromJson(json);
  ASSERT_TRUE(back.ok());
  EXPECT_EQ(back->detail, "not json");
}

TEST(LogFormatTest, FromJsonErrorsNameTheMember) {
  struct Case {
    const char* name;
    const char* json;
    const char* message;
  } cases[] = {
      {"not_json", "{", "invalid JSON"},
      {"array", "[]", "must be a JSON object"},
      {"unknown", R"({"seq":1,"time_ms":1,"operation":"x","colour":"red"})", "'colour' is not a field"},
      {"dup", R"({"seq":1,"seq":2,"time_ms":1,"operation":"x"})", "duplicate member"},
      {"seq_type", R"({"seq":"1","time_ms":1,"operation":"x"})", "'seq' must be a non-negative integer"},
      {"negative_seq", R"({"seq":-1,"time_ms":1,"operation":"x"})", "'seq'"},
      {"no_seq", R"({"time_ms":1,"operation":"x"})", "'seq' is missing"},
      {"no_time", R"({"seq":1,"operation":"x"})", "'time_ms' is missing"},
      {"no_op", R"({"seq":1,"time_ms":1})", "'operation' is missing"},
      {"items_type", R"({"seq":1,"time_ms":1,"operation":"x","items":{}})", "'items' must be an array"},
      {"item_member", R"({"seq":1,"time_ms":1,"operation":"x","items":[{"idx":"1"}]})", "items[0]: member 'idx'"},
      {"detail_type", R"({"seq":1,"time_ms":1,"operation":"x","detail":"s"})", "'detail' must be an object"},
      {"time_mismatch", R"({"seq":1,"time_ms":1000,"time":"1970-01-01T00:00:02.000Z","operation":"x"})", "does not match"},
      {"bad_utf8", "{\"seq\":1,\"time_ms\":1,\"operation\":\"\xff\"}", "invalid JSON"},
  };
  for (const auto& c : cases) {
    auto r = FromJson(c.json);
    ASSERT_FALSE(r.ok()) << c.name;
    EXPECT_EQ(r.status().code(), StatusCode::kInvalidArgument) << c.name;
    EXPECT_NE(r.status().message().find(c.message), std::string::npos)
        << c.name << ": " << r.status().message();
  }
}

TEST(LogFormatTest, LineHashIsTheSha256OfEverythingBeforeTheSuffix) {
  auto body = internal::EncodeBody(testing::MailRead(3));
  ASSERT_TRUE(body.ok());
  std::string line;
  std::string prev(64, 'c');
  std::string hash = internal::AppendLine(9, prev, 0, *body, &line);
  ASSERT_EQ(line.back(), '\n');
  line.pop_back();
  EXPECT_EQ(hash, internal::Sha256Hex(line.substr(0, line.size() - internal::kHashSuffixBytes)));
  EXPECT_EQ(line.substr(line.size() - internal::kHashSuffixBytes), ",\"hash\":\"" + hash + "\"}");
  auto p = internal::ParseLine(line);
  ASSERT_TRUE(p.ok());
  EXPECT_TRUE(p->hash_ok);
  EXPECT_EQ(p->record.seq, 9u);
  EXPECT_EQ(p->record.prev_hash, prev);
  EXPECT_EQ(p->record.hash, hash);
  EXPECT_EQ(*internal::PeekSeq(line), 9u);
  // ToJson gives the same bytes for a record outside a batch.
  EXPECT_EQ(ToJson(p->record), line);

  std::string edited = line;
  edited[40] = edited[40] == 'a' ? 'b' : 'a';
  auto q = internal::ParseLine(edited);
  ASSERT_TRUE(q.ok());
  EXPECT_FALSE(q->hash_ok);
  EXPECT_FALSE(internal::ParseLine(line.substr(0, line.size() - 1)).ok());
  EXPECT_FALSE(internal::ParseLine("").ok());
}

TEST(LogFormatTest, SegmentNames) {
  EXPECT_EQ(internal::SegmentName(1), "audit-00000001.jsonl");
  EXPECT_EQ(internal::SegmentName(123456789), "audit-123456789.jsonl");
  EXPECT_EQ(internal::ParseSegmentName("audit-00000042.jsonl"), 42u);
  EXPECT_EQ(internal::ParseSegmentName("audit-123456789.jsonl"), 123456789u);
  for (const char* bad : {"audit-0000042.jsonl", "audit-00000000.jsonl", "audit-0000004x.jsonl",
                          "audit-00000042.json", "checkpoint", "audit-000000042.jsonl"}) {
    EXPECT_FALSE(internal::ParseSegmentName(bad).has_value()) << bad;
  }
}

TEST(LogFormatTest, TimeFormatting) {
  struct Case {
    int64_t ms;
    const char* iso;
    const char* ual;
  } cases[] = {
      {0, "1970-01-01T00:00:00.000Z", "1970-01-01T00:00:00"},
      {1'686'877'323'456, "2023-06-16T01:02:03.456Z", "2023-06-16T01:02:03"},
      {1'709'164'800'000, "2024-02-29T00:00:00.000Z", "2024-02-29T00:00:00"},
      {253'402'300'799'999, "9999-12-31T23:59:59.999Z", "9999-12-31T23:59:59"},
  };
  for (const auto& c : cases) {
    EXPECT_EQ(internal::FormatIsoMillis(c.ms), c.iso);
    EXPECT_EQ(internal::FormatUalTime(c.ms), c.ual);
  }
}

TEST(LogFormatTest, AnchorAndCheckpointRoundTripAndRejectGarbage) {
  internal::Anchor a{5, 9001, std::string(64, 'e'), 77};
  auto a2 = internal::DecodeAnchor(internal::EncodeAnchor(a));
  ASSERT_TRUE(a2.ok());
  EXPECT_EQ(a2->first_segment, 5u);
  EXPECT_EQ(a2->first_seq, 9001u);
  EXPECT_EQ(a2->prev_hash, a.prev_hash);
  internal::Checkpoint c{12, std::string(64, 'f'), 5};
  auto c2 = internal::DecodeCheckpoint(internal::EncodeCheckpoint(c));
  ASSERT_TRUE(c2.ok());
  EXPECT_EQ(c2->seq, 12u);
  EXPECT_FALSE(internal::DecodeAnchor(R"({"first_segment":0,"first_seq":1,"prev_hash":"","time_ms":0})").ok());
  EXPECT_FALSE(internal::DecodeAnchor(R"({"first_segment":2,"first_seq":9,"prev_hash":"xyz","time_ms":0})").ok());
  EXPECT_FALSE(internal::DecodeCheckpoint(R"({"seq":3,"hash":"","time_ms":0})").ok());
  EXPECT_FALSE(internal::DecodeCheckpoint("garbage").ok());
}

TEST(SegmentReaderTest, LinesOffsetsOversizeAndGrowingFile) {
  testing::TempDir tmp;
  std::string path = tmp.File("seg");
  std::string big(internal::kMaxRecordBytes + 10, 'x');
  testing::WriteRaw(path, "a\n\nbc\n" + big + "\nd\npartial");
  internal::SegmentReader r;
  ASSERT_TRUE(r.Open(path).ok());
  internal::SegmentReader::Line line;
  std::vector<std::pair<std::string, uint64_t>> got;
  while (*r.Next(&line)) got.push_back({line.oversize ? "<big>" : std::string(line.text), line.offset});
  std::vector<std::pair<std::string, uint64_t>> want = {
      {"a", 0}, {"", 2}, {"bc", 3}, {"<big>", 6}, {"d", 6 + big.size() + 1}};
  EXPECT_EQ(got, want);
  EXPECT_EQ(r.pending_bytes(), 7u);
  EXPECT_EQ(r.end_offset(), 6 + big.size() + 3);
  testing::AppendRaw(path, " done\n");
  ASSERT_TRUE(*r.Next(&line));
  EXPECT_EQ(line.text, "partial done");
  EXPECT_FALSE(*r.Next(&line));
  EXPECT_EQ(r.Open(tmp.File("missing")).code(), StatusCode::kNotFound);
}

}  // namespace
}  // namespace kw::audit
