// `keyward demo` (the main job, `make run`) and `keyward simulate`: the 2023 campaign replayed
// against the real services (src/sim).
#include <stdlib.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <memory>
#include <string>

#include <fmt/format.h>

#include "cli/commands.h"
#include "sim/campaign.h"
#include "sim/guard_demo.h"
#include "sim/report.h"
#include "sim/simulation.h"

namespace kw::cli {
namespace {

struct SimFlags {
  sim::SimOptions options;
  std::string mode = "both";
  std::string out;  // directory for the data directories and the report; empty: a fresh temp dir
  bool guard_only = false;
};

// A fresh directory under $TMPDIR (or /tmp).
std::string MakeTempDir() {
  const char* tmp = std::getenv("TMPDIR");
  std::string pattern = std::string(tmp && *tmp ? tmp : "/tmp") + "/keyward-demo.XXXXXX";
  if (::mkdtemp(pattern.data()) == nullptr) return "";
  return pattern;
}

int RunCampaign(const SimFlags& f) {
  std::vector<sim::Mode> modes;
  if (f.mode == "strict" || f.mode == "both") modes.push_back(sim::Mode::kStrict);
  if (f.mode == "legacy-2023" || f.mode == "both") modes.push_back(sim::Mode::kLegacy2023);
  if (modes.empty()) {
    std::cerr << "keyward: --mode must be strict, legacy-2023 or both\n";
    return kExitUsage;
  }
  const sim::SimOptions& o = f.options;
  if (o.targets > o.tenants || o.users < o.tenants || o.learning_days >= o.days) {
    std::cerr << "keyward: need targets <= tenants, users >= tenants and learning days < days\n";
    return kExitUsage;
  }
  std::string out = f.out.empty() ? MakeTempDir() : f.out;
  std::error_code ec;
  if (out.empty() || (std::filesystem::create_directories(out, ec), ec)) {
    std::cerr << "keyward: cannot create an output directory " << out << ": " << ec.message() << "\n";
    return kExitUsage;
  }
  sim::SimReport report;
  report.options = o;
  {
    sim::Population pop = sim::MakePopulation(o);
    report.fingerprint = sim::Fingerprint(pop, sim::MakeSchedule(o, pop));
  }
  auto progress = [](const std::string& line) { std::cerr << line << std::endl; };
  for (sim::Mode m : modes) {
    std::string dir = out + "/" + sim::ModeName(m);
    auto r = sim::RunSimulation(o, m, dir, progress);
    if (!r.ok()) {
      std::cerr << "keyward: simulation (" << sim::ModeName(m) << ") failed: " << r.status().message() << "\n";
      return kExitUsage;
    }
    report.modes.push_back(std::move(*r));
  }
  std::string html_path = out + "/report.html";
  {
    std::ofstream html(html_path, std::ios::trunc);
    html << sim::RenderHtml(report);
    if (!html) {
      std::cerr << "keyward: cannot write " << html_path << "\n";
      return kExitUsage;
    }
  }
  std::cout << sim::FormatSummary(report) << "\nreport: " << html_path << "\ndata: " << out << "\n";
  // The security property itself: a forged token that opened a mailbox in strict mode is a failure.
  for (const auto& r : report.modes) {
    if (r.mode == sim::Mode::kStrict && r.forged_accepted > 0) return kExitRejected;
  }
  return kExitOk;
}

void AddSimFlags(CLI::App* cmd, const std::shared_ptr<SimFlags>& f) {
  sim::SimOptions& o = f->options;
  cmd->add_option("--tenants", o.tenants, fmt::format("Tenants (default {})", o.tenants))->check(CLI::Range(1, 100000));
  cmd->add_option("--targets", o.targets, fmt::format("Tenants the actor targets (default {})", o.targets))
      ->check(CLI::Range(1, 100000));
  cmd->add_option("--users", o.users, fmt::format("Users over all tenants (default {})", o.users))
      ->check(CLI::Range(1, 10000000));
  cmd->add_option("--days", o.days, fmt::format("Simulated days from Monday 2023-05-08 (default {})", o.days))
      ->check(CLI::Range(2, 365));
  cmd->add_option("--learning-days", o.learning_days,
                  "Days before the actor starts, that only teach the baselines (default 2)")
      ->check(CLI::Range(1, 364));
  cmd->add_option("--messages", o.messages_per_user, "Messages seeded per mailbox (default 6)")->check(CLI::Range(0, 10000));
  cmd->add_option("--seed", o.seed, "Seed of the population and schedule (default 20230515)");
  cmd->add_option("--workers", o.workers, "Concurrent client threads (default 64)")->check(CLI::Range(1, 512));
  cmd->add_option("--speed", o.speed,
                  "At most this many simulated seconds per wall second (default 0: as fast as possible)")
      ->check(CLI::Range(0.0, 1e9));
  cmd->add_option("--mode", f->mode, "strict, legacy-2023 or both (default both)");
  cmd->add_option("--out", f->out,
                  "Directory for the data directories and report.html (default: a fresh temporary directory)");
}

}  // namespace

void RegisterDemoCommand(CLI::App& app, int* exit_code) {
  auto f = std::make_shared<SimFlags>();
  // The demo's population is smaller than `simulate`'s so that both modes finish in a few
  // minutes on two cores; every flag of `simulate` still applies.
  f->options.tenants = 50;
  f->options.targets = 10;
  f->options.users = 1000;
  f->options.days = 3;
  auto* demo = app.add_subcommand(
      "demo", "Replay the 2023 campaign: the forged-token attempts against the strict verifier, then a "
              "simulated population under attack in strict and legacy-2023 modes, with a report");
  AddSimFlags(demo, f);
  demo->add_flag("--guard-only", f->guard_only, "Only the verifier table (seconds, no services)");
  demo->callback([f, exit_code] {
    auto guard = sim::RunGuardDemo();
    if (!guard.ok()) {
      std::cerr << "keyward: demo failed: " << guard.status().message() << "\n";
      *exit_code = kExitUsage;
      return;
    }
    std::cout << sim::FormatGuardDemo(*guard) << std::flush;
    if (!guard->all_as_expected) {
      *exit_code = kExitRejected;
      return;
    }
    if (f->guard_only) {
      *exit_code = kExitOk;
      return;
    }
    std::cout << "\n";
    *exit_code = RunCampaign(*f);
  });

  auto g = std::make_shared<SimFlags>();
  auto* simulate = app.add_subcommand(
      "simulate", "Run the campaign simulation with chosen knobs (population, days, seed, speed, mode). "
                  "Exit 0 done, 1 a forged token opened a mailbox in strict mode, 2 error");
  AddSimFlags(simulate, g);
  simulate->callback([g, exit_code] { *exit_code = RunCampaign(*g); });
}

}  // namespace kw::cli
