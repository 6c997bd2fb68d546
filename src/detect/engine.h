// kw_detect: a Sigma rule engine for Keyward's audit logs and imported cloud logs.
//
// The contract, in three objects:
//
//   RuleSet  - Sigma detection rules, correlation rules and filter documents loaded from YAML and
//              compiled (indexes, patterns, regexes) together with a log-source mapping. Immutable
//              once built; share one between any number of threads (it is a cheap handle).
//   Engine   - matches events against one RuleSet. Owns the per-thread scratch (JSON parser, field
//              cache, buffers) and the correlation state (sliding windows). NOT thread-safe: one
//              Engine per worker thread.
//   AlertSink- receives alerts synchronously, on the thread that called Engine::Process.
//
// Typical use (`keyward hunt`):
//
//   kw::detect::LoadOptions opts;                       // built-in log-source mappings included
//   opts.placeholders["Admins_Workstations"] = {"ADM-*"};
//   kw::detect::LoadReport report;
//   KW_ASSIGN_OR_RETURN(auto rules, kw::detect::RuleSet::Load({"rules/"}, opts, &report));
//   for (const auto& r : report.rejected) print(r.ToString());   // file:line:col: reason
//   kw::detect::Engine engine(rules);
//   for (each record) {
//     Status s = engine.Process(json_line, {"m365", "audit", ""}, sink);  // bad JSON: counted
//   }
//   engine.Flush(sink);                                   // end of input: open windows decided
//
// Events. One event is the text of one JSON object (one record), plus a LogSource hint that the
// reader supplies (it knows it is reading a Microsoft 365 unified audit log export, an Entra
// sign-in export, evtx_dump output...). The hint selects which rules apply: a rule applies when
// each of product/service/category it names either equals the hint's value, or the hint leaves it
// empty, or the log-source mapping has conditions for that log source and the event meets them
// (so an M365 record hinted {product: m365} can still reach `service: exchange` rules when its
// Workload is Exchange).
//
// Fields. A Sigma field name is first renamed by the mapping (per log source), then looked up as
//   1. a top-level member with exactly that name (names may contain dots), else
//   2. a dotted path through nested objects ("a.b.c"), each step exact first and then, if absent,
//      the first member whose name equals it ignoring ASCII case, else
//   3. the same under each `field_prefixes` entry of the mapping (e.g. "Event.EventData.").
// A JSON array on the path or at the end makes the field multi-valued: the field matches if ANY
// element matches. For `neq` no element may equal any value; for `|all` each value needs some
// element. An object value of the shape {"#text": x, ...} (evtx_dump's attributed elements)
// stands for x.
//
// Values. Strings compare case-insensitively (ASCII) unless `|cased`; numbers and booleans in the
// event compare through their JSON text (4624 matches rule values 4624 and '4624'; true matches
// 'true'); `null` in a rule matches a missing field or JSON null. `lt/lte/gt/gte` compare numbers
// (a numeric string counts as a number). Keyword (field-less) searches look at every string,
// number and boolean anywhere in the event with an implicit `contains`.
//
// Time. Each event's time comes from the timestamp field named by the mapping for its log source
// (ISO 8601, epoch seconds or epoch milliseconds); if that is absent, from common fields
// (@timestamp, timestamp, time, TimeGenerated, CreationTime, Event.System.TimeCreated); if none,
// the last event time seen by this Engine is reused and the event is counted in
// Stats::events_without_time.
//
// Correlations. Windows slide in event time, not wall time. State is per (correlation, group-by
// value tuple). Out-of-order events: an event is placed at its own time inside the window; an
// event older than (newest time seen in its group - timespan) can no longer join any window with
// newer events and is dropped (Stats::late_events); other groups' times do not count, so the
// alerts of a group depend only on its own events, whatever else the Engine sees. A group with no
// event within 2 timespans of the newest event this correlation saw is forgotten (memory bound).
// When a correlation fires, its
// group's window is cleared, so each alert is backed by a fresh set of events. Thresholds from
// below are tested every time an event joins a group's window. event_count and value_count with
// an `lt`/`lte`/`eq`/`neq` condition are decided when the window closes instead (tumbling windows
// from a group's first event, closed when event time passes their end or at Flush).
//
// Multi-threaded hunting: single-event rules give the same alerts whichever Engine sees an event,
// so events may be spread over engines freely when no correlation rules are loaded. Correlation
// state is per Engine: route events by a key that every correlation's group-by includes (tenant,
// user...) so one group's events always reach the same Engine, or run correlations on one Engine
// fed with the merged stream. Engines never share mutable state.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "core/status.h"

