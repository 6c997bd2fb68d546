// Once warm, Engine::Process allocates nothing per event (single-event rules; alerts delivered to
// a sink that keeps nothing). Counted with a replaced global operator new.
#include <atomic>
#include <cstdlib>
#include <new>

#include <gtest/gtest.h>

#include "detect/engine.h"

namespace {
std::atomic<uint64_t> g_allocations{0};
}  // namespace

// AddressSanitizer owns operator new; the count is only taken in plain builds.
#ifndef __SANITIZE_ADDRESS__
#define KW_COUNT_ALLOCATIONS 1

void* operator new(size_t n) {
  g_allocations.fetch_add(1, std::memory_order_relaxed);
  if (void* p = std::malloc(n ? n : 1)) return p;
  throw std::bad_alloc();
}
void* operator new[](size_t n) { return operator new(n); }
void operator delete(void* p) noexcept { std::free(p); }
void operator delete(void* p, size_t) noexcept { std::free(p); }
void operator delete[](void* p) noexcept { std::free(p); }
void operator delete[](void* p, size_t) noexcept { std::free(p); }
#endif

namespace kw::detect {
namespace {

class CountingSink : public AlertSink {
 public:
  void OnAlert(const Alert&) override { ++alerts; }
  size_t alerts = 0;
};

TEST(AllocationTest, NoHeapAllocationPerEventOnceWarm) {
#ifndef KW_COUNT_ALLOCATIONS
  GTEST_SKIP() << "allocation counting is off under AddressSanitizer";
#endif
  const char* yaml = R"(title: a
id: a
logsource: {product: m365, service: exchange}
detection:
  sel:
    Operation: MailItemsAccessed
    ClientInfoString|contains: rest
    ClientIPAddress|cidr: 203.0.113.0/24
  filter:
    UserId|endswith: '@partner.example'
  condition: sel and not filter
---
title: b
id: b
logsource: {product: m365}
detection:
  sel:
    Operation|re: '^Mail.*Accessed$'
    OperationCount|gte: 1
    CreationTime|hour|lt: 9
    Folders.Path|startswith: '\Inbox'
  keywords: [diplomat]
  condition: sel and keywords
---
title: c
id: c
logsource: {product: m365}
detection:
  sel:
    - UserId|fieldref|startswith: MailboxOwnerUPN
    - Missing: null
  condition: sel
)";
  LoadReport report;
  auto rs = RuleSet::LoadFromStrings({{"a.yml", yaml}}, {}, &report);
  ASSERT_TRUE(rs.ok());
  ASSERT_TRUE(report.rejected.empty()) << report.rejected[0].ToString();
  std::string ev = R"({"CreationTime":"2023-06-16T03:12:45","Operation":"MailItemsAccessed","Workload":"Exchange","ClientIPAddress":"203.0.113.77","ClientInfoString":"Client=REST;Client=RESTSystem;;","UserId":"diplomat@contoso.gov","MailboxOwnerUPN":"diplomat@contoso.gov","OperationCount":3,"Folders":[{"Path":"\\Inbox"},{"Path":"\\Sent"}]})";
  Engine engine(*rs);
  CountingSink sink;
  const LogSource hint{"m365", "audit", ""};
  for (int i = 0; i < 100; ++i) ASSERT_TRUE(engine.Process(ev, hint, sink).ok());
  ASSERT_EQ(sink.alerts, 300u);
  uint64_t before = g_allocations.load();
  for (int i = 0; i < 1000; ++i) engine.Process(ev, hint, sink).IgnoreError();
  uint64_t after = g_allocations.load();
  EXPECT_EQ(after - before, 0u);
  EXPECT_EQ(sink.alerts, 3300u);
}

}  // namespace
}  // namespace kw::detect
