// Throughput measurements, disabled by default (they take seconds and want a quiet machine):
//   mail_test --gtest_also_run_disabled_tests --gtest_filter='MailPerf.*'
// They print what they measure; the assertions only check that the work was done.
#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <thread>

#include <time.h>

#include <fmt/format.h>

#include "crypto/crypto.h"
#include "http/server.h"
#include "mail/jmap.h"
#include "mail/service.h"
#include "mail/test_util.h"
#include "token/jws.h"

namespace kw::mail {
namespace {

using Clk = std::chrono::steady_clock;

double Seconds(Clk::time_point a, Clk::time_point b) {
  return std::chrono::duration<double>(b - a).count();
}

// CPU seconds used by the whole process: the machine is shared, so wall-clock rates understate
// what the code does per core.
double CpuSeconds() {
  timespec ts;
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
  return static_cast<double>(ts.tv_sec) + static_cast<double>(ts.tv_nsec) / 1e9;
}

std::string Message(int i) {
  return fmt::format(
      "From: Sender {0} <s{0}@fabrikam.test>\r\nTo: Alice <alice@contoso.test>\r\nSubject: Report {0}\r\n"
      "Date: Fri, 16 Jun 2023 09:00:00 +0000\r\nMessage-ID: <p{0}@fabrikam.test>\r\n"
      "Content-Type: multipart/alternative; boundary=b\r\n\r\n--b\r\nContent-Type: text/plain\r\n\r\n"
      "Numbers for week {0}: revenue up, costs down. Details in the attached sheet.\r\n--b\r\n"
      "Content-Type: text/html\r\n\r\n<p>Numbers for week {0}</p>\r\n--b--\r\n",
      i);
}

struct Fixture {
  FakeClock clock{1'700'000'000'000};
  testing::TempDir dir;
  testing::RecordingAuditWriter audit;
  std::unique_ptr<Store> store;
  Account alice;
  std::vector<std::string> ids;

