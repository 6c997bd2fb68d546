// Audit log append throughput, each number next to the alternative it must be judged against.
// Every "durable" rate counts only records whose fdatasync had returned when the clock stopped.
//
//   BM_WriteFdatasync               the floor: one write(2) of a ~1 KB line + fdatasync on the
//                                   same file system, nothing else (what one durable record costs
//                                   without group commit)
//   BM_AppendDurable/threads:N      (a) AuditLog::Append with fsync, N threads each appending one
//                                   record and waiting for it (group commit)
//   BM_AppendAsyncRequests/N/threads:T
//                                   T threads each acting as a request handler that appends N
//                                   records with AppendAsync and waits once (WaitDurable)
//   BM_AppendAsyncPipelined/threads:T
//                                   (b) T producers that never wait per record: AppendAsync in a
//                                   loop, WaitDurable for the window before the current one
//                                   (windows of 1,000 records, so two are in flight)
//   BM_AppendBatchDurable/<n>       (c) AuditLog::AppendBatch of n records with fsync (one thread)
//   BM_AppendBatchDurableThreads    the same from 4 threads at once
//   BM_SqliteWalBatch/<n>           the alternative: the same records (encoded by the same code,
//                                   no hash chain) inserted into SQLite in WAL mode with
//                                   synchronous=FULL, n per transaction, one prepared statement
//   BM_SqliteWalPerRecord/threads:N one record per transaction from N threads (busy_timeout)
//   BM_AppendNoFsync/threads:N      AuditLog::Append without fsync: the CPU cost (validation,
//                                   JSON encoding, SHA-256 chain, write(2), thread hand-offs)
//   BM_EncodeAndHash                EncodeBodyTo + AppendLineTo alone (no I/O, no lock), buffers
//                                   reused as the writer reuses them
//   BM_VerifyLog                    VerifyLog over 20,000 records (records/s)
//
// The record is a MailItemsAccessed Bind read of one item with every token field set (~1 KB on
// disk); each producer copies it and changes the item, as a request handler builds a fresh one.
// The log directory is under $KEYWARD_BENCH_DIR (default /tmp): point it at the disk you want
// to measure; /tmp may be tmpfs, where fdatasync is free.

#include <benchmark/benchmark.h>
#include <fcntl.h>
#include <sqlite3.h>
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
  const AuditRecord r = Record(state.thread_index());
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

// A request handler: N records (one per item read), one wait.
void BM_AppendAsyncRequests(benchmark::State& state) {
  if (state.thread_index() == 0) OpenShared("requests", true);
  const AuditRecord r = Record(state.thread_index());
  const int n = static_cast<int>(state.range(0));
  for (auto _ : state) {
    uint64_t last = 0;
    for (int i = 0; i < n; ++i) {
      AuditRecord copy = r;
      copy.items[0].id = "e" + std::to_string(i);
      auto seq = g_log->AppendAsync(std::move(copy));
      if (!seq.ok()) {
        state.SkipWithError(seq.status().ToString().c_str());
        return;
      }
      last = *seq;
    }
    Status s = g_log->WaitDurable(last);
    if (!s.ok()) {
      state.SkipWithError(s.ToString().c_str());
      return;
    }
  }
  state.SetItemsProcessed(state.iterations() * n);
  if (state.thread_index() == 0) CloseShared();
}
BENCHMARK(BM_AppendAsyncRequests)->Arg(10)->Threads(64)->UseRealTime();

// Producers that keep two windows of records in flight. An iteration submits one window and
// waits for the previous one, so the records counted (all windows but the last) were durable
// before the clock stopped.
constexpr int kWindow = 1000;
void BM_AppendAsyncPipelined(benchmark::State& state) {
  if (state.thread_index() == 0) OpenShared("pipelined", true);
  const AuditRecord r = Record(state.thread_index());
  uint64_t previous = 0;
  int i = 0;
  for (auto _ : state) {
    uint64_t last = 0;
    for (int k = 0; k < kWindow; ++k, ++i) {
      AuditRecord copy = r;
      copy.items[0].id = "e" + std::to_string(i);
      auto seq = g_log->AppendAsync(std::move(copy));
      if (!seq.ok()) {
        state.SkipWithError(seq.status().ToString().c_str());
        return;
      }
      last = *seq;
    }
    if (previous != 0) {
      Status s = g_log->WaitDurable(previous);
      if (!s.ok()) {
        state.SkipWithError(s.ToString().c_str());
        return;
      }
    }
    previous = last;
  }
  state.SetItemsProcessed((state.iterations() - 1) * kWindow);
  if (state.thread_index() == 0) CloseShared();
}
BENCHMARK(BM_AppendAsyncPipelined)->Threads(1)->Threads(2)->Threads(4)->UseRealTime();

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

// ---- the alternative: SQLite in WAL mode, synchronous=FULL ----

struct SqliteLog {
  sqlite3* db = nullptr;
  sqlite3_stmt* insert = nullptr;
  std::string path;
  ~SqliteLog() {
    sqlite3_finalize(insert);
    sqlite3_close(db);
  }
};

