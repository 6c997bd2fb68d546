// Crash safety: torn tails written by hand, an unfinished batch, and a child process killed with
// SIGKILL in the middle of a write burst.

#include <fcntl.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <atomic>
#include <filesystem>
#include <mutex>
#include <set>
#include <thread>

#include "audit/audit_log.h"
#include "audit/test_util.h"
#include "core/log.h"

namespace kw::audit {
namespace {

using testing::MailRead;
using testing::ReadAll;
using testing::ReadAllOrEmpty;
using testing::SegPath;
using testing::TempDir;
using testing::TestOptions;

// Captures log lines for the duration of a test.
class LogCapture {
 public:
  LogCapture() {
    SetLogSink(
        [this](LogLevel, std::string_view line) {
          std::lock_guard l(mu_);
          lines_.emplace_back(line);
        },
        LogLevel::kInfo);
  }
  ~LogCapture() { SetLogSink(nullptr); }
  bool Contains(std::string_view s) {
    std::lock_guard l(mu_);
    for (const auto& line : lines_) {
      if (line.find(s) != std::string::npos) return true;
    }
    return false;
  }

 private:
  std::mutex mu_;
  std::vector<std::string> lines_;
};

struct TornCase {
  const char* name;
  std::string tail;  // bytes appended after the last complete record
};

TEST(CrashTest, TornTailIsCutAndTheChainContinues) {
  const std::string half_record =
      R"({"seq":11,"prev_hash":"0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef","time_ms":1686877323000,"tim)";
  const TornCase cases[] = {
      {"half_record", half_record},
      {"zeros_with_newline", std::string("\0\0\0\0\0\0\n\0\0\0", 10)},
      {"complete_line_bad_hash",
       half_record + R"(e":"x","hash":"0000000000000000000000000000000000000000000000000000000000000000"})" "\n"},
      {"newline_only", "\n"},
  };
  for (const auto& c : cases) {
    SCOPED_TRACE(c.name);
    TempDir tmp;
    {
      auto log = AuditLog::Open(TestOptions(tmp.LogDir()));
      ASSERT_TRUE(log.ok());
      for (int i = 0; i < 10; ++i) ASSERT_TRUE((*log)->Append(MailRead(i)).ok());
    }
    auto before = ReadAll(tmp.LogDir());
    std::string seg = SegPath(tmp.LogDir(), 1);
    uint64_t good_size = std::filesystem::file_size(seg);
    testing::AppendRaw(seg, c.tail);

    LogCapture capture;
    auto log = AuditLog::Open(TestOptions(tmp.LogDir()));
    ASSERT_TRUE(log.ok()) << log.status().ToString();
    EXPECT_TRUE(capture.Contains("torn tail")) << "the cut is reported";
    EXPECT_EQ(std::filesystem::file_size(seg), good_size);
    EXPECT_EQ((*log)->last_seq(), 10u);
    auto seq = (*log)->Append(MailRead(99));
    ASSERT_TRUE(seq.ok());
    EXPECT_EQ(*seq, 11u);
    auto after = ReadAll(tmp.LogDir());
    ASSERT_EQ(after.size(), 11u);
    for (size_t i = 0; i < 10; ++i) EXPECT_EQ(after[i], before[i]);
    EXPECT_EQ(after[10].prev_hash, before[9].hash);
    auto report = VerifyLog(tmp.LogDir());
    ASSERT_TRUE(report.ok());
    EXPECT_TRUE(report->ok());
  }
}

