#include <gtest/gtest.h>

#include "detect/engine.h"
#include "detect/test_util.h"

namespace kw::detect {
namespace {

using testing::MustLoad;

// A base rule on {product: test}: matches events with action "fail" or "ok".
const char* kBase = R"(title: failed login
id: 53ba33fd-3a50-4468-a5ef-c583635cfa92
name: failed_login
logsource: {product: test}
detection:
  sel: {action: fail}
  condition: sel
---
title: successful login
id: 4d0a2c83-c62c-4ed4-b475-c7e23a9269b8
name: successful_login
logsource: {product: test}
detection:
  sel: {action: ok}
  condition: sel
---
)";

std::string Ev(const char* time, const char* action, const char* user = "bob",
               const char* extra = "") {
  return std::string(R"({"timestamp":")") + time + R"(","action":")" + action +
         R"(","user":")" + user + "\"" + extra + "}";
}

struct WindowCase {
  const char* name;
  const char* correlation;  // the `correlation:` body
  std::vector<std::string> events;
  size_t alerts;
};

std::vector<WindowCase> Cases() {
  return {
      {"event_count just inside",
       "  type: event_count\n  rules: [failed_login]\n  group-by: [user]\n  timespan: 1m\n  condition: {gte: 3}\n",
       {Ev("2023-06-16T09:00:00Z", "fail"), Ev("2023-06-16T09:00:30Z", "fail"),
        Ev("2023-06-16T09:01:00Z", "fail")},
       1},
      {"event_count just outside",
       "  type: event_count\n  rules: [failed_login]\n  group-by: [user]\n  timespan: 1m\n  condition: {gte: 3}\n",
       {Ev("2023-06-16T09:00:00Z", "fail"), Ev("2023-06-16T09:00:30Z", "fail"),
        Ev("2023-06-16T09:01:00.001Z", "fail")},
       0},
      {"event_count groups apart",
       "  type: event_count\n  rules: [failed_login]\n  group-by: [user]\n  timespan: 1m\n  condition: {gte: 2}\n",
       {Ev("2023-06-16T09:00:00Z", "fail", "a"), Ev("2023-06-16T09:00:01Z", "fail", "b")},
       0},
      {"event_count out of order inside",
       "  type: event_count\n  rules: [failed_login]\n  group-by: [user]\n  timespan: 1m\n  condition: {gte: 3}\n",
       {Ev("2023-06-16T09:00:50Z", "fail"), Ev("2023-06-16T09:00:00Z", "fail"),
        Ev("2023-06-16T09:00:20Z", "fail")},
       1},
      {"event_count out of order too late",
       "  type: event_count\n  rules: [failed_login]\n  group-by: [user]\n  timespan: 1m\n  condition: {gte: 2}\n",
       {Ev("2023-06-16T09:05:00Z", "fail"), Ev("2023-06-16T09:00:00Z", "fail")},
       0},
      {"event_count late event joins later window",
       "  type: event_count\n  rules: [failed_login]\n  group-by: [user]\n  timespan: 1m\n  condition: {gte: 3}\n",
       {Ev("2023-06-16T09:00:10Z", "fail"), Ev("2023-06-16T09:00:55Z", "fail"),
        Ev("2023-06-16T09:00:05Z", "fail")},
       1},
      {"event_count fires once then resets",
       "  type: event_count\n  rules: [failed_login]\n  group-by: [user]\n  timespan: 1h\n  condition: {gte: 2}\n",
       {Ev("2023-06-16T09:00:00Z", "fail"), Ev("2023-06-16T09:00:01Z", "fail"),
        Ev("2023-06-16T09:00:02Z", "fail"), Ev("2023-06-16T09:00:03Z", "fail")},
       2},
      {"event_count range",
       "  type: event_count\n  rules: [failed_login]\n  group-by: [user]\n  timespan: 1h\n  condition: {gt: 1, lte: 2}\n",
       {Ev("2023-06-16T09:00:00Z", "fail"), Ev("2023-06-16T09:00:01Z", "fail")},
       1},
      {"event_count lt: decided when the window closes",
       "  type: event_count\n  rules: [failed_login]\n  group-by: [user]\n  timespan: 1m\n  condition: {lt: 3}\n",
       {Ev("2023-06-16T09:00:00Z", "fail"), Ev("2023-06-16T09:00:10Z", "fail")},
       1},
      {"event_count lt: not when the window fills up",
       "  type: event_count\n  rules: [failed_login]\n  group-by: [user]\n  timespan: 1m\n  condition: {lt: 3}\n",
       {Ev("2023-06-16T09:00:00Z", "fail"), Ev("2023-06-16T09:00:10Z", "fail"),
        Ev("2023-06-16T09:01:00Z", "fail")},
       0},
      {"event_count lte: a later event closes the window and opens the next",
       "  type: event_count\n  rules: [failed_login]\n  group-by: [user]\n  timespan: 1m\n  condition: {lte: 1}\n",
       {Ev("2023-06-16T09:00:00Z", "fail"), Ev("2023-06-16T09:02:00Z", "fail"),
        Ev("2023-06-16T09:02:30Z", "fail")},
       1},
      {"event_count lt: another group's time closes the window",
       "  type: event_count\n  rules: [failed_login]\n  group-by: [user]\n  timespan: 1m\n  condition: {lt: 2}\n",
       {Ev("2023-06-16T09:00:00Z", "fail", "a"), Ev("2023-06-16T09:05:00Z", "fail", "b"),
        Ev("2023-06-16T09:05:10Z", "fail", "b")},
       1},
      {"value_count lt",
       "  type: value_count\n  rules: [failed_login]\n  group-by: [host]\n  timespan: 10m\n  condition: {field: user, lt: 2}\n",
       {Ev("2023-06-16T09:00:00Z", "fail", "a", R"(,"host":"h")"),
        Ev("2023-06-16T09:00:01Z", "fail", "a", R"(,"host":"h")"),
        Ev("2023-06-16T09:00:00Z", "fail", "a", R"(,"host":"k")"),
        Ev("2023-06-16T09:00:01Z", "fail", "b", R"(,"host":"k")")},
       1},
      {"event_count eq",
       "  type: event_count\n  rules: [failed_login]\n  group-by: [user]\n  timespan: 1h\n  condition: {eq: 2}\n",
       {Ev("2023-06-16T09:00:00Z", "fail"), Ev("2023-06-16T09:00:01Z", "fail")},
       1},
      {"event_count multi-field group-by",
       "  type: event_count\n  rules: [failed_login]\n  group-by: [user, host]\n  timespan: 1h\n  condition: {gte: 2}\n",
       {Ev("2023-06-16T09:00:00Z", "fail", "bob", R"(,"host":"a")"),
        Ev("2023-06-16T09:00:01Z", "fail", "bob", R"(,"host":"b")"),
        Ev("2023-06-16T09:00:02Z", "fail", "bob", R"(,"host":"a")")},
       1},
      {"event_count without group-by",
       "  type: event_count\n  rules: [failed_login]\n  timespan: 1h\n  condition: {gte: 2}\n",
       {Ev("2023-06-16T09:00:00Z", "fail", "a"), Ev("2023-06-16T09:00:01Z", "fail", "b")},
       1},
      {"value_count",
       "  type: value_count\n  rules: [failed_login]\n  group-by: [host]\n  timespan: 10m\n  condition: {field: user, gte: 3}\n",
       {Ev("2023-06-16T09:00:00Z", "fail", "a", R"(,"host":"h")"),
        Ev("2023-06-16T09:00:01Z", "fail", "a", R"(,"host":"h")"),
        Ev("2023-06-16T09:00:02Z", "fail", "b", R"(,"host":"h")"),
        Ev("2023-06-16T09:00:03Z", "fail", "c", R"(,"host":"h")")},
       1},
      {"value_count not enough distinct",
       "  type: value_count\n  rules: [failed_login]\n  group-by: [host]\n  timespan: 10m\n  condition: {field: user, gte: 3}\n",
       {Ev("2023-06-16T09:00:00Z", "fail", "a", R"(,"host":"h")"),
        Ev("2023-06-16T09:00:01Z", "fail", "a", R"(,"host":"h")"),
        Ev("2023-06-16T09:00:02Z", "fail", "b", R"(,"host":"h")")},
       0},
      // The window measured as it slides (values leave it as new ones join).
      {"value_count: a value leaves while a later copy stays",
       "  type: value_count\n  rules: [failed_login]\n  group-by: [host]\n  timespan: 10m\n  condition: {field: user, gte: 3}\n",
       {Ev("2023-06-16T09:00:00Z", "fail", "a", R"(,"host":"h")"),
        Ev("2023-06-16T09:09:00Z", "fail", "a", R"(,"host":"h")"),
        Ev("2023-06-16T09:10:30Z", "fail", "b", R"(,"host":"h")"),
        Ev("2023-06-16T09:11:00Z", "fail", "c", R"(,"host":"h")")},
       1},
      {"value_count: values of a window long gone do not count",
       "  type: value_count\n  rules: [failed_login]\n  group-by: [host]\n  timespan: 10m\n  condition: {field: user, gte: 3}\n",
       {Ev("2023-06-16T09:00:00Z", "fail", "a", R"(,"host":"h")"),
        Ev("2023-06-16T09:01:00Z", "fail", "b", R"(,"host":"h")"),
        Ev("2023-06-16T12:00:00Z", "fail", "c", R"(,"host":"h")"),
        Ev("2023-06-16T12:01:00Z", "fail", "a", R"(,"host":"h")")},
       0},
      {"value_count: in order, then out of order, then in order again",
       "  type: value_count\n  rules: [failed_login]\n  group-by: [host]\n  timespan: 10m\n  condition: {field: user, gte: 4}\n",
       {Ev("2023-06-16T09:00:00Z", "fail", "a", R"(,"host":"h")"),
        Ev("2023-06-16T09:05:00Z", "fail", "b", R"(,"host":"h")"),
        Ev("2023-06-16T09:02:00Z", "fail", "c", R"(,"host":"h")"),
        Ev("2023-06-16T09:11:00Z", "fail", "d", R"(,"host":"h")"),
        Ev("2023-06-16T09:12:00Z", "fail", "e", R"(,"host":"h")")},
       1},
      {"value_sum as the window slides",
       "  type: value_sum\n  rules: [failed_login]\n  group-by: [user]\n  timespan: 1h\n  condition: {field: bytes, gt: 100}\n",
       {Ev("2023-06-16T09:00:00Z", "fail", "bob", R"(,"bytes":60)"),
        Ev("2023-06-16T09:50:00Z", "fail", "bob", R"(,"bytes":30)"),
        Ev("2023-06-16T10:10:00Z", "fail", "bob", R"(,"bytes":50)"),
        Ev("2023-06-16T10:20:00Z", "fail", "bob", R"(,"bytes":30)")},
       1},
      {"temporal any order",
       "  type: temporal\n  rules: [successful_login, failed_login]\n  group-by: [user]\n  timespan: 5m\n",
       {Ev("2023-06-16T09:00:00Z", "fail"), Ev("2023-06-16T09:04:00Z", "ok")}, 1},
      {"temporal outside span",
       "  type: temporal\n  rules: [successful_login, failed_login]\n  group-by: [user]\n  timespan: 5m\n",
       {Ev("2023-06-16T09:00:00Z", "fail"), Ev("2023-06-16T09:05:01Z", "ok")}, 0},
      {"temporal_ordered in order",
       "  type: temporal_ordered\n  rules: [failed_login, successful_login]\n  group-by: [user]\n  timespan: 5m\n",
       {Ev("2023-06-16T09:00:00Z", "fail"), Ev("2023-06-16T09:01:00Z", "ok")}, 1},
      {"temporal_ordered wrong order",
       "  type: temporal_ordered\n  rules: [failed_login, successful_login]\n  group-by: [user]\n  timespan: 5m\n",
       {Ev("2023-06-16T09:00:00Z", "ok"), Ev("2023-06-16T09:01:00Z", "fail")}, 0},
      {"temporal_ordered out-of-order arrival, right event times",
       "  type: temporal_ordered\n  rules: [failed_login, successful_login]\n  group-by: [user]\n  timespan: 5m\n",
       {Ev("2023-06-16T09:01:00Z", "ok"), Ev("2023-06-16T09:00:00Z", "fail")}, 1},
      {"value_sum",
       "  type: value_sum\n  rules: [failed_login]\n  group-by: [user]\n  timespan: 1h\n  condition: {field: bytes, gt: 100}\n",
       {Ev("2023-06-16T09:00:00Z", "fail", "bob", R"(,"bytes":60)"),
        Ev("2023-06-16T09:00:01Z", "fail", "bob", R"(,"bytes":"50")")},
       1},
      {"value_avg",
       "  type: value_avg\n  rules: [failed_login]\n  group-by: [user]\n  timespan: 1h\n  condition: {field: bytes, gt: 100}\n",
       {Ev("2023-06-16T09:00:00Z", "fail", "bob", R"(,"bytes":60)"),
        Ev("2023-06-16T09:00:01Z", "fail", "bob", R"(,"bytes":50)")},
       0},
      {"value_median",
       "  type: value_median\n  rules: [failed_login]\n  group-by: [user]\n  timespan: 1h\n  condition: {field: bytes, gte: 50}\n",
       {Ev("2023-06-16T09:00:00Z", "fail", "bob", R"(,"bytes":1)"),
        Ev("2023-06-16T09:00:01Z", "fail", "bob", R"(,"bytes":50)"),
        Ev("2023-06-16T09:00:02Z", "fail", "bob", R"(,"bytes":1000)")},
       1},
  };
}

TEST(CorrelationTest, Windows) {
  for (const WindowCase& c : Cases()) {
    std::string yaml = std::string(kBase) + "title: corr\nid: corr\nlevel: high\ncorrelation:\n" +
                       c.correlation;
    RuleSet rs = MustLoad(yaml);
    ASSERT_EQ(rs.correlation_count(), 1u) << c.name;
    VectorAlertSink sink;
    size_t n = testing::CountAlerts(rs, c.events, {"test", "", ""}, &sink);
    EXPECT_EQ(n, c.alerts) << c.name;
    for (const auto& a : sink.alerts) EXPECT_EQ(a.rule_id, "corr") << c.name;
  }
}

TEST(CorrelationTest, UpperBoundedConditionsWaitForTheWindowToClose) {
  std::string yaml = std::string(kBase) +
                     "title: corr\nid: corr\nlevel: high\ncorrelation:\n  type: event_count\n"
                     "  rules: [failed_login]\n  group-by: [user]\n  timespan: 1m\n"
                     "  condition: {lt: 3}\n";
  RuleSet rs = MustLoad(yaml);
  Engine engine(rs);
  VectorAlertSink sink;
  ASSERT_TRUE(engine.Process(Ev("2023-06-16T09:00:00Z", "fail"), {"test", "", ""}, sink).ok());
  EXPECT_TRUE(sink.alerts.empty()) << "fired on the first event, before the window was complete";
  ASSERT_TRUE(engine.Process(Ev("2023-06-16T09:00:30Z", "fail"), {"test", "", ""}, sink).ok());
  EXPECT_TRUE(sink.alerts.empty());
  // The window [09:00:00, 09:01:00] is complete once the group's event time passes its end.
  ASSERT_TRUE(engine.Process(Ev("2023-06-16T09:01:01Z", "fail"), {"test", "", ""}, sink).ok());
  ASSERT_EQ(sink.alerts.size(), 1u);
  EXPECT_EQ(sink.alerts[0].value, 2);
  EXPECT_EQ(sink.alerts[0].evidence, 2u);
  // The next window (one event so far) is decided at the end of input.
  engine.Flush(sink);
  EXPECT_EQ(sink.alerts.size(), 2u);
}

// value_percentile, as the specification's example: a value seen in at most 1% of a group's
// events within the window.
TEST(CorrelationTest, ValuePercentileReportsRareValuesWhenTheWindowCloses) {
  std::string yaml = std::string(kBase) +
                     "title: corr\nid: corr\nlevel: high\ncorrelation:\n  type: value_percentile\n"
                     "  rules: [successful_login]\n  group-by: [host]\n  timespan: 24h\n"
                     "  condition: {field: image, lte: 1}\n";
  RuleSet rs = MustLoad(yaml);
  auto run = [&](int common) {
    std::vector<std::string> events;
    for (int i = 0; i < common; ++i) {
      char t[32];
      snprintf(t, sizeof t, "2023-06-16T09:%02d:%02dZ", i / 60 % 60, i % 60);
      events.push_back(Ev(t, "ok", "bob", R"(,"host":"h","image":"outlook.exe")"));
    }
    events.push_back(Ev("2023-06-16T12:00:00Z", "ok", "bob", R"(,"host":"h","image":"rare.exe")"));
    VectorAlertSink sink;
    testing::CountAlerts(rs, events, {"test", "", ""}, &sink);
    return sink;
  };
  VectorAlertSink hit = run(199);  // 1 of 200 events: 0.5%
  ASSERT_EQ(hit.alerts.size(), 1u);
  EXPECT_DOUBLE_EQ(hit.alerts[0].value, 0.5);
  EXPECT_EQ(hit.alerts[0].evidence, 1u) << "the evidence is the rare value's event";
  EXPECT_NE(hit.alerts[0].json.find("\"image\":\"rare.exe\""), std::string::npos) << hit.alerts[0].json;
  EXPECT_EQ(run(49).alerts.size(), 0u) << "1 of 50 events is 2%, above the 1% condition";
}

// The specification's own example: failed logins followed by a successful login, chained.
TEST(CorrelationTest, SpecExampleChain) {
  const char* yaml = R"(title: Correlation - Multiple Failed Logins Followed by Successful Login
id: b180ead8-d58f-40b2-ae54-c8940995b9b6
status: experimental
correlation:
    type: temporal_ordered
    rules:
        - multiple_failed_login
        - successful_login
    group-by:
        - User
    timespan: 10m
falsepositives:
    - Unlikely
level: high
---
title: Multiple failed logons
id: a8418a5a-5fc4-46b5-b23b-6c73beb19d41
description: Detects multiple failed logins within a certain amount of time
name: multiple_failed_login
correlation:
    type: event_count
    rules:
        - failed_login
    group-by:
        - User
    timespan: 10m
    condition:
        gte: 10
---
title: Single failed login
id: 53ba33fd-3a50-4468-a5ef-c583635cfa92
name: failed_login
logsource:
    product: windows
    service: security
detection:
    selection:
        EventID:
            - 529
            - 4625
    condition: selection
---
title: Successful login
id: 4d0a2c83-c62c-4ed4-b475-c7e23a9269b8
description: Detects a successful login
name: successful_login
logsource:
    product: windows
    service: security
detection:
    selection:
        EventID:
            - 528
            - 4624
    condition: selection
)";
  RuleSet rs = MustLoad(yaml);
  EXPECT_EQ(rs.rule_count(), 2u);
  EXPECT_EQ(rs.correlation_count(), 2u);
  auto ev = [](int sec, int id, const char* user) {
    char buf[512];
    snprintf(buf, sizeof buf,
             R"({"Event":{"System":{"EventID":%d,"Channel":"Security","TimeCreated":{"#attributes":{"SystemTime":"2023-06-16T09:%02d:%02dZ"}}},"EventData":{"User":"%s"}}})",
             id, sec / 60, sec % 60, user);
    return std::string(buf);
  };
  std::vector<std::string> events;
  for (int i = 0; i < 10; ++i) events.push_back(ev(i * 10, 4625, "bob"));
  events.push_back(ev(5 * 60, 4624, "alice"));  // another user: no alert
  events.push_back(ev(6 * 60, 4624, "bob"));
  VectorAlertSink sink;
  size_t n = testing::CountAlerts(rs, events, {"windows", "security", ""}, &sink);
  // Only the outermost correlation alerts (generate is false): the base rules and the inner
  // event_count stay silent.
  ASSERT_EQ(n, 1u);
  EXPECT_EQ(sink.alerts[0].rule_id, "b180ead8-d58f-40b2-ae54-c8940995b9b6");
  ASSERT_EQ(sink.alerts[0].group_by.size(), 1u);
  EXPECT_EQ(sink.alerts[0].group_by[0].second, "bob");
  EXPECT_EQ(sink.alerts[0].evidence, 2u);
}

