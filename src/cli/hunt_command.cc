// keyward hunt: Sigma rules over exported logs. keyward gen-logs: realistic Microsoft 365 audit
// logs (with an optional injected actor) for tests, benchmarks and demonstrations.
#include <unistd.h>

#include <cstdio>
#include <fstream>
#include <iostream>
#include <memory>
#include <string>
#include <vector>

#include <fmt/format.h>

#include "cli/commands.h"
#include "core/file.h"
#include "detect/engine.h"
#include "detect/hunt/builtin_rules.h"
#include "detect/analytics/hunt_processor.h"
#include "detect/hunt/hunt.h"
#include "detect/input/ual_generator.h"

namespace kw::cli {
namespace {

struct HuntFlags {
  std::vector<std::string> inputs;
  std::vector<std::string> rules;
  std::vector<std::string> mappings;
  std::vector<std::string> placeholders;  // NAME=VALUE
  bool builtin = false;
  std::string format = "auto";
  std::string output = "table";
  std::string out;
  int threads = 0;
  bool quiet = false;
  bool no_analytics = false;
  std::string baseline_db = ":memory:";
  std::vector<std::string> indicators;
  int learning_days = 14;
};

std::string HumanBytes(double b) {
  if (b >= 1e9) return fmt::format("{:.2f} GB", b / 1e9);
  if (b >= 1e6) return fmt::format("{:.1f} MB", b / 1e6);
  return fmt::format("{:.0f} kB", b / 1e3);
}

// One line on stderr, redrawn in place: bytes, events/s, ETA.
void DrawProgress(const detect::HuntProgress& p) {
  double frac = p.bytes_total ? static_cast<double>(p.bytes_done) / p.bytes_total : 0;
  if (frac > 1) frac = 1;
  const int width = 28;
  int filled = static_cast<int>(frac * width);
  double eps = p.seconds > 0 ? p.events / p.seconds : 0;
  double eta = frac > 0.001 ? p.seconds * (1 - frac) / frac : 0;
  std::string bar(filled, '#');
  bar.resize(width, '.');
  std::fprintf(stderr, "\r[%s] %5.1f%%  %s / %s  %.0fk events/s  ETA %3.0fs ", bar.c_str(),
               frac * 100, HumanBytes(p.bytes_done).c_str(), HumanBytes(p.bytes_total).c_str(),
               eps / 1e3, eta);
  std::fflush(stderr);
}

int RunHunt(const HuntFlags& f) {
  detect::LoadOptions lo;
  lo.mapping_files = f.mappings;
  for (const auto& p : f.placeholders) {
    size_t eq = p.find('=');
    if (eq == std::string::npos || eq == 0) {
      std::cerr << "keyward: --placeholder takes NAME=VALUE, got '" << p << "'\n";
      return kExitUsage;
    }
    lo.placeholders[p.substr(0, eq)].push_back(p.substr(eq + 1));
  }
  auto format = detect::ParseLogFormat(f.format);
  if (!format.ok()) {
    std::cerr << "keyward: " << format.status().message() << "\n";
    return kExitUsage;
  }
  // The Storm-0558 analytics run with the built-in set: their Sigma rules join the hunt's
  // RuleSet (one parse and one matching pass per record), their stateful detectors run as one
  // processor per hunt worker (each opens the baseline database; each writes only its own
  // tenants' rows).
  const bool with_builtin = f.rules.empty() || f.builtin;
  detect::HuntOptions o;
  std::vector<std::pair<std::string, std::string>> texts;
  if (with_builtin) texts = detect::BuiltinRules();
  if (with_builtin && !f.no_analytics) {
    detect::analytics::AnalyticsOptions ao;
    ao.db_path = f.baseline_db;
    ao.extra_indicator_paths = f.indicators;
    ao.learning_days = f.learning_days;
    auto extra = detect::analytics::PrepareHuntAnalytics(ao, /*commit_on_flush=*/true, &texts, &lo);
    if (!extra.ok()) {
      std::cerr << "keyward: analytics: " << extra.status().message() << "\n";
      return kExitUsage;
    }
    o.make_extra = std::move(*extra);
  }
  detect::LoadReport report;
  Result<detect::RuleSet> rules = InvalidArgumentError("no rules");
  if (with_builtin) {
    // The built-in set, plus any --rules given with --builtin: read the on-disk ones into memory
    // too.
    if (!f.rules.empty()) {
      auto files = detect::ExpandInputs(f.rules);
      if (!files.ok()) {
        std::cerr << "keyward: --rules: " << files.status().message() << "\n";
        return kExitUsage;
      }
      for (const auto& file : *files) {
        if (!file.ends_with(".yml") && !file.ends_with(".yaml")) continue;
        auto text = ReadFile(file, lo.max_file_bytes);
        if (!text.ok()) {
          std::cerr << "keyward: " << text.status().message() << "\n";
          return kExitUsage;
        }
        texts.emplace_back(file, std::move(*text));
      }
    }
    rules = detect::RuleSet::LoadFromStrings(texts, lo, &report);
  } else {
    rules = detect::RuleSet::Load(f.rules, lo, &report);
  }
  if (!rules.ok()) {
    std::cerr << "keyward: " << rules.status().message() << "\n";
    return kExitUsage;
  }
  // Never dropped silently: every rule that cannot run is named on stderr.
  if (!report.rejected.empty()) {
    std::cerr << fmt::format("keyward: {} rule(s) rejected:\n", report.rejected.size());
    size_t shown = 0;
    for (const auto& issue : report.rejected) {
      if (!f.quiet || shown < 20) std::cerr << "  " << issue.ToString() << "\n";
      ++shown;
    }
  }
  if (rules->rule_count() + rules->correlation_count() == 0) {
    std::cerr << "keyward: no rule could be loaded\n";
    return kExitUsage;
  }

  o.inputs = f.inputs;
  o.format = *format;
  o.threads = f.threads;
  const bool progress = !f.quiet && ::isatty(2);
  if (progress) o.progress = DrawProgress;
  auto result = detect::Hunt(*rules, o);
  if (progress) std::fprintf(stderr, "\r%*s\r", 100, "");
  if (!result.ok()) {
    std::cerr << "keyward: " << result.status().message() << "\n";
    return kExitUsage;
  }
  for (const auto& p : result->processors) {
    const auto* hp = dynamic_cast<const detect::analytics::HuntProcessor*>(p.get());
    if (hp && !hp->commit_status().ok()) {
      std::cerr << "keyward: saving the baselines: " << hp->commit_status().message() << "\n";
    }
  }
  std::string text;
  if (f.output == "table") {
    text = detect::FormatTable(*result, report);
  } else if (f.output == "json") {
    text = detect::FormatJson(*result, report);
  } else if (f.output == "jsonl") {
    text = detect::FormatJsonLines(*result);
  } else if (f.output == "csv") {
    text = detect::FormatCsv(*result);
  } else {
    text = detect::FormatSarif(*result, report);
  }
  if (f.out.empty()) {
    std::cout << text;
    std::cout.flush();
  } else {
    Status s = WriteFileAtomic(f.out, text, 0600);
    if (!s.ok()) {
      std::cerr << "keyward: " << s.message() << "\n";
      return kExitUsage;
    }
    if (f.output != "table") std::cerr << detect::FormatTable(*result, report);
  }
  return result->alerts > 0 ? kExitRejected : kExitOk;
}

struct GenFlags {
  std::string out;
  uint64_t records = 0;
  std::string size;
  int tenants = 1;
  int users = 50;
  uint64_t seed = 1;
  bool actor = false;
  std::string format = "jsonl";
  std::string truth;
};

Result<uint64_t> ParseSize(const std::string& s) {
  if (s.empty()) return uint64_t{0};
  size_t used = 0;
  double v = 0;
  try {
    v = std::stod(s, &used);
  } catch (...) {
    return InvalidArgumentError(fmt::format("bad size '{}'", s));
  }
  std::string unit = s.substr(used);
  double mult = 1;
  if (unit == "K" || unit == "KB" || unit == "k") mult = 1e3;
  else if (unit == "M" || unit == "MB") mult = 1e6;
  else if (unit == "G" || unit == "GB") mult = 1e9;
  else if (!unit.empty()) return InvalidArgumentError(fmt::format("bad size unit in '{}'", s));
  if (v <= 0) return InvalidArgumentError(fmt::format("size '{}' must be positive", s));
  return static_cast<uint64_t>(v * mult);
}

int RunGen(const GenFlags& f) {
  auto bytes = ParseSize(f.size);
  if (!bytes.ok()) {
    std::cerr << "keyward: --size: " << bytes.status().message() << "\n";
    return kExitUsage;
  }
  if (f.records == 0 && *bytes == 0) {
    std::cerr << "keyward: give --records N or --size SIZE (e.g. 1G)\n";
    return kExitUsage;
  }
  detect::UalGeneratorOptions g;
  g.seed = f.seed;
  g.tenants = f.tenants;
  g.users_per_tenant = f.users;
  g.actor.enabled = f.actor;
  detect::GenerateFileOptions fo;
  fo.max_records = f.records;
  fo.max_bytes = *bytes;
  fo.truth_path = f.truth;
  if (f.format == "jsonl") fo.rendering = detect::UalRendering::kAuditDataLines;
  else if (f.format == "json") fo.rendering = detect::UalRendering::kAuditDataArray;
  else if (f.format == "csv") fo.rendering = detect::UalRendering::kCsv;
  else fo.rendering = detect::UalRendering::kSentinel;
  auto stats = detect::WriteGeneratedLog(f.out, g, fo);
  if (!stats.ok()) {
    std::cerr << "keyward: " << stats.status().message() << "\n";
    return kExitUsage;
  }
  std::cerr << fmt::format("wrote {} records ({} by the actor), {} to {}\n", stats->records,
                           stats->actor_records, HumanBytes(stats->bytes_written), f.out);
  return kExitOk;
}

}  // namespace

void RegisterHuntCommands(CLI::App& app, int* exit_code) {
  auto f = std::make_shared<HuntFlags>();
  auto* hunt = app.add_subcommand(
      "hunt",
      "Run Sigma rules over exported logs (M365 unified audit log JSON/CSV, Sentinel "
      "OfficeActivity, Entra sign-in logs, evtx_dump JSON, JSON lines, Keyward's audit log; "
      "gzip too). Exit 0: no alerts; 1: alerts; 2: error");
  hunt->add_option("inputs", f->inputs, "Files, directories or globs")->required();
  hunt->add_option("--rules", f->rules,
                   "Rule files or directories (repeatable; default: the built-in set)")
      ->allow_extra_args(false);
  hunt->add_flag("--builtin", f->builtin, "Also load the built-in rules when --rules is given");
  hunt->add_option("--mapping", f->mappings, "Extra log-source mapping YAML (repeatable)")
      ->allow_extra_args(false);
  hunt->add_option("--placeholder", f->placeholders,
                   "Value for an %expand% placeholder, NAME=VALUE (repeatable)")
      ->allow_extra_args(false);
  hunt->add_option("--format", f->format,
                   "Input format: auto (default), jsonl, json, ual-csv, ual-json, sentinel, "
                   "entra, evtx, keyward-audit");
  hunt->add_option("--output", f->output, "table (default), json, jsonl, csv or sarif")
      ->check(CLI::IsMember({"table", "json", "jsonl", "csv", "sarif"}));
  hunt->add_option("--out", f->out, "Write the output to this file (default: stdout)");
  hunt->add_option("--threads", f->threads, "Worker threads (default: one per core)")
      ->check(CLI::Range(0, 256));
  hunt->add_flag("--quiet", f->quiet, "No progress bar; at most 20 rejected rules listed");
  hunt->add_flag("--no-analytics", f->no_analytics,
                 "Without the Storm-0558 analytics (stateful detectors and their Sigma rules), "
                 "which run with the built-in set");
  hunt->add_option("--baselines", f->baseline_db,
                   "SQLite file keeping the analytics' learned baselines across hunts "
                   "(default: in memory)");
  hunt->add_option("--indicators", f->indicators,
                   "Extra indicators file for the analytics (format: "
                   "src/detect/analytics/indicators.yml; repeatable)")
      ->allow_extra_args(false);
  hunt->add_option("--learning-days", f->learning_days,
                   "Days per tenant that only teach the baselines (default 14)")
      ->check(CLI::Range(0, 3650));
  hunt->callback([f, exit_code] { *exit_code = RunHunt(*f); });

  auto g = std::make_shared<GenFlags>();
  auto* gen = app.add_subcommand(
      "gen-logs", "Write a realistic, seeded Microsoft 365 unified audit log (optionally with a "
                  "Storm-0558-like actor) for tests and benchmarks");
  gen->add_option("--out", g->out, "Output file (.gz: compressed)")->required();
  gen->add_option("--records", g->records, "Number of records");
  gen->add_option("--size", g->size, "Or: bytes of AuditData to write (e.g. 500M, 1G)");
  gen->add_option("--tenants", g->tenants, "Tenants (default 1)")->check(CLI::Range(1, 100000));
  gen->add_option("--users", g->users, "Users per tenant (default 50)")->check(CLI::Range(1, 1000000));
  gen->add_option("--seed", g->seed, "Seed (same seed, same bytes)");
  gen->add_flag("--actor", g->actor, "Inject the Storm-0558-like actor");
  gen->add_option("--truth", g->truth, "Write the actor's record Ids here, one per line");
  gen->add_option("--format", g->format, "jsonl (default), json, csv or sentinel")
      ->check(CLI::IsMember({"jsonl", "json", "csv", "sentinel"}));
  gen->callback([g, exit_code] { *exit_code = RunGen(*g); });
}

}  // namespace kw::cli
