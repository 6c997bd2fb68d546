#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <mutex>
#include <thread>

#include "audit/audit_log.h"
#include "audit/test_util.h"

namespace kw::audit {
namespace {

using testing::MailRead;
using testing::ReadAll;
using testing::TempDir;
using testing::TestOptions;

// Collects what a subscription delivers.
class Sink {
 public:
  AuditLog::Subscriber fn() {
    return [this](const AuditRecord& r) {
      std::lock_guard l(mu_);
      records_.push_back(r);
    };
  }
  std::vector<AuditRecord> records() {
    std::lock_guard l(mu_);
    return records_;
  }
  size_t size() {
    std::lock_guard l(mu_);
    return records_.size();
  }
  // Waits until `n` records arrived (at most 10 s).
  bool WaitFor(size_t n) {
    for (int i = 0; i < 2000; ++i) {
      if (size() >= n) return true;
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
    return false;
  }

 private:
  std::mutex mu_;
  std::vector<AuditRecord> records_;
};

void ExpectSeqs(const std::vector<AuditRecord>& got, uint64_t from, uint64_t to) {
  ASSERT_EQ(got.size(), to - from + 1);
  for (size_t i = 0; i < got.size(); ++i) ASSERT_EQ(got[i].seq, from + i) << "position " << i;
}

struct FromCase {
  const char* name;
  uint64_t from;
  uint64_t first_delivered;
};

TEST(SubscribeTest, HistoryFromDiskThenLiveInOrder) {
  const FromCase cases[] = {{"zero", 0, 1}, {"one", 1, 1}, {"middle", 60, 60},
                            {"last", 100, 100}, {"future", 120, 120}};
  for (const auto& c : cases) {
    SCOPED_TRACE(c.name);
    TempDir tmp;
    auto opt = TestOptions(tmp.LogDir());
    opt.segment_bytes = 8 << 10;
    {
      auto log = AuditLog::Open(opt);
      ASSERT_TRUE(log.ok());
      for (int i = 0; i < 100; ++i) ASSERT_TRUE((*log)->Append(MailRead(i)).ok());
    }
    auto log = AuditLog::Open(opt);  // history now exists only on disk
    ASSERT_TRUE(log.ok());
    Sink sink;
    auto id = (*log)->Subscribe(c.from, sink.fn());
    ASSERT_TRUE(id.ok());
    for (int i = 100; i < 150; ++i) ASSERT_TRUE((*log)->Append(MailRead(i)).ok());
    ASSERT_TRUE(sink.WaitFor(150 - c.first_delivered + 1));
    auto got = sink.records();
    ExpectSeqs(got, c.first_delivered, 150);
    auto all = ReadAll(tmp.LogDir());
    for (const auto& r : got) EXPECT_EQ(r, all[r.seq - 1]);
    (*log)->Unsubscribe(*id);
  }
}

TEST(SubscribeTest, ConcurrentAppendersTwoSubscribersSmallBufferNoGaps) {
  TempDir tmp;
  auto opt = TestOptions(tmp.LogDir());
  opt.subscription_buffer = 16;  // forces the slow subscriber back to disk
  opt.segment_bytes = 16 << 10;
  auto log = AuditLog::Open(opt);
  ASSERT_TRUE(log.ok());
  Sink fast, slow;
  ASSERT_TRUE((*log)->Subscribe(1, fast.fn()).ok());
  std::atomic<int> slow_count{0};
  auto slow_fn = slow.fn();
  ASSERT_TRUE((*log)
                  ->Subscribe(1,
                              [&](const AuditRecord& r) {
                                if (slow_count.fetch_add(1) % 50 == 0) {
                                  std::this_thread::sleep_for(std::chrono::milliseconds(2));
                                }
                                slow_fn(r);
                              })
                  .ok());
  constexpr int kThreads = 4, kPer = 300;
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < kPer; ++i) ASSERT_TRUE((*log)->Append(MailRead(t * 1000 + i)).ok());
    });
  }
  std::vector<AuditRecord> batch(10, MailRead(7));
  ASSERT_TRUE((*log)->AppendBatch(batch).ok());
  for (auto& th : threads) th.join();
  const uint64_t total = kThreads * kPer + 10;
  ASSERT_TRUE(fast.WaitFor(total));
  ASSERT_TRUE(slow.WaitFor(total));
  ExpectSeqs(fast.records(), 1, total);
  ExpectSeqs(slow.records(), 1, total);
  auto all = ReadAll(tmp.LogDir());
  auto got = slow.records();
  for (size_t i = 0; i < all.size(); ++i) ASSERT_EQ(got[i], all[i]);
}

