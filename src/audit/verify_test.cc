// VerifyLog against every kind of tampering: each case damages a copy of the same log and names
// the one problem VerifyLog must report (what, segment, offset, seq).

#include <gtest/gtest.h>

#include <filesystem>
#include <functional>

#include "audit/audit_log.h"
#include "audit/log_format.h"
#include "audit/test_util.h"

namespace kw::audit {
namespace {

using testing::LineOffsets;
using testing::MailRead;
using testing::ReadAllOrEmpty;
using testing::SegPath;
using testing::TempDir;
using testing::WriteRaw;

constexpr int kRecords = 80;

// A segment file's lines (each without its newline) and offsets.
struct Seg {
  std::string path, content;
  std::vector<uint64_t> offsets;
  explicit Seg(std::string p) : path(std::move(p)), content(ReadAllOrEmpty(path)) {
    offsets = LineOffsets(content);
  }
  std::string Line(size_t i) const {
    size_t end = i + 1 < offsets.size() ? offsets[i + 1] : content.size();
    return content.substr(offsets[i], end - offsets[i]);  // with its newline
  }
  uint64_t SeqAt(size_t i) const { return *internal::PeekSeq(Line(i)); }
};

struct Expect {
  std::string what;
  uint64_t segment;  // index
  uint64_t offset;
  uint64_t seq;
};

struct TamperCase {
  const char* name;
  // Damages the log in `dir` and returns the problem VerifyLog must report.
  std::function<Expect(const std::string& dir)> tamper;
};

std::string ReplaceOnce(std::string s, const std::string& from, const std::string& to) {
  size_t p = s.find(from);
  if (p == std::string::npos) throw std::runtime_error("not found: " + from);
  return s.replace(p, from.size(), to);
}

const TamperCase kCases[] = {
    {"flip_one_byte",
     [](const std::string& dir) {
       Seg s(SegPath(dir, 2));
       std::string line = s.Line(1);
       std::string edited = ReplaceOnce(line, "Client=REST", "Client=RESX");
       WriteRaw(s.path, ReplaceOnce(s.content, line, edited));
       return Expect{"edited", 2, s.offsets[1], s.SeqAt(1)};
     }},
    {"flip_a_hash_digit",
     [](const std::string& dir) {
       Seg s(SegPath(dir, 3));
       std::string c = s.content;
       size_t pos = s.offsets[2] + s.Line(2).size() - 5;  // inside the hash
       c[pos] = c[pos] == '0' ? '1' : '0';
       WriteRaw(s.path, c);
       return Expect{"edited", 3, s.offsets[2], s.SeqAt(2)};
     }},
    {"edit_seq_number",
     [](const std::string& dir) {
       Seg s(SegPath(dir, 3));
       std::string line = s.Line(1);
       std::string seq = std::to_string(s.SeqAt(1));
       std::string edited = ReplaceOnce(line, "{\"seq\":" + seq, "{\"seq\":" + std::to_string(s.SeqAt(1) + 100));
       WriteRaw(s.path, ReplaceOnce(s.content, line, edited));
       return Expect{"edited", 3, s.offsets[1], s.SeqAt(1)};
     }},
    {"delete_a_record",
     [](const std::string& dir) {
       Seg s(SegPath(dir, 3));
       WriteRaw(s.path, ReplaceOnce(s.content, s.Line(2), ""));
       return Expect{"removed", 3, s.offsets[2], s.SeqAt(2)};
     }},
    {"delete_first_record_of_a_segment",
     [](const std::string& dir) {
       Seg s(SegPath(dir, 4));
       WriteRaw(s.path, s.content.substr(s.offsets[1]));
       // Seen from the boundary, segment 3 lost its tail.
       Seg prev(SegPath(dir, 3));
       return Expect{"truncated", 3, prev.content.size(), s.SeqAt(0)};
     }},
    {"swap_two_records",
     [](const std::string& dir) {
       Seg s(SegPath(dir, 3));
       std::string a = s.Line(1), b = s.Line(2);
       WriteRaw(s.path, ReplaceOnce(s.content, a + b, b + a));
       return Expect{"reordered", 3, s.offsets[1], s.SeqAt(1)};
     }},
    {"rewrite_a_record_with_a_recomputed_hash",
     [](const std::string& dir) {
       Seg s(SegPath(dir, 2));
       std::string line = s.Line(1);
       std::string body = line.substr(0, line.size() - 1 - internal::kHashSuffixBytes);
       std::string forged_body = ReplaceOnce(body, "203.0.113.7", "203.0.113.8");
       std::string forged = forged_body + ",\"hash\":\"" + internal::Sha256Hex(forged_body) + "\"}\n";
       WriteRaw(s.path, ReplaceOnce(s.content, line, forged));
       return Expect{"chain_broken", 2, s.offsets[2], s.SeqAt(2)};
     }},
    {"insert_garbage_line",
     [](const std::string& dir) {
       Seg s(SegPath(dir, 2));
       WriteRaw(s.path, ReplaceOnce(s.content, s.Line(1), s.Line(1) + "{\"hello\":1}\n"));
       return Expect{"malformed", 2, s.offsets[2], s.SeqAt(2)};
     }},
    {"truncate_middle_segment_inside_a_record",
     [](const std::string& dir) {
       Seg s(SegPath(dir, 4));
       std::filesystem::resize_file(s.path, s.offsets[2] + 40);
       return Expect{"truncated", 4, s.offsets[2], s.SeqAt(2)};
     }},
    {"truncate_middle_segment_at_a_record_boundary",
     [](const std::string& dir) {
       Seg s(SegPath(dir, 4));
       std::filesystem::resize_file(s.path, s.offsets[2]);
       return Expect{"truncated", 4, s.offsets[2], s.SeqAt(2)};
     }},
    {"remove_middle_segment",
     [](const std::string& dir) {
       Seg s(SegPath(dir, 5));
       std::filesystem::remove(s.path);
       return Expect{"removed", 5, 0, s.SeqAt(0)};
     }},
    {"remove_first_segment_without_anchor",
     [](const std::string& dir) {
       std::filesystem::remove(SegPath(dir, 1));
       return Expect{"removed", 1, 0, 1};
     }},
    {"truncate_tail_at_a_record_boundary_vs_checkpoint",
     [](const std::string& dir) {
       auto idx = *internal::ListSegments(dir);
       Seg s(SegPath(dir, idx.back()));
       size_t cut = s.offsets.size() >= 2 ? s.offsets.size() - 2 : 0;
       std::filesystem::resize_file(s.path, s.offsets[cut]);
       return Expect{"truncated", idx.back(), s.offsets[cut], s.SeqAt(cut)};
     }},
    {"truncate_tail_inside_a_record_vs_checkpoint",
     [](const std::string& dir) {
       auto idx = *internal::ListSegments(dir);
       Seg s(SegPath(dir, idx.back()));
       size_t last = s.offsets.size() - 1;
       std::filesystem::resize_file(s.path, s.offsets[last] + 10);
       return Expect{"truncated", idx.back(), s.offsets[last], s.SeqAt(last)};
     }},
    {"remove_last_segment_vs_checkpoint",
     [](const std::string& dir) {
       auto idx = *internal::ListSegments(dir);
       Seg s(SegPath(dir, idx.back()));
       std::filesystem::remove(s.path);
       Seg prev(SegPath(dir, idx[idx.size() - 2]));
       return Expect{"truncated", idx[idx.size() - 2], prev.content.size(), s.SeqAt(0)};
     }},
    {"rewrite_last_record_vs_checkpoint",
     [](const std::string& dir) {
       auto idx = *internal::ListSegments(dir);
       Seg s(SegPath(dir, idx.back()));
       size_t last = s.offsets.size() - 1;
       std::string line = s.Line(last);
       std::string body = line.substr(0, line.size() - 1 - internal::kHashSuffixBytes);
       std::string forged_body = ReplaceOnce(body, "Succeeded", "Failed");
       std::string forged =
           forged_body + ",\"hash\":\"" + internal::Sha256Hex(forged_body) + "\"}\n";
       WriteRaw(s.path, ReplaceOnce(s.content, line, forged));
       return Expect{"edited", idx.back(), s.offsets[last], s.SeqAt(last)};
     }},
};

class VerifyTest : public ::testing::TestWithParam<TamperCase> {};

void BuildLog(const std::string& dir) {
  AuditLogOptions o = testing::TestOptions(dir);
  o.segment_bytes = 4096;
  auto log = AuditLog::Open(o);
  ASSERT_TRUE(log.ok()) << log.status().ToString();
  for (int i = 0; i < kRecords; ++i) ASSERT_TRUE((*log)->Append(MailRead(i)).ok());
}

TEST_P(VerifyTest, DetectsAndLocates) {
  TempDir tmp;
  BuildLog(tmp.LogDir());
  auto clean = VerifyLog(tmp.LogDir());
  ASSERT_TRUE(clean.ok());
  ASSERT_TRUE(clean->ok());
  ASSERT_TRUE(clean->checkpoint_checked);
  ASSERT_EQ(clean->records, static_cast<uint64_t>(kRecords));
  ASSERT_GE(internal::ListSegments(tmp.LogDir())->size(), 7u);

  Expect want = GetParam().tamper(tmp.LogDir());
  auto report = VerifyLog(tmp.LogDir());
  ASSERT_TRUE(report.ok()) << report.status().ToString();
  ASSERT_EQ(report->problems.size(), 1u) << [&] {
    std::string all;
    for (const auto& p : report->problems) {
      all += p.what + " " + p.segment + "@" + std::to_string(p.offset) + " seq " +
             std::to_string(p.seq) + ": " + p.message + "\n";
    }
    return all;
  }();
  const VerifyProblem& p = report->problems[0];
  EXPECT_EQ(p.what, want.what) << p.message;
  EXPECT_EQ(p.segment, internal::SegmentName(want.segment)) << p.message;
  EXPECT_EQ(p.offset, want.offset) << p.message;
  EXPECT_EQ(p.seq, want.seq) << p.message;
  EXPECT_FALSE(p.message.empty());
}

INSTANTIATE_TEST_SUITE_P(Tamper, VerifyTest, ::testing::ValuesIn(kCases),
                         [](const auto& info) { return std::string(info.param.name); });

TEST(VerifyLogTest, AnExternalCheckpointCatchesATruncatedTailWhoseLocalCheckpointWasRewritten) {
  TempDir tmp;
  BuildLog(tmp.LogDir());
  std::string external = tmp.File("checkpoint.copy");
  WriteRaw(external, ReadAllOrEmpty(tmp.LogDir() + "/checkpoint"));
  auto idx = *internal::ListSegments(tmp.LogDir());
  Seg s(SegPath(tmp.LogDir(), idx.back()));
  std::filesystem::resize_file(s.path, s.offsets.back());
  std::filesystem::remove(tmp.LogDir() + "/checkpoint");
  EXPECT_TRUE(VerifyLog(tmp.LogDir())->ok()) << "without a checkpoint a cut tail is invisible";
  auto report = VerifyLog(tmp.LogDir(), external);
  ASSERT_TRUE(report.ok());
  ASSERT_EQ(report->problems.size(), 1u);
  EXPECT_EQ(report->problems[0].what, "truncated");
  EXPECT_EQ(report->problems[0].seq, static_cast<uint64_t>(kRecords));
}

TEST(VerifyLogTest, MissingDirectoryIsAnErrorAndEmptyLogIsIntact) {
  TempDir tmp;
  EXPECT_EQ(VerifyLog(tmp.File("nope")).status().code(), StatusCode::kNotFound);
  auto empty = VerifyLog(tmp.path());
  ASSERT_TRUE(empty.ok());
  EXPECT_TRUE(empty->ok());
  EXPECT_EQ(empty->records, 0u);
}

TEST(VerifyLogTest, OpenRefusesALogDamagedBeforeItsTail) {
  TempDir tmp;
  BuildLog(tmp.LogDir());
  auto o = testing::TestOptions(tmp.LogDir());
  o.segment_bytes = 4096;
  {
    Seg s(SegPath(tmp.LogDir(), 3));
    std::filesystem::remove(s.path);
    auto log = AuditLog::Open(o);
    ASSERT_FALSE(log.ok());
    EXPECT_EQ(log.status().code(), StatusCode::kDataLoss);
    EXPECT_NE(log.status().message().find("audit-00000003.jsonl is missing"), std::string::npos)
        << log.status().message();
  }
}

TEST(VerifyLogTest, OpenRefusesALogThatEndsBeforeItsCheckpoint) {
  TempDir tmp;
  BuildLog(tmp.LogDir());
  auto idx = *internal::ListSegments(tmp.LogDir());
  Seg s(SegPath(tmp.LogDir(), idx.back()));
  std::filesystem::resize_file(s.path, s.offsets.back());
  auto log = AuditLog::Open(testing::TestOptions(tmp.LogDir()));
  ASSERT_FALSE(log.ok());
  EXPECT_EQ(log.status().code(), StatusCode::kDataLoss);
  EXPECT_NE(log.status().message().find("checkpoint"), std::string::npos);
}

TEST(VerifyLogTest, OpenRefusesDamageFollowedByCompleteRecords) {
  TempDir tmp;
  BuildLog(tmp.LogDir());
  auto idx = *internal::ListSegments(tmp.LogDir());
  Seg s(SegPath(tmp.LogDir(), idx.back()));
  ASSERT_GE(s.offsets.size(), 2u);
  std::string c = s.content;
  c[s.offsets[0] + 30] ^= 0x01;
  WriteRaw(s.path, c);
  auto log = AuditLog::Open(testing::TestOptions(tmp.LogDir()));
  ASSERT_FALSE(log.ok());
  EXPECT_EQ(log.status().code(), StatusCode::kDataLoss);
  EXPECT_EQ(ReadAllOrEmpty(s.path), c) << "evidence is not cut off";
}

}  // namespace
}  // namespace kw::audit
