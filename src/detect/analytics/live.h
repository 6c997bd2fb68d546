// Live detection: the Storm-0558 analytics run on Keyward's own audit log as it is written.
//
//   audit::AuditLog --Subscribe(from)--> [subscription thread] --bounded queue-->
//   [detector thread: ToUalJson, StormAnalytics::Process, one SQLite commit per batch]
//   --> kw::Log (warning), JSON-lines file (append + fsync), webhook queue --> [webhook thread]
//
// Typical use (`keyward serve`):
//
//   LiveOptions o;
//   o.analytics.db_path = data_dir + "/detect.db";
//   o.alerts_path = data_dir + "/alerts.jsonl";
//   o.webhook.url = "http://127.0.0.1:9000/alerts";   // optional
//   KW_ASSIGN_OR_RETURN(auto live, LiveDetector::Start(audit_log.get(), o));
//   ...
//   live->Stop();   // before the AuditLog is destroyed
//
// Exactly-once to the alert file, across crashes. The database (the analytics' baseline
// database) holds, besides the baselines:
//   live_state(key, value): last_seq (the newest audit record whose effects are committed) and
//                           replay_from_seq (see warm-up below);
//   alert_outbox(alert_id, seq, json, file_done, webhook_done).
// For each batch of records (up to max_batch, fewer when the log is quiet) the detector thread
// runs the analytics, then commits in ONE SQLite transaction (WAL, synchronous=FULL): the
// baseline changes, the batch's alerts as outbox rows, last_seq, and the delivery marks of the
// previous batch. Only then are the alerts delivered: written to the log, appended to the file
// and fsync'ed, queued for the webhook; their file_done marks ride on the next commit.
//   - A crash before the commit: nothing of the batch is persisted and nothing was delivered; the
//     restart subscribes from last_seq + 1 and processes the batch again, from the same baselines.
//     No alert is lost, none is repeated.
//   - A crash after the commit: the outbox rows with file_done = 0 (the last batch at most) are
//     looked up at restart in the tail of the alert file (by "alert_id"); those missing are
//     appended. A torn last line is cut off first. So the file holds each alert exactly once.
//   - The webhook is at-least-once: rows with webhook_done = 0 are sent again after a restart,
//     with the header X-Keyward-Alert-Id so that the receiver can drop duplicates.
//   - The kw::Log line is written once per delivery and is not a durable channel.
// alert_id is "<audit seq>-<n>" (n: the alert's rank among the alerts of that record).
//
// Warm-up. Windows (bulk reads, Sigma correlations) are not persisted. replay_from_seq is the
// oldest record within the longest window of the newest committed record; at restart the
// subscription starts there and records up to last_seq go through ProcessMode::kWarmup (windows
// only: no alert, no baseline change), so a burst that spans a restart is still counted.
//
// Latency: from a record's time (stamped by AuditLog::Append) to its alert written to the file,
// reported as p50/p99 in Stats (and measured end to end by live_test).
//
// Threads: Start() creates the detector thread and the webhook thread; the AuditLog runs the
// subscription callback on its own thread. Stats/committed_seq are thread-safe. A LiveDetector
// owns its StormAnalytics and database: one LiveDetector per database. Stop() (or the
// destructor) unsubscribes, processes what was queued, commits, and joins both threads; the
// webhook thread gives up its current retries at Stop (those alerts stay undelivered in the
// outbox and are sent after the next Start).
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>

#include "audit/audit_log.h"
#include "core/clock.h"
#include "core/status.h"
#include "detect/analytics/analytics.h"

namespace kw::detect::analytics {

struct WebhookOptions {
  // "http://127.0.0.1:PORT/path", "http://localhost:PORT/path" or "http://[::1]:PORT/path".
  // Empty: no webhook. Only loopback hosts are accepted (a relay forwards elsewhere); https is
  // not supported.
  std::string url;
  int timeout_ms = 2000;         // per attempt: connect + send + response
  int max_attempts = 5;          // then the alert stays undelivered until the next Start
  int initial_backoff_ms = 100;  // doubled after each failed attempt...
  int max_backoff_ms = 5000;     // ...up to this
  size_t queue_limit = 10000;    // alerts waiting; beyond, dropped (and re-sent after restart)
};

struct LiveOptions {
  AnalyticsOptions analytics;  // analytics.db_path also holds the live state and outbox
  std::string alerts_path;     // JSON-lines alert file (created 0600); empty: none
  WebhookOptions webhook;
  bool log_alerts = true;      // one kw::Log warning per alert
  size_t max_batch = 512;      // records per commit at most
  size_t queue_limit = 8192;   // records queued between the subscription and the detector
  const Clock* clock = Clock::System();
  // Called on the detector thread after each alert is in the file (tests, embedding). Must not
  // block for long.
  std::function<void(const std::string& alert_json)> on_alert;
};

// Parsed webhook URL. InvalidArgument for anything but http:// on a loopback host.
struct WebhookUrl {
  std::string host;  // as written (without brackets)
  std::string port;
  std::string target;
};
Result<WebhookUrl> ParseWebhookUrl(const std::string& url);

// Sends one alert: HTTP/1.1 POST of `body` (application/json) with X-Keyward-Alert-Id.
// OK for a 2xx answer; Unavailable (connection, timeout) or FailedPrecondition (other status)
// otherwise. Synchronous, bounded by timeout_ms.
Status PostAlert(const WebhookUrl& url, const std::string& alert_id, const std::string& body,
                 int timeout_ms);

class LiveDetector {
 public:
  // Opens the analytics (and its database), reconciles the outbox with the alert file, and
  // subscribes to `log` from the checkpoint. `log` must outlive the LiveDetector (or Stop()).
  static Result<std::unique_ptr<LiveDetector>> Start(audit::AuditLog* log, LiveOptions options);
  ~LiveDetector();
  LiveDetector(const LiveDetector&) = delete;
  LiveDetector& operator=(const LiveDetector&) = delete;

  // Idempotent; see the thread notes above.
  void Stop();

  // The newest audit sequence number whose effects are committed.
  uint64_t committed_seq() const;
  // Blocks until committed_seq() >= seq, with the alerts of those records delivered to the log
  // and the file (and queued for the webhook), or the timeout passes (false then). For tests
  // and for a clean shutdown after the last append.
  bool WaitForSeq(uint64_t seq, int timeout_ms) const;

  struct Stats {
    uint64_t records = 0;          // processed normally
    uint64_t warmup_records = 0;   // replayed for windows only
    uint64_t alerts = 0;           // delivered to the file/log
    uint64_t commits = 0;
    uint64_t commit_failures = 0;
    uint64_t file_failures = 0;
    uint64_t webhook_delivered = 0;
    uint64_t webhook_attempt_failures = 0;  // failed attempts (each retry counts)
    uint64_t webhook_gave_up = 0;           // alerts left undelivered after max_attempts
    uint64_t webhook_dropped = 0;           // not queued: queue full
    uint64_t recovered_to_file = 0;         // appended at Start from the outbox
    double latency_p50_ms = 0, latency_p99_ms = 0;  // record time -> alert in file
    uint64_t latency_samples = 0;
  };
  Stats stats() const;

  class Impl;

 private:
  explicit LiveDetector(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace kw::detect::analytics
