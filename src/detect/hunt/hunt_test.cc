#include "detect/hunt/hunt.h"

#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <string>

#include "core/json.h"
#include "core/test_util.h"
#include "detect/analytics/hunt_processor.h"
#include "detect/hunt/builtin_rules.h"
#include "detect/input/ual_generator.h"

namespace kw::detect {
namespace {

constexpr char kRules[] = R"(
title: Mail read by the injected actor's client string
id: 11111111-1111-4111-8111-111111111111
level: high
tags: [attack.collection, attack.t1114.002]
logsource: {product: m365, service: exchange}
detection:
  sel:
    Operation: MailItemsAccessed
    ClientInfoString|contains: 'Client=REST;Client=RESTSystem'
  condition: sel
---
title: Any failed sign-in
id: 22222222-2222-4222-8222-222222222222
level: low
logsource: {product: m365}
detection:
  sel:
    Operation: UserLoginFailed
  condition: sel
)";

class HuntTest : public ::testing::Test {
 protected:
  void SetUp() override {
    LoadReport report;
    auto rules = RuleSet::LoadFromStrings({{"inline.yml", kRules}}, {}, &report);
    ASSERT_TRUE(rules.ok()) << rules.status().ToString();
    ASSERT_TRUE(report.rejected.empty()) << report.rejected[0].ToString();
    rules_ = std::make_unique<RuleSet>(std::move(*rules));
    load_ = report;
  }

  // A generated log with an injected actor; returns its actor record count.
  uint64_t Generate(const std::string& name, UalRendering rendering) {
    UalGeneratorOptions g;
    g.seed = 7;
    g.users_per_tenant = 40;
    g.actor.enabled = true;
    GenerateFileOptions f;
    f.rendering = rendering;
    f.max_records = 30000;
    auto stats = WriteGeneratedLog((dir_ / name).string(), g, f);
    EXPECT_TRUE(stats.ok()) << stats.status().ToString();
    return stats.ok() ? stats->actor_records : 0;
  }