TEST(CorrelationTest, GenerateKeepsBaseAlerts) {
  std::string yaml = std::string(kBase) +
                     "title: corr\nid: corr\ncorrelation:\n  type: event_count\n  rules: [failed_login]\n"
                     "  group-by: [user]\n  timespan: 1h\n  generate: true\n  condition: {gte: 2}\n";
  RuleSet rs = MustLoad(yaml);
  EXPECT_EQ(testing::CountAlerts(rs, {Ev("2023-06-16T09:00:00Z", "fail"), Ev("2023-06-16T09:00:01Z", "fail")}),
            3u);
}

// Aliases: one group-by name, different fields per rule (the specification's example shape).
TEST(CorrelationTest, Aliases) {
  const char* yaml = R"(title: internal error
name: internal_error
logsource: {product: test}
detection:
  sel: {http.response.status_code: 500}
  condition: sel
---
title: new connection
name: new_network_connection
logsource: {product: test}
detection:
  sel: {event.category: network}
  condition: sel
---
title: corr
id: corr
correlation:
    type: temporal
    rules:
        - internal_error
        - new_network_connection
    group-by:
        - internal_ip
        - remote_ip
    timespan: 10s
    aliases:
        internal_ip:
            internal_error: destination.ip
            new_network_connection: source.ip
        remote_ip:
            internal_error: source.ip
            new_network_connection: destination.ip
)";
  RuleSet rs = MustLoad(yaml);
  std::string err = R"({"timestamp":"2023-06-16T09:00:00Z","http":{"response":{"status_code":500}},"source":{"ip":"1.1.1.1"},"destination":{"ip":"10.0.0.1"}})";
  std::string conn = R"({"timestamp":"2023-06-16T09:00:05Z","event":{"category":"network"},"source":{"ip":"10.0.0.1"},"destination":{"ip":"1.1.1.1"}})";
  std::string other = R"({"timestamp":"2023-06-16T09:00:05Z","event":{"category":"network"},"source":{"ip":"10.0.0.2"},"destination":{"ip":"1.1.1.1"}})";
  VectorAlertSink sink;
  EXPECT_EQ(testing::CountAlerts(rs, {err, other}), 0u);
  EXPECT_EQ(testing::CountAlerts(rs, {err, conn}, {"test", "", ""}, &sink), 1u);
  EXPECT_EQ(sink.alerts[0].group_by[0].second, "10.0.0.1");
  EXPECT_EQ(sink.alerts[0].group_by[1].second, "1.1.1.1");
}

TEST(CorrelationTest, CyclicChainRejected) {
  const char* yaml = R"(title: a
name: a
correlation: {type: event_count, rules: [b], timespan: 1m, condition: {gte: 1}}
---
title: b
name: b
correlation: {type: event_count, rules: [a], timespan: 1m, condition: {gte: 1}}
)";
  LoadReport report;
  auto rs = RuleSet::LoadFromStrings({{"c.yml", yaml}}, {}, &report);
  ASSERT_TRUE(rs.ok());
  EXPECT_EQ(report.rejected.size(), 2u);
}

}  // namespace
}  // namespace kw::detect