namespace simdjson::dom {
class element;
}

namespace kw::detect {

// Where an event comes from, as the reader knows it. Lower-case Sigma taxonomy values
// ("m365"/"audit", "azure"/"signinlogs", "windows"/"security"). Empty = unknown (no constraint).
struct LogSource {
  std::string_view product;
  std::string_view service;
  std::string_view category;
};

struct LoadOptions {
  // Placeholder values for the `expand` modifier, keyed by name without % signs. A value may use
  // Sigma wildcards. A rule using an unknown placeholder is rejected unless
  // `unknown_placeholder_matches_anything` is set (pySigma's wildcard_placeholders).
  std::map<std::string, std::vector<std::string>> placeholders;
  bool unknown_placeholder_matches_anything = false;

  // Log-source mapping YAML files (format in docs/sigma.md), applied after the built-in ones
  // (m365, azure, windows evtx_dump) unless `builtin_mappings` is false.
  std::vector<std::string> mapping_files;
  bool builtin_mappings = true;

  // Rules with these statuses are skipped (reported as skipped, not rejected), e.g. {"deprecated"}.
  std::vector<std::string> skip_statuses;

  // Largest rule file read; larger files are rejected.
  size_t max_file_bytes = 4u << 20;
};

// One rule (or document) that could not be loaded, or a warning about one that was.
struct LoadIssue {
  std::string file;
  int line = 0;    // 1-based; 0 when unknown
  int column = 0;  // 1-based; 0 when unknown
  std::string rule_id;
  std::string title;
  std::string reason;
  // "file:line:col: [id] reason"
  std::string ToString() const;
};

struct LoadReport {
  int files = 0;
  int documents = 0;
  int rules = 0;         // detection rules loaded
  int correlations = 0;  // correlation rules loaded
  int filters = 0;       // filter documents loaded
  int skipped = 0;       // skipped by LoadOptions::skip_statuses
  std::vector<LoadIssue> rejected;  // every document the engine cannot run, with the reason
  std::vector<LoadIssue> warnings;  // loaded, but with something the user should know
};

// Rule metadata carried into alerts. Lives as long as the RuleSet.
struct RuleInfo {
  std::string id;
  std::string name;  // Sigma `name` (used by correlation references), may be empty
  std::string title;
  std::string level;   // informational, low, medium, high, critical (or empty)
  std::string status;
  std::string description;
  std::string author;
  std::vector<std::string> tags;        // all tags as written ("attack.t1556.006")
  std::vector<std::string> attack;      // ATT&CK tags only ("attack.persistence", ...)
  std::vector<std::string> references;
  std::vector<std::string> falsepositives;
  std::string product, service, category;  // logsource
  std::string file;
  int line = 0;
  bool is_correlation = false;
  std::string correlation_type;  // event_count, value_count, temporal, ...
  // Correlation: the group-by field names that are not aliases (an alias names a different field
  // per referenced rule). Hunt routes events by one of them to run correlations on all workers.
  std::vector<std::string> group_by;
};

// An alert. Valid only during AlertSink::OnAlert (views point into the Engine's buffers and the
// RuleSet); copy what you keep (ToJson() does).
struct Alert {
  const RuleInfo* rule = nullptr;
  int64_t time_ms = 0;  // event time (last event for correlations), ms since the Unix epoch
  // Single-event rule: the event's JSON text as given to Process.
  std::string_view event_json;
  // Correlation: group-by field names and values, the measured value (event count, distinct
  // values, temporal: number of rules seen, sum/avg/median), the window start, and evidence: the
  // JSON of the newest events in the window (at most kMaxEvidenceEvents, oldest
  // first; for chained correlations the inner alerts' summaries).
  std::vector<std::pair<std::string, std::string>> group_by;
  double value = 0;
  int64_t first_time_ms = 0;
  std::vector<std::string> evidence;

