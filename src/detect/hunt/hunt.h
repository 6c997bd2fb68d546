// Hunt: runs a compiled RuleSet over exported log files, as `keyward hunt` does.
//
// Pipeline: one reader thread walks the inputs in order (ExpandInputs: files, directories,
// globs), reads RecordBatches (a few MiB each) and hands them to worker threads, each with its
// own Engine (and its own RecordProcessor, if any). Memory is bounded: at most 2 batches queued
// per worker plus one being read, whatever the input size.
//
// Stateful work and routing. Single-event rules give the same alerts whichever worker sees an
// event, so without correlation rules or a RecordProcessor the batches go to whichever worker is
// free. Correlations and processors keep state across events, so events are then routed by a
// partition key, the value of one top-level record field (PartitionField below): every event with
// the same value goes to the same worker, in input order, and a value is given to the least
// loaded worker the first time it is seen. The field is chosen so that no state spans two values:
//   - the RecordProcessor's PartitionField() (the Storm-0558 analytics: OrganizationId), which
//     every correlation's group-by must also contain;
//   - without a processor, a tenant field (OrganizationId, TenantId, tenant) if every correlation
//     groups by it, else another field that every correlation groups by.
// When no such field exists (a correlation without group-by, two correlations with no group-by
// field in common), everything runs on one worker in input order; HuntResult says which.
// Routing reads the field as the engine does (the top-level member with that exact name, else
// one whose name differs only in ASCII case; a non-empty string value). Events without it form
// one partition of their own.
//
// Alerts are delivered to the caller's AlertCallback from worker threads, serialised (one at a
// time), as JSON (Alert::ToJson) with the rule's metadata; with several workers their order
// depends on thread timing. HuntResult::alerts_json does not: it is sorted by time, rule id and
// text, and keeps the earliest max_alerts_kept_per_rule of each rule.
//
// Thread safety: Hunt() is a blocking call; it may be called from any thread; callbacks run on
// the hunt's threads, one at a time.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
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
// stateful detectors with baselines). Hunt makes one per worker (HuntOptions::make_extra); each
// sees only its worker's events, in input order.
class RecordProcessor {
 public:
  virtual ~RecordProcessor() = default;
  // One record that the RuleSet's Engine accepted: its text and the Engine's parse of it
  // (Engine::last_event()), so the record is parsed once.
  virtual Status Process(std::string_view json, const simdjson::dom::element& parsed,
                         const LogSource& hint, AlertSink& sink) = 0;
  virtual void Flush(AlertSink& sink) = 0;
  // The top-level record field that scopes all of this processor's state (no state joins two
  // records with different values of it), or empty when its state may join any two records
  // (the hunt then runs on one worker).
  virtual std::string_view PartitionField() const { return {}; }
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
  // Optional; see RecordProcessor. Called on the calling thread, once per worker, before any
  // record is read; an error stops the hunt and is returned.
  std::function<Result<std::unique_ptr<RecordProcessor>>()> make_extra;
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
  // Stateful work (correlations, processor) with no field to route by forced one worker.
  bool single_worker_for_correlations = false;
  // The field events were routed by; empty when batches went to any worker or to the only one.
  std::string partition_field;
  uint64_t partitions = 0;  // distinct values of partition_field seen (events without it: one)
  double seconds = 0;
  std::vector<RuleHits> hits;  // rules with at least one alert, most alerts first
  // The alerts kept (see max_alerts_kept_per_rule), each one JSON object, ordered by time, then
  // rule id, then text: the same whatever the number of workers.
  std::vector<std::string> alerts_json;
  // The workers' RecordProcessors, kept because `hits` point to their rules' metadata.
  std::vector<std::shared_ptr<RecordProcessor>> processors;
};

// Receives each alert (its JSON and rule) as it is found; may be empty.
using AlertCallback = std::function<void(const Alert& alert, const std::string& json)>;

// Runs `rules` over options.inputs. Errors: InvalidArgument for no inputs or a path that does
// not exist (ExpandInputs), and I/O errors reading a file (the hunt stops). Bad records are not
// errors: they are counted in the result with their file and line.
Result<HuntResult> Hunt(const RuleSet& rules, const HuntOptions& options,
                        const AlertCallback& on_alert = {});

// The routing value of `field` in the JSON object text `json` (see the top of this file): the
// non-empty string value of the top-level member named `field`, else of the first top-level member
// whose name equals it ignoring ASCII case; nullopt when there is none or the text is not a JSON
// object. An escaped value is unescaped into *scratch, which the result then points into.
std::optional<std::string_view> PartitionValue(std::string_view json, std::string_view field,
                                               std::string* scratch);

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
