// keyward serve: runs the identity service (OIDC discovery, JWKS, authorization, token,
// introspection and revocation endpoints, admin key API) on the HTTP server until SIGTERM or
// SIGINT, with every key and token event in the tamper-evident audit log (DATA_DIR/audit).
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <condition_variable>
#include <mutex>
#include <thread>
#include <cstdint>
#include <cstring>
#include <cstdlib>
#include <iostream>
#include <memory>
#include <string>

#include <fmt/format.h>

#include "cli/commands.h"
#include "core/log.h"
#include "http/server.h"
#include "audit/audit_log.h"
#include "identity/audit_log_sink.h"
#include "identity/master_key.h"
#include "identity/service.h"
#include "detect/analytics/live.h"
#include "mail/lmtp.h"
#include "mail/service.h"
#include "token/trust_store.h"

namespace kw::cli {
namespace {

struct ServeFlags {
  std::string data_dir;
  std::string listen = "127.0.0.1";
  uint16_t port = 0;
  std::string base_url;
  bool enable_password_grant = false;
  int64_t audit_retention_days = 180;
  std::string mail_audience = "api://keyward-mail";
  // Handlers block on durable audit appends (an fsync each, shared by concurrent appenders
  // through group commit) and on Argon2id at sign-in: many threads keep the cores busy.
  int threads = 64;
  bool no_detect = false;
  std::string alert_webhook;
  int learning_days = 14;
  bool no_mail = false;
  int lmtp_port = -1;  // -1: no LMTP listener
};

// Applies the audit retention at start and then once a day, until destroyed.
class RetentionTimer {
 public:
  explicit RetentionTimer(audit::AuditLog* log) : log_(log), thread_([this] { Run(); }) {}
  ~RetentionTimer() {
    {
      std::lock_guard lock(mu_);
      stop_ = true;
    }
    cv_.notify_all();
    thread_.join();
  }

 private:
  void Run() {
    std::unique_lock lock(mu_);
    while (!stop_) {
      lock.unlock();
      Status s = log_->ApplyRetention();
      if (!s.ok()) Log(LogLevel::kWarning, "audit retention failed: {}", s.ToString());
      lock.lock();
      cv_.wait_for(lock, std::chrono::hours(24), [this] { return stop_; });
    }
  }

