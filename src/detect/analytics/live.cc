// Live mode tables (in the analytics database, next to the baselines of analytics.cc):
//
//   live_state(key TEXT PRIMARY KEY, value INTEGER)    'last_seq', 'replay_from_seq'
//   alert_outbox(alert_id TEXT PRIMARY KEY, seq INTEGER, rank INTEGER, json TEXT,
//                file_done INTEGER, webhook_done INTEGER)
//
// The protocol that keeps the alert file exactly-once is described in live.h.
#include "detect/analytics/live.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <condition_variable>
#include <cstring>
#include <deque>
#include <mutex>
#include <thread>

#include "core/json.h"
#include "core/log.h"

namespace kw::detect::analytics {
namespace {

constexpr LogSource kKeywardUal{"m365", "audit", ""};
constexpr size_t kMaxLatencySamples = 1 << 20;

struct Outgoing {
  std::string id;
  uint64_t seq = 0;
  int rank = 0;
  std::string json;
  int64_t record_time_ms = 0;
  std::string rule_id, level, title;
};

class Collector final : public AlertSink {
 public:
  struct Item {
    std::string rule_id, level, title, json;
  };
  void OnAlert(const Alert& a) override {
    items.push_back({a.rule->id, a.rule->level, a.rule->title, a.ToJson()});
  }
  std::vector<Item> items;
};

Status WriteAll(int fd, std::string_view data, const std::string& path) {
  while (!data.empty()) {
    ssize_t n = ::write(fd, data.data(), data.size());
    if (n < 0) {
      if (errno == EINTR) continue;
      return UnavailableError(path + ": write: " + std::strerror(errno));
    }
    data.remove_prefix(static_cast<size_t>(n));
  }
  return Status::Ok();
}

}  // namespace

class LiveDetector::Impl {
 public:
  LiveOptions o;
  audit::AuditLog* log = nullptr;
  std::unique_ptr<StormAnalytics> analytics;
  std::optional<WebhookUrl> webhook;
  int file_fd = -1;

  // Subscription -> detector queue.
  std::mutex mu;
  std::condition_variable cv_records, cv_space;
  std::deque<audit::AuditRecord> queue;
  bool feed_stopped = false;
  bool stopping = false;
  uint64_t sub_id = 0;
  bool subscribed = false;

  // Detector thread state.
  uint64_t processed_seq = 0;
  uint64_t warmed_seq = 0;
  std::deque<std::pair<uint64_t, int64_t>> recent;  // seq, time of committed-or-processed records
  std::vector<Outgoing> uncommitted;  // alerts whose commit failed, retried with the next batch
  std::vector<std::string> file_done_ids;

  // Committed state, for other threads.
  mutable std::mutex seq_mu;
  mutable std::condition_variable seq_cv;
  uint64_t committed = 0;

  // Webhook.
  std::mutex wh_mu;
  std::condition_variable wh_cv;
  std::deque<std::pair<std::string, std::string>> wh_queue;
  bool wh_stop = false;
  std::vector<std::string> webhook_done_ids;

  mutable std::mutex stats_mu;
  Stats stats;
  std::vector<int64_t> latencies;

  std::thread detector, webhook_thread;
  bool stopped = false;

