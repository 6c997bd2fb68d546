#include "detect/hunt/hunt.h"

#include <algorithm>
#include <chrono>
#include <condition_variable>
#include <deque>
#include <filesystem>
#include <atomic>
#include <mutex>
#include <optional>
#include <thread>
#include <unordered_map>

#include <fmt/format.h>
#include <simdjson.h>

#include "core/json.h"
#include "core/string_map.h"
#include "detect/pattern.h"

namespace kw::detect {

static_assert(kRecordPadding >= Engine::kEventPadding);
namespace {

using Clock = std::chrono::steady_clock;

// Work for one worker: a batch (shared by every worker it has events for) and the indices of the
// records this worker owns, or all of them.
struct WorkItem {
  std::shared_ptr<const RecordBatch> batch;
  std::vector<uint32_t> indices;
  bool all = false;
};

// Batches whose workers are done, handed back to the reader: their buffers are reused, so the
// reader does not fault in fresh pages for every few MiB of input.
class BatchPool {
 public:
  std::unique_ptr<RecordBatch> Take() {
    std::lock_guard lock(mu_);
    if (free_.empty()) return std::make_unique<RecordBatch>();
    auto b = std::move(free_.back());
    free_.pop_back();
    return b;
  }
  void Give(RecordBatch* b) {
    std::unique_ptr<RecordBatch> owned(b);
    std::lock_guard lock(mu_);
    if (free_.size() < kKept) free_.push_back(std::move(owned));
  }

 private:
  static constexpr size_t kKept = 16;
  std::mutex mu_;
  std::vector<std::unique_ptr<RecordBatch>> free_;
};

// Bounded multi-producer multi-consumer queue.
class WorkQueue {
 public:
  explicit WorkQueue(size_t capacity) : capacity_(capacity) {}
  // Blocks while full. False once aborted.
  bool Push(WorkItem item) {
    std::unique_lock lock(mu_);
    not_full_.wait(lock, [&] { return q_.size() < capacity_ || aborted_; });
    if (aborted_) return false;
    q_.push_back(std::move(item));
    not_empty_.notify_one();
    return true;
  }
  // Blocks until an item or the end; nullopt at the end.
  std::optional<WorkItem> Pop() {
    std::unique_lock lock(mu_);
    not_empty_.wait(lock, [&] { return !q_.empty() || done_ || aborted_; });
    if (q_.empty() || aborted_) return std::nullopt;
    WorkItem b = std::move(q_.front());
    q_.pop_front();
    not_full_.notify_one();
    return b;
  }
  void Finish() {
    std::lock_guard lock(mu_);
    done_ = true;
    not_empty_.notify_all();
  }
  void Abort() {
    std::lock_guard lock(mu_);
    aborted_ = true;
    not_empty_.notify_all();
    not_full_.notify_all();
  }

 private:
  std::mutex mu_;
  std::condition_variable not_empty_, not_full_;
  std::deque<WorkItem> q_;
  size_t capacity_;
  bool done_ = false;
  bool aborted_ = false;
};

// Collects alerts from every worker, one at a time. Per rule it keeps the earliest
// max_alerts_kept_per_rule alerts by (time, text), a choice that does not depend on which worker
// reported first.
class Collector {
 public:
  Collector(const HuntOptions& options, const AlertCallback& cb) : options_(options), cb_(cb) {}

  void Add(const Alert& alert) {
    std::string json = alert.ToJson();
    std::lock_guard lock(mu_);
    ++total_;
    // Keyed by the rule's identity, not its address: each worker's RecordProcessor has its own
    // copy of the same rules.
    key_.assign(alert.rule->id).append(1, '\n').append(alert.rule->file).append(1, '\n')
        .append(alert.rule->title);
    PerRule& pr = rules_[key_];
    RuleHits& h = pr.hits;
    h.rule = alert.rule;
    if (h.alerts == 0 || alert.time_ms < h.first_ms) h.first_ms = alert.time_ms;
    if (h.alerts == 0 || alert.time_ms > h.last_ms) h.last_ms = alert.time_ms;
    ++h.alerts;
    if (cb_) cb_(alert, json);
    const size_t cap = options_.max_alerts_kept_per_rule;
    if (cap == 0) return;
    Kept k{alert.time_ms, alert.rule, std::move(json)};
    if (pr.kept.size() < cap) {
      pr.kept.push_back(std::move(k));
      std::push_heap(pr.kept.begin(), pr.kept.end(), Earlier);
    } else if (Earlier(k, pr.kept.front())) {
      std::pop_heap(pr.kept.begin(), pr.kept.end(), Earlier);
      pr.kept.back() = std::move(k);
      std::push_heap(pr.kept.begin(), pr.kept.end(), Earlier);
    }
  }

