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

#include "core/json.h"

namespace kw::detect {
namespace {

using Clock = std::chrono::steady_clock;

// Bounded multi-producer multi-consumer queue of batches.
class BatchQueue {
 public:
  explicit BatchQueue(size_t capacity) : capacity_(capacity) {}
  // Blocks while full. False once closed for abort.
  bool Push(RecordBatch batch) {
    std::unique_lock lock(mu_);
    not_full_.wait(lock, [&] { return q_.size() < capacity_ || aborted_; });
    if (aborted_) return false;
    q_.push_back(std::move(batch));
    not_empty_.notify_one();
    return true;
  }
  // Blocks until a batch or the end; nullopt at the end.
  std::optional<RecordBatch> Pop() {
    std::unique_lock lock(mu_);
    not_empty_.wait(lock, [&] { return !q_.empty() || done_ || aborted_; });
    if (q_.empty() || aborted_) return std::nullopt;
    RecordBatch b = std::move(q_.front());
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
  std::deque<RecordBatch> q_;
  size_t capacity_;
  bool done_ = false;
  bool aborted_ = false;
};

// Collects alerts from every worker, one at a time.
class Collector {
 public:
  Collector(const HuntOptions& options, const AlertCallback& cb) : options_(options), cb_(cb) {}

  void Add(const Alert& alert) {
    std::string json = alert.ToJson();
    std::lock_guard lock(mu_);
    ++total_;
    RuleHits& h = hits_[alert.rule];
    h.rule = alert.rule;
    if (h.alerts == 0 || alert.time_ms < h.first_ms) h.first_ms = alert.time_ms;
    if (h.alerts == 0 || alert.time_ms > h.last_ms) h.last_ms = alert.time_ms;
    ++h.alerts;
    if (cb_) cb_(alert, json);
    if (h.alerts <= options_.max_alerts_kept_per_rule) kept_.push_back(std::move(json));
  }

  void MoveInto(HuntResult* r) {
    std::lock_guard lock(mu_);
    r->alerts = total_;
    for (auto& [rule, h] : hits_) r->hits.push_back(h);
    std::sort(r->hits.begin(), r->hits.end(), [](const RuleHits& a, const RuleHits& b) {
      if (a.alerts != b.alerts) return a.alerts > b.alerts;
      return a.rule->title < b.rule->title;
    });
    r->alerts_json = std::move(kept_);
  }

 private:
  const HuntOptions& options_;
  const AlertCallback& cb_;
  std::mutex mu_;
  uint64_t total_ = 0;
  std::unordered_map<const RuleInfo*, RuleHits> hits_;
  std::vector<std::string> kept_;
};

class CollectingSink final : public AlertSink {
 public:
  explicit CollectingSink(Collector* c) : c_(c) {}
  void OnAlert(const Alert& alert) override { c_->Add(alert); }

 private:
  Collector* c_;
};

}  // namespace

Result<HuntResult> Hunt(const RuleSet& rules, const HuntOptions& options,
                        const AlertCallback& on_alert) {
  if (options.inputs.empty()) return InvalidArgumentError("no input files");
  KW_ASSIGN_OR_RETURN(std::vector<std::string> files, ExpandInputs(options.inputs));
  if (files.empty()) return InvalidArgumentError("the inputs name no files");

  HuntResult result;
  result.files = files.size();
  const bool correlations = rules.correlation_count() > 0 || options.extra != nullptr;
  int workers = options.threads > 0 ? options.threads
                                    : static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  if (correlations) workers = 1;
  result.workers = workers;
  result.single_worker_for_correlations = correlations && options.threads != 1;

  uint64_t bytes_total = 0;
  for (const auto& f : files) {
    std::error_code ec;
    auto size = std::filesystem::file_size(f, ec);
    if (!ec) bytes_total += size;
  }

  Collector collector(options, on_alert);
  BatchQueue queue(static_cast<size_t>(2 * workers));
  std::atomic<uint64_t> events{0}, malformed{0};
  std::vector<std::thread> pool;
  pool.reserve(static_cast<size_t>(workers));
  for (int i = 0; i < workers; ++i) {
    pool.emplace_back([&] {
      Engine engine(rules);
      CollectingSink sink(&collector);
      while (auto batch = queue.Pop()) {
        for (size_t j = 0; j < batch->size(); ++j) {
          Record r = (*batch)[j];
          LogSource hint{r.source.product, r.source.service, r.source.category};
          if (!engine.Process(r.json, hint, sink).ok()) {
            malformed.fetch_add(1, std::memory_order_relaxed);
            continue;
          }
          if (options.extra) options.extra->Process(r.json, hint, sink).IgnoreError();
        }
        events.fetch_add(batch->size(), std::memory_order_relaxed);
      }
      engine.Flush(sink);
      if (options.extra) options.extra->Flush(sink);
    });
  }

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
      RecordBatch batch;
      auto more = (*reader)->NextBatch(&batch);
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
      if (!queue.Push(std::move(batch))) break;
    }
    if (!failure.ok()) break;
    bytes_before += (*reader)->total_bytes();
    const BadRecordStats& bad = (*reader)->bad_records();
    result.bad_records += bad.count;
    for (const auto& b : bad.first) {
      if (result.bad_examples.size() < 100) result.bad_examples.push_back(b);
    }
  }
  if (failure.ok()) {
    queue.Finish();
  } else {
    queue.Abort();
  }
  for (auto& t : pool) t.join();
  if (!failure.ok()) return failure;

  result.seconds = std::chrono::duration<double>(Clock::now() - start).count();
  result.events = events.load();
  result.malformed_events = malformed.load();
  result.bytes = bytes_before;
  collector.MoveInto(&result);
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
          ? " (one worker: correlations and stateful analytics keep exact windows)"
          : "");
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
