#include "core/test_util.h"
#include "detect/analytics/analytics.h"

#include <unistd.h>

#include <filesystem>
#include <set>

#include <fmt/format.h>
#include <gtest/gtest.h>

#include "core/json.h"
#include "detect/input/ual_generator.h"

namespace kw::detect::analytics {
namespace {

constexpr LogSource kUal{"m365", "audit", ""};

constexpr const char* kFirstSeenTenant = "8ce9d18e-3dbd-419e-83b7-190d0f9d4962";
constexpr const char* kFirstSeenMailbox = "a59fde64-bfd9-44bd-99f9-b7cab756bde6";
constexpr const char* kBulk = "a6ef5b51-5e14-4ffb-a64c-3313b02cd7dd";
constexpr const char* kNetwork = "c5e1c166-9dac-4926-8ad6-47eebe1a1c65";
constexpr const char* kSession = "cc18f5c6-7d48-4c62-802f-c0aa68a0d920";
constexpr const char* kTokenNeverIssued = "4575bd83-c14f-4013-bb74-f9abdcdcaa0a";

std::unique_ptr<StormAnalytics> MustOpen(AnalyticsOptions o = {}) {
  LoadReport report;
  auto a = StormAnalytics::Open(o, &report);
  EXPECT_TRUE(a.ok()) << a.status().ToString();
  for (const auto& r : report.rejected) ADD_FAILURE() << r.ToString();
  return std::move(a).value();
}

std::multiset<std::string> Feed(StormAnalytics& a, const std::vector<std::string>& records,
                               VectorAlertSink* out = nullptr, bool flush = true) {
  VectorAlertSink sink;
  for (const auto& r : records) {
    Status s = a.Process(r, kUal, sink);
    EXPECT_TRUE(s.ok()) << s.ToString() << " for " << r;
  }
  if (flush) a.Flush(sink);
  std::multiset<std::string> ids;
  for (const auto& e : sink.alerts) ids.insert(e.rule_id);
  if (out) *out = sink;
  return ids;
}

// ---- Sigma rules: one record each, a positive and a near miss ----------------------------------

struct SigmaCase {
  const char* name;
  const char* rule_id;
  const char* record;
  bool fires;
};

const SigmaCase kSigmaCases[] = {
    {"foreign_key", "d40e8744-bb91-4076-bf59-f4e3ec4c32c5",
     R"({"CreationTime":"2026-11-30T10:00:00","Operation":"TokenRejected","OrganizationId":"t1","ResultStatus":"Failed","Keyward":{"seq":7,"token_kid":"k1","token_issuer":"https://login.keyward.test/consumers/v2.0","reason":"key_issuer_mismatch","detail":{}}})",
     true},
    {"foreign_key_near_miss_expired", "d40e8744-bb91-4076-bf59-f4e3ec4c32c5",
     R"({"CreationTime":"2026-11-30T10:00:00","Operation":"TokenRejected","OrganizationId":"t1","ResultStatus":"Failed","Keyward":{"seq":7,"reason":"expired"}})",
     false},
    {"dead_key_revoked", "392e7f02-a3f9-4e15-ba6f-defdecbcb18a",
     R"({"CreationTime":"2026-11-30T10:00:00","Operation":"TokenRejected","OrganizationId":"t1","Keyward":{"seq":8,"reason":"key_revoked"}})",
     true},
    {"dead_key_unknown_kid", "392e7f02-a3f9-4e15-ba6f-defdecbcb18a",
     R"({"CreationTime":"2026-11-30T10:00:00","Operation":"TokenRejected","OrganizationId":"t1","Keyward":{"seq":8,"Reason":"unknown_kid"}})",
     true},
    {"dead_key_near_miss_bad_signature", "392e7f02-a3f9-4e15-ba6f-defdecbcb18a",
     R"({"CreationTime":"2026-11-30T10:00:00","Operation":"TokenRejected","OrganizationId":"t1","Keyward":{"seq":8,"reason":"bad_signature"}})",
     false},
    {"dead_key_near_miss_not_rejected", "392e7f02-a3f9-4e15-ba6f-defdecbcb18a",
     R"({"CreationTime":"2026-11-30T10:00:00","Operation":"TokenIssued","OrganizationId":"t1","Keyward":{"seq":8,"reason":"key_revoked"}})",
     false},
    {"tenant_mismatch", "ba5b1fd0-71d6-4bf2-a3b0-303cb6acb092",
     R"({"CreationTime":"2026-11-30T10:00:00","Operation":"MailItemsAccessed","OrganizationId":"t1","TokenTenantId":"t2","UserId":"a@t1"})",
     true},
    {"tenant_mismatch_near_miss_same", "ba5b1fd0-71d6-4bf2-a3b0-303cb6acb092",
     R"({"CreationTime":"2026-11-30T10:00:00","Operation":"MailItemsAccessed","OrganizationId":"t1","TokenTenantId":"T1","UserId":"a@t1"})",
     false},
    {"tenant_mismatch_near_miss_absent", "ba5b1fd0-71d6-4bf2-a3b0-303cb6acb092",
     R"({"CreationTime":"2026-11-30T10:00:00","Operation":"MailItemsAccessed","OrganizationId":"t1","UserId":"a@t1"})",
     false},
    {"proxy_ip", "0a0d5c4a-9fa1-47a9-bc69-de50e9d7db7f",
     R"({"CreationTime":"2026-11-30T10:00:00","Operation":"MailItemsAccessed","OrganizationId":"t1","ClientIPAddress":"51.89.156.153"})",
     true},
    {"proxy_ip_with_port", "0a0d5c4a-9fa1-47a9-bc69-de50e9d7db7f",
     R"({"CreationTime":"2026-11-30T10:00:00","Operation":"MailItemsAccessed","OrganizationId":"t1","ClientIPAddress":"51.89.156.153:50122"})",
     true},
    {"panel_ip_signin", "0a0d5c4a-9fa1-47a9-bc69-de50e9d7db7f",
     R"({"CreationTime":"2026-11-30T10:00:00","Operation":"UserLoggedIn","OrganizationId":"t1","ClientIP":"185.38.142.249"})",
     true},
    {"proxy_ip_near_miss_neighbour", "0a0d5c4a-9fa1-47a9-bc69-de50e9d7db7f",
     R"({"CreationTime":"2026-11-30T10:00:00","Operation":"MailItemsAccessed","OrganizationId":"t1","ClientIPAddress":"51.89.156.15"})",
     false},
    {"user_agent_signin", "b88ec045-6b1d-4ff0-a389-b8ea95d2ff80",
     R"({"CreationTime":"2026-11-30T10:00:00","Operation":"UserLoggedIn","OrganizationId":"t1","ExtendedProperties":[{"Name":"UserAgent","Value":"Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/92.0.4515.159 Safari/537.36"}]})",
     true},
    {"user_agent_owa_client_info", "b88ec045-6b1d-4ff0-a389-b8ea95d2ff80",
     R"({"CreationTime":"2026-11-30T10:00:00","Operation":"MailItemsAccessed","OrganizationId":"t1","ClientInfoString":"Client=OWA;Action=ViaProxy;Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/106.0.0.0 Safari/537.36 Edg/106.0.1370.52;"})",
     true},
    {"user_agent_near_miss_newer_chrome", "b88ec045-6b1d-4ff0-a389-b8ea95d2ff80",
     R"({"CreationTime":"2026-11-30T10:00:00","Operation":"UserLoggedIn","OrganizationId":"t1","ExtendedProperties":[{"Name":"UserAgent","Value":"Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/93.0.4577.63 Safari/537.36"}]})",
     false},
    {"rest_client_info", "4f3a5bdf-533a-4d6c-af27-d457f44496b1",
     R"({"CreationTime":"2026-11-30T10:00:00","Operation":"MailItemsAccessed","OrganizationId":"t1","ClientInfoString":"Client=REST;Client=RESTSystem;;"})",
     true},
    {"rest_client_info_near_miss_owa", "4f3a5bdf-533a-4d6c-af27-d457f44496b1",
     R"({"CreationTime":"2026-11-30T10:00:00","Operation":"MailItemsAccessed","OrganizationId":"t1","ClientInfoString":"Client=OWA;Action=ViaProxy"})",
     false},
    {"key_age_warning", "b305793c-fa0d-4999-ae4b-a51ea75c74e6",
     R"({"CreationTime":"2026-11-30T10:00:00","Operation":"KeyAgeWarning","OrganizationId":"t1","Workload":"AzureActiveDirectory","Keyward":{"Seq":3,"TokenKid":"k-2016","Detail":{"detail":"key 'k-2016' is 400 days old"}}})",
     true},
    {"key_age_near_miss_rotation", "b305793c-fa0d-4999-ae4b-a51ea75c74e6",
     R"({"CreationTime":"2026-11-30T10:00:00","Operation":"KeyActivated","OrganizationId":"t1","Workload":"AzureActiveDirectory","Keyward":{"Seq":3,"TokenKid":"k-2026"}})",
     false},
    {"key_thumbprint", "bd54c6c0-ab94-431c-8e13-3dc300bd0e2c",
     R"({"CreationTime":"2026-11-30T10:00:00","Operation":"TokenRejected","OrganizationId":"t1","Keyward":{"token_kid":"d4b4cccda9228624656bff33d8110955779632aa","reason":"unknown_kid"}})",
     true},
    {"key_thumbprint_near_miss", "bd54c6c0-ab94-431c-8e13-3dc300bd0e2c",
     R"({"CreationTime":"2026-11-30T10:00:00","Operation":"TokenRejected","OrganizationId":"t1","Keyward":{"token_kid":"d4b4cccda9228624656bff33d8110955779632ab","reason":"unknown_kid"}})",
     false},
};

class SigmaRuleTest : public ::testing::TestWithParam<SigmaCase> {};

TEST_P(SigmaRuleTest, FiresOnPositiveQuietOnNearMiss) {
  const SigmaCase& c = GetParam();
  auto a = MustOpen();
  VectorAlertSink sink;
  auto ids = Feed(*a, {c.record}, &sink);
  EXPECT_EQ(ids.count(c.rule_id) == 1, c.fires) << c.name;
  for (const auto& e : sink.alerts) {
    if (e.rule_id != c.rule_id) continue;
    // The alert carries its evidence (the event) and its ATT&CK tags.
    EXPECT_NE(e.json.find("\"event\":"), std::string::npos) << e.json;
    EXPECT_NE(e.json.find("attack.t1"), std::string::npos) << e.json;
  }
}

INSTANTIATE_TEST_SUITE_P(Storm0558, SigmaRuleTest, ::testing::ValuesIn(kSigmaCases),
                         [](const auto& info) { return std::string(info.param.name); });

TEST(AnalyticsTest, BuiltinRulesAllLoad) {
  LoadReport report;
  auto a = StormAnalytics::Open({}, &report);
  ASSERT_TRUE(a.ok()) << a.status().ToString();
  EXPECT_TRUE(report.rejected.empty());
  EXPECT_EQ(report.rules, static_cast<int>(BuiltinStormRules().size()));
  EXPECT_EQ((*a)->Rules().size(), BuiltinStormRules().size() + 6);
}

TEST(AnalyticsTest, BadIndicatorsFileIsAClearError) {
  std::map<std::string, std::vector<std::string>> ph;
  Status s = ParseIndicators("placeholders:\n  ips: 1.2.3.4\n", "x.yml", &ph);
  EXPECT_EQ(s.code(), StatusCode::kInvalidArgument);
  EXPECT_NE(s.message().find("x.yml:2"), std::string::npos) << s.message();
  EXPECT_EQ(ParseIndicators("- a\n", "y.yml", &ph).code(), StatusCode::kInvalidArgument);
  ASSERT_TRUE(ParseIndicators("placeholders:\n  ips: [1.2.3.4, 'ab*']\n", "z.yml", &ph).ok());
  EXPECT_EQ(ph["ips"], (std::vector<std::string>{"1.2.3.4", "1.2.3.4:*", "ab*"}));
}

TEST(AnalyticsTest, MalformedRecordIsCountedNotFatal) {
  auto a = MustOpen();
  VectorAlertSink sink;
  EXPECT_EQ(a->Process("[1,2]", kUal, sink).code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(a->Process("{not json", kUal, sink).code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(a->stats().malformed, 2u);
}

TEST(AnalyticsTest, NetworkPrefix) {
  EXPECT_EQ(NetworkPrefix("51.89.156.153"), "51.89.156.0/24");
  EXPECT_EQ(NetworkPrefix("51.89.156.153:443"), "51.89.156.0/24");
  EXPECT_EQ(NetworkPrefix("::ffff:10.1.2.3"), "10.1.2.0/24");
  EXPECT_EQ(NetworkPrefix("[2001:db8:aa:bb::1]:443"), "2001:db8:aa::/48");
  EXPECT_EQ(NetworkPrefix("2001:db8:aa:bb::1"), "2001:db8:aa::/48");
  EXPECT_EQ(NetworkPrefix("not-an-ip"), "");
  EXPECT_EQ(NetworkPrefix(""), "");
}

// ---- stateful detectors: sequences of records ----------------------------------------------------

// 2026-11-30 is a Monday.
constexpr int64_t kMonday = 1795996800000;  // 2026-11-30T00:00:00Z
constexpr int64_t kHour = 3600000;
constexpr int64_t kDay = 24 * kHour;

struct Mail {
  int64_t t = kMonday + 10 * kHour;
  std::string op = "MailItemsAccessed";
  std::string tenant = "t1";
  std::string user = "alice@t1.example";
  std::string mailbox;  // default: user
  std::string app = "d3590ed6-52b3-4102-aeff-aad2292ab01c";
  std::string ip = "10.0.0.5";
  std::string session = "s-alice-1";
  std::string access = "Bind";
  std::vector<std::string> items = {"<m1@x>"};
  std::string result = "Succeeded";
  std::string keyward;  // raw JSON of a "Keyward" member, if any
  std::string extra;    // raw members appended (",\"A\":1")
};

std::string Render(const Mail& m) {
  json::Writer w;
  w.BeginObject();
  std::string ct = FormatIsoTime(m.t).substr(0, 19);
  w.Key("CreationTime").String(ct);
  w.Key("Id").String(fmt::format("id-{}-{}", m.t, m.user));
  w.Key("Operation").String(m.op);
  w.Key("OrganizationId").String(m.tenant);
  w.Key("RecordType").Int(m.op == "UserLoggedIn" ? 15 : 50);
  w.Key("ResultStatus").String(m.result);
  w.Key("UserId").String(m.user);
  w.Key("Workload").String(m.op == "UserLoggedIn" ? "AzureActiveDirectory" : "Exchange");
  if (m.op == "UserLoggedIn") {
    w.Key("ClientIP").String(m.ip);
    w.Key("DeviceProperties").BeginArray();
    w.BeginObject().Key("Name").String("SessionId").Key("Value").String(m.session).EndObject();
    w.EndArray();
  } else {
    w.Key("ClientIPAddress").String(m.ip);
    w.Key("AppId").String(m.app);
    w.Key("ClientAppId").String(m.app);
    w.Key("MailboxOwnerUPN").String(m.mailbox.empty() ? m.user : m.mailbox);
    w.Key("SessionId").String(m.session);
    w.Key("TokenTenantId").String(m.tenant);
    w.Key("OperationProperties").BeginArray();
    w.BeginObject().Key("Name").String("MailAccessType").Key("Value").String(m.access).EndObject();
    w.EndArray();
    w.Key("Folders").BeginArray().BeginObject().Key("Path").String("\\Inbox");
    w.Key("FolderItems").BeginArray();
    for (const auto& i : m.items) w.BeginObject().Key("InternetMessageId").String(i).EndObject();
    w.EndArray().EndObject().EndArray();
  }
  if (!m.keyward.empty()) w.Key("Keyward").Raw(m.keyward);
  w.EndObject();
  std::string s = w.Take();
  if (!m.extra.empty()) s.insert(s.size() - 1, m.extra);
  return s;
}

// A user's ordinary working week: weekdays 09:00-17:00 UTC, from the office network, signed in.
std::vector<std::string> WorkingDays(int days, const std::string& user = "alice@t1.example",
                                     const std::string& app = "d3590ed6-52b3-4102-aeff-aad2292ab01c") {
  std::vector<std::string> out;
  for (int d = 0; d < days; ++d) {
    Mail signin;
    signin.op = "UserLoggedIn";
    signin.user = user;
    signin.t = kMonday + d * kDay + 9 * kHour;
    signin.session = fmt::format("s-{}-{}", user, d);
    out.push_back(Render(signin));
    for (int h = 9; h < 17; ++h) {
      for (int k = 0; k < 2; ++k) {
        Mail m;
        m.user = user;
        m.app = app;
        m.t = kMonday + d * kDay + h * kHour + k * 20 * 60000 + 60000;
        m.session = signin.session;
        m.items = {fmt::format("<{}-{}-{}@x>", d, h, k)};
        out.push_back(Render(m));
      }
    }
  }
  return out;
}

struct StatefulCase {
  const char* name;
  const char* rule_id;
  int expected;  // alerts of rule_id
  std::function<std::vector<std::string>()> records;
};

AnalyticsOptions TestOptions() {
  AnalyticsOptions o;
  o.learning_days = 2;
  o.network_min_user_events = 20;
  o.network_min_user_days = 2;
  return o;
}

const std::string kOtherApp = "5e3ce6c0-2b1f-4285-8d4b-75ee78787346";

// After a working week, Keyward issues a token to kOtherApp in `issuing_tenant`; then kOtherApp
// reads three mailboxes of t1.
std::vector<std::string> RegisteredAppReads(const std::string& issuing_tenant) {
  auto r = WorkingDays(3);
  Mail issued;
  issued.op = "TokenIssued";
  issued.tenant = issuing_tenant;
  issued.app = kOtherApp;
  issued.t = kMonday + 3 * kDay + 3 * kHour - 60000;
  issued.keyward = R"({"seq":100,"token_id":"jti-crm"})";
  r.push_back(Render(issued));
  Mail m;
  m.app = kOtherApp;
  m.t = kMonday + 3 * kDay + 3 * kHour;
  for (const char* who : {"alice@t1.example", "bob@t1.example", "carol@t1.example"}) {
    m.user = m.mailbox = who;
    r.push_back(Render(m));
  }
  return r;
}

std::vector<StatefulCase> StatefulCases() {
  return {
      {"first_seen_app_in_tenant", kFirstSeenTenant, 1,
       [] {
         auto r = WorkingDays(3);
         Mail m;
         m.app = kOtherApp;
         m.t = kMonday + 3 * kDay + 3 * kHour;
         m.ip = "10.0.0.5";
         r.push_back(Render(m));
         m.t += 60000;  // the same app again: known now
         r.push_back(Render(m));
         return r;
       }},
      {"first_seen_app_near_miss_known_app", kFirstSeenTenant, 0,
       [] {
         auto r = WorkingDays(3);
         Mail m;
         m.t = kMonday + 3 * kDay + 3 * kHour;
         r.push_back(Render(m));
         return r;
       }},
      // An app the tenant's own Keyward identity service issued tokens to is registered there.
      {"first_seen_app_near_miss_registered_app", kFirstSeenTenant, 0, [] { return RegisteredAppReads("t1"); }},
      {"rare_app_near_miss_registered_app", kFirstSeenMailbox, 0, [] { return RegisteredAppReads("t1"); }},
      // Registered in another tenant only: still a stranger here.
      {"first_seen_app_registered_in_another_tenant", kFirstSeenTenant, 1,
       [] { return RegisteredAppReads("t2"); }},
      {"first_seen_app_near_miss_learning", kFirstSeenTenant, 0,
       [] {
         auto r = WorkingDays(1);
         Mail m;
         m.app = kOtherApp;
         m.t = kMonday + kDay + 3 * kHour;  // day 1: still learning
         r.push_back(Render(m));
         return r;
       }},
      {"rare_app_new_mailbox", kFirstSeenMailbox, 1,
       [] {
         auto r = WorkingDays(3);
         Mail m;
         m.app = kOtherApp;
         m.t = kMonday + 3 * kHour;  // learnt on bob's mailbox during learning
         m.user = m.mailbox = "bob@t1.example";
         r.push_back(Render(m));
         m.t = kMonday + 3 * kDay + 3 * kHour;
         m.user = m.mailbox = "alice@t1.example";
         r.push_back(Render(m));
         return r;
       }},
      {"rare_app_near_miss_common_app", kFirstSeenMailbox, 0,
       [] {
         std::vector<std::string> r;
         for (int i = 0; i < 6; ++i) {
           auto u = WorkingDays(2, fmt::format("u{}@t1.example", i));
           r.insert(r.end(), u.begin(), u.end());
         }
         Mail m;  // the desktop app, used by 6 mailboxes, reads a 7th
         m.user = "carol@t1.example";
         m.t = kMonday + 2 * kDay + 10 * kHour;
         r.push_back(Render(m));
         return r;
       }},
      {"bulk_reads", kBulk, 1,
       [] {
         std::vector<std::string> r;
         for (int i = 0; i < 12; ++i) {
           Mail m;
           m.t = kMonday + 2 * kHour + i * 20000;
           m.session = "s-bulk";
           m.items.clear();
           for (int k = 0; k < 10; ++k) m.items.push_back(fmt::format("<b{}-{}@x>", i, k));
           r.push_back(Render(m));
         }
         return r;
       }},
      {"bulk_near_miss_same_items", kBulk, 0,
       [] {
         std::vector<std::string> r;
         for (int i = 0; i < 12; ++i) {
           Mail m;
           m.t = kMonday + 2 * kHour + i * 20000;
           m.session = "s-bulk";
           m.items.clear();
           for (int k = 0; k < 10; ++k) m.items.push_back(fmt::format("<b{}@x>", k));
           r.push_back(Render(m));
         }
         return r;
       }},
      {"bulk_near_miss_slow", kBulk, 0,
       [] {
         std::vector<std::string> r;
         for (int i = 0; i < 12; ++i) {
           Mail m;
           m.t = kMonday + 2 * kHour + i * 2 * 60000;  // 10 items per 2 minutes: 50 per window
           m.session = "s-bulk";
           m.items.clear();
           for (int k = 0; k < 10; ++k) m.items.push_back(fmt::format("<b{}-{}@x>", i, k));
           r.push_back(Render(m));
         }
         return r;
       }},
      {"bulk_near_miss_sync", kBulk, 0,
       [] {
         std::vector<std::string> r;
         for (int i = 0; i < 12; ++i) {
           Mail m;
           m.t = kMonday + 2 * kHour + i * 20000;
           m.access = "Sync";
           m.items.clear();
           for (int k = 0; k < 10; ++k) m.items.push_back(fmt::format("<b{}-{}@x>", i, k));
           r.push_back(Render(m));
         }
         return r;
       }},
      {"new_network_unusual_hour", kNetwork, 1,
       [] {
         auto r = WorkingDays(3);
         Mail m;
         m.t = kMonday + 3 * kDay + 3 * kHour;  // Thursday 03:00 UTC
         m.ip = "146.70.157.45";
         m.session = "s-alice-2";
         r.push_back(Render(m));
         m.t += 60000;  // a second read from the same network: one alert
         r.push_back(Render(m));
         return r;
       }},
      {"new_network_near_miss_usual_hour", kNetwork, 0,
       [] {
         auto r = WorkingDays(3);
         Mail m;
         m.t = kMonday + 3 * kDay + 11 * kHour;
         m.ip = "146.70.157.45";
         r.push_back(Render(m));
         return r;
       }},
      {"new_network_near_miss_known_network", kNetwork, 0,
       [] {
         auto r = WorkingDays(3);
         Mail m;
         m.t = kMonday + 3 * kDay + 3 * kHour;
         m.ip = "10.0.0.77";  // same /24 as the office address
         r.push_back(Render(m));
         return r;
       }},
      {"new_network_near_miss_signed_in_traveller", kNetwork, 0,
       [] {
         auto r = WorkingDays(3);
         Mail s;
         s.op = "UserLoggedIn";
         s.t = kMonday + 3 * kDay + 3 * kHour;
         s.ip = "203.0.113.9";  // the hotel: an interactive sign-in vouches for the network
         s.session = "s-hotel";
         r.push_back(Render(s));
         Mail m;
         m.t = s.t + 120000;
         m.ip = "203.0.113.9";
         m.session = "s-hotel";
         r.push_back(Render(m));
         return r;
       }},
      {"new_network_near_miss_session_roams", kNetwork, 0,
       [] {
         auto r = WorkingDays(3);
         Mail m;  // the session signed in on day 2 moves to another network, at night
         m.t = kMonday + 3 * kDay + 3 * kHour;
         m.ip = "203.0.113.9";
         m.session = "s-alice@t1.example-2";
         r.push_back(Render(m));
         return r;
       }},
      {"new_network_probation_prefix_alerts_later", kNetwork, 1,
       [] {
         auto r = WorkingDays(3);
         Mail m;  // a new session from a new network at a usual hour: no alert, on probation...
         m.t = kMonday + 3 * kDay + 11 * kHour;
         m.ip = "198.51.100.7";
         m.session = "s-new-1";
         r.push_back(Render(m));
         m.t = kMonday + 3 * kDay + 23 * kHour;  // ...so the same day at night it alerts
         m.session = "s-new-2";
         r.push_back(Render(m));
         return r;
       }},
      {"session_without_signin", kSession, 1,
       [] {
         auto r = WorkingDays(3);
         Mail m;
         m.t = kMonday + 3 * kDay + 3 * kHour;
         m.session = "s-forged";
         r.push_back(Render(m));
         m.t += 60000;
         r.push_back(Render(m));
         return r;
       }},
      {"session_near_miss_late_signin_within_grace", kSession, 0,
       [] {
         auto r = WorkingDays(3);
         Mail m;
         m.t = kMonday + 3 * kDay + 3 * kHour;
         m.session = "s-late";
         r.push_back(Render(m));
         Mail s;
         s.op = "UserLoggedIn";
         s.t = m.t + 60000;
         s.session = "s-late";
         r.push_back(Render(s));
         return r;
       }},
      {"session_near_miss_learning", kSession, 0,
       [] {
         auto r = WorkingDays(1);
         Mail m;
         m.t = kMonday + 3 * kHour + kDay;
         m.session = "s-before-data";
         r.push_back(Render(m));
         return r;
       }},
      {"keyward_token_never_issued", kTokenNeverIssued, 1,
       [] {
         std::vector<std::string> r;
         Mail i;
         i.op = "TokenIssued";
         i.t = kMonday + 9 * kHour;
         i.keyward = R"({"seq":1,"token_id":"jti-good","detail":{}})";
         r.push_back(Render(i));
         Mail m;
         m.t = i.t + 60000;
         m.keyward = R"({"seq":2,"token_id":"jti-good","token_issued_at":1796029200})";
         r.push_back(Render(m));
         m.t += 60000;
         m.keyward = R"({"seq":3,"token_id":"jti-forged","token_issued_at":1796029260})";
         r.push_back(Render(m));
         m.t += 60000;  // the same forged token again: one alert
         m.keyward = R"({"seq":4,"token_id":"jti-forged","token_issued_at":1796029260})";
         r.push_back(Render(m));
         return r;
       }},
      {"keyward_token_issued_in_detail_text", kTokenNeverIssued, 0,
       [] {
         std::vector<std::string> r;
         Mail i;
         i.op = "TokenIssued";
         i.t = kMonday + 9 * kHour;
         i.keyward = R"({"seq":1,"detail":{"jti":"jti-d"}})";
         r.push_back(Render(i));
         Mail m;
         m.t = i.t + 60000;
         m.keyward = R"({"seq":2,"token_id":"jti-d","token_issued_at":1796029200})";
         r.push_back(Render(m));
         return r;
       }},
      {"keyward_token_near_miss_issued_before_watching", kTokenNeverIssued, 0,
       [] {
         std::vector<std::string> r;
         Mail m;
         m.t = kMonday + 9 * kHour;
         // iat one hour before the first record the analytics saw for the tenant.
         m.keyward = R"({"seq":2,"token_id":"jti-old","token_issued_at":1796025600})";
         r.push_back(Render(m));
         return r;
       }},
  };
}

class StatefulTest : public ::testing::TestWithParam<StatefulCase> {};

TEST_P(StatefulTest, Fires) {
  const StatefulCase& c = GetParam();
  auto a = MustOpen(TestOptions());
  VectorAlertSink sink;
  auto ids = Feed(*a, c.records(), &sink);
  EXPECT_EQ(static_cast<int>(ids.count(c.rule_id)), c.expected) << c.name;
  for (const auto& e : sink.alerts) {
    if (e.rule_id != c.rule_id) continue;
    EXPECT_GE(e.evidence, 1u) << e.json;
    EXPECT_NE(e.json.find("\"OrganizationId\":\"t1\""), std::string::npos) << e.json;
    EXPECT_NE(e.json.find("attack.t1"), std::string::npos) << e.json;
  }
}

INSTANTIATE_TEST_SUITE_P(Storm0558, StatefulTest, ::testing::ValuesIn(StatefulCases()),
                         [](const auto& info) { return std::string(info.param.name); });

using kw::test::TempDir;

TEST(AnalyticsTest, BaselinePersistsAcrossReopen) {
  TempDir dir;
  AnalyticsOptions o = TestOptions();
  o.db_path = dir.path() + "/baseline.db";
  {
    auto a = MustOpen(o);
    Feed(*a, WorkingDays(3), nullptr, false);
    ASSERT_TRUE(a->Commit().ok());
  }
  EXPECT_EQ(std::filesystem::status(o.db_path).permissions() & std::filesystem::perms::others_read,
            std::filesystem::perms::none);
  auto a = MustOpen(o);
  Mail known;
  known.t = kMonday + 3 * kDay + 11 * kHour;
  known.session = "s-alice@t1.example-0";  // signed in on day 0: known after the reopen
  Mail fresh = known;
  fresh.app = kOtherApp;
  fresh.t += 1000;
  Mail away = known;
  away.t = kMonday + 3 * kDay + 3 * kHour;
  away.ip = "198.51.100.7";
  away.session = "s-away";  // a session nobody signed in to
  auto ids = Feed(*a, {Render(away), Render(known), Render(fresh)});
  EXPECT_EQ(ids.count(kFirstSeenTenant), 1u);  // the tenant's learning period is over
  EXPECT_EQ(ids.count(kNetwork), 1u);          // the user's profile came back
  EXPECT_EQ(ids.count(kSession), 1u);          // so did the sessions: only s-away is unknown
  EXPECT_EQ(ids.size(), 3u);
}

TEST(AnalyticsTest, FlushThenCommitKeepsSessionsAndTokens) {
  TempDir dir;
  AnalyticsOptions o = TestOptions();
  o.db_path = dir.path() + "/baseline.db";
  {
    auto a = MustOpen(o);
    Feed(*a, WorkingDays(3));  // flushes
    ASSERT_TRUE(a->Commit().ok());
  }
  auto a = MustOpen(o);
  Mail m;  // a session signed in on day 2, read on day 3: known after the reopen
  m.t = kMonday + 3 * kDay + 10 * kHour;
  m.session = "s-alice@t1.example-2";
  EXPECT_EQ(Feed(*a, {Render(m)}).count(kSession), 0u);
}

TEST(AnalyticsTest, UncommittedChangesAreNotPersisted) {
  TempDir dir;
  AnalyticsOptions o = TestOptions();
  o.db_path = dir.path() + "/baseline.db";
  {
    auto a = MustOpen(o);
    Feed(*a, WorkingDays(1), nullptr, false);
    ASSERT_TRUE(a->Commit().ok());
    Mail m;
    m.app = kOtherApp;
    m.t = kMonday + 10 * kHour;
    Feed(*a, {Render(m)}, nullptr, false);  // learnt, never committed
  }
  auto a = MustOpen(o);
  Mail m;
  m.app = kOtherApp;
  m.t = kMonday + 2 * kDay + 10 * kHour;
  EXPECT_EQ(Feed(*a, {Render(m)}).count(kFirstSeenTenant), 1u);
}

TEST(AnalyticsTest, CommitExtraRunsInTheSameTransaction) {
  auto a = MustOpen(TestOptions());
  ASSERT_TRUE(a->db().Exec("CREATE TABLE t(x INTEGER)").ok());
  Feed(*a, WorkingDays(1), nullptr, false);
  Status s = a->Commit([](sqlite::Db& db) -> Status {
    KW_RETURN_IF_ERROR(db.Exec("INSERT INTO t VALUES(1)"));
    return InternalError("boom");
  });
  EXPECT_FALSE(s.ok());
  auto count = [&](std::string_view sql) {
    auto st = a->db().Prepare(sql);
    EXPECT_TRUE(st.ok());
    EXPECT_TRUE(st->Step().ok());
    return st->Int(0);
  };
  EXPECT_EQ(count("SELECT COUNT(*) FROM t"), 0);
  EXPECT_EQ(count("SELECT COUNT(*) FROM tenant"), 0);
  ASSERT_TRUE(a->Commit().ok());  // the changes stayed dirty and are written now
  EXPECT_EQ(count("SELECT COUNT(*) FROM tenant"), 1);
  EXPECT_GT(count("SELECT COUNT(*) FROM user_profile"), 0);
}

TEST(AnalyticsTest, WarmupRefillsWindowsWithoutAlerting) {
  auto a = MustOpen(TestOptions());
  VectorAlertSink sink;
  for (int i = 0; i < 12; ++i) {
    Mail m;
    m.t = kMonday + 2 * kHour + i * 20000;
    m.session = "s-bulk";
    m.ip = "51.89.156.153";
    m.items.clear();
    for (int k = 0; k < 10; ++k) m.items.push_back(fmt::format("<b{}-{}@x>", i, k));
    ProcessMode mode = i < 6 ? ProcessMode::kWarmup : ProcessMode::kNormal;
    ASSERT_TRUE(a->Process(Render(m), kUal, sink, mode).ok());
    if (i < 6) {
      EXPECT_TRUE(sink.alerts.empty());
    }
  }
  std::multiset<std::string> ids;
  for (const auto& e : sink.alerts) ids.insert(e.rule_id);
  EXPECT_EQ(ids.count(kBulk), 1u);  // 60 warm-up items + 60 new ones reach the threshold
  EXPECT_EQ(ids.count("0a0d5c4a-9fa1-47a9-bc69-de50e9d7db7f"), 6u);
}

// The generator's injected actor is found, and a quiet population raises nothing stateful.
TEST(AnalyticsTest, GeneratorActorIsDetected) {
  UalGeneratorOptions g;
  g.seed = 7;
  g.users_per_tenant = 40;
  g.records_per_user_per_day = 60;
  g.actor.enabled = true;
  g.actor.start_day = 2;
  UalGenerator gen(g);
  auto a = MustOpen(TestOptions());
  VectorAlertSink sink;
  std::set<std::string> actor_ids;
  std::vector<std::string> recs;
  gen.Generate(0, 16u << 20, [&](const GeneratedRecord& r) {
    if (r.actor) actor_ids.insert(std::string(r.id));
    recs.emplace_back(r.audit_data);
  });
  for (const auto& r : recs) ASSERT_TRUE(a->Process(r, kUal, sink).ok());
  a->Flush(sink);
  ASSERT_FALSE(actor_ids.empty());
  std::set<std::string> fired;
  for (const auto& e : sink.alerts) fired.insert(e.rule_id);
  EXPECT_TRUE(fired.count(kFirstSeenTenant));
  EXPECT_TRUE(fired.count(kBulk));
  EXPECT_TRUE(fired.count(kSession));
  EXPECT_TRUE(fired.count("0a0d5c4a-9fa1-47a9-bc69-de50e9d7db7f"));
}

}  // namespace
}  // namespace kw::detect::analytics
