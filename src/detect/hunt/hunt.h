// Hunt: runs a compiled RuleSet over exported log files, as `keyward hunt` does.
//
// Pipeline: one reader thread walks the inputs in order (ExpandInputs: files, directories,
// globs) and hands RecordBatches (a few MiB each) to a bounded queue; worker threads, each with
// its own Engine, take batches and match every record. Memory is bounded by the queue: at most
// 2 × workers batches in flight, whatever the input size.
//
// Correlations: an Engine's correlation state sees only the events given to that Engine, so a
// rule set with correlation rules is run on ONE worker (fed in input order) to keep windows
// exact; without correlations the work is spread over `threads` workers. HuntResult says which.
//
// Alerts are delivered to the caller's AlertCallback from worker threads, serialised (one at a
// time), as JSON (Alert::ToJson) with the rule's metadata.
//
// Thread safety: Hunt() is a blocking call; it may be called from any thread; callbacks run on
// the hunt's threads, one at a time.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "core/status.h"
#include "detect/engine.h"
#include "detect/input/record_reader.h"

namespace kw::detect {

struct HuntProgress {
  uint64_t bytes_done = 0;   // input bytes consumed (compressed for gzip)
  uint64_t bytes_total = 0;  // sum of input sizes
  uint64_t events = 0;
  double seconds = 0;
  std::string current_file;
};

// A second matcher run on every record after the RuleSet's Engine (the Storm-0558 analytics:
// stateful detectors with baselines). Its state spans the whole input, so a hunt with one runs on
// a single worker, in input order.
class RecordProcessor {
 public:
  virtual ~RecordProcessor() = default;
  virtual Status Process(std::string_view json, const LogSource& hint, AlertSink& sink) = 0;
  virtual void Flush(AlertSink& sink) = 0;
};

struct HuntOptions {
  std::vector<std::string> inputs;  // files, directories, globs
  LogFormat format = LogFormat::kAuto;
  int threads = 0;                  // workers; 0: one per core
  ReaderOptions reader;
  // Called from the reader thread about every progress_interval_ms; may be empty.
  std::function<void(const HuntProgress&)> progress;
  int progress_interval_ms = 200;
  // Keep at most this many alerts per rule in HuntResult::alerts (all are counted).
  size_t max_alerts_kept_per_rule = 1000;
  // Optional; see RecordProcessor. Not owned; must outlive the call.
  RecordProcessor* extra = nullptr;
};

// Per-rule totals.
struct RuleHits {
  const RuleInfo* rule = nullptr;
  uint64_t alerts = 0;
  int64_t first_ms = 0, last_ms = 0;
};

struct HuntResult {
  uint64_t files = 0;
  uint64_t events = 0;
  uint64_t bytes = 0;
  uint64_t bad_records = 0;
  std::vector<BadRecord> bad_examples;  // the first few, with file and line
  uint64_t malformed_events = 0;        // records the engine could not parse
  uint64_t alerts = 0;
  int workers = 0;
  bool single_worker_for_correlations = false;  // or for the stateful extra processor
  double seconds = 0;
  std::vector<RuleHits> hits;  // rules with at least one alert, most alerts first
  // The alerts kept (see max_alerts_kept_per_rule), each one JSON object, in arrival order.
  std::vector<std::string> alerts_json;
};

// Receives each alert (its JSON and rule) as it is found; may be empty.
using AlertCallback = std::function<void(const Alert& alert, const std::string& json)>;

// Runs `rules` over options.inputs. Errors: InvalidArgument for no inputs or a path that does
// not exist (ExpandInputs), and I/O errors reading a file (the hunt stops). Bad records are not
// errors: they are counted in the result with their file and line.
Result<HuntResult> Hunt(const RuleSet& rules, const HuntOptions& options,
                        const AlertCallback& on_alert = {});

// ---- output formats ----

// A human-readable summary: per rule (most alerts first) count, level, title, first and last
// time; then totals and throughput.
std::string FormatTable(const HuntResult& result, const LoadReport& load);
// One JSON document: {"summary":{...},"rules":[...],"alerts":[...],"rejected_rules":[...]}.
std::string FormatJson(const HuntResult& result, const LoadReport& load);
// One alert JSON per line.
std::string FormatJsonLines(const HuntResult& result);
// time,rule_id,level,title,group_by,value,event (RFC 4180 quoting).
std::string FormatCsv(const HuntResult& result);
// SARIF 2.1.0: one run, a reportingDescriptor per rule, a result per alert (logical location:
// the event's file is not known per alert, so the message carries the event's time and summary).
std::string FormatSarif(const HuntResult& result, const LoadReport& load);

}  // namespace kw::detect
