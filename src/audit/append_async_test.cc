// AppendAsync / WaitDurable: order, acknowledgement only after fdatasync, failures reported to
// every waiter, concurrent producers, subscribers, and what Close does with queued records.
//
// This program defines fdatasync itself, so the audit library (linked statically into it)
// calls the SyncHook below instead of libc's. By default it passes straight to the system call;
// a test can hold calls at a gate or make them fail, which is how "acknowledged only after
// fdatasync" and "an fsync failure reaches every waiter" are observed without a faulty disk.

#include <signal.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <condition_variable>
#include <future>
#include <mutex>
#include <set>
#include <thread>

#include "audit/audit_log.h"
#include "audit/test_util.h"

namespace kw::audit {
namespace {

// Controls every fdatasync of this process.
class SyncHook {
 public:
  static SyncHook& Get() {
    static SyncHook hook;
    return hook;
  }
  // Calls from now on wait at the gate.
  void Block() {
    std::lock_guard l(mu_);
    blocked_ = true;
  }
  // Lets waiting and later calls through; each fails with `err` when it is not 0.
  void Release(int err = 0) {
    std::lock_guard l(mu_);
    blocked_ = false;
    fail_errno_ = err;
    cv_.notify_all();
  }
  // Back to plain pass-through.
  void Reset() { Release(0); }
  // Waits (at most 10 s) until `n` calls have reached the gate since the last Block.
  bool WaitForWaiting(int n) {
    std::unique_lock l(mu_);
    return cv_.wait_for(l, std::chrono::seconds(10), [&] { return waiting_ >= n; });
  }

  int Call(int fd) {
    std::unique_lock l(mu_);
    if (blocked_) {
      ++waiting_;
      cv_.notify_all();
      cv_.wait(l, [&] { return !blocked_; });
      --waiting_;
    }
    if (fail_errno_ != 0) {
      errno = fail_errno_;
      return -1;
    }
    l.unlock();
    return static_cast<int>(::syscall(SYS_fdatasync, fd));
  }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  bool blocked_ = false;
  int fail_errno_ = 0;
  int waiting_ = 0;
};

}  // namespace
}  // namespace kw::audit

extern "C" int fdatasync(int fd) { return kw::audit::SyncHook::Get().Call(fd); }

