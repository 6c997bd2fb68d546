// The campaign simulator: runs the schedule of campaign.h against the real services (identity,
// JMAP mail, audit log, live detection) on the embedded store in a fresh data directory, through
// their HTTP APIs, on a simulated clock, and measures what the forged tokens achieved and how
// fast the intrusion was detected.
//
//   SimOptions o;                       // population, days, seed, workers
//   auto r = RunSimulation(o, Mode::kLegacy2023, "/tmp/run/legacy", progress);
//
// Modes:
//   kStrict      Keyward as it ships: the mail service checks tokens with token::Verifier.
//   kLegacy2023  the mail service checks tokens with LegacyVerifier (legacy_verifier.h), which
//                reproduces the 2023 flaw; detection alone must catch the campaign.
//
// What the run does, in order: opens the audit log, the identity service (password hashing at
// libsodium's minimum cost: thousands of simulated users sign in every day) and the mail service
// on one HTTP server whose X-Forwarded-For is trusted from loopback (each simulated request names
// its client's address); creates the tenants, users, client apps and mailboxes, and delivers the
// seeded messages through the store's delivery path; rotates the consumer key ring twice and
// revokes its oldest key; the actor then copies the consumer keys out of the key database (the
// premise: the key was stolen); starts live detection on the audit stream; and plays the
// schedule slice by slice (slice_ms, 15 minutes of simulated time; every request of a slice is
// stamped with the slice's start), the slice's activities spread over `workers` client threads,
// each user's in order, the actor's on a thread of its own. The clock moves on only when the
// slice has finished, so that a sign-in's 60-second authorization code never expires between its
// two requests.
//
// Ground truth: a mail audit record is the actor's when its client address is one of the actor's
// proxies. An alert is true when the audit record that raised it is the actor's.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <string>
#include <vector>

#include "core/status.h"
#include "sim/campaign.h"

namespace kw::sim {

enum class Mode { kStrict, kLegacy2023 };
const char* ModeName(Mode m);  // "strict" / "legacy-2023"

struct RuleOutcome {
  std::string rule_id, title;
  int true_alerts = 0, false_alerts = 0;
  int sessions_covered = 0;  // actor sessions with at least one alert of this rule
};

struct TenantOutcome {
  std::string tenant_id, name;
  int64_t first_access_ms = -1;  // first forged request (sim time)
  int64_t first_alert_ms = -1;   // first true alert's record time (sim time)
  int sessions = 0, sessions_alerted = 0;
};

struct TimelineEntry {
  int64_t time_ms;      // sim time
  std::string kind;     // "actor", "refused", "alert", "false-alarm"
  std::string tenant;   // tenant name
  std::string text;
};

struct ModeResult {
  Mode mode = Mode::kStrict;
  // Prevention.
  int forged_attempts = 0, forged_accepted = 0, forged_refused = 0;
  std::map<std::string, int> refused_by_reason;  // reason code -> count
  std::map<std::string, std::pair<int, int>> by_technique;  // technique -> (attempts, accepted)
  int mailboxes_exposed = 0, messages_exposed = 0, attachments_exposed = 0;
  // Detection.
  int actor_sessions = 0, actor_sessions_alerted = 0;
  int attempts_alerted = 0;  // forged requests whose own record raised an alert
  int alerts = 0, true_alerts = 0, false_alerts = 0;
  std::vector<RuleOutcome> rules;
  std::vector<TenantOutcome> targets;
  int targets_detected = 0;
  int64_t max_time_to_detect_ms = -1;  // over detected targets
  double false_alarms_per_10k_user_days = 0;
  double latency_p50_ms = 0, latency_p99_ms = 0, latency_max_ms = 0;  // record to alert, wall
  std::vector<TimelineEntry> timeline;
  std::vector<std::string> false_alarm_samples;  // a few, for the report
  // Traffic.
  uint64_t requests = 0, request_errors = 0, server_errors = 0;
  uint64_t user_sessions = 0, user_sessions_failed = 0;  // failed: sign-in, token or session
  double wall_seconds = 0, traffic_seconds = 0, requests_per_second = 0;
  double setup_seconds = 0;
  uint64_t audit_records = 0;
  int users = 0, tenants = 0, days = 0, messages_seeded = 0;
  std::string data_dir;
};

// Progress lines ("day 2/4 ...") for long runs; may be null.
using ProgressFn = std::function<void(const std::string& line)>;

// `data_dir` must not exist yet or be empty; it is created. Errors from the services.
Result<ModeResult> RunSimulation(const SimOptions& options, Mode mode, const std::string& data_dir,
                                 const ProgressFn& progress);

}  // namespace kw::sim
