// kw_detect_analytics: the Storm-0558 analytics. Sigma rules (run by kw_detect) plus small
// stateful detectors with baselines persisted in SQLite, over Microsoft 365 unified-audit-log
// AuditData records and Keyward's own audit records rendered by audit::ToUalJson.
//
// The analytics (rule ids are stable; docs/storm-0558-analytics.md has the full table):
//
//   Sigma (src/detect/rules/storm-0558/*.yml, compiled in):
//     d40e8744-...  TokenRejected for key_issuer_mismatch / tenant_mismatch / consumer token
//     392e7f02-...  TokenRejected for unknown_kid / key_revoked / key_retired / key_expired / ...
//     a0058802-...  TokenRejected for forged headers: alg_not_allowed / bad_signature / jwk-jku / ...
//     ba5b1fd0-...  TokenTenantId differs from OrganizationId (fieldref)
//     0a0d5c4a-...  published proxy / web panel IPs            (expand %storm0558_ips%)
//     b88ec045-...  published user agents                      (expand %storm0558_user_agents%)
//     4f3a5bdf-...  REST ClientInfoString on MailItemsAccessed  (expand %storm0558_client_info%)
//     bd54c6c0-...  the published signing-key thumbprint       (expand %storm0558_key_thumbprints%)
//     b305793c-...  Keyward KeyAgeWarning: a signing key trusted past its age limit
//   Stateful (this library):
//     8ce9d18e-...  first (AppId, ClientAppId) to read mail in a tenant
//     a59fde64-...  a rarely used (AppId, ClientAppId) reading a mailbox it never read
//     a6ef5b51-...  bulk Bind reads: many distinct InternetMessageIds per session in a window
//     c5e1c166-...  a network (/24, /48) never seen for the user, at an hour the user never works
//     cc18f5c6-...  M365: mail session (SessionId) with no UserLoggedIn behind it
//     4575bd83-...  Keyward: mail read with a token id (jti) that was never issued
//
// Alerts go to a kw::detect::AlertSink, as the Sigma engine's do. A stateful alert has a RuleInfo
// with is_correlation = true and correlation_type "stateful:<name>", so Alert::ToJson writes its
// facts as correlation.group_by (tenant, app, prefix, baseline figures...), `value` the measured
// value (distinct items, prefixes known...) and the triggering records as correlation.events.
//
// Learning. Each tenant's first `learning_days` days of events (in event time, from the first
// event seen for that tenant) only feed the baselines: the first-seen application, new network
// and M365 session detectors raise nothing then. Detectors that need no baseline always fire:
// the Sigma rules (indicators, token rejections, tenant mismatch), bulk reads, and Keyward's
// never-issued token (which instead stays quiet for tokens issued before the analytics first saw
// the tenant: it could not have seen their issuance).
// Per-user network alerts also wait until the user has `network_min_user_events` events on
// `network_min_user_days` distinct days.
//
// Persistence. Baselines live in memory and in SQLite (AnalyticsOptions::db_path; ":memory:" for
// tests). Open() loads them; Commit() writes every change since the last commit in ONE
// transaction, together with whatever the caller adds in the same transaction (live mode adds its
// sequence number and alert outbox: see live.h). Nothing is written between commits, so a crash
// loses exactly the uncommitted changes, and the caller's checkpoint says which input they covered.
// Windows (bulk reads) and pending sessions are not persisted: live mode replays the last window
// of records in warm-up mode after a restart (ProcessMode::kWarmup).
//
// Threads. A StormAnalytics is NOT thread-safe: one per thread (it owns a kw_detect Engine and
// the baselines). Its SQLite database must not be shared with another StormAnalytics. Process and
// Commit never block on anything but SQLite (Commit) and never start threads.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "core/sqlite.h"
#include "core/status.h"
#include "detect/engine.h"

namespace kw::detect::analytics {

struct AnalyticsOptions {
  // SQLite database of the baselines (created 0600 if missing). ":memory:" for tests.
  std::string db_path = ":memory:";

  // Sigma rules: empty = the built-in Storm-0558 rules compiled into the library; otherwise
  // files/directories for RuleSet::Load (replacing the built-in ones).
  std::vector<std::string> rule_paths;
  // Placeholders for the rules' `expand`: empty = the built-in indicators.yml; otherwise this
  // file replaces it. Files in extra_indicator_paths add values to the lists.
  std::string indicators_path;
  std::vector<std::string> extra_indicator_paths;
  // Run the Sigma rules in this object's own Engine (live mode). False when the caller loads
  // them into its own RuleSet (StormSigmaSources) and hands every record over already parsed
  // (ProcessParsed): `keyward hunt` so parses and matches each record once. Rules() then lists
  // only the stateful detectors.
  bool run_sigma = true;

  // Per tenant: the first N days of events (event time) only teach the baselines.
  int learning_days = 14;

  // First-seen application per mailbox: alert when an app known in the tenant reads a mailbox it
  // never read, only while the app has read at most this many mailboxes of the tenant ("rare").
  int app_rare_mailboxes = 3;

  // Bulk reads: alert when one session (SessionId; else tenant+mailbox+app) binds at least
  // bulk_distinct_items distinct InternetMessageIds within bulk_window_ms; then at most one alert
  // per session per bulk_realert_ms.
  int bulk_distinct_items = 100;
  int64_t bulk_window_ms = 10 * 60 * 1000;
  int64_t bulk_realert_ms = 60 * 60 * 1000;

