#include "sim/report.h"

#include "core/html.h"

#include <fmt/format.h>
#include <time.h>

#include <algorithm>

namespace kw::sim {
namespace {


std::string IsoMinute(int64_t ms) {
  time_t t = static_cast<time_t>(ms / 1000);
  struct tm tm;
  gmtime_r(&t, &tm);
  return fmt::format("{:04d}-{:02d}-{:02d} {:02d}:{:02d}", tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour,
                     tm.tm_min);
}

std::string Pct(int num, int den) { return den > 0 ? fmt::format("{:.1f}%", 100.0 * num / den) : "-"; }

constexpr int64_t kHourMs = 3600 * 1000;

}  // namespace

std::string FormatSimDuration(int64_t ms) {
  if (ms < 0) return "-";
  int64_t minutes = ms / 60000;
  if (minutes < 60) return fmt::format("{} min", minutes);
  int64_t d = minutes / (24 * 60), h = (minutes / 60) % 24, m = minutes % 60;
  return d > 0 ? fmt::format("{}d {:02d}:{:02d}", d, h, m) : fmt::format("{:02d}:{:02d}", h, m);
}

std::vector<TargetCheck> CheckTargets(const ModeResult& r) {
  std::vector<TargetCheck> out;
  if (r.mode == Mode::kStrict) {
    out.push_back({"every forged token refused", r.forged_accepted == 0 && r.forged_attempts > 0,
                   fmt::format("{} of {} refused", r.forged_refused, r.forged_attempts)});
    out.push_back({"every forged attempt alerted", r.attempts_alerted == r.forged_attempts && r.forged_attempts > 0,
                   fmt::format("{} of {} alerted", r.attempts_alerted, r.forged_attempts)});
    out.push_back({"no mail exposed", r.messages_exposed == 0, fmt::format("{} messages", r.messages_exposed)});
  } else {
    int targets = static_cast<int>(r.targets.size());
    bool within_hour = r.targets_detected == targets && r.max_time_to_detect_ms >= 0 &&
                       r.max_time_to_detect_ms <= kHourMs;
    out.push_back({"every target tenant detected within 1 simulated hour", within_hour,
                   fmt::format("{} of {} detected, slowest {}", r.targets_detected, targets,
                               FormatSimDuration(r.max_time_to_detect_ms))});
    out.push_back({"at least 95% of actor sessions alerted",
                   r.actor_sessions > 0 && r.actor_sessions_alerted * 100 >= 95 * r.actor_sessions,
                   fmt::format("{} of {} ({})", r.actor_sessions_alerted, r.actor_sessions,
                               Pct(r.actor_sessions_alerted, r.actor_sessions))});
  }
  out.push_back({"at most 1 false alarm per 10,000 users per simulated day", r.false_alarms_per_10k_user_days <= 1.0,
                 fmt::format("{:.2f} ({} false alarms)", r.false_alarms_per_10k_user_days, r.false_alerts)});
  out.push_back({"live detection latency p99 under 100 ms", r.latency_p99_ms < 100.0,
                 fmt::format("p50 {:.1f} ms, p99 {:.1f} ms", r.latency_p50_ms, r.latency_p99_ms)});
  out.push_back({"simulation sustains 5,000 API requests/s", r.requests_per_second >= 5000,
                 fmt::format("{:.0f} requests/s", r.requests_per_second)});
  return out;
}

std::string FormatSummary(const SimReport& report) {
  const SimOptions& o = report.options;
  std::string s = fmt::format(
      "Keyward campaign simulation: {} tenants ({} targets), {} users, {} simulated days ({} learning), seed {}\n"
      "population and schedule fingerprint {}\n",
      o.tenants, o.targets, o.users, o.days, o.learning_days, o.seed, report.fingerprint.substr(0, 16));
  for (const ModeResult& r : report.modes) {
    s += fmt::format("\n== {} ==\n", ModeName(r.mode));
    s += fmt::format("  forged tokens: {} attempted, {} accepted, {} refused", r.forged_attempts, r.forged_accepted,
                     r.forged_refused);
    if (!r.refused_by_reason.empty()) {
      std::string reasons;
      for (const auto& [reason, n] : r.refused_by_reason) reasons += fmt::format("{}{} {}", reasons.empty() ? "" : ", ", reason, n);
      s += " (" + reasons + ")";
    }
    s += "\n";
    for (const auto& [tech, counts] : r.by_technique) {
      s += fmt::format("    {:<34} {:>4} attempted, {:>4} accepted\n", tech, counts.first, counts.second);
    }
    s += fmt::format("  exposed: {} mailboxes, {} messages, {} attachments\n", r.mailboxes_exposed, r.messages_exposed,
                     r.attachments_exposed);
    s += fmt::format("  alerts: {} ({} true, {} false); actor sessions alerted {} of {}; targets detected {} of {}",
                     r.alerts, r.true_alerts, r.false_alerts, r.actor_sessions_alerted, r.actor_sessions,
                     r.targets_detected, r.targets.size());
    if (r.max_time_to_detect_ms >= 0) s += fmt::format(", slowest time to detect {}", FormatSimDuration(r.max_time_to_detect_ms));
    s += "\n";
    for (const auto& t : r.targets) {
      s += fmt::format("    {}: first forged access {}, first true alert {}, time to detect {}, sessions alerted {}/{}\n",
                       t.name, t.first_access_ms >= 0 ? IsoMinute(t.first_access_ms) : "-",
                       t.first_alert_ms >= 0 ? IsoMinute(t.first_alert_ms) : "-",
                       t.first_access_ms >= 0 && t.first_alert_ms >= 0 ? FormatSimDuration(t.first_alert_ms - t.first_access_ms)
                                                                         : "not detected",
                       t.sessions_alerted, t.sessions);
    }
    for (const auto& rule : r.rules) {
      s += fmt::format("    {:<62} true {:>4}  false {:>4}  sessions {:>4}\n", rule.title.substr(0, 62), rule.true_alerts,
                       rule.false_alerts, rule.sessions_covered);
    }
    s += fmt::format("  traffic: {} requests in {:.1f} s ({:.0f}/s), {} transport errors, {} server errors; "
                     "{} user sessions ({} failed); {} audit records; setup {:.1f} s\n",
                     r.requests, r.traffic_seconds, r.requests_per_second, r.request_errors, r.server_errors,
                     r.user_sessions, r.user_sessions_failed, r.audit_records, r.setup_seconds);
    s += fmt::format("  detection latency (record to alert, wall clock): p50 {:.1f} ms, p99 {:.1f} ms, max {:.1f} ms\n",
                     r.latency_p50_ms, r.latency_p99_ms, r.latency_max_ms);
    s += "  targets:\n";
    for (const auto& t : CheckTargets(r)) s += fmt::format("    [{}] {}: {}\n", t.met ? "met" : "NOT MET", t.name, t.value);
  }
  return s;
}

std::string RenderHtml(const SimReport& report) {
  const SimOptions& o = report.options;
  std::string h = R"(<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>Keyward campaign simulation</title>
<style>
body{font:14px/1.45 system-ui,sans-serif;margin:2em auto;max-width:1100px;color:#1d2330}
h1{font-size:1.6em}h2{margin-top:2em;border-bottom:2px solid #ccd}h3{margin-top:1.4em}
table{border-collapse:collapse;margin:.6em 0}td,th{border:1px solid #ccd;padding:3px 8px;text-align:left}
th{background:#eef}td.n{text-align:right;font-variant-numeric:tabular-nums}
.met{color:#176d2c;font-weight:600}.notmet{color:#b3261e;font-weight:600}
.legend span{display:inline-block;margin-right:1.4em}.sw{display:inline-block;width:10px;height:10px;margin-right:4px}
</style></head><body>
<h1>Keyward campaign simulation</h1>
)";
  h += fmt::format("<p>{} tenants ({} targets), {} users, {} simulated days ({} learning), seed {}. Population and "
                   "schedule fingerprint <code>{}</code>.</p>\n",
                   o.tenants, o.targets, o.users, o.days, o.learning_days, o.seed, HtmlEscape(report.fingerprint));
  for (const ModeResult& r : report.modes) {
    h += fmt::format("<h2>Mode <code>{}</code></h2>\n", ModeName(r.mode));
    h += "<h3>Targets</h3><table><tr><th>target</th><th>result</th><th>measured</th></tr>\n";
    for (const auto& t : CheckTargets(r)) {
      h += fmt::format("<tr><td>{}</td><td class=\"{}\">{}</td><td>{}</td></tr>\n", HtmlEscape(t.name),
                       t.met ? "met" : "notmet", t.met ? "met" : "not met", HtmlEscape(t.value));
    }
    h += "</table>\n<h3>Prevention</h3><table><tr><th>technique</th><th>attempted</th><th>accepted</th></tr>\n";
    for (const auto& [tech, c] : r.by_technique) {
      h += fmt::format("<tr><td>{}</td><td class=n>{}</td><td class=n>{}</td></tr>\n", HtmlEscape(tech), c.first, c.second);
    }
    h += "</table><table><tr><th>refusal reason</th><th>count</th></tr>\n";
    for (const auto& [reason, n] : r.refused_by_reason) {
      h += fmt::format("<tr><td><code>{}</code></td><td class=n>{}</td></tr>\n", HtmlEscape(reason), n);
    }
    h += fmt::format("</table><p>Exposed: {} mailboxes, {} messages, {} attachments.</p>\n", r.mailboxes_exposed,
                     r.messages_exposed, r.attachments_exposed);

    // Timeline: one row per target tenant; actor sessions and alerts against simulated time.
    int64_t t0 = o.start_ms, t1 = o.start_ms + o.days * 24 * kHourMs;
    std::vector<std::string> rows;
    for (const auto& t : r.targets) rows.push_back(t.name);
    rows.push_back("other tenants");
    const int left = 110, width = 900, row_h = 14;
    int height = static_cast<int>(rows.size()) * row_h + 30;
    auto x = [&](int64_t ms) {
      return left + static_cast<double>(std::clamp(ms, t0, t1) - t0) * width / std::max<int64_t>(1, t1 - t0);
    };
    auto row_of = [&](const std::string& tenant) {
      auto it = std::find(rows.begin(), rows.end(), tenant);
      return static_cast<int>(it == rows.end() ? rows.size() - 1 : it - rows.begin());
    };
    h += "<h3>Timeline</h3><p class=legend><span><i class=sw style=\"background:#b3261e\"></i>actor session, mailbox "
         "opened</span><span><i class=sw style=\"background:#888\"></i>actor session refused</span><span><i class=sw "
         "style=\"background:#1565c0\"></i>true alert</span><span><i class=sw style=\"background:#f29900\"></i>false "
         "alarm</span></p>\n";
    h += fmt::format("<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{}\" height=\"{}\" role=\"img\">\n", left + width + 10,
                     height);
    for (int d = 0; d <= o.days; ++d) {
      double xd = x(t0 + d * 24 * kHourMs);
      h += fmt::format("<line x1=\"{:.1f}\" y1=\"0\" x2=\"{:.1f}\" y2=\"{}\" stroke=\"#ccd\"/>", xd, xd, height - 18);
      if (d < o.days) {
        h += fmt::format("<text x=\"{:.1f}\" y=\"{}\" font-size=\"10\">{}{}</text>", xd + 3, height - 5,
                         IsoMinute(t0 + d * 24 * kHourMs).substr(0, 10), d < o.learning_days ? " (learning)" : "");
      }
    }
    for (size_t i = 0; i < rows.size(); ++i) {
      h += fmt::format("<text x=\"2\" y=\"{}\" font-size=\"10\">{}</text>", i * row_h + 11, HtmlEscape(rows[i]));
    }
    for (const auto& e : r.timeline) {
      int row = row_of(e.tenant);
      const char* color = e.kind == "actor" ? "#b3261e" : e.kind == "refused" ? "#888" : e.kind == "alert" ? "#1565c0" : "#f29900";
      double dy = e.kind == "alert" || e.kind == "false-alarm" ? 3.5 : -3.5;
      h += fmt::format("<circle cx=\"{:.1f}\" cy=\"{:.1f}\" r=\"2.6\" fill=\"{}\"><title>{} {} {}</title></circle>", x(e.time_ms),
                       row * row_h + 7 + dy, color, IsoMinute(e.time_ms), HtmlEscape(e.tenant), HtmlEscape(e.text));
    }
    h += "</svg>\n";

    h += "<h3>Time to detect per target tenant</h3><table><tr><th>tenant</th><th>first forged access</th><th>first "
         "true alert</th><th>time to detect</th><th>actor sessions</th><th>alerted</th></tr>\n";
    for (const auto& t : r.targets) {
      h += fmt::format("<tr><td>{}</td><td>{}</td><td>{}</td><td class=n>{}</td><td class=n>{}</td><td class=n>{}</td></tr>\n",
                       HtmlEscape(t.name), t.first_access_ms >= 0 ? IsoMinute(t.first_access_ms) : "-",
                       t.first_alert_ms >= 0 ? IsoMinute(t.first_alert_ms) : "-",
                       t.first_access_ms >= 0 && t.first_alert_ms >= 0 ? FormatSimDuration(t.first_alert_ms - t.first_access_ms) : "not detected",
                       t.sessions, t.sessions_alerted);
    }
    h += "</table>\n<h3>Precision and recall per rule</h3><table><tr><th>rule</th><th>true alerts</th><th>false "
         "alarms</th><th>precision</th><th>actor sessions covered</th><th>recall</th></tr>\n";
    for (const auto& rule : r.rules) {
      h += fmt::format("<tr><td>{}<br><small><code>{}</code></small></td><td class=n>{}</td><td class=n>{}</td><td class=n>{}</td>"
                       "<td class=n>{}</td><td class=n>{}</td></tr>\n",
                       HtmlEscape(rule.title), HtmlEscape(rule.rule_id), rule.true_alerts, rule.false_alerts,
                       Pct(rule.true_alerts, rule.true_alerts + rule.false_alerts), rule.sessions_covered,
                       Pct(rule.sessions_covered, r.actor_sessions));
    }
    h += fmt::format("<tr><th>all rules</th><td class=n>{}</td><td class=n>{}</td><td class=n>{}</td><td class=n>{}</td><td class=n>{}</td></tr>",
                     r.true_alerts, r.false_alerts, Pct(r.true_alerts, r.alerts), r.actor_sessions_alerted,
                     Pct(r.actor_sessions_alerted, r.actor_sessions));
    h += "</table>\n<h3>False alarms</h3><table><tr><th>rule</th><th>false alarms</th><th>per 10,000 users per day</th></tr>\n";
    double user_days = static_cast<double>(r.users) * r.days;
    for (const auto& rule : r.rules) {
      if (rule.false_alerts == 0) continue;
      h += fmt::format("<tr><td>{}</td><td class=n>{}</td><td class=n>{:.2f}</td></tr>\n", HtmlEscape(rule.title), rule.false_alerts,
                       user_days > 0 ? rule.false_alerts * 10000.0 / user_days : 0.0);
    }
    h += fmt::format("<tr><th>all</th><td class=n>{}</td><td class=n>{:.2f}</td></tr></table>\n", r.false_alerts,
                     r.false_alarms_per_10k_user_days);
    if (!r.false_alarm_samples.empty()) {
      h += "<p>Examples:</p><ul>";
      for (const auto& f : r.false_alarm_samples) h += "<li>" + HtmlEscape(f) + "</li>";
      h += "</ul>\n";
    }
    h += fmt::format("<h3>Traffic</h3><p>{} user sessions ({} failed). {} API requests in {:.1f} s of traffic ({:.0f}/s), {} transport errors, {} "
                     "server errors; {} audit records; {} messages seeded; setup {:.1f} s, whole run {:.1f} s. Detection "
                     "latency from audit record to alert (wall clock): p50 {:.1f} ms, p99 {:.1f} ms, max {:.1f} ms.</p>\n",
                     r.user_sessions, r.user_sessions_failed, r.requests, r.traffic_seconds, r.requests_per_second,
                     r.request_errors, r.server_errors, r.audit_records, r.messages_seeded, r.setup_seconds, r.wall_seconds, r.latency_p50_ms, r.latency_p99_ms, r.latency_max_ms);
  }
  h += "</body></html>\n";
  return h;
}

}  // namespace kw::sim
