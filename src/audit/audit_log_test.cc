#include "audit/audit_log.h"

#include <gtest/gtest.h>

#include <atomic>
#include <random>
#include <set>
#include <thread>

#include "audit/test_util.h"

namespace kw::audit {
namespace {

using testing::MailRead;
using testing::RandomRecord;
using testing::ReadAll;
using testing::TempDir;
using testing::TestOptions;

TEST(AuditLogTest, RandomRecordsReadBackExactlyInOrderAcrossSegmentsAndReopen) {
  TempDir tmp;
  std::mt19937_64 rng(42);
  std::vector<AuditRecord> expected;
  auto opt = TestOptions(tmp.LogDir());
  opt.segment_bytes = 16 << 10;
  for (int round = 0; round < 2; ++round) {
    auto log = AuditLog::Open(opt);
    ASSERT_TRUE(log.ok()) << log.status().ToString();
    for (int i = 0; i < 300; ++i) {
      AuditRecord r = RandomRecord(rng);
      auto seq = (*log)->Append(r);
      ASSERT_TRUE(seq.ok()) << seq.status().ToString();
      EXPECT_EQ(*seq, expected.size() + 1);
      r.seq = *seq;
      expected.push_back(r);
    }
    EXPECT_EQ((*log)->last_seq(), expected.size());
  }
  std::vector<AuditRecord> got = ReadAll(tmp.LogDir());
  ASSERT_EQ(got.size(), expected.size());
  std::string prev;
  for (size_t i = 0; i < got.size(); ++i) {
    AuditRecord want = expected[i];
    // The canonical (minified) detail is what is stored.
    if (!want.detail.empty()) want.detail = R"({"k":"v","n":[1,2,{"x":null}],"b":true})";
    want.prev_hash = got[i].prev_hash;
    want.hash = got[i].hash;
    EXPECT_EQ(got[i], want) << "record " << i;
    EXPECT_EQ(got[i].prev_hash, prev) << "record " << i;
    EXPECT_EQ(got[i].hash.size(), 64u);
    prev = got[i].hash;
  }
  auto files = internal::ListSegments(tmp.LogDir());
  ASSERT_TRUE(files.ok());
  EXPECT_GT(files->size(), 5u) << "16 KiB segments must have rolled";
  auto report = VerifyLog(tmp.LogDir());
  ASSERT_TRUE(report.ok());
  EXPECT_TRUE(report->ok()) << report->problems[0].what << " " << report->problems[0].message;
  EXPECT_EQ(report->records, expected.size());
  EXPECT_EQ(report->first_seq, 1u);
  EXPECT_EQ(report->last_seq, expected.size());
}

TEST(AuditLogTest, AppendStampsTimeAndCanonicalisesDetail) {
  TempDir tmp;
  FakeClock clock(1'700'000'000'123);
  auto log = AuditLog::Open(TestOptions(tmp.LogDir(), &clock));
  ASSERT_TRUE(log.ok());
  AuditRecord r;
  r.operation = "TokenRejected";
  r.tenant_id = "t";
  r.result = "Failed";
  r.reason = "key_issuer_mismatch";
  r.detail = "{ \"iss\" : \"https://login.example/consumers\",\n \"n\": 1.50 }";
  ASSERT_TRUE((*log)->Append(r).ok());
  auto got = ReadAll(tmp.LogDir());
  ASSERT_EQ(got.size(), 1u);
  EXPECT_EQ(got[0].time_ms, 1'700'000'000'123);
  EXPECT_EQ(got[0].detail, R"({"iss":"https://login.example/consumers","n":1.5})");
  EXPECT_EQ(got[0].prev_hash, "");
}

struct BadRecordCase {
  const char* name;
  void (*mutate)(AuditRecord*);
  const char* message;
};

TEST(AuditLogTest, BadRecordsAreRefusedWithTheFieldNamed) {
  const BadRecordCase cases[] = {
      {"no_operation", [](AuditRecord* r) { r->operation.clear(); }, "'operation' is empty"},
      {"operation_charset", [](AuditRecord* r) { r->operation = "Mail Items"; }, "'operation'"},
      {"access_type", [](AuditRecord* r) { r->access_type = "Read"; }, "'access_type'"},
      {"result", [](AuditRecord* r) { r->result = "OK"; }, "'result'"},
      {"negative_time", [](AuditRecord* r) { r->time_ms = -5; }, "'time_ms'"},
      {"year_10000", [](AuditRecord* r) { r->time_ms = 253'402'300'800'000; }, "'time_ms'"},
      {"iat", [](AuditRecord* r) { r->token_issued_at = -1; }, "'token_issued_at'"},
      {"bad_utf8", [](AuditRecord* r) { r->user_agent = "Mozilla\xff"; }, "'user_agent' is not valid UTF-8"},
      {"item_utf8", [](AuditRecord* r) { r->items[0].folder_path = "\xc3"; }, "items[0]"},
      {"huge_field", [](AuditRecord* r) { r->client_ip.assign(70'000, 'x'); }, "'client_ip' is 70000 bytes"},
      {"detail_not_json", [](AuditRecord* r) { r->detail = "claims: x"; }, "'detail'"},
      {"detail_array", [](AuditRecord* r) { r->detail = "[1]"; }, "must be a JSON object"},
      {"detail_dup", [](AuditRecord* r) { r->detail = R"({"a":1,"a":2})"; }, "duplicate member"},
      {"too_big", [](AuditRecord* r) {
         r->items.assign(20'000, AuditItem{"id", std::string(40, 'm'), "\\Inbox"});
       }, "exceeds the limit"},
  };
  TempDir tmp;
  auto log = AuditLog::Open(TestOptions(tmp.LogDir()));
  ASSERT_TRUE(log.ok());
  for (const auto& c : cases) {
    AuditRecord r = MailRead(1);
    c.mutate(&r);
    auto seq = (*log)->Append(r);
    ASSERT_FALSE(seq.ok()) << c.name;
    EXPECT_EQ(seq.status().code(), StatusCode::kInvalidArgument) << c.name;
    EXPECT_NE(seq.status().message().find(c.message), std::string::npos)
        << c.name << ": " << seq.status().message();
    EXPECT_FALSE(ValidateRecord(r).ok()) << c.name;
    // A batch names the record.
    auto b = (*log)->AppendBatch({MailRead(2), r});
    ASSERT_FALSE(b.ok()) << c.name;
    EXPECT_NE(b.status().message().find("records[1]"), std::string::npos) << c.name;
  }
  EXPECT_EQ((*log)->last_seq(), 0u) << "nothing of a refused batch is written";
  EXPECT_EQ((*log)->AppendBatch({}).status().code(), StatusCode::kInvalidArgument);
}

TEST(AuditLogTest, BadOptionsAreRefused) {
  TempDir tmp;
  struct Case {
    const char* name;
    void (*mutate)(AuditLogOptions*);
    StatusCode code;
  } cases[] = {
      {"no_dir", [](AuditLogOptions* o) { o->dir.clear(); }, StatusCode::kInvalidArgument},
      {"tiny_segment", [](AuditLogOptions* o) { o->segment_bytes = 100; }, StatusCode::kInvalidArgument},
      {"negative_retention", [](AuditLogOptions* o) { o->retention_days = -1; }, StatusCode::kInvalidArgument},
      {"null_clock", [](AuditLogOptions* o) { o->clock = nullptr; }, StatusCode::kInvalidArgument},
      {"no_buffer", [](AuditLogOptions* o) { o->subscription_buffer = 0; }, StatusCode::kInvalidArgument},
      {"no_parent", [](AuditLogOptions* o) { o->dir += "/missing/log"; }, StatusCode::kUnavailable},
  };
  for (const auto& c : cases) {
    auto o = TestOptions(tmp.LogDir());
    c.mutate(&o);
    auto log = AuditLog::Open(o);
    ASSERT_FALSE(log.ok()) << c.name;
    EXPECT_EQ(log.status().code(), c.code) << c.name << ": " << log.status().ToString();
  }
  testing::WriteRaw(tmp.File("plain"), "x");
  EXPECT_EQ(AuditLog::Open(TestOptions(tmp.File("plain"))).status().code(), StatusCode::kUnavailable);
}

TEST(AuditLogTest, OneAppenderPerDirectory) {
  TempDir tmp;
  auto a = AuditLog::Open(TestOptions(tmp.LogDir()));
  ASSERT_TRUE(a.ok());
  auto b = AuditLog::Open(TestOptions(tmp.LogDir()));
  ASSERT_FALSE(b.ok());
  EXPECT_EQ(b.status().code(), StatusCode::kFailedPrecondition);
  a->reset();
  EXPECT_TRUE(AuditLog::Open(TestOptions(tmp.LogDir())).ok());
}

TEST(AuditLogTest, ConcurrentAppendersGetDistinctGapFreeSeqsDurably) {
  TempDir tmp;
  auto opt = TestOptions(tmp.LogDir());
  opt.fsync = true;  // group commit under contention
  opt.segment_bytes = 64 << 10;
  auto log = AuditLog::Open(opt);
  ASSERT_TRUE(log.ok());
  constexpr int kThreads = 16, kPer = 25;
  std::vector<std::vector<uint64_t>> seqs(kThreads);
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < kPer; ++i) {
        auto s = (*log)->Append(MailRead(t * 1000 + i));
        if (s.ok()) seqs[t].push_back(*s);
      }
    });
  }
  for (auto& th : threads) th.join();
  std::set<uint64_t> all;
  for (auto& v : seqs) {
    ASSERT_EQ(v.size(), static_cast<size_t>(kPer));
    EXPECT_TRUE(std::is_sorted(v.begin(), v.end()));
    all.insert(v.begin(), v.end());
  }
  ASSERT_EQ(all.size(), static_cast<size_t>(kThreads * kPer));
  EXPECT_EQ(*all.begin(), 1u);
  EXPECT_EQ(*all.rbegin(), static_cast<uint64_t>(kThreads * kPer));
  auto got = ReadAll(tmp.LogDir());
  ASSERT_EQ(got.size(), all.size());
  for (size_t i = 0; i < got.size(); ++i) {
    EXPECT_EQ(got[i].seq, i + 1);
    // Each thread's own records appear in its own order.
  }
  auto report = VerifyLog(tmp.LogDir());
  ASSERT_TRUE(report.ok());
  EXPECT_TRUE(report->ok());
}

TEST(AuditLogTest, AppendBatchIsContiguousAndMarked) {
  TempDir tmp;
  auto log = AuditLog::Open(TestOptions(tmp.LogDir()));
  ASSERT_TRUE(log.ok());
  ASSERT_EQ(*(*log)->Append(MailRead(0)), 1u);
  std::vector<AuditRecord> batch;
  for (int i = 1; i <= 5; ++i) batch.push_back(MailRead(i));
  auto last = (*log)->AppendBatch(batch);
  ASSERT_TRUE(last.ok());
  EXPECT_EQ(*last, 6u);
  auto got = ReadAll(tmp.LogDir());
  ASSERT_EQ(got.size(), 6u);
  for (int i = 1; i <= 5; ++i) EXPECT_EQ(got[i].token_id, "jti-" + std::to_string(i));
  std::string seg = testing::ReadAllOrEmpty(testing::SegPath(tmp.LogDir(), 1));
  // Records of a multi-record batch carry the batch's last seq; a single Append does not.
  auto lines = testing::LineOffsets(seg);
  ASSERT_EQ(lines.size(), 6u);
  EXPECT_EQ(seg.substr(0, lines[1]).find("batch_last"), std::string::npos);
  for (int i = 1; i <= 5; ++i) {
    size_t end = i + 1 < 6 ? lines[i + 1] : seg.size();
    EXPECT_NE(seg.substr(lines[i], end - lines[i]).find(",\"batch_last\":6,"), std::string::npos);
  }
}

TEST(AuditLogTest, RetentionDropsOldSegmentsAndTheRestStillVerifies) {
  TempDir tmp;
  FakeClock clock(1'700'000'000'000);
  auto opt = TestOptions(tmp.LogDir(), &clock);
  opt.segment_bytes = 8 << 10;
  opt.retention_days = 180;
  auto log = AuditLog::Open(opt);
  ASSERT_TRUE(log.ok());
  // 100 days of records, 20 a day.
  for (int day = 0; day < 100; ++day) {
    for (int i = 0; i < 20; ++i) {
      AuditRecord r = MailRead(day * 20 + i, clock.NowMillis());
      ASSERT_TRUE((*log)->Append(r).ok());
    }
    clock.AdvanceSeconds(86'400);
  }
  auto before = internal::ListSegments(tmp.LogDir());
  ASSERT_TRUE(before.ok());
  ASSERT_TRUE((*log)->ApplyRetention().ok());
  EXPECT_EQ(*internal::ListSegments(tmp.LogDir()), *before) << "nothing is 180 days old yet";

  clock.AdvanceSeconds(130 * 86'400);  // now day 230: days 0..49 are past retention
  ASSERT_TRUE((*log)->ApplyRetention().ok());
  auto after = internal::ListSegments(tmp.LogDir());
  ASSERT_TRUE(after.ok());
  EXPECT_LT(after->size(), before->size());
  EXPECT_GT(after->front(), 1u);
  uint64_t first = (*log)->first_seq();
  EXPECT_GT(first, 1u);
  auto kept = ReadAll(tmp.LogDir());
  ASSERT_FALSE(kept.empty());
  EXPECT_EQ(kept.front().seq, first);
  // Every record older than the cutoff that is kept shares a segment with a newer one; none of
  // day 50 or later is gone.
  int64_t cutoff = clock.NowMillis() - 180ll * 86'400'000;
  EXPECT_LE(kept.front().time_ms, cutoff + 86'400'000);
  for (uint64_t s = first; s <= 2000; ++s) EXPECT_EQ(kept[s - first].seq, s);
  EXPECT_EQ(kept.back().seq, 2000u);

  auto report = VerifyLog(tmp.LogDir());
  ASSERT_TRUE(report.ok());
  EXPECT_TRUE(report->ok()) << report->problems[0].what << " " << report->problems[0].message;
  EXPECT_EQ(report->first_seq, first);

  // Appends continue the chain, and a reopen accepts the anchored log.
  ASSERT_TRUE((*log)->Append(MailRead(1)).ok());
  log->reset();
  auto again = AuditLog::Open(opt);
  ASSERT_TRUE(again.ok()) << again.status().ToString();
  EXPECT_EQ((*again)->first_seq(), first);
  EXPECT_EQ((*again)->last_seq(), 2001u);
  EXPECT_TRUE(VerifyLog(tmp.LogDir())->ok());
}

TEST(AuditLogTest, RetentionZeroKeepsEverything) {
  TempDir tmp;
  FakeClock clock;
  auto opt = TestOptions(tmp.LogDir(), &clock);
  opt.segment_bytes = 4096;
  opt.retention_days = 0;
  auto log = AuditLog::Open(opt);
  ASSERT_TRUE(log.ok());
  for (int i = 0; i < 50; ++i) ASSERT_TRUE((*log)->Append(MailRead(i, clock.NowMillis())).ok());
  clock.AdvanceSeconds(10 * 365 * 86'400);
  ASSERT_TRUE((*log)->ApplyRetention().ok());
  EXPECT_EQ(ReadAll(tmp.LogDir()).size(), 50u);
}

TEST(AuditLogTest, QueryLogFilters) {
  TempDir tmp;
  auto log = AuditLog::Open(TestOptions(tmp.LogDir()));
  ASSERT_TRUE(log.ok());
  const int64_t t0 = 1'686'877'323'000;
  for (int i = 0; i < 40; ++i) {
    AuditRecord r = MailRead(i, t0 + i * 1000);
    if (i % 4 == 0) r.tenant_id = "fabrikam";
    if (i % 5 == 0) r.operation = "Send";
    ASSERT_TRUE((*log)->Append(r).ok());
  }
  struct Case {
    const char* name;
    AuditQuery q;
    std::vector<uint64_t> seqs;  // empty: computed below
    size_t count;
  };
  auto count = [&](const AuditQuery& q) {
    std::vector<uint64_t> out;
    Status s = QueryLog(tmp.LogDir(), q, [&](const AuditRecord& r) {
      out.push_back(r.seq);
      return true;
    });
    EXPECT_TRUE(s.ok()) << s.ToString();
    return out;
  };
  AuditQuery all;
  EXPECT_EQ(count(all).size(), 40u);
  AuditQuery tenant;
  tenant.tenant_id = "fabrikam";
  EXPECT_EQ(count(tenant), (std::vector<uint64_t>{1, 5, 9, 13, 17, 21, 25, 29, 33, 37}));
  AuditQuery op;
  op.operation = "Send";
  EXPECT_EQ(count(op), (std::vector<uint64_t>{1, 6, 11, 16, 21, 26, 31, 36}));
  AuditQuery user_by_id;
  user_by_id.user = "u-3";
  EXPECT_EQ(count(user_by_id), (std::vector<uint64_t>{4, 11, 18, 25, 32, 39}));
  AuditQuery user_by_upn;
  user_by_upn.user = "user3@contoso.example";
  EXPECT_EQ(count(user_by_upn), count(user_by_id));
  AuditQuery range;
  range.from_ms = t0 + 10'000;
  range.to_ms = t0 + 13'000;
  EXPECT_EQ(count(range), (std::vector<uint64_t>{11, 12, 13}));
  AuditQuery combined;
  combined.tenant_id = "contoso";
  combined.operation = "MailItemsAccessed";
  combined.from_ms = t0 + 20'000;
  combined.limit = 3;
  EXPECT_EQ(count(combined), (std::vector<uint64_t>{22, 23, 24}));
  AuditQuery none;
  none.user = "nobody";
  EXPECT_TRUE(count(none).empty());

  std::vector<uint64_t> stopped;
  ASSERT_TRUE(QueryLog(tmp.LogDir(), all, [&](const AuditRecord& r) {
                stopped.push_back(r.seq);
                return stopped.size() < 2;
              }).ok());
  EXPECT_EQ(stopped.size(), 2u);

  AuditQuery backwards;
  backwards.from_ms = 10;
  backwards.to_ms = 5;
  EXPECT_EQ(QueryLog(tmp.LogDir(), backwards, [](const AuditRecord&) { return true; }).code(),
            StatusCode::kInvalidArgument);
  EXPECT_EQ(QueryLog(tmp.File("nope"), all, [](const AuditRecord&) { return true; }).code(),
            StatusCode::kNotFound);
}

TEST(AuditLogTest, CheckpointIsWrittenAtCloseAndPeriodically) {
  TempDir tmp;
  auto opt = TestOptions(tmp.LogDir());
  opt.checkpoint_interval_ms = 20;
  {
    auto log = AuditLog::Open(opt);
    ASSERT_TRUE(log.ok());
    ASSERT_TRUE((*log)->Append(MailRead(1)).ok());
    for (int i = 0; i < 200; ++i) {
      if (testing::ReadAllOrEmpty(tmp.LogDir() + "/checkpoint").find("\"seq\":1,") !=
          std::string::npos) {
        break;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    EXPECT_NE(testing::ReadAllOrEmpty(tmp.LogDir() + "/checkpoint").find("\"seq\":1,"),
              std::string::npos);
    ASSERT_TRUE((*log)->Append(MailRead(2)).ok());
  }
  auto cp = internal::DecodeCheckpoint(testing::ReadAllOrEmpty(tmp.LogDir() + "/checkpoint"));
  ASSERT_TRUE(cp.ok());
  EXPECT_EQ(cp->seq, 2u);
  EXPECT_EQ(cp->hash, ReadAll(tmp.LogDir()).back().hash);
}

TEST(MemoryAuditWriterTest, AssignsSeqAndChain) {
  MemoryAuditWriter w;
  AuditWriter* writer = &w;
  ASSERT_EQ(*writer->Append(MailRead(1)), 1u);
  ASSERT_EQ(*writer->Append(MailRead(2)), 2u);
  AuditRecord bad = MailRead(3);
  bad.operation.clear();
  EXPECT_EQ(writer->Append(bad).status().code(), StatusCode::kInvalidArgument);
  auto recs = w.records();
  ASSERT_EQ(recs.size(), 2u);
  EXPECT_EQ(recs[0].prev_hash, "");
  EXPECT_EQ(recs[1].prev_hash, recs[0].hash);
  EXPECT_EQ(recs[1].token_id, "jti-2");
  MemoryAuditWriter copy = w;  // shares state
  copy.Clear();
  EXPECT_TRUE(w.records().empty());
}

}  // namespace
}  // namespace kw::audit