  kw::test::TempDir tmp_{"kw-hunt"};
  std::filesystem::path dir_{tmp_.path()};
  std::unique_ptr<RuleSet> rules_;
  LoadReport load_;
};

TEST_F(HuntTest, FindsTheActorWithAnyNumberOfWorkersAndFormats) {
  uint64_t actor = Generate("ual.jsonl", UalRendering::kAuditDataLines);
  ASSERT_GT(actor, 0u);
  HuntOptions o;
  o.inputs = {dir_.string()};
  o.reader.batch_bytes = 64 << 10;  // many batches, so several workers share the file
  uint64_t alerts_one = 0;
  for (int threads : {1, 3}) {
    o.threads = threads;
    auto r = Hunt(*rules_, o);
    ASSERT_TRUE(r.ok()) << r.status().ToString();
    EXPECT_EQ(r->events, 30000u);
    EXPECT_EQ(r->workers, threads);
    EXPECT_EQ(r->bad_records, 0u);
    ASSERT_FALSE(r->hits.empty());
    if (threads == 1) alerts_one = r->alerts;
    EXPECT_EQ(r->alerts, alerts_one) << "workers must not change single-event results";
    bool actor_rule = false;
    for (const auto& h : r->hits) actor_rule |= h.rule->id == "11111111-1111-4111-8111-111111111111";
    EXPECT_TRUE(actor_rule);
  }
  o.threads = 2;
  auto r = Hunt(*rules_, o);
  ASSERT_TRUE(r.ok());
  std::string table = FormatTable(*r, load_);
  EXPECT_NE(table.find("Mail read by the injected actor"), std::string::npos) << table;
  json::StrictParser parser(256u << 20, 64);
  auto doc = parser.Parse(FormatJson(*r, load_));
  ASSERT_TRUE(doc.ok()) << doc.status().ToString();
  auto sarif = parser.Parse(FormatSarif(*r, load_));
  ASSERT_TRUE(sarif.ok()) << sarif.status().ToString();
  std::string lines = FormatJsonLines(*r);
  EXPECT_EQ(static_cast<uint64_t>(std::count(lines.begin(), lines.end(), '\n')),
            r->alerts_json.size());
  std::string csv = FormatCsv(*r);
  EXPECT_EQ(csv.rfind("time,rule_id,level,title,group_by,value,event\n", 0), 0u);
  EXPECT_EQ(static_cast<uint64_t>(std::count(csv.begin(), csv.end(), '\n')),
            r->alerts_json.size() + 1)
      << "one row per alert (no embedded newlines in minified JSON)";
}

TEST_F(HuntTest, RoutedWorkersGiveTheSingleWorkerAlertsWithCorrelationsAndAnalytics) {
  UalGeneratorOptions g;
  g.seed = 11;
  g.tenants = 4;
  g.users_per_tenant = 30;
  g.actor.enabled = true;
  GenerateFileOptions f;
  f.max_records = 60000;
  auto stats = WriteGeneratedLog((dir_ / "ual.jsonl").string(), g, f);
  ASSERT_TRUE(stats.ok()) << stats.status().ToString();
  ASSERT_GT(stats->actor_records, 0u);

  // The built-in rules (mail-read correlations grouped by tenant and mailbox) plus the inline
  // ones, and the Storm-0558 analytics as `keyward hunt` runs them: their Sigma rules in the
  // hunt's RuleSet, their stateful detectors as the per-worker processor.
  auto texts = BuiltinRules();
  texts.emplace_back("inline.yml", kRules);
  analytics::AnalyticsOptions ao;
  ao.learning_days = 1;  // the generated log spans days: the stateful detectors get to fire
  LoadOptions lo;
  HuntOptions o;
  auto extra = analytics::PrepareHuntAnalytics(ao, /*commit_on_flush=*/false, &texts, &lo);
  ASSERT_TRUE(extra.ok()) << extra.status().ToString();
  o.make_extra = *extra;
  LoadReport report;
  auto rules = RuleSet::LoadFromStrings(texts, lo, &report);
  ASSERT_TRUE(rules.ok()) << rules.status().ToString();
  ASSERT_TRUE(report.rejected.empty()) << report.rejected.front().ToString();
  ASSERT_GT(rules->correlation_count(), 0u);

  o.inputs = {(dir_ / "ual.jsonl").string()};
  o.reader.batch_bytes = 256 << 10;  // many batches: every worker gets events of every batch
  o.max_alerts_kept_per_rule = 1u << 30;
  o.threads = 1;
  auto one = Hunt(*rules, o);
  ASSERT_TRUE(one.ok()) << one.status().ToString();
  EXPECT_EQ(one->workers, 1);
  EXPECT_TRUE(one->partition_field.empty());

  // Every kind of stateful alert the comparison must cover is present.
  size_t correlation = 0, stateful = 0, single = 0;
  for (const auto& h : one->hits) {
    if (!h.rule->is_correlation) {
      single += h.alerts;
    } else if (h.rule->correlation_type.rfind("stateful:", 0) == 0) {
      stateful += h.alerts;
    } else {
      correlation += h.alerts;
    }
  }
  EXPECT_GT(single, 0u);
  EXPECT_GT(correlation, 0u) << "no Sigma correlation fired: the comparison would prove nothing";
  EXPECT_GT(stateful, 0u) << "no stateful analytic fired: the comparison would prove nothing";

  for (int threads : {2, 3}) {
    o.threads = threads;
    auto many = Hunt(*rules, o);
    ASSERT_TRUE(many.ok()) << many.status().ToString();
    EXPECT_EQ(many->workers, threads);
    EXPECT_FALSE(many->single_worker_for_correlations);
    EXPECT_EQ(many->partition_field, "OrganizationId");
    EXPECT_EQ(many->partitions, 4u);
    EXPECT_EQ(many->events, one->events);
    EXPECT_EQ(many->alerts, one->alerts);
    ASSERT_EQ(many->hits.size(), one->hits.size());
    for (size_t i = 0; i < one->hits.size(); ++i) {
      EXPECT_EQ(many->hits[i].rule->id, one->hits[i].rule->id);
      EXPECT_EQ(many->hits[i].alerts, one->hits[i].alerts) << one->hits[i].rule->title;
      EXPECT_EQ(many->hits[i].first_ms, one->hits[i].first_ms);
      EXPECT_EQ(many->hits[i].last_ms, one->hits[i].last_ms);
    }
    // The alerts themselves, evidence included, in the same order.
    EXPECT_TRUE(many->alerts_json == one->alerts_json) << threads << " workers";
  }
}

TEST_F(HuntTest, CorrelationsWithoutACommonGroupByFieldRunOnOneWorker) {
  constexpr char kUngrouped[] = R"(
title: Failed sign-ins
id: 33333333-3333-4333-8333-333333333333
name: failed_signin
logsource: {product: m365}
detection:
  sel:
    Operation: UserLoginFailed
  condition: sel
---
title: Many failed sign-ins anywhere
id: 44444444-4444-4444-8444-444444444444
correlation:
  type: event_count
  rules: [failed_signin]
  timespan: 1h
  condition: {gte: 3}
)";
  Generate("ual.jsonl", UalRendering::kAuditDataLines);
  LoadReport report;
  auto rules = RuleSet::LoadFromStrings({{"ungrouped.yml", kUngrouped}}, {}, &report);
  ASSERT_TRUE(rules.ok()) << rules.status().ToString();
  HuntOptions o;
  o.inputs = {(dir_ / "ual.jsonl").string()};
  o.threads = 2;
  auto r = Hunt(*rules, o);
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ(r->workers, 1);
  EXPECT_TRUE(r->single_worker_for_correlations);
}