// Opens a fresh database with the record's searchable columns and its JSON text (the body the
// audit log writes, from the same encoder); no hash chain, which only favours SQLite.
std::unique_ptr<SqliteLog> OpenSqlite(const std::string& dir) {
  std::filesystem::create_directories(dir);
  auto s = std::make_unique<SqliteLog>();
  s->path = dir + "/audit.db";
  if (sqlite3_open(s->path.c_str(), &s->db) != SQLITE_OK) return nullptr;
  sqlite3_busy_timeout(s->db, 10'000);
  const char* setup =
      "PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL;"
      "CREATE TABLE IF NOT EXISTS audit(seq INTEGER PRIMARY KEY, time_ms INTEGER, tenant_id TEXT,"
      " operation TEXT, record TEXT);";
  if (sqlite3_exec(s->db, setup, nullptr, nullptr, nullptr) != SQLITE_OK) return nullptr;
  if (sqlite3_prepare_v2(s->db,
                         "INSERT INTO audit(time_ms, tenant_id, operation, record) "
                         "VALUES(?,?,?,?)",
                         -1, &s->insert, nullptr) != SQLITE_OK) {
    return nullptr;
  }
  return s;
}

bool SqliteInsert(SqliteLog& s, const AuditRecord& r, std::string& body) {
  body.clear();
  if (!internal::EncodeBodyTo(r, &body).ok()) return false;
  sqlite3_bind_int64(s.insert, 1, r.time_ms);
  sqlite3_bind_text(s.insert, 2, r.tenant_id.data(), static_cast<int>(r.tenant_id.size()),
                    SQLITE_STATIC);
  sqlite3_bind_text(s.insert, 3, r.operation.data(), static_cast<int>(r.operation.size()),
                    SQLITE_STATIC);
  sqlite3_bind_text(s.insert, 4, body.data(), static_cast<int>(body.size()), SQLITE_STATIC);
  int rc = sqlite3_step(s.insert);
  sqlite3_reset(s.insert);
  return rc == SQLITE_DONE;
}

bool SqliteExec(SqliteLog& s, const char* sql) {
  return sqlite3_exec(s.db, sql, nullptr, nullptr, nullptr) == SQLITE_OK;
}

void BM_SqliteWalBatch(benchmark::State& state) {
  std::string dir = BenchDir("sqlite-batch");
  auto db = OpenSqlite(dir);
  if (!db) {
    state.SkipWithError("cannot open SQLite");
    return;
  }
  const AuditRecord r = Record(0);
  std::string body;
  int i = 0;
  for (auto _ : state) {
    bool ok = SqliteExec(*db, "BEGIN");
    for (int k = 0; ok && k < state.range(0); ++k, ++i) {
      AuditRecord copy = r;
      copy.items[0].id = "e" + std::to_string(i);
      copy.time_ms = 1'764'500'000'000 + i;
      ok = SqliteInsert(*db, copy, body);
    }
    if (!ok || !SqliteExec(*db, "COMMIT")) {
      state.SkipWithError(sqlite3_errmsg(db->db));
      break;
    }
  }
  state.SetItemsProcessed(state.iterations() * state.range(0));
  db.reset();
  std::filesystem::remove_all(dir);
}
BENCHMARK(BM_SqliteWalBatch)->Arg(10)->Arg(1000)->UseRealTime();

// One connection per thread, one record per transaction: what N synchronous callers get from
// SQLite (its writers take turns; each commit is one WAL fsync).
std::string g_sqlite_dir;
void BM_SqliteWalPerRecord(benchmark::State& state) {
  if (state.thread_index() == 0) {
    g_sqlite_dir = BenchDir("sqlite-rec");
    auto db = OpenSqlite(g_sqlite_dir);  // creates the schema before the threads start
  }
  std::unique_ptr<SqliteLog> db;
  const AuditRecord r = Record(state.thread_index());
  std::string body;
  int i = 0;
  for (auto _ : state) {
    if (!db) {
      db = OpenSqlite(g_sqlite_dir);
      if (!db) {
        state.SkipWithError("cannot open SQLite");
        break;
      }
    }
    AuditRecord copy = r;
    copy.items[0].id = "e" + std::to_string(i++);
    if (!SqliteExec(*db, "BEGIN IMMEDIATE") || !SqliteInsert(*db, copy, body) ||
        !SqliteExec(*db, "COMMIT")) {
      state.SkipWithError(sqlite3_errmsg(db->db));
      break;
    }
  }
  state.SetItemsProcessed(state.iterations());
  db.reset();
  if (state.thread_index() == 0) std::filesystem::remove_all(g_sqlite_dir);
}
BENCHMARK(BM_SqliteWalPerRecord)->Threads(1)->Threads(64)->UseRealTime();

void BM_EncodeAndHash(benchmark::State& state) {
  const AuditRecord r = Record(1);
  std::string prev(64, 'a');
  std::string body, out;
  uint64_t seq = 1;
  for (auto _ : state) {
    body.clear();
    out.clear();
    if (!internal::EncodeBodyTo(r, &body).ok()) {
      state.SkipWithError("encode failed");
      break;
    }
    size_t at = internal::AppendLineTo(seq++, prev, 0, body, &out);
    prev.assign(out, at, 64);
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