  // New network at an unusual hour (per user).
  int network_min_user_events = 30;   // the user's baseline must be at least this big...
  int network_min_user_days = 2;      // ...and span this many distinct active days (UTC)
  // The hour is unusual when the user's events at that hour of day (+-1 h, any day of the week)
  // are below this fraction of all the user's events.
  double unusual_hour_fraction = 0.02;
  // A prefix becomes the user's (and feeds the hour profile) when a sign-in (UserLoggedIn,
  // Keyward TokenIssued) comes from it, when it is seen during learning, or when it is seen again
  // on another UTC day, or when the record's session (SessionId, Keyward token id) began with a
  // sign-in or on a known network (roaming); a mail read from a prefix in that probation, at an
  // unusual hour, alerts.
  // A prefix used by at least this many users of the tenant is the tenant's own (office, VPN).
  int tenant_prefix_users = 3;
  // At most one network alert per user per this period.
  int64_t network_realert_ms = 24 * 3600 * 1000LL;

  // Sessions without sign-in (M365): the sign-in may be logged up to this much later than the
  // first mail read (event time) before the session is reported.
  int64_t session_grace_ms = 5 * 60 * 1000;
  // Sessions and issued tokens older than this are forgotten (the longest session / token life).
  int64_t session_retention_ms = 7 * 24 * 3600 * 1000LL;
};

// kNormal: alerts and baseline updates. kWarmup: the record only refills in-memory windows
// (bulk reads, Sigma correlations); no alert, no baseline change (it was processed before).
enum class ProcessMode { kNormal, kWarmup };

class StormAnalytics {
 public:
  // Loads the rules and indicators and opens/creates the baseline database. Rules that cannot be
  // loaded are listed in `report` (if given); a rejected built-in rule is an Internal error.
  // InvalidArgument for bad options or an indicators file that is not the documented YAML;
  // Unavailable when the database cannot be opened.
  static Result<std::unique_ptr<StormAnalytics>> Open(const AnalyticsOptions& options,
                                                      LoadReport* report = nullptr);
  ~StormAnalytics();
  StormAnalytics(const StormAnalytics&) = delete;
  StormAnalytics& operator=(const StormAnalytics&) = delete;

  // Runs the Sigma rules and the stateful detectors on one record (one JSON object: UAL
  // AuditData, bare, or Keyward's audit::ToUalJson). `hint` as for Engine::Process; Keyward
  // records are {"m365", "audit", ""}. Alerts reach `sink` before Process returns.
  // InvalidArgument for text that is not a JSON object (the record is skipped; counted).
  Status Process(std::string_view record_json, const LogSource& hint, AlertSink& sink,
                 ProcessMode mode = ProcessMode::kNormal);
  // The stateful detectors only, on a record the caller has parsed (Engine::last_event()): for
  // an object opened with run_sigma = false, whose caller runs the Sigma rules itself.
  // `record_json` is the record's text (the alerts' evidence).
  Status ProcessParsed(std::string_view record_json, const simdjson::dom::element& root,
                       AlertSink& sink, ProcessMode mode = ProcessMode::kNormal);

  // End of input (hunt mode): reports sessions still waiting for their sign-in grace period and
  // drops windows. Baselines stay (Commit them).
  void Flush(AlertSink& sink);

  // Writes all baseline changes since the last Commit in one SQLite transaction; `extra`, if
  // given, runs inside the same transaction (with the same Db) and its failure rolls everything
  // back (the in-memory baselines then stay marked dirty and are written by the next Commit).
  Status Commit(const std::function<Status(sqlite::Db&)>& extra = nullptr);

  // The baseline database (live mode keeps its own tables in it). Owned by this object.
  sqlite::Db& db();

  // Metadata of every analytic: the Sigma rules, then the stateful detectors.
  std::vector<const RuleInfo*> Rules() const;

  struct Stats {
    uint64_t records = 0;
    uint64_t malformed = 0;
    uint64_t learning_records = 0;  // records that fell in their tenant's learning period
    uint64_t sigma_alerts = 0;
    uint64_t stateful_alerts = 0;
    uint64_t commits = 0;
  };
  Stats stats() const;

  class Impl;

 private:
  explicit StormAnalytics(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

// The analytics' Sigma rules as (name, YAML text) (the built-in ones, or the files under
// options.rule_paths) appended to `texts`, and the indicator lists their `expand` modifiers
// name (options.indicators_path or the built-in ones, plus extra_indicator_paths) added to
// `placeholders`, for a caller that loads them into its own RuleSet.
Status StormSigmaSources(const AnalyticsOptions& options,
                         std::vector<std::pair<std::string, std::string>>* texts,
                         std::map<std::string, std::vector<std::string>>* placeholders);

// The built-in Sigma rules (name, YAML text) and indicators (YAML text).
const std::vector<std::pair<std::string, std::string>>& BuiltinStormRules();
std::string_view BuiltinIndicators();

// Parses an indicators file (format in indicators.yml) into placeholders, appending to `out`.
// IPv4 values also get an "<ip>:*" variant. InvalidArgument names the file and the problem.
Status ParseIndicators(std::string_view yaml, const std::string& name,
                       std::map<std::string, std::vector<std::string>>* out);

// The network prefix of an address as written in audit records ("1.2.3.4", "1.2.3.4:5678",
// "[2001:db8::1]:443", "::ffff:1.2.3.4"): "1.2.3.0/24" or "2001:db8:0::/48"-style text.
// Empty when the text is not an IP address.
std::string NetworkPrefix(std::string_view address);

}  // namespace kw::detect::analytics