  Status InitTables(uint64_t* last_seq, uint64_t* replay_from);
  Status Reconcile();
  void OnRecord(const audit::AuditRecord& r);
  void RunDetector();
  void ProcessBatch(std::vector<audit::AuditRecord>& batch);
  Status CommitBatch(const std::vector<Outgoing>& out, uint64_t replay_from);
  void Deliver(std::vector<Outgoing>& out);
  void Publish();  // committed_seq = processed_seq, once the batch's alerts are delivered
  void RunWebhook();
  void Enqueue(std::string id, std::string json);
};

Status LiveDetector::Impl::InitTables(uint64_t* last_seq, uint64_t* replay_from) {
  sqlite::Db& db = analytics->db();
  KW_RETURN_IF_ERROR(db.Exec(R"sql(
    CREATE TABLE IF NOT EXISTS live_state(key TEXT PRIMARY KEY, value INTEGER NOT NULL);
    CREATE TABLE IF NOT EXISTS alert_outbox(alert_id TEXT PRIMARY KEY, seq INTEGER NOT NULL,
      rank INTEGER NOT NULL, json TEXT NOT NULL, file_done INTEGER NOT NULL,
      webhook_done INTEGER NOT NULL);
  )sql"));
  KW_ASSIGN_OR_RETURN(auto st, db.Prepare("SELECT key, value FROM live_state"));
  *last_seq = 0;
  *replay_from = 0;
  while (true) {
    KW_ASSIGN_OR_RETURN(bool row, st.Step());
    if (!row) break;
    if (st.Text(0) == "last_seq") *last_seq = static_cast<uint64_t>(st.Int(1));
    if (st.Text(0) == "replay_from_seq") *replay_from = static_cast<uint64_t>(st.Int(1));
  }
  return Status::Ok();
}

// Appends to the alert file the committed alerts it may lack (a crash between commit and write).
Status LiveDetector::Impl::Reconcile() {
  sqlite::Db& db = analytics->db();
  std::vector<std::pair<std::string, std::string>> missing;  // id, json
  {
    KW_ASSIGN_OR_RETURN(auto st, db.Prepare(
        "SELECT alert_id, json FROM alert_outbox WHERE file_done = 0 ORDER BY seq, rank"));
    while (true) {
      KW_ASSIGN_OR_RETURN(bool row, st.Step());
      if (!row) break;
      missing.push_back({st.Text(0), st.Text(1)});
    }
  }
  if (file_fd >= 0 && !missing.empty()) {
    struct stat sb;
    if (fstat(file_fd, &sb) != 0) return UnavailableError(o.alerts_path + ": stat failed");
    size_t want = 64 << 10;
    for (const auto& m : missing) want += 2 * m.second.size() + 64;
    off_t size = sb.st_size;
    off_t from = size > static_cast<off_t>(want) ? size - static_cast<off_t>(want) : 0;
    std::string tail(static_cast<size_t>(size - from), '\0');
    ssize_t n = pread(file_fd, tail.data(), tail.size(), from);
    if (n != static_cast<ssize_t>(tail.size())) return UnavailableError(o.alerts_path + ": read failed");
    // A torn last line (a crash during the append) is cut off: its alert is appended again.
    size_t last_nl = tail.rfind('\n');
    off_t good = last_nl == std::string::npos ? from : from + static_cast<off_t>(last_nl) + 1;
    if (good < size && (last_nl != std::string::npos || from == 0)) {
      if (ftruncate(file_fd, good) != 0) return UnavailableError(o.alerts_path + ": truncate failed");
      tail.resize(static_cast<size_t>(good - from));
    }
    std::string append;
    for (const auto& [id, json] : missing) {
      if (tail.find("\"alert_id\":\"" + id + "\"") != std::string::npos) continue;
      append += json;
      append += '\n';
      std::lock_guard l(stats_mu);
      ++stats.recovered_to_file;
    }
    if (!append.empty()) {
      KW_RETURN_IF_ERROR(WriteAll(file_fd, append, o.alerts_path));
      if (fsync(file_fd) != 0) return UnavailableError(o.alerts_path + ": fsync failed");
    }
  }
  if (!missing.empty()) {
    KW_RETURN_IF_ERROR(db.Exec("UPDATE alert_outbox SET file_done = 1 WHERE file_done = 0"));
  }
  if (!webhook) {
    KW_RETURN_IF_ERROR(db.Exec("UPDATE alert_outbox SET webhook_done = 1 WHERE webhook_done = 0"));
  } else {
    KW_ASSIGN_OR_RETURN(auto st, db.Prepare(
        "SELECT alert_id, json FROM alert_outbox WHERE webhook_done = 0 ORDER BY seq, rank"));
    while (true) {
      KW_ASSIGN_OR_RETURN(bool row, st.Step());
      if (!row) break;
      Enqueue(st.Text(0), st.Text(1));
    }
  }
  return db.Exec("DELETE FROM alert_outbox WHERE file_done = 1 AND webhook_done = 1");
}

void LiveDetector::Impl::OnRecord(const audit::AuditRecord& r) {
  std::unique_lock l(mu);
  cv_space.wait(l, [&] { return queue.size() < o.queue_limit || feed_stopped; });
  if (feed_stopped) return;  // not processed, not committed: processed after the next Start
  queue.push_back(r);
  cv_records.notify_one();
}

void LiveDetector::Impl::RunDetector() {
  std::vector<audit::AuditRecord> batch;
  while (true) {
    {
      std::unique_lock l(mu);
      cv_records.wait(l, [&] { return !queue.empty() || stopping; });
      if (queue.empty() && stopping) break;
      while (!queue.empty() && batch.size() < o.max_batch) {
        batch.push_back(std::move(queue.front()));
        queue.pop_front();
      }
      cv_space.notify_all();
    }
    ProcessBatch(batch);
    batch.clear();
  }
  // Final commit: the delivery marks of the last batch.
  std::vector<Outgoing> none;
  uint64_t rf = recent.empty() ? processed_seq + 1 : recent.front().first;
  Status s = CommitBatch(none, rf);
  if (!s.ok()) Log(LogLevel::kError, "detect live: final commit: {}", s.message());
  else Publish();
}

void LiveDetector::Impl::ProcessBatch(std::vector<audit::AuditRecord>& batch) {
  std::vector<Outgoing> out = std::move(uncommitted);
  uncommitted.clear();
  Collector collector;
  uint64_t normal = 0, warm = 0;
  for (const audit::AuditRecord& r : batch) {
    if (r.seq <= processed_seq) {
      // Replayed for warm-up (or delivered twice by the subscription: skipped).
      if (r.seq > warmed_seq) {
        std::string json = audit::ToUalJson(r);
        analytics->Process(json, kKeywardUal, collector, ProcessMode::kWarmup).IgnoreError();
        warmed_seq = r.seq;
        ++warm;
      }
      continue;
    }
    std::string json = audit::ToUalJson(r);
    collector.items.clear();
    Status s = analytics->Process(json, kKeywardUal, collector);
    if (!s.ok()) Log(LogLevel::kError, "detect live: audit record {}: {}", r.seq, s.message());
    int rank = 0;
    for (auto& item : collector.items) {
      Outgoing g;
      g.id = std::to_string(r.seq) + "-" + std::to_string(rank);
      g.seq = r.seq;
      g.rank = rank++;
      g.record_time_ms = r.time_ms;
      json::Writer w;
      w.BeginObject();
      w.Key("alert_id").String(g.id);
      w.Key("audit_seq").Uint(r.seq);
      w.Key("detected_at").String(FormatIsoTime(o.clock->NowMillis()));
      w.Key("rule_id").String(item.rule_id);
      w.Key("level").String(item.level);
      w.Key("title").String(item.title);
      w.Key("tenant").String(r.tenant_id);
      w.Key("alert").Raw(item.json);
      w.EndObject();
      g.json = w.Take();
      g.rule_id = std::move(item.rule_id);
      g.level = std::move(item.level);
      g.title = std::move(item.title);
      out.push_back(std::move(g));
    }
    processed_seq = r.seq;
    warmed_seq = r.seq;
    recent.push_back({r.seq, r.time_ms});
    ++normal;
  }
  // The oldest record still inside the longest in-memory window of the newest one.
  if (!recent.empty()) {
    int64_t newest = recent.back().second;
    int64_t span = o.analytics.bulk_window_ms;
    while (recent.size() > 1 && recent.front().second < newest - span) recent.pop_front();
    while (recent.size() > 100000) recent.pop_front();
  }
  uint64_t replay_from = recent.empty() ? processed_seq + 1 : recent.front().first;
  {
    std::lock_guard l(stats_mu);
    stats.records += normal;
    stats.warmup_records += warm;
  }
  if (normal == 0 && out.empty()) return;
  Status s = CommitBatch(out, replay_from);
  if (!s.ok()) {
    Log(LogLevel::kError, "detect live: commit of audit records up to {} failed (retried with the next batch): {}",
        processed_seq, s.message());
    std::lock_guard l(stats_mu);
    ++stats.commit_failures;
    uncommitted = std::move(out);
    return;
  }
  Deliver(out);
  Publish();
}

Status LiveDetector::Impl::CommitBatch(const std::vector<Outgoing>& out, uint64_t replay_from) {
  std::vector<std::string> wh_done;
  {
    std::lock_guard l(wh_mu);
    wh_done.swap(webhook_done_ids);
  }
  Status s = analytics->Commit([&](sqlite::Db& db) -> Status {
    if (!out.empty()) {
      KW_ASSIGN_OR_RETURN(auto ins, db.Prepare(
          "INSERT OR REPLACE INTO alert_outbox VALUES(?1, ?2, ?3, ?4, 0, ?5)"));
      for (const Outgoing& g : out) {
        ins.Bind(1, g.id).Bind(2, static_cast<int64_t>(g.seq)).Bind(3, static_cast<int64_t>(g.rank))
            .Bind(4, g.json).Bind(5, static_cast<int64_t>(webhook ? 0 : 1));
        KW_RETURN_IF_ERROR(ins.Run());
        KW_RETURN_IF_ERROR(ins.Reset());
      }
    }
    for (auto [ids, sql] : {std::pair{&file_done_ids, "UPDATE alert_outbox SET file_done = 1 WHERE alert_id = ?1"},
                            std::pair{&wh_done, "UPDATE alert_outbox SET webhook_done = 1 WHERE alert_id = ?1"}}) {
      if (ids->empty()) continue;
      KW_ASSIGN_OR_RETURN(auto up, db.Prepare(sql));
      for (const auto& id : *ids) {
        up.Bind(1, id);
        KW_RETURN_IF_ERROR(up.Run());
        KW_RETURN_IF_ERROR(up.Reset());
      }
    }
    KW_RETURN_IF_ERROR(db.Exec("DELETE FROM alert_outbox WHERE file_done = 1 AND webhook_done = 1"));
    KW_ASSIGN_OR_RETURN(auto st, db.Prepare("INSERT OR REPLACE INTO live_state VALUES(?1, ?2)"));
    st.Bind(1, "last_seq").Bind(2, static_cast<int64_t>(processed_seq));
    KW_RETURN_IF_ERROR(st.Run());
    KW_RETURN_IF_ERROR(st.Reset());
    st.Bind(1, "replay_from_seq").Bind(2, static_cast<int64_t>(replay_from));
    return st.Run();
  });
  if (!s.ok()) {
    std::lock_guard l(wh_mu);
    webhook_done_ids.insert(webhook_done_ids.end(), wh_done.begin(), wh_done.end());
    return s;
  }
  file_done_ids.clear();
  {
    std::lock_guard l(stats_mu);
    ++stats.commits;
  }
  return Status::Ok();
}

void LiveDetector::Impl::Publish() {
  {
    std::lock_guard l(seq_mu);
    committed = processed_seq;
  }
  seq_cv.notify_all();
}

void LiveDetector::Impl::Deliver(std::vector<Outgoing>& out) {
  if (out.empty()) return;
  std::string lines;
  for (const Outgoing& g : out) {
    if (o.log_alerts) {
      Log(LogLevel::kWarning, "detect: ALERT [{}] {} (alert {}, rule {}, audit seq {})", g.level,
          g.title, g.id, g.rule_id, g.seq);
    }
    lines += g.json;
    lines += '\n';
  }
  bool file_ok = true;
  if (file_fd >= 0) {
    Status s = WriteAll(file_fd, lines, o.alerts_path);
    if (s.ok() && fsync(file_fd) != 0) s = UnavailableError(o.alerts_path + ": fsync failed");
    if (!s.ok()) {
      file_ok = false;
      Log(LogLevel::kError, "detect live: alert file: {} (the alerts are re-appended after a restart)",
          s.message());
      std::lock_guard l(stats_mu);
      ++stats.file_failures;
    }
  }
  int64_t now = o.clock->NowMillis();
  {
    std::lock_guard l(stats_mu);
    stats.alerts += out.size();
    for (const Outgoing& g : out) {
      if (latencies.size() < kMaxLatencySamples) latencies.push_back(now - g.record_time_ms);
    }
  }
  for (Outgoing& g : out) {
    if (file_ok) file_done_ids.push_back(g.id);
    if (o.on_alert) o.on_alert(g.json);
    if (webhook) Enqueue(g.id, std::move(g.json));
  }
}

void LiveDetector::Impl::Enqueue(std::string id, std::string json) {
  std::lock_guard l(wh_mu);
  if (wh_queue.size() >= o.webhook.queue_limit) {
    std::lock_guard s(stats_mu);
    ++stats.webhook_dropped;
    return;  // stays webhook_done = 0 in the outbox: re-sent after the next Start
  }
  wh_queue.push_back({std::move(id), std::move(json)});
  wh_cv.notify_one();
}

void LiveDetector::Impl::RunWebhook() {
  while (true) {
    std::pair<std::string, std::string> item;
    {
      std::unique_lock l(wh_mu);
      wh_cv.wait(l, [&] { return !wh_queue.empty() || wh_stop; });
      if (wh_stop) return;
      item = std::move(wh_queue.front());
      wh_queue.pop_front();
    }
    int backoff = o.webhook.initial_backoff_ms;
    for (int attempt = 1;; ++attempt) {
      Status s = PostAlert(*webhook, item.first, item.second, o.webhook.timeout_ms);
      if (s.ok()) {
        std::lock_guard l(wh_mu);
        webhook_done_ids.push_back(item.first);
        std::lock_guard st(stats_mu);
        ++stats.webhook_delivered;
        break;
      }
      {
        std::lock_guard st(stats_mu);
        ++stats.webhook_attempt_failures;
      }
      if (attempt >= o.webhook.max_attempts) {
        Log(LogLevel::kWarning, "detect live: webhook gave up on alert {} after {} attempts: {}",
            item.first, attempt, s.message());
        std::lock_guard st(stats_mu);
        ++stats.webhook_gave_up;
        break;
      }
      Log(LogLevel::kWarning, "detect live: webhook attempt {} for alert {} failed: {}", attempt,
          item.first, s.message());
      std::unique_lock l(wh_mu);
      if (wh_cv.wait_for(l, std::chrono::milliseconds(backoff), [&] { return wh_stop; })) return;
      backoff = std::min(backoff * 2, o.webhook.max_backoff_ms);
    }
  }
}

// ---- public API ----------------------------------------------------------------------------------

LiveDetector::LiveDetector(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

LiveDetector::~LiveDetector() { Stop(); }

Result<std::unique_ptr<LiveDetector>> LiveDetector::Start(audit::AuditLog* log, LiveOptions options) {
  if (log == nullptr) return InvalidArgumentError("LiveDetector: no audit log");
  if (options.max_batch == 0 || options.queue_limit == 0) {
    return InvalidArgumentError("LiveDetector: max_batch and queue_limit must be > 0");
  }
  if (options.clock == nullptr) return InvalidArgumentError("LiveDetector: no clock");
  auto impl = std::make_unique<Impl>();
  impl->o = std::move(options);
  impl->log = log;
  if (!impl->o.webhook.url.empty()) {
    KW_ASSIGN_OR_RETURN(WebhookUrl u, ParseWebhookUrl(impl->o.webhook.url));
    if (impl->o.webhook.timeout_ms <= 0 || impl->o.webhook.max_attempts <= 0 ||
        impl->o.webhook.initial_backoff_ms < 0 || impl->o.webhook.max_backoff_ms < 0) {
      return InvalidArgumentError("LiveDetector: webhook timeout/attempts/backoff must be positive");
    }
    impl->webhook = u;
  }
  KW_ASSIGN_OR_RETURN(impl->analytics, StormAnalytics::Open(impl->o.analytics));
  uint64_t last_seq = 0, replay_from = 0;
  KW_RETURN_IF_ERROR(impl->InitTables(&last_seq, &replay_from));
  if (!impl->o.alerts_path.empty()) {
    impl->file_fd = ::open(impl->o.alerts_path.c_str(), O_RDWR | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
    if (impl->file_fd < 0) {
      return UnavailableError(impl->o.alerts_path + ": cannot open the alert file: " +
                              std::strerror(errno));
    }
  }
  Status rs = impl->Reconcile();
  if (!rs.ok()) {
    if (impl->file_fd >= 0) ::close(impl->file_fd);
    return rs.WithContext("LiveDetector: recovering the alert outbox");
  }
  impl->processed_seq = last_seq;
  impl->committed = last_seq;
  if (replay_from == 0 || replay_from > last_seq + 1) replay_from = last_seq + 1;
  impl->warmed_seq = replay_from - 1;
  Impl* raw = impl.get();
  impl->detector = std::thread([raw] { raw->RunDetector(); });
  if (impl->webhook) impl->webhook_thread = std::thread([raw] { raw->RunWebhook(); });
  std::unique_ptr<LiveDetector> live(new LiveDetector(std::move(impl)));
  auto sub = log->Subscribe(replay_from, [raw](const audit::AuditRecord& r) { raw->OnRecord(r); });
  if (!sub.ok()) {
    live->Stop();
    return sub.status().WithContext("LiveDetector: subscribing to the audit log");
  }
  raw->sub_id = *sub;
  raw->subscribed = true;
  Log(LogLevel::kInfo, "detect live: watching audit log {} from seq {} (committed {})", log->dir(),
      replay_from, last_seq);
  return live;
}

void LiveDetector::Stop() {
  Impl& m = *impl_;
  if (m.stopped) return;
  m.stopped = true;
  {
    std::lock_guard l(m.mu);
    m.feed_stopped = true;
  }
  m.cv_space.notify_all();
  if (m.subscribed) m.log->Unsubscribe(m.sub_id);
  {
    std::lock_guard l(m.mu);
    m.stopping = true;
  }
  m.cv_records.notify_all();
  if (m.detector.joinable()) m.detector.join();
  {
    std::lock_guard l(m.wh_mu);
    m.wh_stop = true;
  }
  m.wh_cv.notify_all();
  if (m.webhook_thread.joinable()) m.webhook_thread.join();
  // Webhook deliveries that finished after the detector's final commit.
  bool pending;
  {
    std::lock_guard l(m.wh_mu);
    pending = !m.webhook_done_ids.empty();
  }
  if (pending) {
    Status s = m.CommitBatch({}, m.recent.empty() ? m.processed_seq + 1 : m.recent.front().first);
    if (!s.ok()) Log(LogLevel::kError, "detect live: final commit: {}", s.message());
  }
  if (m.file_fd >= 0) {
    ::close(m.file_fd);
    m.file_fd = -1;
  }
}

uint64_t LiveDetector::committed_seq() const {
  std::lock_guard l(impl_->seq_mu);
  return impl_->committed;
}

bool LiveDetector::WaitForSeq(uint64_t seq, int timeout_ms) const {
  std::unique_lock l(impl_->seq_mu);
  return impl_->seq_cv.wait_for(l, std::chrono::milliseconds(timeout_ms),
                                [&] { return impl_->committed >= seq; });
}

LiveDetector::Stats LiveDetector::stats() const {
  std::lock_guard l(impl_->stats_mu);
  Stats s = impl_->stats;
  std::vector<int64_t> v = impl_->latencies;
  s.latency_samples = v.size();
  if (!v.empty()) {
    auto pct = [&](double p) {
      size_t k = std::min(v.size() - 1, static_cast<size_t>(p * static_cast<double>(v.size())));
      std::nth_element(v.begin(), v.begin() + static_cast<std::ptrdiff_t>(k), v.end());
      return static_cast<double>(v[k]);
    };
    s.latency_p50_ms = pct(0.50);
    s.latency_p99_ms = pct(0.99);
  }
  return s;
}

}  // namespace kw::detect::analytics
