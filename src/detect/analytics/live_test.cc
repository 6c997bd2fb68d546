#include "core/test_util.h"
#include "detect/analytics/live.h"

#include <unistd.h>

#include <atomic>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <map>
#include <mutex>
#include <set>
#include <thread>

#include <boost/asio/ip/tcp.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <fmt/format.h>
#include <gtest/gtest.h>

#include "audit/audit_log.h"
#include "core/json.h"

namespace kw::detect::analytics {
namespace {

constexpr const char* kForeignKey = "d40e8744-bb91-4076-bf59-f4e3ec4c32c5";
constexpr const char* kDeadKey = "392e7f02-a3f9-4e15-ba6f-defdecbcb18a";
constexpr const char* kTenantMismatch = "ba5b1fd0-71d6-4bf2-a3b0-303cb6acb092";
constexpr const char* kBulk = "a6ef5b51-5e14-4ffb-a64c-3313b02cd7dd";
constexpr const char* kTokenNeverIssued = "4575bd83-c14f-4013-bb74-f9abdcdcaa0a";
constexpr const char* kFirstSeenTenant = "8ce9d18e-3dbd-419e-83b7-190d0f9d4962";
constexpr const char* kThumbprint = "bd54c6c0-ab94-431c-8e13-3dc300bd0e2c";

using kw::test::TempDir;

const std::string kTenant = "11111111-2222-3333-4444-555555555555";
const std::string kApp = "d3590ed6-52b3-4102-aeff-aad2292ab01c";

// A token issued to `client` (default: kApp, which then counts as registered in the tenant).
audit::AuditRecord Issued(const std::string& jti, const std::string& client = kApp) {
  audit::AuditRecord r;
  r.tenant_id = kTenant;
  r.operation = "TokenIssued";
  r.resource = "identity:token";
  r.user_id = "u-alice";
  r.user_upn = "alice@contoso.test";
  r.client_app_id = client;
  r.client_ip = "10.1.2.3";
  r.token_id = jti;
  r.token_kid = "kid-1";
  r.token_issuer = "https://login.keyward.test/" + kTenant + "/v2.0";
  r.token_tenant_id = kTenant;
  r.token_issued_at = Clock::System()->NowSeconds();
  r.result = "Succeeded";
  r.detail = R"({"grant":"authorization_code"})";
  return r;
}

audit::AuditRecord Read(const std::string& jti, int items = 1, const std::string& item_prefix = "m") {
  static std::atomic<int> counter{0};
  audit::AuditRecord r;
  r.tenant_id = kTenant;
  r.operation = "MailItemsAccessed";
  r.access_type = "Bind";
  r.user_id = "u-alice";
  r.user_upn = "alice@contoso.test";
  r.mailbox_owner = "alice@contoso.test";
  r.mailbox_id = "mbx-alice";
  for (int i = 0; i < items; ++i) {
    int n = counter++;
    r.items.push_back({fmt::format("e{}", n), fmt::format("<{}{}@contoso.test>", item_prefix, n), "\\Inbox"});
  }
  r.client_app_id = kApp;
  r.resource = "jmap:Email/get";
  r.client_ip = "10.1.2.3";
  r.user_agent = "Thunderbird/115";
  r.session_id = "sess-1";
  r.token_id = jti;
  r.token_kid = "kid-1";
  r.token_issuer = "https://login.keyward.test/" + kTenant + "/v2.0";
  r.token_tenant_id = kTenant;
  r.token_issued_at = Clock::System()->NowSeconds();
  r.result = "Succeeded";
  return r;
}

audit::AuditRecord Rejected(const std::string& reason, const std::string& kid = "kid-x") {
  audit::AuditRecord r;
  r.tenant_id = kTenant;
  r.operation = "TokenRejected";
  r.resource = "jmap:Email/get";
  r.client_ip = "198.51.100.4";
  r.token_kid = kid;
  r.token_issuer = "https://login.keyward.test/consumers/v2.0";
  r.token_tenant_id = kTenant;
  r.result = "Failed";
  r.reason = reason;
  r.detail = R"({"claims":{"tid":"11111111-2222-3333-4444-555555555555"}})";
  return r;
}

std::vector<std::string> Lines(const std::string& path) {
  std::ifstream in(path);
  std::vector<std::string> out;
  std::string line;
  while (std::getline(in, line)) out.push_back(line);
  return out;
}

std::string Member(const std::string& json, const std::string& key) {
  json::StrictParser p;
  auto e = p.Parse(json);
  if (!e.ok() || !e->is_object()) return "";
  auto v = json::FindString(e->get_object().value(), key);
  return v ? std::string(*v) : "";
}

std::multiset<std::string> RuleIds(const std::vector<std::string>& lines) {
  std::multiset<std::string> out;
  for (const auto& l : lines) out.insert(Member(l, "rule_id"));
  return out;
}

std::unique_ptr<audit::AuditLog> OpenLog(const std::string& dir) {
  audit::AuditLogOptions o;
  o.dir = dir;
  auto log = audit::AuditLog::Open(o);
  EXPECT_TRUE(log.ok()) << log.status().ToString();
  return std::move(log).value();
}

LiveOptions Options(const TempDir& d) {
  LiveOptions o;
  o.analytics.db_path = d.path() + "/detect.db";
  o.analytics.learning_days = 0;
  o.alerts_path = d.path() + "/alerts.jsonl";
  o.log_alerts = false;
  return o;
}

uint64_t MustAppend(audit::AuditLog& log, audit::AuditRecord r) {
  auto s = log.Append(std::move(r));
  EXPECT_TRUE(s.ok()) << s.status().ToString();
  return s.ok() ? *s : 0;
}

// Keyward's own records, rendered by the real audit::ToUalJson, reach every Keyward analytic.
TEST(LiveTest, KeywardRecordsThroughToUalJson) {
  auto a = StormAnalytics::Open({});
  ASSERT_TRUE(a.ok()) << a.status().ToString();
  VectorAlertSink sink;
  std::vector<audit::AuditRecord> recs = {Issued("jti-1"), Read("jti-1"),
                                          Rejected("key_issuer_mismatch"), Rejected("key_revoked"),
                                          Rejected("bad_signature"),
                                          Rejected("unknown_kid", "d4b4cccda9228624656bff33d8110955779632aa"),
                                          Read("jti-forged")};
  audit::AuditRecord cross = Read("jti-1");
  cross.token_tenant_id = "99999999-2222-3333-4444-555555555555";
  recs.push_back(cross);
  uint64_t seq = 0;
  for (auto& r : recs) {
    r.seq = ++seq;
    r.time_ms = Clock::System()->NowMillis();
    ASSERT_TRUE((*a)->Process(audit::ToUalJson(r), {"m365", "audit", ""}, sink).ok());
  }
  std::multiset<std::string> ids;
  for (const auto& e : sink.alerts) ids.insert(e.rule_id);
  EXPECT_EQ(ids.count(kForeignKey), 1u);
  EXPECT_EQ(ids.count(kDeadKey), 2u);  // key_revoked, unknown_kid (not bad_signature)
  EXPECT_EQ(ids.count(kThumbprint), 1u);
  EXPECT_EQ(ids.count(kTokenNeverIssued), 1u);
  EXPECT_EQ(ids.count(kTenantMismatch), 1u);
}

TEST(LiveTest, WebhookUrlMustBeLoopbackHttp) {
  EXPECT_TRUE(ParseWebhookUrl("http://127.0.0.1:8080/alerts").ok());
  EXPECT_TRUE(ParseWebhookUrl("http://localhost:9/x").ok());
  auto v6 = ParseWebhookUrl("http://[::1]:443");
  ASSERT_TRUE(v6.ok());
  EXPECT_EQ(v6->host, "::1");
  EXPECT_EQ(v6->target, "/");
  for (const char* bad : {"https://127.0.0.1/x", "http://10.0.0.1:80/x", "http://example.com/",
                          "http://127.0.0.1:0/", "http://127.0.0.1:99999/", "http://u:p@127.0.0.1/",
                          "ftp://127.0.0.1/"}) {
    auto r = ParseWebhookUrl(bad);
    EXPECT_EQ(r.status().code(), StatusCode::kInvalidArgument) << bad;
  }
}

TEST(LiveTest, AlertsReachTheFileAndResumeAfterRestartWithoutLossOrRepeat) {
  TempDir d;
  auto log = OpenLog(d.path() + "/audit");
  LiveOptions o = Options(d);
  uint64_t last = 0;
  {
    auto live = LiveDetector::Start(log.get(), o);
    ASSERT_TRUE(live.ok()) << live.status().ToString();
    // Issued to another client: kApp is not registered, so its read is a first-seen app.
    MustAppend(*log, Issued("jti-a", "other-client"));
    MustAppend(*log, Read("jti-a"));  // first app in the tenant (learning_days = 0)
    MustAppend(*log, Rejected("key_issuer_mismatch"));
    last = MustAppend(*log, Read("jti-forged-1"));
    ASSERT_TRUE((*live)->WaitForSeq(last, 10000));
    (*live)->Stop();
    EXPECT_EQ((*live)->stats().alerts, 3u);
  }
  EXPECT_EQ(RuleIds(Lines(o.alerts_path)),
            (std::multiset<std::string>{kFirstSeenTenant, kForeignKey, kTokenNeverIssued}));
  // Records appended while detection is down.
  MustAppend(*log, Rejected("key_revoked"));
  MustAppend(*log, Read("jti-forged-2"));
  {
    auto live = LiveDetector::Start(log.get(), o);
    ASSERT_TRUE(live.ok()) << live.status().ToString();
    last = MustAppend(*log, Rejected("key_issuer_mismatch"));
    ASSERT_TRUE((*live)->WaitForSeq(last, 10000));
    (*live)->Stop();
    EXPECT_EQ((*live)->stats().alerts, 3u);
    EXPECT_EQ((*live)->stats().records, 3u);
  }
  auto lines = Lines(o.alerts_path);
  EXPECT_EQ(RuleIds(lines), (std::multiset<std::string>{kFirstSeenTenant, kForeignKey, kTokenNeverIssued,
                                                        kDeadKey, kTokenNeverIssued, kForeignKey}));
  std::set<std::string> ids;
  for (const auto& l : lines) ids.insert(Member(l, "alert_id"));
  EXPECT_EQ(ids.size(), lines.size());
  // A third start with nothing new delivers nothing again.
  {
    auto live = LiveDetector::Start(log.get(), o);
    ASSERT_TRUE(live.ok());
    EXPECT_TRUE((*live)->WaitForSeq(last, 1000));
    (*live)->Stop();
  }
  EXPECT_EQ(Lines(o.alerts_path).size(), lines.size());
}

// A crash between the commit and the file write leaves outbox rows with file_done = 0 (and maybe a
// torn line): the next Start appends exactly the alerts the file lacks.
TEST(LiveTest, OutboxIsReconciledWithTheFileAtStart) {
  TempDir d;
  auto log = OpenLog(d.path() + "/audit");
  LiveOptions o = Options(d);
  {
    auto live = LiveDetector::Start(log.get(), o);
    ASSERT_TRUE(live.ok());
    uint64_t s = MustAppend(*log, Rejected("key_issuer_mismatch"));
    ASSERT_TRUE((*live)->WaitForSeq(s, 10000));
  }
  auto before = Lines(o.alerts_path);
  ASSERT_EQ(before.size(), 1u);
  {
    auto db = sqlite::Db::Open(o.analytics.db_path);
    ASSERT_TRUE(db.ok());
    auto ins = (*db)->Prepare("INSERT INTO alert_outbox VALUES(?1, ?2, 0, ?3, 0, 1)");
    ASSERT_TRUE(ins.ok());
    // Already in the file (the crash came after the write): not appended again.
    ins->Bind(1, Member(before[0], "alert_id")).Bind(2, int64_t{1}).Bind(3, before[0]);
    ASSERT_TRUE(ins->Run().ok());
    ASSERT_TRUE(ins->Reset().ok());
    // Committed but never written (the crash came before the write): appended.
    std::string lost = R"({"alert_id":"99-0","audit_seq":99,"rule_id":"x"})";
    ins->Bind(1, "99-0").Bind(2, int64_t{99}).Bind(3, lost);
    ASSERT_TRUE(ins->Run().ok());
  }
  {
    std::ofstream torn(o.alerts_path, std::ios::app);
    torn << R"({"alert_id":"99-0","audit_se)";  // half of the lost alert's line
  }
  auto live = LiveDetector::Start(log.get(), o);
  ASSERT_TRUE(live.ok()) << live.status().ToString();
  EXPECT_EQ((*live)->stats().recovered_to_file, 1u);
  (*live)->Stop();
  auto after = Lines(o.alerts_path);
  ASSERT_EQ(after.size(), 2u);
  EXPECT_EQ(after[0], before[0]);
  EXPECT_EQ(Member(after[1], "alert_id"), "99-0");
}

// Bulk-read windows are not persisted: the restart replays the last window in warm-up mode, so a
// burst that spans a restart is still seen, and alerts of the replayed records are not repeated.
TEST(LiveTest, BulkWindowSpansARestart) {
  TempDir d;
  auto log = OpenLog(d.path() + "/audit");
  LiveOptions o = Options(d);
  o.analytics.bulk_distinct_items = 100;
  MustAppend(*log, Issued("jti-bulk", "other-client"));  // kApp stays unregistered: first seen
  {
    auto live = LiveDetector::Start(log.get(), o);
    ASSERT_TRUE(live.ok());
    uint64_t s = 0;
    for (int i = 0; i < 6; ++i) s = MustAppend(*log, Read("jti-bulk", 10, "bulk"));
    ASSERT_TRUE((*live)->WaitForSeq(s, 10000));
  }
  auto first = RuleIds(Lines(o.alerts_path));
  EXPECT_EQ(first.count(kBulk), 0u);
  EXPECT_EQ(first.count(kFirstSeenTenant), 1u);
  auto live = LiveDetector::Start(log.get(), o);
  ASSERT_TRUE(live.ok());
  uint64_t s = 0;
  for (int i = 0; i < 6; ++i) s = MustAppend(*log, Read("jti-bulk", 10, "bulk"));
  ASSERT_TRUE((*live)->WaitForSeq(s, 10000));
  EXPECT_GE((*live)->stats().warmup_records, 6u);
  (*live)->Stop();
  auto all = RuleIds(Lines(o.alerts_path));
  EXPECT_EQ(all.count(kBulk), 1u);
  EXPECT_EQ(all.count(kFirstSeenTenant), 1u);  // not repeated by the warm-up
}

// A tiny loopback HTTP listener: answers `fail_first` requests with 500, then 200.
class Listener {
 public:
  explicit Listener(int fail_first, int delay_ms = 0)
      : acceptor_(ioc_, {boost::asio::ip::make_address("127.0.0.1"), 0}),
        fail_first_(fail_first), delay_ms_(delay_ms) {
    port_ = acceptor_.local_endpoint().port();
    thread_ = std::thread([this] { Serve(); });
  }
  ~Listener() {
    stop_ = true;
    boost::system::error_code ec;
    boost::asio::ip::tcp::socket s(ioc_);
    s.connect({boost::asio::ip::make_address("127.0.0.1"), port_}, ec);
    thread_.join();
  }
  int port() const { return port_; }
  std::vector<std::pair<std::string, std::string>> received() {
    std::lock_guard l(mu_);
    return received_;
  }
  int requests() const { return requests_; }

