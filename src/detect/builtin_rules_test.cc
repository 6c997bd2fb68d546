// The rule files shipped in src/detect/rules load without rejection and detect what they claim.
#include <filesystem>

#include <gtest/gtest.h>

#include "detect/engine.h"

namespace kw::detect {
namespace {

std::string RulesDir() { return std::string(KEYWARD_SOURCE_DIR) + "/src/detect/rules"; }

std::string MailRead(const char* time, const char* ip, int count) {
  return std::string(R"({"CreationTime":")") + time +
         R"(","Operation":"MailItemsAccessed","Workload":"Exchange","RecordType":50,)"
         R"("MailboxOwnerUPN":"diplomat@contoso.gov","AppId":"d3590ed6-52b3-4102-aeff-aad2292ab01c",)"
         R"("ClientIPAddress":")" + ip + R"(","OperationCount":)" + std::to_string(count) + "}";
}

TEST(BuiltinRulesTest, EveryShippedRuleLoads) {
  LoadOptions opts;
  // Rules of other modules may use placeholders filled from their indicator files.
  opts.unknown_placeholder_matches_anything = true;
  LoadReport report;
  auto rs = RuleSet::Load({RulesDir()}, opts, &report);
  ASSERT_TRUE(rs.ok()) << rs.status().ToString();
  for (const auto& r : report.rejected) ADD_FAILURE() << r.ToString();
  EXPECT_GE(rs->correlation_count(), 2u);
}

TEST(BuiltinRulesTest, BulkMailReadAndManyIps) {
  LoadReport report;
  auto rs = RuleSet::Load({RulesDir() + "/mail"}, {}, &report);
  ASSERT_TRUE(rs.ok());
  ASSERT_TRUE(report.rejected.empty());
  Engine engine(*rs);
  VectorAlertSink sink;
  const LogSource hint{"m365", "audit", ""};
  // 300 + 150 items: not yet; + 100 within 10 minutes: bulk read.
  for (auto ev : {MailRead("2023-06-16T03:00:00", "203.0.113.1", 300),
                  MailRead("2023-06-16T03:04:00", "203.0.113.1", 150),
                  MailRead("2023-06-16T03:09:59", "203.0.113.1", 100)}) {
    ASSERT_TRUE(engine.Process(ev, hint, sink).ok());
  }
  ASSERT_EQ(sink.alerts.size(), 1u);
  EXPECT_EQ(sink.alerts[0].title, "Bulk Mail Read By One Client");
  EXPECT_EQ(sink.alerts[0].value, 550);
  // Four more addresses for the same mailbox within the hour: five distinct IPs.
  for (auto ip : {"203.0.113.2", "203.0.113.3", "203.0.113.4", "203.0.113.5"}) {
    ASSERT_TRUE(engine.Process(MailRead("2023-06-16T03:20:00", ip, 1), hint, sink).ok());
  }
  ASSERT_EQ(sink.alerts.size(), 2u);
  EXPECT_EQ(sink.alerts[1].title, "Mailbox Read From Many IP Addresses");
  EXPECT_EQ(sink.alerts[1].value, 5);
}

}  // namespace
}  // namespace kw::detect