TEST(CrashTest, TornFirstRecordOfANewSegmentLeavesAnEmptySegmentThatIsReused) {
  TempDir tmp;
  auto opt = TestOptions(tmp.LogDir());
  opt.segment_bytes = 4096;
  {
    auto log = AuditLog::Open(opt);
    ASSERT_TRUE(log.ok());
    for (int i = 0; i < 20; ++i) ASSERT_TRUE((*log)->Append(MailRead(i)).ok());
  }
  auto idx = *internal::ListSegments(tmp.LogDir());
  std::string next = SegPath(tmp.LogDir(), idx.back() + 1);
  testing::WriteRaw(next, "{\"seq\":21,\"prev_h");
  auto log = AuditLog::Open(opt);
  ASSERT_TRUE(log.ok()) << log.status().ToString();
  EXPECT_EQ((*log)->last_seq(), 20u);
  ASSERT_EQ(*(*log)->Append(MailRead(21)), 21u);
  EXPECT_TRUE(VerifyLog(tmp.LogDir())->ok());
  EXPECT_EQ(ReadAll(tmp.LogDir()).size(), 21u);
}

TEST(CrashTest, AnUnfinishedBatchIsCutWhole) {
  TempDir tmp;
  {
    auto log = AuditLog::Open(TestOptions(tmp.LogDir()));
    ASSERT_TRUE(log.ok());
    ASSERT_TRUE((*log)->Append(MailRead(0)).ok());
    std::vector<AuditRecord> batch;
    for (int i = 1; i <= 5; ++i) batch.push_back(MailRead(i));
    ASSERT_EQ(*(*log)->AppendBatch(batch), 6u);
  }
  std::filesystem::remove(tmp.LogDir() + "/checkpoint");
  std::string seg = SegPath(tmp.LogDir(), 1);
  std::string content = ReadAllOrEmpty(seg);
  auto lines = testing::LineOffsets(content);
  ASSERT_EQ(lines.size(), 6u);
  // The crash kept three of the batch's five records, each complete and valid.
  std::filesystem::resize_file(seg, lines[4]);
  auto log = AuditLog::Open(TestOptions(tmp.LogDir()));
  ASSERT_TRUE(log.ok()) << log.status().ToString();
  EXPECT_EQ((*log)->last_seq(), 1u);
  EXPECT_EQ(std::filesystem::file_size(seg), lines[1]);
  EXPECT_EQ(*(*log)->Append(MailRead(7)), 2u);
  EXPECT_TRUE(VerifyLog(tmp.LogDir())->ok());
}

// The child appends from 4 threads with fsync and reports each acknowledged seq through a pipe;
// the parent kills it with SIGKILL in the middle of the burst.
TEST(CrashTest, KillNineDuringAWriteBurstLosesNoAcknowledgedRecord) {
  TempDir tmp;
  int fds[2];
  ASSERT_EQ(::pipe(fds), 0);
  pid_t pid = ::fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    ::close(fds[0]);
    auto opt = TestOptions(tmp.LogDir());
    opt.fsync = true;
    opt.segment_bytes = 32 << 10;  // rolls segments during the burst too
    opt.checkpoint_interval_ms = 20;
    auto log = AuditLog::Open(opt);
    if (!log.ok()) ::_exit(2);
    std::mutex pipe_mu;
    std::vector<std::thread> threads;
    for (int t = 0; t < 4; ++t) {
      threads.emplace_back([&, t] {
        for (int i = 0;; ++i) {
          auto seq = (*log)->Append(MailRead(t * 1'000'000 + i));
          if (!seq.ok()) ::_exit(3);
          uint64_t v = *seq;
          std::lock_guard l(pipe_mu);
          if (::write(fds[1], &v, sizeof v) != sizeof v) ::_exit(4);
        }
      });
    }
    for (auto& th : threads) th.join();
    ::_exit(0);
  }
  ::close(fds[1]);
  std::set<uint64_t> acked;
  uint64_t v;
  while (acked.size() < 300) {
    ssize_t n = ::read(fds[0], &v, sizeof v);
    if (n != sizeof v) break;
    acked.insert(v);
  }
  ASSERT_EQ(::kill(pid, SIGKILL), 0);
  int status = 0;
  ASSERT_EQ(::waitpid(pid, &status, 0), pid);
  ASSERT_TRUE(WIFSIGNALED(status)) << "child exited early with " << WEXITSTATUS(status);
  while (::read(fds[0], &v, sizeof v) == sizeof v) acked.insert(v);
  ::close(fds[0]);
  ASSERT_GE(acked.size(), 300u);

  auto log = AuditLog::Open(TestOptions(tmp.LogDir()));
  ASSERT_TRUE(log.ok()) << log.status().ToString();
  EXPECT_GE((*log)->last_seq(), *acked.rbegin());
  auto records = ReadAll(tmp.LogDir());
  std::set<uint64_t> present;
  for (const auto& r : records) present.insert(r.seq);
  for (uint64_t s : acked) EXPECT_TRUE(present.count(s)) << "acknowledged seq " << s << " lost";
  auto report = VerifyLog(tmp.LogDir());
  ASSERT_TRUE(report.ok());
  EXPECT_TRUE(report->ok());
  EXPECT_TRUE(report->checkpoint_checked);
  ASSERT_TRUE((*log)->Append(MailRead(1)).ok());
  EXPECT_TRUE(VerifyLog(tmp.LogDir())->ok());
}