TEST(PartitionValueTest, ReadsTheTopLevelMemberAsTheEngineDoes) {
  struct Case {
    const char* json;
    const char* expected;  // nullptr: no value
  };
  const Case cases[] = {
      {R"j({"OrganizationId":"t1","x":1})j", "t1"},
      {R"j({"a":{"OrganizationId":"nested"},"OrganizationId":"top"})j", "top"},
      {R"j({"a":["OrganizationId", {"OrganizationId":"n"}],"b":"x"})j", nullptr},
      {R"j({"organizationid":"folded"})j", "folded"},
      {R"j({"organizationid":"folded","OrganizationId":"exact"})j", "exact"},
      {R"j( { "OrganizationId" : "spaced" } )j", "spaced"},
      {R"j({"OrganizationId":"a\"b"})j", "a\"b"},
      {R"j({"OrganizationId":"\u0074\u0031"})j", "t1"},
      {R"j({"OrganizationId":""})j", nullptr},
      {R"j({"OrganizationId":42})j", nullptr},
      {R"j({"x":"OrganizationId\\","OrganizationId":"after-escape"})j", "after-escape"},
      {R"j({"OrganizationId":"unterminated)j", nullptr},
      {R"j([1,2])j", nullptr},
      {R"j(not json)j", nullptr},
  };
  std::string scratch;
  for (const auto& c : cases) {
    auto v = PartitionValue(c.json, "OrganizationId", &scratch);
    if (c.expected == nullptr) {
      EXPECT_FALSE(v.has_value()) << c.json << " gave " << *v;
    } else {
      ASSERT_TRUE(v.has_value()) << c.json;
      EXPECT_EQ(*v, c.expected) << c.json;
    }
  }
}

TEST_F(HuntTest, SameAlertsFromJsonLinesCsvAndSentinelRenderings) {
  Generate("a.jsonl", UalRendering::kAuditDataLines);
  HuntOptions o;
  o.inputs = {(dir_ / "a.jsonl").string()};
  auto lines = Hunt(*rules_, o);
  ASSERT_TRUE(lines.ok());
  Generate("b.csv", UalRendering::kCsv);
  o.inputs = {(dir_ / "b.csv").string()};
  auto csv = Hunt(*rules_, o);
  ASSERT_TRUE(csv.ok()) << csv.status().ToString();
  EXPECT_EQ(csv->events, lines->events);
  EXPECT_EQ(csv->alerts, lines->alerts);
  Generate("c.jsonl", UalRendering::kSentinel);
  o.inputs = {(dir_ / "c.jsonl").string()};
  o.format = LogFormat::kSentinelOfficeActivity;
  auto sentinel = Hunt(*rules_, o);
  ASSERT_TRUE(sentinel.ok()) << sentinel.status().ToString();
  EXPECT_EQ(sentinel->events, lines->events);
  EXPECT_EQ(sentinel->alerts, lines->alerts);
}

TEST_F(HuntTest, BadRecordsAreCountedWithFileAndLineNotFatal) {
  std::ofstream(dir_ / "bad.jsonl")
      << R"({"Operation":"UserLoginFailed","Workload":"AzureActiveDirectory","CreationTime":"2023-06-01T01:00:00"})"
      << "\n{not json\n"
      << R"({"Operation":"UserLoginFailed","Workload":"AzureActiveDirectory","CreationTime":"2023-06-01T01:00:01"})"
      << "\n";
  HuntOptions o;
  o.inputs = {(dir_ / "bad.jsonl").string()};
  auto r = Hunt(*rules_, o);
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ(r->bad_records + r->malformed_events, 1u);
  EXPECT_EQ(r->alerts, 2u);
}

TEST_F(HuntTest, MissingInputIsAClearError) {
  HuntOptions o;
  o.inputs = {(dir_ / "nope.jsonl").string()};
  auto r = Hunt(*rules_, o);
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find("nope.jsonl"), std::string::npos) << r.status().message();
  EXPECT_FALSE(Hunt(*rules_, HuntOptions{}).ok());
}

}  // namespace
}  // namespace kw::detect
