#include <iostream>

#include "cli/commands.h"
#include "sim/guard_demo.h"

namespace kw::cli {

void RegisterDemoCommand(CLI::App& app, int* exit_code) {
  auto* demo = app.add_subcommand(
      "demo", "Replay the 2023 forged-token attempts against the strict verifier and print "
              "what each one got");
  demo->callback([exit_code] {
    auto report = sim::RunGuardDemo();
    if (!report.ok()) {
      std::cerr << "keyward: demo failed: " << report.status().message() << "\n";
      *exit_code = kExitUsage;
      return;
    }
    std::cout << sim::FormatGuardDemo(*report);
    *exit_code = report->all_as_expected ? kExitOk : kExitRejected;
  });
}

}  // namespace kw::cli
