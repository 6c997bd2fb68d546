// keyward: one binary, many subcommands. Flags are parsed here; everything else is in src/.
#include <CLI/CLI.hpp>

#include "cli/commands.h"
#include "core/log.h"

int main(int argc, char** argv) {
  kw::SetLogSink(kw::StderrLogSink(), kw::LogLevel::kWarning);
  CLI::App app{"Keyward: mail that a stolen signing key cannot open"};
  app.require_subcommand(1);
  app.set_version_flag("--version", "keyward 0.1.0");
  int exit_code = kw::cli::kExitOk;
  kw::cli::RegisterTokenCommands(app, &exit_code);
  kw::cli::RegisterKeysCommands(app, &exit_code);
  kw::cli::RegisterDemoCommand(app, &exit_code);
  kw::cli::RegisterAdminCommands(app, &exit_code);
  kw::cli::RegisterServeCommand(app, &exit_code);
  kw::cli::RegisterHuntCommands(app, &exit_code);
  kw::cli::RegisterAuditCommands(app, &exit_code);
  kw::cli::RegisterMailCommands(app, &exit_code);
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    int rc = app.exit(e);
    return rc == 0 ? 0 : kw::cli::kExitUsage;
  }
  return exit_code;
}
