// keyward audit verify|query|export: reading the tamper-evident audit log of a data directory.
#include <cstdlib>
#include <fstream>
#include <iostream>
#include <memory>
#include <string>

#include <fmt/format.h>

#include "audit/audit_log.h"
#include "cli/commands.h"
#include "core/file.h"
#include "detect/engine.h"

namespace kw::cli {
namespace {

struct AuditFlags {
  std::string data_dir;
  std::string log_dir;  // default DATA_DIR/audit
  std::string checkpoint;
  std::string tenant, user, operation, from, to;
  uint64_t limit = 0;
  std::string format = "ual";
  std::string out;
  bool json = false;

  std::string Dir() const { return log_dir.empty() ? data_dir + "/audit" : log_dir; }
};

Result<audit::AuditQuery> MakeQuery(const AuditFlags& f) {
  audit::AuditQuery q;
  q.tenant_id = f.tenant;
  q.user = f.user;
  q.operation = f.operation;
  q.limit = f.limit;
  if (!f.from.empty()) {
    auto t = detect::ParseIsoTime(f.from);
    if (!t.ok()) return InvalidArgumentError(fmt::format("--from: {}", t.status().message()));
    q.from_ms = *t;
  }
  if (!f.to.empty()) {
    auto t = detect::ParseIsoTime(f.to);
    if (!t.ok()) return InvalidArgumentError(fmt::format("--to: {}", t.status().message()));
    q.to_ms = *t;
  }
  return q;
}

int RunVerify(const AuditFlags& f) {
  auto report = f.checkpoint.empty() ? audit::VerifyLog(f.Dir())
                                     : audit::VerifyLog(f.Dir(), f.checkpoint);
  if (!report.ok()) {
    std::cerr << "keyward: " << report.status().message() << "\n";
    return kExitUsage;
  }
  for (const auto& p : report->problems) {
    std::cout << fmt::format("{}: offset {}: seq {}: {}: {}\n", p.segment, p.offset, p.seq, p.what,
                             p.message);
  }
  std::cout << fmt::format("{}: {} records (seq {}..{}), {}{}\n", f.Dir(), report->records,
                           report->first_seq, report->last_seq,
                           report->ok() ? "intact" : fmt::format("{} problem(s)", report->problems.size()),
                           report->checkpoint_checked ? ", checkpoint matched" : "");
  return report->ok() ? kExitOk : kExitRejected;
}

int RunQueryOrExport(const AuditFlags& f, bool export_mode) {
  auto q = MakeQuery(f);
  if (!q.ok()) {
    std::cerr << "keyward: " << q.status().message() << "\n";
    return kExitUsage;
  }
  std::ofstream file;
  std::ostream* out = &std::cout;
  std::string tmp;
  if (!f.out.empty()) {
    tmp = f.out + ".tmp";
    file.open(tmp, std::ios::binary | std::ios::trunc);
    if (!file) {
      std::cerr << "keyward: cannot write " << tmp << "\n";
      return kExitUsage;
    }
    out = &file;
  }
  const bool ual = export_mode ? f.format == "ual" : !f.json;
  uint64_t n = 0;
  Status s = audit::QueryLog(f.Dir(), *q, [&](const audit::AuditRecord& r) {
    if (export_mode || f.json) {
      *out << (ual ? audit::ToUalJson(r) : audit::ToJson(r)) << '\n';
    } else {
      std::string items = r.items.empty() ? "" : fmt::format(" items={}", r.items.size());
      *out << fmt::format("{:>8} {} {} {} {} user={} mailbox={} app={} ip={}{}{}\n", r.seq,
                          detect::FormatIsoTime(r.time_ms), r.tenant_id, r.operation,
                          r.access_type.empty() ? r.result : r.access_type,
                          r.user_upn.empty() ? r.user_id : r.user_upn, r.mailbox_owner,
                          r.client_app_id, r.client_ip, items,
                          r.reason.empty() ? "" : " reason=" + r.reason);
    }
    ++n;
    return true;
  });
  if (!s.ok()) {
    std::cerr << "keyward: " << s.message() << "\n";
    return kExitUsage;
  }
  if (!f.out.empty()) {
    file.close();
    if (!file || std::rename(tmp.c_str(), f.out.c_str()) != 0) {
      std::cerr << "keyward: cannot write " << f.out << "\n";
      return kExitUsage;
    }
    std::cerr << fmt::format("{} records written to {}\n", n, f.out);
  }
  return kExitOk;
}

}  // namespace

void RegisterAuditCommands(CLI::App& app, int* exit_code) {
  auto f = std::make_shared<AuditFlags>();
  const char* env = std::getenv("KEYWARD_DATA_DIR");
  f->data_dir = env && *env ? env : "keyward-data";
  auto* audit = app.add_subcommand("audit", "Read the tamper-evident audit log");
  audit->require_subcommand(1);
  auto common = [f](CLI::App* cmd) {
    cmd->add_option("--data-dir", f->data_dir,
                    "Data directory (default $KEYWARD_DATA_DIR or ./keyward-data)");
    cmd->add_option("--log-dir", f->log_dir, "The audit log directory (default DATA_DIR/audit)");
  };
  auto filters = [f](CLI::App* cmd) {
    cmd->add_option("--tenant", f->tenant, "Only this tenant");
    cmd->add_option("--user", f->user, "Only this acting user (id or name)");
    cmd->add_option("--operation", f->operation, "Only this operation (e.g. MailItemsAccessed)");
    cmd->add_option("--from", f->from, "From this time (ISO 8601, inclusive)");
    cmd->add_option("--to", f->to, "Until this time (ISO 8601, exclusive)");
    cmd->add_option("--limit", f->limit, "At most this many records");
    cmd->add_option("--out", f->out, "Write to this file (default: stdout)");
  };

  auto* verify = audit->add_subcommand(
      "verify", "Check every record's hash, the chain, the sequence and the checkpoint; names "
                "each edited, removed, reordered or truncated record. Exit 0 intact, 1 damaged");
  common(verify);
  verify->add_option("--checkpoint", f->checkpoint,
                     "A checkpoint file kept elsewhere (default: the log's own)");
  verify->callback([f, exit_code] { *exit_code = RunVerify(*f); });

  auto* query = audit->add_subcommand("query", "Print matching records, one line each");
  common(query);
  filters(query);
  query->add_flag("--json", f->json, "Print Keyward's JSON form instead");
  query->callback([f, exit_code] { *exit_code = RunQueryOrExport(*f, false); });

  auto* exp = audit->add_subcommand(
      "export", "Export records as Microsoft 365 unified-audit-log AuditData JSON lines (--format "
                "ual, default) or Keyward's JSON (--format keyward)");
  common(exp);
  filters(exp);
  exp->add_option("--format", f->format, "ual (default) or keyward")
      ->check(CLI::IsMember({"ual", "keyward"}));
  exp->callback([f, exit_code] { *exit_code = RunQueryOrExport(*f, true); });
}

}  // namespace kw::cli
