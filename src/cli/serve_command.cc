// keyward serve: runs the identity service (OIDC discovery, JWKS, token, introspection and
// revocation endpoints) on the HTTP server until SIGTERM or SIGINT.
#include <cstdint>
#include <cstdlib>
#include <iostream>
#include <memory>
#include <string>

#include <fmt/format.h>

#include "cli/commands.h"
#include "http/server.h"
#include "identity/service.h"

namespace kw::cli {
namespace {

struct ServeFlags {
  std::string data_dir;
  std::string listen = "127.0.0.1";
  uint16_t port = 0;
  std::string base_url;
  bool enable_password_grant = false;
};

int RunServe(const ServeFlags& f) {
  identity::IdentityServiceOptions options;
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
  cmd->callback([=] { *exit_code = RunServe(*f); });
}

}  // namespace kw::cli