namespace kw::audit {
namespace {

using testing::MailRead;
using testing::ReadAll;
using testing::TempDir;
using testing::TestOptions;

AuditLogOptions DurableOptions(const std::string& dir) {
  AuditLogOptions o = TestOptions(dir);
  o.fsync = true;
  return o;
}

// Resets the hook when a test ends, whatever happened in it.
struct HookGuard {
  ~HookGuard() { SyncHook::Get().Reset(); }
};

TEST(AppendAsyncTest, SeqsFollowTheCallsAndRecordsAreStoredInThatOrder) {
  TempDir tmp;
  auto opt = TestOptions(tmp.LogDir());
  opt.segment_bytes = 8 << 10;  // several segments
  auto log = AuditLog::Open(opt);
  ASSERT_TRUE(log.ok());
  std::vector<uint64_t> seqs;
  for (int i = 0; i < 40; ++i) {
    if (i % 10 == 5) {
      std::vector<AuditRecord> batch = {MailRead(i), MailRead(i + 1000)};
      auto s = (*log)->AppendBatchAsync(batch);
      ASSERT_TRUE(s.ok()) << s.status().ToString();
      seqs.push_back(*s - 1);
      seqs.push_back(*s);
    } else if (i % 10 == 7) {
      auto s = (*log)->Append(MailRead(i));  // a synchronous append in between
      ASSERT_TRUE(s.ok());
      seqs.push_back(*s);
    } else {
      auto s = (*log)->AppendAsync(MailRead(i));
      ASSERT_TRUE(s.ok());
      seqs.push_back(*s);
    }
  }
  for (size_t i = 0; i < seqs.size(); ++i) EXPECT_EQ(seqs[i], i + 1);
  ASSERT_TRUE((*log)->WaitDurable(seqs.back()).ok());
  EXPECT_EQ((*log)->last_seq(), seqs.back());
  EXPECT_TRUE((*log)->WaitDurable(0).ok());
  EXPECT_TRUE((*log)->WaitDurable(3).ok());  // older than the newest durable: at once

  auto got = ReadAll(tmp.LogDir());
  ASSERT_EQ(got.size(), seqs.size());
  size_t k = 0;
  for (int i = 0; i < 40; ++i) {
    EXPECT_EQ(got[k++].token_id, "jti-" + std::to_string(i));
    if (i % 10 == 5) {
      EXPECT_EQ(got[k++].token_id, "jti-" + std::to_string(i + 1000));
    }
  }
  EXPECT_TRUE(VerifyLog(tmp.LogDir())->ok());
}

TEST(AppendAsyncTest, BadRecordsAreRefusedAtOnceWithoutUsingASeq) {
  TempDir tmp;
  auto log = AuditLog::Open(TestOptions(tmp.LogDir()));
  ASSERT_TRUE(log.ok());
  ASSERT_EQ(*(*log)->AppendAsync(MailRead(0)), 1u);
  const struct {
    const char* name;
    void (*spoil)(AuditRecord&);
    const char* field;
  } cases[] = {
      {"no operation", [](AuditRecord& r) { r.operation.clear(); }, "operation"},
      {"invalid UTF-8", [](AuditRecord& r) { r.user_upn = "a\xff"; }, "user_upn"},
      {"invalid UTF-8 in an item", [](AuditRecord& r) { r.items[0].folder_path = "\xc3"; },
       "folder_path"},
      {"detail not an object", [](AuditRecord& r) { r.detail = "[1]"; }, "detail"},
  };
  for (const auto& c : cases) {
    SCOPED_TRACE(c.name);
    AuditRecord r = MailRead(1);
    c.spoil(r);
    auto s = (*log)->AppendAsync(r);
    ASSERT_FALSE(s.ok());
    EXPECT_EQ(s.status().code(), StatusCode::kInvalidArgument);
    EXPECT_NE(s.status().message().find(c.field), std::string::npos) << s.status().ToString();
  }
  std::vector<AuditRecord> batch = {MailRead(2), MailRead(3)};
  batch[1].access_type = "Read";
  auto b = (*log)->AppendBatchAsync(batch);
  ASSERT_FALSE(b.ok());
  EXPECT_NE(b.status().message().find("records[1]"), std::string::npos);
  EXPECT_EQ((*log)->AppendBatchAsync({}).status().code(), StatusCode::kInvalidArgument);

  EXPECT_EQ(*(*log)->AppendAsync(MailRead(4)), 2u);
  auto unassigned = (*log)->WaitDurable(3);
  EXPECT_EQ(unassigned.code(), StatusCode::kInvalidArgument);
  ASSERT_TRUE((*log)->WaitDurable(2).ok());
  auto got = ReadAll(tmp.LogDir());
  ASSERT_EQ(got.size(), 2u);
  EXPECT_EQ(got[1].token_id, "jti-4");
}

TEST(AppendAsyncTest, AcknowledgedOnlyAfterFdatasyncReturns) {
  HookGuard guard;
  TempDir tmp;
  auto log = AuditLog::Open(DurableOptions(tmp.LogDir()));
  ASSERT_TRUE(log.ok());
  ASSERT_EQ(*(*log)->Append(MailRead(0)), 1u);

  SyncHook::Get().Block();
  auto seq = (*log)->AppendAsync(MailRead(1));
  ASSERT_TRUE(seq.ok());
  ASSERT_EQ(*seq, 2u);
  auto sync_append = std::async(std::launch::async, [&] { return (*log)->Append(MailRead(2)); });
  ASSERT_TRUE(SyncHook::Get().WaitForWaiting(1));
  // Written (a reader sees the complete line) but its fdatasync has not returned: neither the
  // asynchronous nor the synchronous appender is acknowledged.
  auto wait = std::async(std::launch::async, [&] { return (*log)->WaitDurable(*seq); });
  EXPECT_EQ(wait.wait_for(std::chrono::milliseconds(200)), std::future_status::timeout);
  EXPECT_EQ(sync_append.wait_for(std::chrono::milliseconds(0)), std::future_status::timeout);
  EXPECT_GE(ReadAll(tmp.LogDir()).size(), 2u);
  EXPECT_EQ((*log)->last_seq(), 1u);

  SyncHook::Get().Release();
  EXPECT_TRUE(wait.get().ok());
  auto appended = sync_append.get();
  ASSERT_TRUE(appended.ok());
  EXPECT_EQ(*appended, 3u);
  EXPECT_EQ((*log)->last_seq(), 3u);
}

TEST(AppendAsyncTest, AFailedFdatasyncReachesEveryWaiterAndStopsTheLog) {
  HookGuard guard;
  TempDir tmp;
  {
    auto log = AuditLog::Open(DurableOptions(tmp.LogDir()));
    ASSERT_TRUE(log.ok());
    ASSERT_EQ(*(*log)->Append(MailRead(0)), 1u);

    SyncHook::Get().Block();
    ASSERT_EQ(*(*log)->AppendAsync(MailRead(1)), 2u);
    ASSERT_TRUE(SyncHook::Get().WaitForWaiting(1));
    ASSERT_EQ(*(*log)->AppendAsync(MailRead(2)), 3u);
    std::vector<std::future<Status>> waits;
    for (uint64_t s : {2u, 3u, 3u}) {
      waits.push_back(std::async(std::launch::async, [&log, s] { return (*log)->WaitDurable(s); }));
    }
    SyncHook::Get().Release(EIO);
    for (auto& w : waits) {
      Status s = w.get();
      EXPECT_EQ(s.code(), StatusCode::kUnavailable);
      EXPECT_NE(s.message().find("fsync"), std::string::npos) << s.ToString();
    }
    EXPECT_TRUE((*log)->WaitDurable(1).ok());  // it was durable before the failure
    EXPECT_EQ((*log)->last_seq(), 1u);
    auto after = (*log)->AppendAsync(MailRead(3));
    EXPECT_EQ(after.status().code(), StatusCode::kUnavailable);
    EXPECT_FALSE((*log)->Append(MailRead(4)).ok());
    EXPECT_FALSE((*log)->AppendBatch({MailRead(5), MailRead(6)}).ok());
    SyncHook::Get().Reset();
  }
  // What reached the file may be kept or cut, but the log opens, verifies and continues.
  auto log = AuditLog::Open(TestOptions(tmp.LogDir()));
  ASSERT_TRUE(log.ok()) << log.status().ToString();
  auto got = ReadAll(tmp.LogDir());
  ASSERT_GE(got.size(), 1u);
  EXPECT_EQ(got[0].token_id, "jti-0");
  EXPECT_TRUE(VerifyLog(tmp.LogDir())->ok());
  EXPECT_TRUE((*log)->Append(MailRead(7)).ok());
}

// Restores the file-size limit when a test ends.
class FileSizeLimit {
 public:
  explicit FileSizeLimit(rlim_t bytes) {
    ::getrlimit(RLIMIT_FSIZE, &old_);
    old_handler_ = ::signal(SIGXFSZ, SIG_IGN);
    rlimit l = old_;
    l.rlim_cur = bytes;
    ok_ = ::setrlimit(RLIMIT_FSIZE, &l) == 0;
  }
  ~FileSizeLimit() {
    ::setrlimit(RLIMIT_FSIZE, &old_);
    ::signal(SIGXFSZ, old_handler_);
  }
  bool ok() const { return ok_; }