  // The alert as one JSON object: rule {id,title,level,tags}, time (ISO 8601), event or
  // correlation {group_by, value, first_time, events}.
  std::string ToJson() const;
};

inline constexpr size_t kMaxEvidenceEvents = 20;

class AlertSink {
 public:
  virtual ~AlertSink() = default;
  virtual void OnAlert(const Alert& alert) = 0;
};

// Collects alerts as JSON (tests, small tools).
class VectorAlertSink : public AlertSink {
 public:
  void OnAlert(const Alert& alert) override;
  struct Entry {
    std::string rule_id, title, level;
    int64_t time_ms;
    double value;
    std::vector<std::pair<std::string, std::string>> group_by;
    size_t evidence;
    std::string json;
  };
  std::vector<Entry> alerts;
};

namespace internal {
struct RuleSetData;
}

class RuleSet {
 public:
  // Loads every *.yml / *.yaml file under `paths` (files or directories, recursively; sorted so
  // the result does not depend on directory order). Each document of a multi-document file is a
  // detection rule, a correlation rule or a filter. Documents that cannot be run are listed in
  // `report->rejected` (never dropped silently). Returns an error only when nothing can be done:
  // a path does not exist, or a mapping file is invalid.
  static Result<RuleSet> Load(const std::vector<std::string>& paths, const LoadOptions& options,
                              LoadReport* report);
  // Same from YAML text already in memory; `name` is used as the file name in messages.
  static Result<RuleSet> LoadFromStrings(
      const std::vector<std::pair<std::string, std::string>>& name_and_yaml,
      const LoadOptions& options, LoadReport* report);

  size_t rule_count() const;         // detection rules
  size_t correlation_count() const;  // correlation rules
  size_t filter_count() const;
  // Metadata of every loaded rule (detections first, then correlations).
  std::vector<const RuleInfo*> Rules() const;

 private:
  friend class Engine;
  explicit RuleSet(std::shared_ptr<const internal::RuleSetData> d) : d_(std::move(d)) {}
  std::shared_ptr<const internal::RuleSetData> d_;
};

class Engine {
 public:
  explicit Engine(const RuleSet& rules);
  ~Engine();
  Engine(const Engine&) = delete;
  Engine& operator=(const Engine&) = delete;

  // Matches one event (one JSON object's text). Alerts go to `sink` before Process returns.
  // Returns InvalidArgument for text that is not a JSON object (counted in
  // Stats::malformed_events); the Engine stays usable. Never throws. No heap allocation per
  // event once warm, except for alerts and correlation state.
  Status Process(std::string_view event_json, const LogSource& hint, AlertSink& sink);
  // Process without copying the text first: REQUIRES kEventPadding readable bytes after
  // event_json.end() (any contents; RecordReader's records have them).
  Status ProcessPadded(std::string_view event_json, const LogSource& hint, AlertSink& sink);
  static constexpr size_t kEventPadding = 64;  // simdjson::SIMDJSON_PADDING

  // The event the last Process/ProcessPadded call parsed (a JSON object), so that a second
  // matcher need not parse it again; nullptr when that call refused the text. Valid until the
  // next call.
  const simdjson::dom::element* last_event() const;

  // End of input: decides the windows still open of correlations decided at window close, then
  // drops all correlation state; call it between independent inputs.
  void Flush(AlertSink& sink);

  struct Stats {
    uint64_t events = 0;
    uint64_t malformed_events = 0;
    uint64_t events_without_time = 0;
    uint64_t rule_evaluations = 0;  // candidate rules whose detection was evaluated
    uint64_t detection_matches = 0;
    uint64_t suppressed_by_filter = 0;
    uint64_t alerts = 0;
    uint64_t late_events = 0;  // too old to join a correlation window
    uint64_t correlation_groups_dropped = 0;  // a correlation already held 2^20 live groups
  };
  const Stats& stats() const { return stats_; }

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
  Stats stats_;
};

// The rule files under `paths` (files as given; directories searched recursively for *.yml and
// *.yaml), sorted, as RuleSet::Load reads them. NotFound for a path that does not exist.
Result<std::vector<std::string>> RuleFiles(const std::vector<std::string>& paths);

// Parses an ISO 8601 / RFC 3339 date-time ("2023-06-16T09:41:00Z", with optional fraction and
// offset; a missing offset means UTC; a date alone means midnight) to ms since the epoch.
Result<int64_t> ParseIsoTime(std::string_view text);
// Formats ms since the epoch as "YYYY-MM-DDTHH:MM:SS.mmmZ".
std::string FormatIsoTime(int64_t ms);

}  // namespace kw::detect
