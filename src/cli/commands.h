// Subcommand registration for the `keyward` binary. Each Register* adds its subcommands to the
// app; the callbacks parse nothing themselves beyond flags and call the libraries.
#pragma once

#include <CLI/CLI.hpp>

namespace kw::cli {

// Exit codes shared by every subcommand (documented in README.md).
inline constexpr int kExitOk = 0;
inline constexpr int kExitRejected = 1;  // the input was read and judged invalid (e.g. a token)
inline constexpr int kExitUsage = 2;     // bad flags, unreadable files, malformed configuration

void RegisterTokenCommands(CLI::App& app, int* exit_code);
void RegisterKeysCommands(CLI::App& app, int* exit_code);
void RegisterDemoCommand(CLI::App& app, int* exit_code);
void RegisterAdminCommands(CLI::App& app, int* exit_code);
void RegisterServeCommand(CLI::App& app, int* exit_code);
void RegisterHuntCommands(CLI::App& app, int* exit_code);
void RegisterAuditCommands(CLI::App& app, int* exit_code);
void RegisterMailCommands(CLI::App& app, int* exit_code);

}  // namespace kw::cli
