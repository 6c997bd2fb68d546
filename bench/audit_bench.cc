// Audit log append throughput, each number next to the alternative it must be judged against.
//
//   BM_WriteFdatasync               the floor: one write(2) of a ~700-byte line + fdatasync on the
//                                   same file system, nothing else (what one durable record costs
//                                   without group commit)
//   BM_AppendDurable/threads:N      AuditLog::Append with fsync, N threads appending concurrently
//                                   (group commit: one fdatasync per group)
//   BM_AppendBatchDurable/<n>       AuditLog::AppendBatch of n records with fsync (one thread)
//   BM_AppendBatchDurableThreads    the same from 4 threads at once
//   BM_AppendNoFsync/threads:N      AuditLog::Append without fsync: the CPU cost (validation,
//                                   JSON encoding, SHA-256 chain, write(2))
//   BM_EncodeAndHash                EncodeBody + AppendLine alone (no I/O, no lock)
//   BM_VerifyLog                    VerifyLog over 20,000 records (records/s)
//
// The record is a MailItemsAccessed Bind read of one item with every token field set (~700 bytes
// on disk). The log directory is under $KEYWARD_BENCH_DIR (default /tmp): point it at the disk
// you want to measure; /tmp may be tmpfs, where fdatasync is free.

#include <benchmark/benchmark.h>
#include <fcntl.h>
#include <unistd.h>

#include <atomic>
#include <cstdlib>
#include <filesystem>
#include <memory>
#include <string>

#include "audit/audit_log.h"
#include "audit/log_format.h"

