// Helpers shared by the kw_detect tests.
#pragma once

#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "detect/engine.h"

namespace kw::detect::testing {

// Loads `yaml` as one rule file; fails the test on rejection.
inline RuleSet MustLoad(const std::string& yaml, LoadOptions opts = {}) {
  LoadReport report;
  auto rs = RuleSet::LoadFromStrings({{"test.yml", yaml}}, opts, &report);
  EXPECT_TRUE(rs.ok()) << rs.status().ToString();
  for (const auto& r : report.rejected) ADD_FAILURE() << "rejected: " << r.ToString();
  return std::move(rs).value();
}

// Wraps a detection section (indented by 4) into a rule with logsource test/test.
inline std::string Rule(const std::string& detection, const std::string& id = "r1") {
  return "title: t\nid: " + id + "\nlogsource:\n  product: test\ndetection:\n" + detection +
         "level: high\n";
}

// Number of alerts `events` raise.
inline size_t CountAlerts(const RuleSet& rs, const std::vector<std::string>& events,
                          LogSource hint = {"test", "", ""}, VectorAlertSink* out = nullptr) {
  Engine engine(rs);
  VectorAlertSink sink;
  for (const auto& e : events) {
    Status s = engine.Process(e, hint, sink);
    EXPECT_TRUE(s.ok()) << s.ToString() << " for " << e;
  }
  engine.Flush(sink);  // end of input: windows still open are decided
  if (out) *out = sink;
  return sink.alerts.size();
}

}  // namespace kw::detect::testing