TEST(SubscribeTest, UnsubscribeStopsDelivery) {
  TempDir tmp;
  auto log = AuditLog::Open(TestOptions(tmp.LogDir()));
  ASSERT_TRUE(log.ok());
  Sink sink;
  auto id = (*log)->Subscribe(1, sink.fn());
  ASSERT_TRUE(id.ok());
  for (int i = 0; i < 10; ++i) ASSERT_TRUE((*log)->Append(MailRead(i)).ok());
  ASSERT_TRUE(sink.WaitFor(10));
  (*log)->Unsubscribe(*id);
  (*log)->Unsubscribe(*id);   // twice is harmless
  (*log)->Unsubscribe(999);  // unknown too
  for (int i = 0; i < 10; ++i) ASSERT_TRUE((*log)->Append(MailRead(i)).ok());
  std::this_thread::sleep_for(std::chrono::milliseconds(50));
  EXPECT_EQ(sink.size(), 10u);
  EXPECT_EQ((*log)->Subscribe(1, nullptr).status().code(), StatusCode::kInvalidArgument);
}

TEST(SubscribeTest, CallbackMayAppendAndUnsubscribeItself) {
  TempDir tmp;
  auto log = AuditLog::Open(TestOptions(tmp.LogDir()));
  ASSERT_TRUE(log.ok());
  AuditLog* l = log->get();
  std::atomic<uint64_t> my_id{0};
  Sink sink;
  auto record = sink.fn();
  auto id = l->Subscribe(1, [&, l](const AuditRecord& r) {
    record(r);
    if (r.operation == "MailItemsAccessed") {
      AuditRecord alert = MailRead(0);
      alert.operation = "AlertRaised";
      ASSERT_TRUE(l->Append(alert).ok());
    } else if (r.operation == "AlertRaised") {
      l->Unsubscribe(my_id.load());
    }
  });
  ASSERT_TRUE(id.ok());
  my_id = *id;
  ASSERT_TRUE(l->Append(MailRead(1)).ok());
  ASSERT_TRUE(sink.WaitFor(2));
  std::this_thread::sleep_for(std::chrono::milliseconds(20));
  ASSERT_TRUE(l->Append(MailRead(2)).ok());
  std::this_thread::sleep_for(std::chrono::milliseconds(50));
  auto got = sink.records();
  ASSERT_EQ(got.size(), 2u);
  EXPECT_EQ(got[0].operation, "MailItemsAccessed");
  EXPECT_EQ(got[1].operation, "AlertRaised");
}

TEST(SubscribeTest, StartsAtTheFirstRetainedRecordAfterRetention) {
  TempDir tmp;
  FakeClock clock;
  auto opt = TestOptions(tmp.LogDir(), &clock);
  opt.segment_bytes = 4096;
  opt.retention_days = 1;
  auto log = AuditLog::Open(opt);
  ASSERT_TRUE(log.ok());
  for (int i = 0; i < 40; ++i) ASSERT_TRUE((*log)->Append(MailRead(i, clock.NowMillis())).ok());
  clock.AdvanceSeconds(3 * 86'400);
  for (int i = 0; i < 10; ++i) ASSERT_TRUE((*log)->Append(MailRead(i, clock.NowMillis())).ok());
  ASSERT_TRUE((*log)->ApplyRetention().ok());
  uint64_t first = (*log)->first_seq();
  ASSERT_GT(first, 1u);
  Sink sink;
  ASSERT_TRUE((*log)->Subscribe(1, sink.fn()).ok());
  ASSERT_TRUE(sink.WaitFor(50 - first + 1));
  ExpectSeqs(sink.records(), first, 50);
}

}  // namespace
}  // namespace kw::audit