namespace kw::audit {
namespace {

std::string BenchDir(const char* name) {
  const char* base = std::getenv("KEYWARD_BENCH_DIR");
  std::string dir = std::string(base ? base : "/tmp") + "/kw-audit-bench-" + name + "-" +
                    std::to_string(::getpid());
  std::filesystem::remove_all(dir);
  return dir;
}

AuditRecord Record(int i) {
  AuditRecord r;
  r.tenant_id = "6babcaad-604b-40ac-a9d7-9fd97c0b779f";
  r.operation = "MailItemsAccessed";
  r.access_type = "Bind";
  r.user_id = "9f4c7e1a-0b1d-4a57-9a3e-2c0a6f1f2d11";
  r.user_upn = "alice@contoso.example";
  r.mailbox_owner = "alice@contoso.example";
  r.mailbox_id = "mbx-9f4c7e1a";
  r.items = {{"e" + std::to_string(i), "<CAF" + std::to_string(i) + "@mail.contoso.example>",
              "\\Inbox"}};
  r.client_app_id = "d3590ed6-52b3-4102-aeff-aad2292ab01c";
  r.resource = "jmap:Email/get";
  r.client_ip = "203.0.113.7";
  r.user_agent =
      "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
      "Chrome/106.0.0.0 Safari/537.36";
  r.session_id = "2b7e1516-28ae-d2a6-abf7-158809cf4f3c";
  r.token_id = "jti-" + std::to_string(i);
  r.token_kid = "ent-2026-11-a";
  r.token_issuer = "https://login.keyward.example/6babcaad-604b-40ac-a9d7-9fd97c0b779f/v2.0";
  r.token_tenant_id = "6babcaad-604b-40ac-a9d7-9fd97c0b779f";
  r.token_issued_at = 1'764'500'000;
  r.result = "Succeeded";
  return r;
}

void BM_WriteFdatasync(benchmark::State& state) {
  std::string dir = BenchDir("raw");
  std::filesystem::create_directories(dir);
  int fd = ::open((dir + "/f").c_str(), O_WRONLY | O_CREAT | O_APPEND, 0600);
  std::string line(700, 'x');
  line.back() = '\n';
  for (auto _ : state) {
    if (::write(fd, line.data(), line.size()) < 0 || ::fdatasync(fd) != 0) {
      state.SkipWithError("write/fdatasync failed");
      break;
    }
  }
  ::close(fd);
  std::filesystem::remove_all(dir);
  state.SetItemsProcessed(state.iterations());
}
BENCHMARK(BM_WriteFdatasync)->UseRealTime();

std::unique_ptr<AuditLog> g_log;
std::string g_dir;

void OpenShared(const char* name, bool fsync) {
  g_dir = BenchDir(name);
  AuditLogOptions o;
  o.dir = g_dir;
  o.fsync = fsync;
  o.checkpoint_interval_ms = 1000;
  g_log = std::move(AuditLog::Open(o).value());
}

void CloseShared() {
  g_log.reset();
  std::filesystem::remove_all(g_dir);
}

void AppendLoop(benchmark::State& state, const char* name, bool fsync) {
  if (state.thread_index() == 0) OpenShared(name, fsync);
  AuditRecord r = Record(state.thread_index());
  for (auto _ : state) {
    auto seq = g_log->Append(r);
    if (!seq.ok()) {
      state.SkipWithError(seq.status().ToString().c_str());
      break;
    }
  }
  state.SetItemsProcessed(state.iterations());
}

void BM_AppendDurable(benchmark::State& state) {
  AppendLoop(state, "durable", true);
  if (state.thread_index() == 0) CloseShared();
}
BENCHMARK(BM_AppendDurable)->Threads(1)->Threads(4)->Threads(16)->Threads(64)->UseRealTime();

void BM_AppendNoFsync(benchmark::State& state) {
  AppendLoop(state, "nofsync", false);
  if (state.thread_index() == 0) CloseShared();
}
BENCHMARK(BM_AppendNoFsync)->Threads(1)->Threads(4)->UseRealTime();

void BM_AppendBatchDurable(benchmark::State& state) {
  OpenShared("batch", true);
  std::vector<AuditRecord> batch;
  for (int i = 0; i < state.range(0); ++i) batch.push_back(Record(i));
  for (auto _ : state) {
    auto seq = g_log->AppendBatch(batch);
    if (!seq.ok()) {
      state.SkipWithError(seq.status().ToString().c_str());
      break;
    }
  }
  state.SetItemsProcessed(state.iterations() * state.range(0));
  CloseShared();
}
BENCHMARK(BM_AppendBatchDurable)->Arg(10)->Arg(100)->Arg(1000)->UseRealTime();

// Several threads each appending batches: the pipeline keeps one group fsyncing while the next
// is written.
void BM_AppendBatchDurableThreads(benchmark::State& state) {
  if (state.thread_index() == 0) OpenShared("batch-threads", true);
  std::vector<AuditRecord> batch;
  for (int i = 0; i < state.range(0); ++i) batch.push_back(Record(i));
  for (auto _ : state) {
    auto seq = g_log->AppendBatch(batch);
    if (!seq.ok()) {
      state.SkipWithError(seq.status().ToString().c_str());
      break;
    }
  }
  state.SetItemsProcessed(state.iterations() * state.range(0));
  if (state.thread_index() == 0) CloseShared();
}
BENCHMARK(BM_AppendBatchDurableThreads)->Arg(100)->Arg(1000)->Threads(4)->UseRealTime();

void BM_EncodeAndHash(benchmark::State& state) {
  AuditRecord r = Record(1);
  std::string prev(64, 'a');
  std::string out;
  uint64_t seq = 1;
  for (auto _ : state) {
    auto body = internal::EncodeBody(r);
    out.clear();
    prev = internal::AppendLine(seq++, prev, 0, *body, &out);
    benchmark::DoNotOptimize(out);
  }
  state.SetItemsProcessed(state.iterations());
  state.SetBytesProcessed(state.iterations() * static_cast<int64_t>(out.size()));
}
BENCHMARK(BM_EncodeAndHash);

void BM_VerifyLog(benchmark::State& state) {
  OpenShared("verify", false);
  std::vector<AuditRecord> batch;
  for (int i = 0; i < 1000; ++i) batch.push_back(Record(i));
  for (int i = 0; i < 20; ++i) (void)g_log->AppendBatch(batch).ok();
  for (auto _ : state) {
    auto report = VerifyLog(g_dir);
    if (!report.ok() || !report->ok()) {
      state.SkipWithError("verify failed");
      break;
    }
  }
  state.SetItemsProcessed(state.iterations() * 20'000);
  CloseShared();
}
BENCHMARK(BM_VerifyLog)->Unit(benchmark::kMillisecond);

}  // namespace
}  // namespace kw::audit

BENCHMARK_MAIN();