// The same with pipelined producers: each child thread submits windows of 50 records with
// AppendAsync and reports a window's seqs only once WaitDurable returned for its last one.
TEST(CrashTest, KillNineDuringAsyncAppendsLosesNoRecordWhoseWaitReturned) {
  TempDir tmp;
  int fds[2];
  ASSERT_EQ(::pipe(fds), 0);
  pid_t pid = ::fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    ::close(fds[0]);
    auto opt = TestOptions(tmp.LogDir());
    opt.fsync = true;
    opt.segment_bytes = 64 << 10;
    opt.checkpoint_interval_ms = 20;
    auto log = AuditLog::Open(opt);
    if (!log.ok()) ::_exit(2);
    std::mutex pipe_mu;
    std::vector<std::thread> threads;
    for (int t = 0; t < 2; ++t) {
      threads.emplace_back([&, t] {
        std::vector<uint64_t> window;
        for (int i = 0;; ++i) {
          auto seq = (*log)->AppendAsync(MailRead(t * 1'000'000 + i));
          if (!seq.ok()) ::_exit(3);
          window.push_back(*seq);
          if (window.size() < 50) continue;
          if (!(*log)->WaitDurable(window.back()).ok()) ::_exit(4);
          std::lock_guard l(pipe_mu);
          size_t bytes = window.size() * sizeof(uint64_t);
          if (::write(fds[1], window.data(), bytes) != static_cast<ssize_t>(bytes)) ::_exit(5);
          window.clear();
        }
      });
    }
    for (auto& th : threads) th.join();
    ::_exit(0);
  }
  ::close(fds[1]);
  std::set<uint64_t> acked;
  uint64_t v;
  while (acked.size() < 3000) {
    ssize_t n = ::read(fds[0], &v, sizeof v);
    if (n != sizeof v) break;
    acked.insert(v);
  }
  ASSERT_EQ(::kill(pid, SIGKILL), 0);
  int status = 0;
  ASSERT_EQ(::waitpid(pid, &status, 0), pid);
  ASSERT_TRUE(WIFSIGNALED(status)) << "child exited early with " << WEXITSTATUS(status);
  while (::read(fds[0], &v, sizeof v) == sizeof v) acked.insert(v);
  ::close(fds[0]);
  ASSERT_GE(acked.size(), 3000u);

  auto log = AuditLog::Open(TestOptions(tmp.LogDir()));
  ASSERT_TRUE(log.ok()) << log.status().ToString();
  EXPECT_GE((*log)->last_seq(), *acked.rbegin());
  std::set<uint64_t> present;
  for (const auto& r : ReadAll(tmp.LogDir())) present.insert(r.seq);
  for (uint64_t s : acked) ASSERT_TRUE(present.count(s)) << "acknowledged seq " << s << " lost";
  auto report = VerifyLog(tmp.LogDir());
  ASSERT_TRUE(report.ok());
  EXPECT_TRUE(report->ok());
  ASSERT_TRUE((*log)->Append(MailRead(1)).ok());
  EXPECT_TRUE(VerifyLog(tmp.LogDir())->ok());
}

}  // namespace
}  // namespace kw::audit