  audit::AuditLog* const log_;
  std::mutex mu_;
  std::condition_variable cv_;
  bool stop_ = false;  // guarded by mu_
  std::thread thread_;
};

int RunServe(const ServeFlags& f) {
  if (::mkdir(f.data_dir.c_str(), 0700) != 0 && errno != EEXIST) {
    std::cerr << "keyward: cannot create data directory " << f.data_dir << ": "
              << std::strerror(errno) << "\n";
    return kExitUsage;
  }
  // Nothing is created next to an unsafe master key (IdentityService::Open checks it again).
  if (::access((f.data_dir + "/master.key").c_str(), F_OK) == 0) {
    auto master = identity::MasterKey::Load(f.data_dir + "/master.key");
    if (!master.ok()) {
      std::cerr << "keyward: " << master.status().message() << "\n";
      return kExitUsage;
    }
  }
  // One tamper-evident log for every service: identity's key and token events now, mail
  // accesses beside them.
  audit::AuditLogOptions audit_options;
  audit_options.dir = f.data_dir + "/audit";
  audit_options.retention_days = f.audit_retention_days;
  auto audit_log = audit::AuditLog::Open(audit_options);
  if (!audit_log.ok()) {
    std::cerr << "keyward: audit log: " << audit_log.status().message() << "\n";
    return kExitUsage;
  }
  std::shared_ptr<audit::AuditLog> log = std::move(*audit_log);
  RetentionTimer retention(log.get());
  // The issuers (and so the mail verifier's policy) are fixed at start, so the port must be known
  // before the services open: with --port 0 and no --base-url, take a free port now.
  uint16_t port = f.port;
  if (port == 0 && f.base_url.empty()) {
    auto free_port = http::PickFreePort(f.listen);
    if (!free_port.ok()) {
      std::cerr << "keyward: " << free_port.status().message() << "\n";
      return kExitUsage;
    }
    port = *free_port;
  }
  // An IPv6 literal needs brackets in a URL.
  std::string host = f.listen.find(':') != std::string::npos ? "[" + f.listen + "]" : f.listen;
  const std::string base = f.base_url.empty() ? fmt::format("http://{}:{}", host, port) : f.base_url;
  identity::IdentityServiceOptions options;
  options.base_url = base;
  options.audit_sink = std::make_shared<identity::AuditLogSink>(log);
  options.data_dir = f.data_dir;
  options.enable_password_grant = f.enable_password_grant;
  auto service = identity::IdentityService::Open(options);
  if (!service.ok()) {
    std::cerr << "keyward: " << service.status().message() << "\n";
    return kExitUsage;
  }
  auto router = (*service)->BuildRouter();
  if (!router.ok()) {
    std::cerr << "keyward: " << router.status().message() << "\n";
    return kExitUsage;
  }
  // The mail service shares the identity service's TrustStore: a revoked key is refused by the
  // mail verifier the moment the ring revokes it.
  std::unique_ptr<mail::MailService> mail_service;
  if (!f.no_mail) {
    mail::MailServiceOptions mo;
    mo.data_dir = f.data_dir;
    mo.trust_store = (*service)->trust_store();
    mo.audience = f.mail_audience;
    mo.base_url = base;
    mo.issuers = {identity::IssuerUrl(base, token::kTenantPlaceholder)};
    mo.audit = log.get();
    auto opened = mail::MailService::Open(std::move(mo));
    if (!opened.ok()) {
      std::cerr << "keyward: mail service: " << opened.status().message() << "\n";
      return kExitUsage;
    }
    mail_service = std::move(*opened);
    auto mail_router = mail_service->BuildRouter();
    Status merged = mail_router.ok() ? router->Merge(*mail_router) : mail_router.status();
    if (!merged.ok()) {
      std::cerr << "keyward: mail service: " << merged.message() << "\n";
      return kExitUsage;
    }
  }
  http::ServerOptions server_options;
  server_options.address = f.listen;
  server_options.port = port;
  server_options.threads = f.threads;
  // JMAP uploads and requests up to the mail service's advertised maxSizeUpload.
  server_options.max_body_bytes = 50u << 20;
  http::Server server(server_options, std::move(*router));
  Status s = server.Start();
  if (!s.ok()) {
    std::cerr << "keyward: " << s.message() << "\n";
    return kExitUsage;
  }
  std::string url = fmt::format("http://{}:{}", host, server.port());
  s = server.StopOnSignals();
  if (!s.ok()) {
    std::cerr << "keyward: " << s.message() << "\n";
    server.Stop();
    return kExitUsage;
  }
  // Live detection on the audit stream: alerts to the log, DATA_DIR/alerts.jsonl and the
  // webhook; baselines and the last processed sequence number in DATA_DIR/detect.db.
  std::unique_ptr<detect::analytics::LiveDetector> live;
  if (!f.no_detect) {
    detect::analytics::LiveOptions lo;
    lo.analytics.db_path = f.data_dir + "/detect.db";
    lo.analytics.learning_days = f.learning_days;
    lo.alerts_path = f.data_dir + "/alerts.jsonl";
    lo.webhook.url = f.alert_webhook;
    auto started = detect::analytics::LiveDetector::Start(log.get(), lo);
    if (!started.ok()) {
      std::cerr << "keyward: live detection: " << started.status().message() << "\n";
      server.Stop();
      return kExitUsage;
    }
    live = std::move(*started);
  }
  // Delivery from an MTA (RFC 2033), into the same store the JMAP API serves.
  std::unique_ptr<mail::LmtpServer> lmtp;
  if (mail_service && f.lmtp_port >= 0) {
    mail::LmtpOptions lo;
    lo.address = f.listen;
    lo.port = static_cast<uint16_t>(f.lmtp_port);
    auto started = mail::LmtpServer::Start(lo, &mail_service->store());
    if (!started.ok()) {
      std::cerr << "keyward: lmtp: " << started.status().message() << "\n";
      server.Stop();
      return kExitUsage;
    }
    lmtp = std::move(*started);
  }
  std::cout << "listening on " << url << std::endl;  // flushed: scripts wait for this line
  if (lmtp) std::cout << "lmtp on " << host << ":" << lmtp->port() << std::endl;
  server.Wait();
  if (lmtp) lmtp->Stop();
  if (live) live->Stop();  // before the audit log closes
  return kExitOk;
}

}  // namespace

void RegisterServeCommand(CLI::App& app, int* exit_code) {
  auto f = std::make_shared<ServeFlags>();
  const char* env = std::getenv("KEYWARD_DATA_DIR");
  f->data_dir = env && *env ? env : "keyward-data";
  auto* cmd = app.add_subcommand(
      "serve", "Run the identity and JMAP mail services over HTTP until SIGTERM/SIGINT");
  cmd->add_option("--data-dir", f->data_dir, "Data directory (default $KEYWARD_DATA_DIR or ./keyward-data)");
  cmd->add_option("--listen", f->listen, "Address to listen on (an IP literal; default 127.0.0.1)");
  cmd->add_option("--port", f->port, "Port (default 0: an ephemeral port, printed at start)");
  cmd->add_option("--base-url", f->base_url, "Public base URL of issuers (default http://LISTEN:PORT)");
  cmd->add_flag("--enable-password-grant", f->enable_password_grant,
                "Accept grant_type=password at the token endpoint");
  cmd->add_option("--mail-audience", f->mail_audience,
                  "Audience the mail service accepts in access tokens (default api://keyward-mail)");
  cmd->add_flag("--no-mail", f->no_mail, "Serve identity only");
  cmd->add_option("--lmtp-port", f->lmtp_port,
                  "Also accept mail from an MTA over LMTP on LISTEN:PORT (0: an ephemeral port; "
                  "default: no LMTP). Unauthenticated: keep it on loopback")
      ->check(CLI::Range(0, 65535));
  cmd->add_flag("--no-detect", f->no_detect, "Without live detection on the audit stream");
  cmd->add_option("--alert-webhook", f->alert_webhook,
                  "POST each alert (JSON) to this loopback http:// URL, at least once");
  cmd->add_option("--learning-days", f->learning_days,
                  "Days per tenant that only teach the detection baselines (default 14)")
      ->check(CLI::Range(0, 3650));
  cmd->add_option("--threads", f->threads,
                  "HTTP handler threads (default 64: handlers wait on fsync of audit records)")
      ->check(CLI::Range(1, 1024));
  cmd->add_option("--audit-retention-days", f->audit_retention_days,
                  "Days of audit records kept (default 180; 0: forever)")
      ->check(CLI::Range(int64_t{0}, int64_t{36500}));
  cmd->callback([=] { *exit_code = RunServe(*f); });
}

}  // namespace kw::cli
