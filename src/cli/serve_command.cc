// keyward serve: runs the identity service (OIDC discovery, JWKS, authorization, token,
// introspection and revocation endpoints, admin key API) on the HTTP server until SIGTERM or
// SIGINT, with every key and token event in the tamper-evident audit log (DATA_DIR/audit).
#include <sys/stat.h>

#include <cerrno>
#include <cstdint>
#include <cstring>
#include <cstdlib>
#include <iostream>
#include <memory>
#include <string>

#include <fmt/format.h>

#include "cli/commands.h"
#include "http/server.h"
#include "audit/audit_log.h"
#include "identity/audit_log_sink.h"
#include "identity/service.h"

namespace kw::cli {
namespace {

struct ServeFlags {
  std::string data_dir;
  std::string listen = "127.0.0.1";
  uint16_t port = 0;
  std::string base_url;
  bool enable_password_grant = false;
  int64_t audit_retention_days = 180;
};

int RunServe(const ServeFlags& f) {
  if (::mkdir(f.data_dir.c_str(), 0700) != 0 && errno != EEXIST) {
    std::cerr << "keyward: cannot create data directory " << f.data_dir << ": "
              << std::strerror(errno) << "\n";
    return kExitUsage;
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
  identity::IdentityServiceOptions options;
  options.audit_sink = std::make_shared<identity::AuditLogSink>(log);
  options.data_dir = f.data_dir;
  options.base_url = f.base_url;
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
  http::ServerOptions server_options;
  server_options.address = f.listen;
  server_options.port = f.port;
  http::Server server(server_options, std::move(*router));
  Status s = server.Start();
  if (!s.ok()) {
    std::cerr << "keyward: " << s.message() << "\n";
    return kExitUsage;
  }
  // An IPv6 literal needs brackets in a URL.
  std::string host = f.listen.find(':') != std::string::npos ? "[" + f.listen + "]" : f.listen;
  std::string url = fmt::format("http://{}:{}", host, server.port());
  if (f.base_url.empty()) s = (*service)->SetBaseUrl(url);
  if (s.ok()) s = server.StopOnSignals();
  if (!s.ok()) {
    std::cerr << "keyward: " << s.message() << "\n";
    server.Stop();
    return kExitUsage;
  }
  std::cout << "listening on " << url << std::endl;  // flushed: scripts wait for this line
  server.Wait();
  return kExitOk;
}

}  // namespace

void RegisterServeCommand(CLI::App& app, int* exit_code) {
  auto f = std::make_shared<ServeFlags>();
  const char* env = std::getenv("KEYWARD_DATA_DIR");
  f->data_dir = env && *env ? env : "keyward-data";
  auto* cmd = app.add_subcommand("serve", "Run the identity service over HTTP until SIGTERM/SIGINT");
  cmd->add_option("--data-dir", f->data_dir, "Data directory (default $KEYWARD_DATA_DIR or ./keyward-data)");
  cmd->add_option("--listen", f->listen, "Address to listen on (an IP literal; default 127.0.0.1)");
  cmd->add_option("--port", f->port, "Port (default 0: an ephemeral port, printed at start)");
  cmd->add_option("--base-url", f->base_url, "Public base URL of issuers (default http://LISTEN:PORT)");
  cmd->add_flag("--enable-password-grant", f->enable_password_grant,
                "Accept grant_type=password at the token endpoint");
  cmd->add_option("--audit-retention-days", f->audit_retention_days,
                  "Days of audit records kept (default 180; 0: forever)")
      ->check(CLI::Range(int64_t{0}, int64_t{36500}));
  cmd->callback([=] { *exit_code = RunServe(*f); });
}

}  // namespace kw::cli