  void MoveInto(HuntResult* r) {
    std::lock_guard lock(mu_);
    r->alerts = total_;
    std::vector<Kept> all;
    for (auto& [rule, pr] : rules_) {
      r->hits.push_back(pr.hits);
      for (auto& k : pr.kept) all.push_back(std::move(k));
    }
    std::sort(r->hits.begin(), r->hits.end(), [](const RuleHits& a, const RuleHits& b) {
      if (a.alerts != b.alerts) return a.alerts > b.alerts;
      if (a.rule->title != b.rule->title) return a.rule->title < b.rule->title;
      return a.rule->id < b.rule->id;
    });
    std::sort(all.begin(), all.end(), Earlier);
    r->alerts_json.reserve(all.size());
    for (auto& k : all) r->alerts_json.push_back(std::move(k.json));
  }

 private:
  struct Kept {
    int64_t time_ms;
    const RuleInfo* rule;
    std::string json;
  };
  static bool Earlier(const Kept& a, const Kept& b) {
    if (a.time_ms != b.time_ms) return a.time_ms < b.time_ms;
    if (a.rule->id != b.rule->id) return a.rule->id < b.rule->id;
    return a.json < b.json;
  }
  struct PerRule {
    RuleHits hits;
    std::vector<Kept> kept;  // a max-heap under Earlier: front() is the latest kept
  };

  const HuntOptions& options_;
  const AlertCallback& cb_;
  std::mutex mu_;
  uint64_t total_ = 0;
  std::string key_;
  std::unordered_map<std::string, PerRule> rules_;
};

class CollectingSink final : public AlertSink {
 public:
  explicit CollectingSink(Collector* c) : c_(c) {}
  void OnAlert(const Alert& alert) override { c_->Add(alert); }

 private:
  Collector* c_;
};

// The field to route events by, given the correlations' group-by lists and the processor's own
// field (empty: none, or the processor has no partition field); empty when none fits.
std::string ChoosePartitionField(const RuleSet& rules, bool has_extra,
                                 std::string_view extra_field) {
  std::vector<const std::vector<std::string>*> groups;
  for (const RuleInfo* r : rules.Rules()) {
    if (r->is_correlation) groups.push_back(&r->group_by);
  }
  auto in_every_group = [&](std::string_view f) {
    for (const auto* g : groups) {
      if (std::find(g->begin(), g->end(), f) == g->end()) return false;
    }
    return true;
  };
  if (has_extra) {
    if (extra_field.empty() || !in_every_group(extra_field)) return "";
    return std::string(extra_field);
  }
  for (std::string_view f : {"OrganizationId", "TenantId", "tenant"}) {
    if (in_every_group(f)) return std::string(f);
  }
  if (!groups.empty()) {
    for (const auto& f : *groups.front()) {
      if (in_every_group(f)) return f;
    }
  }
  return "";
}

// Gives each partition value a worker, the least loaded (in bytes) when the value is new.
class Router {
 public:
  Router(std::string field, int workers)
      : field_(std::move(field)), load_(static_cast<size_t>(workers), 0) {}

  // Splits a batch into per-worker index lists.
  void Route(const RecordBatch& batch, std::vector<std::vector<uint32_t>>* out) {
    for (auto& v : *out) v.clear();
    for (size_t i = 0; i < batch.size(); ++i) {
      Record r = batch[i];
      int w = Owner(PartitionValue(r.json, field_, &scratch_));
      (*out)[static_cast<size_t>(w)].push_back(static_cast<uint32_t>(i));
      load_[static_cast<size_t>(w)] += r.json.size();
    }
  }
  uint64_t partitions() const { return owner_.size() + (keyless_ >= 0 ? 1 : 0); }