 private:
  void Serve() {
    namespace http = boost::beast::http;
    while (!stop_) {
      boost::asio::ip::tcp::socket sock(ioc_);
      boost::system::error_code ec;
      acceptor_.accept(sock, ec);
      if (ec || stop_) continue;
      boost::beast::flat_buffer buf;
      http::request<http::string_body> req;
      http::read(sock, buf, req, ec);
      if (ec) continue;
      if (delay_ms_) std::this_thread::sleep_for(std::chrono::milliseconds(delay_ms_));
      int n = ++requests_;
      http::response<http::string_body> res{n <= fail_first_ ? http::status::internal_server_error
                                                             : http::status::ok, 11};
      res.body() = "{}";
      res.prepare_payload();
      if (n > fail_first_) {
        std::lock_guard l(mu_);
        received_.push_back({std::string(req["X-Keyward-Alert-Id"]), req.body()});
      }
      http::write(sock, res, ec);
    }
  }
  boost::asio::io_context ioc_;
  boost::asio::ip::tcp::acceptor acceptor_;
  int fail_first_, delay_ms_;
  unsigned short port_ = 0;
  std::atomic<bool> stop_{false};
  std::atomic<int> requests_{0};
  std::mutex mu_;
  std::vector<std::pair<std::string, std::string>> received_;
  std::thread thread_;
};

TEST(LiveTest, WebhookDeliversWithRetryAndNeverStallsDetection) {
  TempDir d;
  auto log = OpenLog(d.path() + "/audit");
  Listener listener(/*fail_first=*/2, /*delay_ms=*/50);
  LiveOptions o = Options(d);
  o.webhook.url = fmt::format("http://127.0.0.1:{}/alerts", listener.port());
  o.webhook.initial_backoff_ms = 10;
  auto live = LiveDetector::Start(log.get(), o);
  ASSERT_TRUE(live.ok()) << live.status().ToString();
  uint64_t s = 0;
  for (int i = 0; i < 5; ++i) s = MustAppend(*log, Rejected("key_issuer_mismatch"));
  // Detection does not wait for the slow, failing webhook.
  ASSERT_TRUE((*live)->WaitForSeq(s, 10000));
  EXPECT_EQ(Lines(o.alerts_path).size(), 5u);
  for (int i = 0; i < 200 && (*live)->stats().webhook_delivered < 5; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  auto st = (*live)->stats();
  EXPECT_EQ(st.webhook_delivered, 5u);
  EXPECT_EQ(st.webhook_attempt_failures, 2u);
  (*live)->Stop();
  auto got = listener.received();
  ASSERT_EQ(got.size(), 5u);
  for (const auto& [id, body] : got) {
    EXPECT_EQ(Member(body, "alert_id"), id);
    EXPECT_EQ(Member(body, "rule_id"), kForeignKey);
  }
}

TEST(LiveTest, UnreachableWebhookIsCountedAndRetriedAfterRestart) {
  TempDir d;
  auto log = OpenLog(d.path() + "/audit");
  int dead_port;
  {
    Listener probe(0);
    dead_port = probe.port();
  }
  LiveOptions o = Options(d);
  o.webhook.url = fmt::format("http://127.0.0.1:{}/alerts", dead_port);
  o.webhook.initial_backoff_ms = 1;
  o.webhook.max_attempts = 2;
  {
    auto live = LiveDetector::Start(log.get(), o);
    ASSERT_TRUE(live.ok());
    uint64_t s = MustAppend(*log, Rejected("key_issuer_mismatch"));
    ASSERT_TRUE((*live)->WaitForSeq(s, 10000));
    for (int i = 0; i < 200 && (*live)->stats().webhook_gave_up < 1; ++i) {
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    EXPECT_EQ((*live)->stats().webhook_gave_up, 1u);
    EXPECT_EQ((*live)->stats().webhook_attempt_failures, 2u);
  }
  Listener listener(0);
  o.webhook.url = fmt::format("http://127.0.0.1:{}/alerts", listener.port());
  auto live = LiveDetector::Start(log.get(), o);
  ASSERT_TRUE(live.ok());
  for (int i = 0; i < 200 && (*live)->stats().webhook_delivered < 1; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  EXPECT_EQ((*live)->stats().webhook_delivered, 1u);
  (*live)->Stop();
  EXPECT_EQ(Lines(o.alerts_path).size(), 1u);  // the file got it once, at the first run
}

// Append -> alert in the file, end to end with fsync everywhere (audit log, SQLite, alert file).
TEST(LiveTest, AlertLatency) {
  TempDir d;
  auto log = OpenLog(d.path() + "/audit");
  LiveOptions o = Options(d);
  std::mutex mu;
  std::map<std::string, std::chrono::steady_clock::time_point> seen;
  o.on_alert = [&](const std::string& json) {
    auto now = std::chrono::steady_clock::now();
    std::lock_guard l(mu);
    seen[Member(json, "audit_seq") + "|" + Member(json, "alert_id")] = now;
  };
  auto live = LiveDetector::Start(log.get(), o);
  ASSERT_TRUE(live.ok());
  constexpr int kN = 200;
  std::map<uint64_t, std::chrono::steady_clock::time_point> appended;
  for (int i = 0; i < kN; ++i) {
    auto t0 = std::chrono::steady_clock::now();
    uint64_t s = MustAppend(*log, Rejected("key_issuer_mismatch"));
    appended[s] = t0;
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  ASSERT_TRUE((*live)->WaitForSeq(appended.rbegin()->first, 20000));
  (*live)->Stop();
  std::vector<double> ms;
  {
    std::lock_guard l(mu);
    for (const auto& [key, t] : seen) {
      std::string id = key.substr(key.find('|') + 1);
      uint64_t seq = std::stoull(id.substr(0, id.find('-')));
      ms.push_back(std::chrono::duration<double, std::milli>(t - appended[seq]).count());
    }
  }
  ASSERT_EQ(ms.size(), static_cast<size_t>(kN));
  std::sort(ms.begin(), ms.end());
  double p50 = ms[ms.size() / 2], p99 = ms[ms.size() * 99 / 100];
  auto st = (*live)->stats();
  std::printf("live alert latency (append -> alert fsync'ed in file), %d alerts: p50 %.2f ms, "
              "p99 %.2f ms, max %.2f ms; by record time: p50 %.0f ms, p99 %.0f ms\n",
              kN, p50, p99, ms.back(), st.latency_p50_ms, st.latency_p99_ms);
  // The target is p99 < 100 ms (measured 20-45 ms on an idle 2-core machine); the bound here is
  // looser so that a machine busy compiling does not fail the test.
  EXPECT_LT(p50, 100.0);
  EXPECT_LT(p99, 250.0);
}

}  // namespace
}  // namespace kw::detect::analytics