 private:
  rlimit old_{};
  sighandler_t old_handler_ = nullptr;
  bool ok_ = false;
};

TEST(AppendAsyncTest, AFailedWriteIsReportedAndItsTornTailCutOnReopen) {
  TempDir tmp;
  std::string seg = testing::SegPath(tmp.LogDir(), 1);
  uint64_t acknowledged = 0;
  {
    auto log = AuditLog::Open(TestOptions(tmp.LogDir()));
    ASSERT_TRUE(log.ok());
    for (int i = 0; i < 10; ++i) ASSERT_TRUE((*log)->Append(MailRead(i)).ok());
    FileSizeLimit limit(std::filesystem::file_size(seg) + 1500);  // room for about two records
    ASSERT_TRUE(limit.ok());
    uint64_t last = 0;
    for (int i = 10; i < 30; ++i) {
      auto s = (*log)->AppendAsync(MailRead(i));
      if (!s.ok()) break;
      last = *s;
    }
    Status s = (*log)->WaitDurable(last);
    ASSERT_FALSE(s.ok());
    EXPECT_EQ(s.code(), StatusCode::kUnavailable);
    EXPECT_NE(s.message().find("write"), std::string::npos) << s.ToString();
    EXPECT_FALSE((*log)->AppendAsync(MailRead(99)).ok());
    acknowledged = (*log)->last_seq();
    EXPECT_GE(acknowledged, 10u);
    EXPECT_LT(acknowledged, last);
  }
  auto log = AuditLog::Open(TestOptions(tmp.LogDir()));
  ASSERT_TRUE(log.ok()) << log.status().ToString();
  EXPECT_GE((*log)->last_seq(), acknowledged);
  auto report = VerifyLog(tmp.LogDir());
  ASSERT_TRUE(report.ok());
  EXPECT_TRUE(report->ok());
  EXPECT_EQ(report->incomplete_tail_bytes, 0u);
  const uint64_t before = (*log)->last_seq();
  EXPECT_EQ(*(*log)->Append(MailRead(100)), before + 1);
}

TEST(AppendAsyncTest, ConcurrentProducersGetGapFreeSeqsInTheirOwnOrder) {
  TempDir tmp;
  auto opt = DurableOptions(tmp.LogDir());
  opt.segment_bytes = 64 << 10;
  auto log = AuditLog::Open(opt);
  ASSERT_TRUE(log.ok());
  constexpr int kThreads = 8, kRequests = 40, kPerRequest = 10;
  std::vector<std::vector<uint64_t>> seqs(kThreads);
  std::atomic<int> failures{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      for (int q = 0; q < kRequests; ++q) {
        uint64_t last = 0;
        for (int i = 0; i < kPerRequest; ++i) {
          auto s = (*log)->AppendAsync(MailRead(t * 100'000 + q * kPerRequest + i));
          if (!s.ok()) {
            ++failures;
            return;
          }
          seqs[t].push_back(last = *s);
        }
        if (!(*log)->WaitDurable(last).ok() || (*log)->last_seq() < last) ++failures;
      }
    });
  }
  for (auto& th : threads) th.join();
  ASSERT_EQ(failures.load(), 0);
  std::set<uint64_t> all;
  for (auto& v : seqs) {
    ASSERT_EQ(v.size(), static_cast<size_t>(kRequests * kPerRequest));
    EXPECT_TRUE(std::is_sorted(v.begin(), v.end()));
    all.insert(v.begin(), v.end());
  }
  constexpr uint64_t kTotal = kThreads * kRequests * kPerRequest;
  ASSERT_EQ(all.size(), kTotal);
  EXPECT_EQ(*all.rbegin(), kTotal);
  // The record stored at each seq is the one whose AppendAsync returned that seq.
  auto got = ReadAll(tmp.LogDir());
  ASSERT_EQ(got.size(), kTotal);
  for (int t = 0; t < kThreads; ++t) {
    for (size_t k = 0; k < seqs[t].size(); ++k) {
      ASSERT_EQ(got[seqs[t][k] - 1].token_id, "jti-" + std::to_string(t * 100'000 + k));
    }
  }
  EXPECT_TRUE(VerifyLog(tmp.LogDir())->ok());
}

TEST(AppendAsyncTest, SubscribersGetAsyncRecordsInOrderWithTheirChain) {
  TempDir tmp;
  auto log = AuditLog::Open(TestOptions(tmp.LogDir()));
  ASSERT_TRUE(log.ok());
  std::mutex mu;
  std::vector<AuditRecord> seen;
  auto id = (*log)->Subscribe(1, [&](const AuditRecord& r) {
    std::lock_guard l(mu);
    seen.push_back(r);
  });
  ASSERT_TRUE(id.ok());
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < 250; ++i) (void)(*log)->AppendAsync(MailRead(t * 1000 + i)).ok();
    });
  }
  for (auto& th : threads) th.join();
  ASSERT_TRUE((*log)->WaitDurable(1000).ok());
  for (int i = 0; i < 2000; ++i) {
    {
      std::lock_guard l(mu);
      if (seen.size() >= 1000) break;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  (*log)->Unsubscribe(*id);
  auto stored = ReadAll(tmp.LogDir());
  ASSERT_EQ(seen.size(), 1000u);
  for (size_t i = 0; i < seen.size(); ++i) {
    ASSERT_EQ(seen[i].seq, i + 1);
    EXPECT_EQ(seen[i], stored[i]);
    if (i > 0) {
      EXPECT_EQ(seen[i].prev_hash, seen[i - 1].hash);
    }
  }
}

TEST(AppendAsyncTest, ClosingWritesEverythingQueued) {
  TempDir tmp;
  uint64_t last = 0;
  {
    auto log = AuditLog::Open(DurableOptions(tmp.LogDir()));
    ASSERT_TRUE(log.ok());
    for (int i = 0; i < 500; ++i) last = *(*log)->AppendAsync(MailRead(i));
  }
  auto got = ReadAll(tmp.LogDir());
  ASSERT_EQ(got.size(), last);
  auto report = VerifyLog(tmp.LogDir());
  ASSERT_TRUE(report.ok());
  EXPECT_TRUE(report->ok());
  EXPECT_TRUE(report->checkpoint_checked);
}

TEST(AppendAsyncTest, ABatchLargerThanTheQueueLimitGoesThrough) {
  TempDir tmp;
  auto log = AuditLog::Open(TestOptions(tmp.LogDir()));
  ASSERT_TRUE(log.ok());
  ASSERT_TRUE((*log)->AppendAsync(MailRead(0)).ok());
  std::vector<AuditRecord> batch;
  AuditRecord big = MailRead(1);
  big.user_agent.assign(60'000, 'a');
  for (int i = 0; i < 400; ++i) batch.push_back(big);  // ~24 MB, over the 16 MiB queue limit
  auto s = (*log)->AppendBatch(std::move(batch));
  ASSERT_TRUE(s.ok()) << s.status().ToString();
  EXPECT_EQ(*s, 401u);
  EXPECT_EQ((*log)->last_seq(), 401u);
}

}  // namespace
}  // namespace kw::audit