 private:
  int LeastLoaded() const {
    return static_cast<int>(std::min_element(load_.begin(), load_.end()) - load_.begin());
  }
  int Owner(std::optional<std::string_view> key) {
    if (!key) {
      if (keyless_ < 0) keyless_ = LeastLoaded();
      return keyless_;
    }
    if (*key == last_key_ && last_owner_ >= 0) return last_owner_;
    auto it = owner_.find(*key);
    if (it == owner_.end()) it = owner_.emplace(std::string(*key), LeastLoaded()).first;
    last_key_ = it->first;
    last_owner_ = it->second;
    return it->second;
  }

  std::string field_;
  std::string scratch_;
  std::vector<uint64_t> load_;
  StringMap<int> owner_;
  std::string_view last_key_;  // points into owner_ (node-based: stable)
  int last_owner_ = -1;
  int keyless_ = -1;
};

// ---- a minimal JSON scanner for PartitionValue ----

size_t SkipSpace(std::string_view s, size_t i) {
  while (i < s.size() && (s[i] == ' ' || s[i] == '\t' || s[i] == '\n' || s[i] == '\r')) ++i;
  return i;
}

// s[i] == '"'; returns the index just past the closing quote, or npos.
size_t SkipString(std::string_view s, size_t i) {
  ++i;
  while (true) {
    size_t q = s.find('"', i);
    if (q == std::string_view::npos) return q;
    size_t back = 0;
    while (q - back > i && s[q - back - 1] == '\\') ++back;
    if (back % 2 == 0) return q + 1;
    i = q + 1;
  }
}

// Index just past the value starting at s[i], or npos.
size_t SkipValue(std::string_view s, size_t i) {
  if (i >= s.size()) return std::string_view::npos;
  if (s[i] == '"') return SkipString(s, i);
  if (s[i] == '{' || s[i] == '[') {
    int depth = 0;
    while (i < s.size()) {
      char c = s[i];
      if (c == '"') {
        i = SkipString(s, i);
        if (i == std::string_view::npos) return i;
        continue;
      }
      if (c == '{' || c == '[') ++depth;
      if (c == '}' || c == ']') {
        if (--depth == 0) return i + 1;
      }
      ++i;
    }
    return std::string_view::npos;
  }
  while (i < s.size() && s[i] != ',' && s[i] != '}' && s[i] != ']' && s[i] != ' ' &&
         s[i] != '\t' && s[i] != '\n' && s[i] != '\r') {
    ++i;
  }
  return i;
}

// The string value `quoted` ("..." with its quotes) as the engine sees it.
std::optional<std::string_view> StringValue(std::string_view quoted, std::string* scratch) {
  if (quoted.size() < 2 || quoted.front() != '"') return std::nullopt;
  std::string_view inner = quoted.substr(1, quoted.size() - 2);
  if (inner.empty()) return std::nullopt;
  if (inner.find('\\') == std::string_view::npos) return inner;
  simdjson::dom::parser parser;
  std::string_view out;
  if (parser.parse(simdjson::padded_string(quoted)).get(out) != simdjson::SUCCESS || out.empty()) {
    return std::nullopt;
  }
  scratch->assign(out);
  return std::string_view(*scratch);
}

}  // namespace

std::optional<std::string_view> PartitionValue(std::string_view json, std::string_view field,
                                               std::string* scratch) {
  size_t i = SkipSpace(json, 0);
  if (i >= json.size() || json[i] != '{') return std::nullopt;
  i = SkipSpace(json, i + 1);
  std::string_view folded;  // the first value whose name matches ignoring case
  bool have_folded = false;
  while (i < json.size() && json[i] == '"') {
    size_t key_end = SkipString(json, i);
    if (key_end == std::string_view::npos) return std::nullopt;
    std::string_view key = json.substr(i + 1, key_end - i - 2);
    i = SkipSpace(json, key_end);
    if (i >= json.size() || json[i] != ':') return std::nullopt;
    i = SkipSpace(json, i + 1);
    size_t value_end = SkipValue(json, i);
    if (value_end == std::string_view::npos) return std::nullopt;
    std::string_view value = json.substr(i, value_end - i);
    if (key == field) {
      if (auto v = StringValue(value, scratch)) return v;
    } else if (!have_folded && AsciiEqualsIgnoreCase(key, field) && value.size() > 2 &&
               value.front() == '"') {
      folded = value;
      have_folded = true;
    }
    i = SkipSpace(json, value_end);
    if (i >= json.size() || json[i] != ',') break;
    i = SkipSpace(json, i + 1);
  }
  if (have_folded) return StringValue(folded, scratch);
  return std::nullopt;
}

Result<HuntResult> Hunt(const RuleSet& rules, const HuntOptions& options,
                        const AlertCallback& on_alert) {
  if (options.inputs.empty()) return InvalidArgumentError("no input files");
  KW_ASSIGN_OR_RETURN(std::vector<std::string> files, ExpandInputs(options.inputs));
  if (files.empty()) return InvalidArgumentError("the inputs name no files");

  HuntResult result;
  result.files = files.size();
  int workers = options.threads > 0 ? options.threads
                                    : static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  std::vector<std::unique_ptr<RecordProcessor>> extras;
  if (options.make_extra) {
    KW_ASSIGN_OR_RETURN(auto first, options.make_extra());
    extras.push_back(std::move(first));
  }
  const bool stateful = rules.correlation_count() > 0 || !extras.empty();
  std::string field;
  if (stateful && workers > 1) {
    field = ChoosePartitionField(rules, !extras.empty(),
                                 extras.empty() ? std::string_view() : extras[0]->PartitionField());
    if (field.empty()) {
      workers = 1;
      result.single_worker_for_correlations = true;
    }
  }
  while (static_cast<int>(extras.size()) < workers && options.make_extra) {
    KW_ASSIGN_OR_RETURN(auto more, options.make_extra());
    extras.push_back(std::move(more));
  }
  result.workers = workers;
  result.partition_field = field;
  const bool routed = !field.empty();

  uint64_t bytes_total = 0;
  for (const auto& f : files) {
    std::error_code ec;
    auto size = std::filesystem::file_size(f, ec);
    if (!ec) bytes_total += size;
  }

  Collector collector(options, on_alert);
  BatchPool batch_pool;  // outlives every batch handed to the workers
  // Routed: one queue per worker (each sees its partitions in input order); otherwise one
  // shared queue.
  std::vector<std::unique_ptr<WorkQueue>> queues;
  for (int i = 0; i < (routed ? workers : 1); ++i) {
    queues.push_back(std::make_unique<WorkQueue>(routed ? 2 : static_cast<size_t>(2 * workers)));
  }
  std::atomic<uint64_t> events{0}, malformed{0};
  std::vector<std::thread> pool;
  pool.reserve(static_cast<size_t>(workers));
  for (int i = 0; i < workers; ++i) {
    WorkQueue* queue = queues[routed ? static_cast<size_t>(i) : 0].get();
    RecordProcessor* extra = extras.empty() ? nullptr : extras[static_cast<size_t>(i)].get();
    pool.emplace_back([&, queue, extra] {
      Engine engine(rules);
      CollectingSink sink(&collector);
      auto one = [&](const Record& r) {
        LogSource hint{r.source.product, r.source.service, r.source.category};
        // Records carry kRecordPadding readable bytes after their text: parsed in place.
        if (!engine.ProcessPadded(r.json, hint, sink).ok()) {
          malformed.fetch_add(1, std::memory_order_relaxed);
          return;
        }
        if (extra) extra->Process(r.json, *engine.last_event(), hint, sink).IgnoreError();
      };
      while (auto item = queue->Pop()) {
        const RecordBatch& batch = *item->batch;
        if (item->all) {
          for (size_t j = 0; j < batch.size(); ++j) one(batch[j]);
          events.fetch_add(batch.size(), std::memory_order_relaxed);
        } else {
          for (uint32_t j : item->indices) one(batch[j]);
          events.fetch_add(item->indices.size(), std::memory_order_relaxed);
        }
      }
      engine.Flush(sink);
      if (extra) extra->Flush(sink);
    });
  }

  std::optional<Router> router;
  if (routed) router.emplace(field, workers);
  std::vector<std::vector<uint32_t>> split(static_cast<size_t>(workers));
  auto dispatch = [&](std::unique_ptr<RecordBatch> batch) -> bool {
    std::shared_ptr<const RecordBatch> shared(
        batch.release(), [&batch_pool](const RecordBatch* b) {
          batch_pool.Give(const_cast<RecordBatch*>(b));
        });
    if (!routed) return queues[0]->Push(WorkItem{std::move(shared), {}, true});
    router->Route(*shared, &split);
    for (int w = 0; w < workers; ++w) {
      auto& idx = split[static_cast<size_t>(w)];
      if (idx.empty()) continue;
      if (!queues[static_cast<size_t>(w)]->Push(WorkItem{shared, std::move(idx), false})) return false;
      idx = {};
    }
    return true;
  };

  const auto start = Clock::now();
  auto last_progress = start;
  uint64_t bytes_before = 0;
  Status failure;
  for (const auto& file : files) {
    auto reader = RecordReader::Open(file, options.format, options.reader);
    if (!reader.ok()) {
      failure = reader.status().WithContext(file);
      break;
    }
    while (true) {
      std::unique_ptr<RecordBatch> batch = batch_pool.Take();
      auto more = (*reader)->NextBatch(batch.get());
      if (!more.ok()) {
        failure = more.status().WithContext(file);
        break;
      }
      if (!*more) break;
      if (options.progress) {
        auto now = Clock::now();
        if (now - last_progress >= std::chrono::milliseconds(options.progress_interval_ms)) {
          last_progress = now;
          HuntProgress p;
          p.bytes_done = bytes_before + (*reader)->bytes_read();
          p.bytes_total = bytes_total;
          p.events = events.load(std::memory_order_relaxed);
          p.seconds = std::chrono::duration<double>(now - start).count();
          p.current_file = file;
          options.progress(p);
        }
      }
      if (!dispatch(std::move(batch))) break;
    }
    if (!failure.ok()) break;
    bytes_before += (*reader)->total_bytes();
    const BadRecordStats& bad = (*reader)->bad_records();
    result.bad_records += bad.count;
    for (const auto& b : bad.first) {
      if (result.bad_examples.size() < 100) result.bad_examples.push_back(b);
    }
  }
  for (auto& q : queues) {
    if (failure.ok()) {
      q->Finish();
    } else {
      q->Abort();
    }
  }
  for (auto& t : pool) t.join();
  if (!failure.ok()) return failure;

  result.seconds = std::chrono::duration<double>(Clock::now() - start).count();
  result.events = events.load();
  result.malformed_events = malformed.load();
  result.bytes = bytes_before;
  if (router) result.partitions = router->partitions();
  collector.MoveInto(&result);
  for (auto& e : extras) result.processors.push_back(std::move(e));
  if (options.progress) {
    HuntProgress p;
    p.bytes_done = p.bytes_total = bytes_total;
    p.events = result.events;
    p.seconds = result.seconds;
    options.progress(p);
  }
  return result;
}

// ---- output formats ----

namespace {

std::string Rate(double per_second) {
  if (per_second >= 1e6) return fmt::format("{:.2f} M", per_second / 1e6);
  if (per_second >= 1e3) return fmt::format("{:.1f} k", per_second / 1e3);
  return fmt::format("{:.0f} ", per_second);
}

std::string CsvField(std::string_view s) {
  std::string out = "\"";
  for (char c : s) {
    if (c == '"') out += '"';
    out += c;
  }
  out += '"';
  return out;
}

void WriteRuleInfo(json::Writer& w, const RuleInfo& r) {
  w.Key("id").String(r.id).Key("title").String(r.title).Key("level").String(r.level);
  w.Key("tags").BeginArray();
  for (const auto& t : r.tags) w.String(t);
  w.EndArray();
  w.Key("file").String(r.file);
}

std::string SarifLevel(std::string_view level) {
  if (level == "critical" || level == "high") return "error";
  if (level == "medium") return "warning";
  return "note";
}

}  // namespace

std::string FormatTable(const HuntResult& r, const LoadReport& load) {
  std::string out;
  if (r.hits.empty()) {
    out += "no alerts\n";
  } else {
    out += fmt::format("{:>8}  {:<13} {:<24} {:<24} {}\n", "ALERTS", "LEVEL", "FIRST", "LAST",
                       "RULE");
    for (const RuleHits& h : r.hits) {
      out += fmt::format("{:>8}  {:<13} {:<24} {:<24} {} ({})\n", h.alerts, h.rule->level,
                         FormatIsoTime(h.first_ms), FormatIsoTime(h.last_ms), h.rule->title,
                         h.rule->id);
    }
  }
  const double secs = std::max(r.seconds, 1e-9);
  out += fmt::format(
      "\n{} alerts from {} rules; {} events in {} files ({:.1f} MB) in {:.2f} s: {}events/s, "
      "{:.0f} MB/s with {} worker{}{}\n",
      r.alerts, r.hits.size(), r.events, r.files, static_cast<double>(r.bytes) / 1e6, r.seconds,
      Rate(static_cast<double>(r.events) / secs), static_cast<double>(r.bytes) / 1e6 / secs,
      r.workers, r.workers == 1 ? "" : "s",
      r.single_worker_for_correlations
          ? " (one worker: no record field scopes every correlation and analytic)"
          : (r.partition_field.empty()
                 ? std::string()
                 : fmt::format(" (routed by {}: {} partitions)", r.partition_field, r.partitions)));
  out += fmt::format("rules: {} detection, {} correlation, {} filter loaded; {} rejected\n",
                     load.rules, load.correlations, load.filters, load.rejected.size());
  if (r.bad_records || r.malformed_events) {
    out += fmt::format("bad records: {} unreadable, {} not JSON objects\n", r.bad_records,
                       r.malformed_events);
    for (const auto& b : r.bad_examples) {
      out += fmt::format("  {}:{}: {}\n", b.file, b.line, b.reason);
    }
  }
  return out;
}

std::string FormatJson(const HuntResult& r, const LoadReport& load) {
  json::Writer w;
  w.BeginObject().Key("summary").BeginObject()
      .Key("files").Int(static_cast<int64_t>(r.files))
      .Key("events").Int(static_cast<int64_t>(r.events))
      .Key("bytes").Int(static_cast<int64_t>(r.bytes))
      .Key("alerts").Int(static_cast<int64_t>(r.alerts))
      .Key("bad_records").Int(static_cast<int64_t>(r.bad_records))
      .Key("malformed_events").Int(static_cast<int64_t>(r.malformed_events))
      .Key("seconds").Double(r.seconds)
      .Key("workers").Int(r.workers)
      .EndObject();
  w.Key("rules").BeginArray();
  for (const RuleHits& h : r.hits) {
    w.BeginObject();
    WriteRuleInfo(w, *h.rule);
    w.Key("alerts").Int(static_cast<int64_t>(h.alerts))
        .Key("first").String(FormatIsoTime(h.first_ms))
        .Key("last").String(FormatIsoTime(h.last_ms));
    w.EndObject();
  }
  w.EndArray();
  w.Key("alerts").BeginArray();
  for (const auto& a : r.alerts_json) w.Raw(a);
  w.EndArray();
  w.Key("bad_records").BeginArray();
  for (const auto& b : r.bad_examples) {
    w.BeginObject().Key("file").String(b.file).Key("line").Int(static_cast<int64_t>(b.line))
        .Key("reason").String(b.reason).EndObject();
  }
  w.EndArray();
  w.Key("rejected_rules").BeginArray();
  for (const auto& issue : load.rejected) {
    w.BeginObject().Key("file").String(issue.file).Key("line").Int(issue.line)
        .Key("column").Int(issue.column).Key("id").String(issue.rule_id)
        .Key("reason").String(issue.reason).EndObject();
  }
  w.EndArray();
  w.EndObject();
  return w.Take() + "\n";
}

std::string FormatJsonLines(const HuntResult& r) {
  std::string out;
  for (const auto& a : r.alerts_json) {
    out += a;
    out += '\n';
  }
  return out;
}

std::string FormatCsv(const HuntResult& r) {
  std::string out = "time,rule_id,level,title,group_by,value,event\n";
  json::StrictParser parser(64u << 20, 64);
  for (const auto& a : r.alerts_json) {
    auto doc = parser.Parse(a);
    if (!doc.ok() || !doc->is_object()) continue;
    json::Object o = doc->get_object().value();
    std::string time(json::FindString(o, "time").value_or(""));
    std::string id, level, title, group_by, value, event;
    if (auto rule = json::GetObject(o, "rule"); rule.ok()) {
      id = std::string(json::FindString(*rule, "id").value_or(""));
      level = std::string(json::FindString(*rule, "level").value_or(""));
      title = std::string(json::FindString(*rule, "title").value_or(""));
    }
    if (auto c = json::GetObject(o, "correlation"); c.ok()) {
      auto gb = (*c)["group_by"];
      if (!gb.error()) group_by = json::Minify(gb.value());
      auto v = (*c)["value"];
      if (!v.error()) value = json::Minify(v.value());
    }
    auto ev = o["event"];
    if (!ev.error()) event = json::Minify(ev.value());
    out += fmt::format("{},{},{},{},{},{},{}\n", CsvField(time), CsvField(id), CsvField(level),
                       CsvField(title), CsvField(group_by), CsvField(value), CsvField(event));
  }
  return out;
}

std::string FormatSarif(const HuntResult& r, const LoadReport& load) {
  (void)load;
  json::Writer w;
  w.BeginObject()
      .Key("version").String("2.1.0")
      .Key("$schema").String("https://json.schemastore.org/sarif-2.1.0.json")
      .Key("runs").BeginArray().BeginObject();
  w.Key("tool").BeginObject().Key("driver").BeginObject()
      .Key("name").String("keyward hunt")
      .Key("informationUri").String("https://github.com/SigmaHQ/sigma-specification");
  w.Key("rules").BeginArray();
  for (const RuleHits& h : r.hits) {
    w.BeginObject().Key("id").String(h.rule->id)
        .Key("name").String(h.rule->title)
        .Key("shortDescription").BeginObject().Key("text").String(h.rule->title).EndObject()
        .Key("fullDescription").BeginObject().Key("text").String(h.rule->description).EndObject()
        .Key("defaultConfiguration").BeginObject().Key("level").String(SarifLevel(h.rule->level))
        .EndObject()
        .Key("properties").BeginObject().Key("tags").BeginArray();
    for (const auto& t : h.rule->tags) w.String(t);
    w.EndArray().EndObject().EndObject();
  }
  w.EndArray().EndObject().EndObject();
  w.Key("results").BeginArray();
  json::StrictParser parser(64u << 20, 64);
  for (const auto& a : r.alerts_json) {
    auto doc = parser.Parse(a);
    if (!doc.ok() || !doc->is_object()) continue;
    json::Object o = doc->get_object().value();
    std::string id, level, title;
    if (auto rule = json::GetObject(o, "rule"); rule.ok()) {
      id = std::string(json::FindString(*rule, "id").value_or(""));
      level = std::string(json::FindString(*rule, "level").value_or(""));
      title = std::string(json::FindString(*rule, "title").value_or(""));
    }
    w.BeginObject().Key("ruleId").String(id).Key("level").String(SarifLevel(level))
        .Key("message").BeginObject()
        .Key("text").String(fmt::format("{} at {}", title, json::FindString(o, "time").value_or("")))
        .EndObject()
        .Key("properties").BeginObject().Key("alert").Raw(a).EndObject()
        .EndObject();
  }
  w.EndArray();
  w.EndObject().EndArray().EndObject();
  return w.Take() + "\n";
}

}  // namespace kw::detect