  Fixture() {
    StoreOptions o;
    o.path = dir.File("mail.db");
    o.clock = &clock;
    store = std::move(Store::Open(o).value());
    alice = store->EnsureAccount("tenant-a", "alice", "alice@contoso.test", "alice@contoso.test").value();
  }
};

TEST(MailPerf, DISABLED_ImportThroughput) {
  Fixture f;
  // Store::DeliverBatch (Email/import runs the same way): 100 messages per transaction.
  const int kBatches = 20, kPer = 100;
  auto t0 = Clk::now();
  double c0 = CpuSeconds();
  for (int b = 0; b < kBatches; ++b) {
    std::vector<Store::Delivery> batch;
    for (int i = 0; i < kPer; ++i) batch.push_back({f.alice.id, Message(b * kPer + i)});
    auto r = f.store->DeliverBatch(batch);
    ASSERT_TRUE(r.ok());
    for (const auto& x : *r) ASSERT_TRUE(x.ok());
  }
  double batched = kBatches * kPer / Seconds(t0, Clk::now());
  double batched_cpu = kBatches * kPer / (CpuSeconds() - c0);
  // Single deliveries: one transaction and fsync per message.
  t0 = Clk::now();
  const int kSingles = 200;
  for (int i = 0; i < kSingles; ++i) ASSERT_TRUE(f.store->Deliver(f.alice.id, Message(10000 + i)).ok());
  double single = kSingles / Seconds(t0, Clk::now());
  std::printf("import: %.0f msg/s in batches of %d (%.0f per CPU-second); %.0f msg/s one per "
              "transaction (Store::Deliver)\n", batched, kPer, batched_cpu, single);
}

TEST(MailPerf, DISABLED_EmailGetThroughput) {
  Fixture f;
  std::string list;
  for (int i = 0; i < 10; ++i) {
    auto r = f.store->Deliver(f.alice.id, Message(i));
    ASSERT_TRUE(r.ok());
    list += fmt::format("{}\"{}\"", i ? "," : "", r->id);
  }
  Processor p(f.store.get(), &f.audit, JmapLimits{}, &f.clock);
  Principal who;
  who.tenant_id = "tenant-a";
  who.user_id = "alice";
  audit::AuditRecord base;
  std::string body = fmt::format(
      R"({{"using":["urn:ietf:params:jmap:core","urn:ietf:params:jmap:mail"],"methodCalls":[["Email/get",)"
      R"({{"accountId":"{}","ids":[{}],"properties":["threadId","mailboxIds","keywords","from","to","subject","receivedAt","size","preview"]}},"g"]]}})",
      f.alice.id, list);
  for (int threads : {1, 2}) {
    std::atomic<int64_t> done{0};
    const double kSeconds = 3;
    auto t0 = Clk::now();
    double c0 = CpuSeconds();
    std::vector<std::thread> pool;
    for (int t = 0; t < threads; ++t) {
      pool.emplace_back([&] {
        while (Seconds(t0, Clk::now()) < kSeconds) {
          JmapResponse r = p.Process(who, base, body);
          if (r.status != 200) std::abort();
          done.fetch_add(1);
        }
      });
    }
    for (auto& th : pool) th.join();
    std::printf("Email/get x10 (processor, audit in memory): %.0f requests/s on %d thread(s), "
                "%.0f requests per CPU-second\n",
                done.load() / Seconds(t0, Clk::now()), threads, done.load() / (CpuSeconds() - c0));
    f.audit.Clear();
  }
}

// The whole HTTP path measured with wrk (keep-alive), token verification cost beside it.
TEST(MailPerf, DISABLED_HttpEmailGetWithWrk) {
  Fixture f;
  auto store = std::make_shared<token::TrustStore>();
  auto priv = crypto::PrivateKey::Generate(crypto::Algorithm::kES256).value();
  token::TrustedKeySpec spec;
  spec.kid = "k1";
  spec.issuer = "https://login.keyward.test/tenant-a/v2.0";
  spec.tenant_id = "tenant-a";
  spec.key = priv.public_key();
  ASSERT_TRUE(store->Add(std::move(spec)).ok());
  MailServiceOptions o;
  o.data_dir = f.dir.File("svc");
  o.trust_store = store;
  o.issuers = {"https://login.keyward.test/{tenantid}/v2.0"};
  o.audience = "https://mail.keyward.test";
  o.audit = &f.audit;
  o.rate_per_second = 0;
  auto service = std::move(MailService::Open(o).value());
  auto router = service->BuildRouter().value();
  http::ServerOptions so;
  so.threads = 2;
  so.clock = Clock::System();
  http::Server server(so, std::move(router));
  ASSERT_TRUE(server.Start().ok());
  ASSERT_TRUE(service->SetBaseUrl(fmt::format("http://127.0.0.1:{}", server.port())).ok());
  int64_t now = Clock::System()->NowSeconds();
  std::string tok = token::SignCompact(priv, crypto::Algorithm::kES256, "k1",
      fmt::format(R"({{"iss":"https://login.keyward.test/tenant-a/v2.0","tid":"tenant-a","aud":"https://mail.keyward.test","sub":"alice","azp":"web","jti":"j1","iat":{},"exp":{}}})",
                  now, now + 3600)).value();
  auto account = service->store().EnsureAccount("tenant-a", "alice", "alice", "alice@contoso.test").value();
  std::string list;
  for (int i = 0; i < 10; ++i) {
    auto r = service->store().Deliver(account.id, Message(i));
    list += fmt::format("{}\\\"{}\\\"", i ? "," : "", r->id);
  }
  // Token check cost, cached (the verifier's cache makes a repeated token a hash lookup).
  const int kVerifies = 200000;
  auto t0 = Clk::now();
  for (int i = 0; i < kVerifies; ++i) {
    if (!service->verifier().Verify(tok).ok()) std::abort();
  }
  double verify_us = Seconds(t0, Clk::now()) / kVerifies * 1e6;
  std::string script = f.dir.File("post.lua");
  std::ofstream(script) << fmt::format(
      "wrk.method = \"POST\"\nwrk.headers[\"Authorization\"] = \"Bearer {}\"\n"
      "wrk.headers[\"Content-Type\"] = \"application/json\"\n"
      "wrk.body = \"{{\\\"using\\\":[\\\"urn:ietf:params:jmap:mail\\\"],\\\"methodCalls\\\":[[\\\"Email/get\\\","
      "{{\\\"accountId\\\":\\\"{}\\\",\\\"ids\\\":[{}],\\\"properties\\\":[\\\"from\\\",\\\"to\\\",\\\"subject\\\",\\\"receivedAt\\\",\\\"preview\\\",\\\"keywords\\\"]}},\\\"g\\\"]]}}\"\n",
      tok, account.id, list);
  std::string cmd = fmt::format("wrk -t2 -c32 -d8s -s {} http://127.0.0.1:{}/jmap/api", script, server.port());
  std::printf("token check (cached): %.2f us\n$ %s\n", verify_us, cmd.c_str());
  std::fflush(stdout);
  f.audit.Clear();
  double c0 = CpuSeconds();
  ASSERT_EQ(std::system(cmd.c_str()), 0);
  double server_cpu = CpuSeconds() - c0;
  size_t requests = f.audit.records().size();  // one MailItemsAccessed record per request
  EXPECT_GT(requests, 10u);
  std::printf("server side: %zu requests in %.2f CPU-seconds = %.0f requests per CPU-second; "
              "token check %.2f%% of that\n", requests, server_cpu, requests / server_cpu,
              verify_us * 1e-6 * static_cast<double>(requests) / server_cpu * 100);
  server.Stop();
}

}  // namespace
}  // namespace kw::mail
