#include "detect/engine.h"

#include <algorithm>
#include <charconv>
#include <cmath>
#include <deque>
#include <queue>
#include <filesystem>
#include <unordered_map>
#include <unordered_set>

#include <simdjson.h>

#include "core/file.h"
#include "core/json.h"
#include "detect/loader.h"
#include "detect/matcher.h"
#include "detect/rule.h"

namespace kw::detect {

static_assert(Engine::kEventPadding >= simdjson::SIMDJSON_PADDING);

using internal::CorrelationRule;
using internal::CorrelationType;
using internal::DetectionRule;
using internal::EventView;
using internal::MappingEntry;
using internal::RuleGroup;
using internal::RuleSetData;
using internal::TimeFormat;

// ---------------------------------------------------------------------------------------------
// Time

static int64_t DaysFromCivil(int64_t y, unsigned m, unsigned d) {
  y -= m <= 2;
  const int64_t era = (y >= 0 ? y : y - 399) / 400;
  const unsigned yoe = static_cast<unsigned>(y - era * 400);
  const unsigned doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
  const unsigned doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
  return era * 146097 + static_cast<int64_t>(doe) - 719468;
}

Result<int64_t> ParseIsoTime(std::string_view s) {
  auto num = [&](size_t pos, size_t len, int* v) {
    if (pos + len > s.size()) return false;
    for (size_t i = pos; i < pos + len; ++i) {
      if (s[i] < '0' || s[i] > '9') return false;
    }
    std::from_chars(s.data() + pos, s.data() + pos + len, *v);
    return true;
  };
  int y = 0, mo = 0, d = 0, h = 0, mi = 0, sec = 0;
  if (!num(0, 4, &y) || s.size() < 10 || s[4] != '-' || !num(5, 2, &mo) || s[7] != '-' ||
      !num(8, 2, &d) || mo < 1 || mo > 12 || d < 1 || d > 31) {
    return InvalidArgumentError("not an ISO 8601 date: '" + std::string(s.substr(0, 40)) + "'");
  }
  size_t i = 10;
  int64_t ms = 0;
  int64_t offset_min = 0;
  if (i < s.size() && (s[i] == 'T' || s[i] == 't' || s[i] == ' ')) {
    if (!num(i + 1, 2, &h) || i + 3 >= s.size() || s[i + 3] != ':' || !num(i + 4, 2, &mi) ||
        h > 23 || mi > 59) {
      return InvalidArgumentError("bad time in '" + std::string(s.substr(0, 40)) + "'");
    }
    i += 6;
    if (i < s.size() && s[i] == ':') {
      if (!num(i + 1, 2, &sec) || sec > 60) return InvalidArgumentError("bad seconds");
      i += 3;
      if (i < s.size() && (s[i] == '.' || s[i] == ',')) {
        ++i;
        int digits = 0;
        while (i < s.size() && s[i] >= '0' && s[i] <= '9') {
          if (digits < 3) ms = ms * 10 + (s[i] - '0');
          ++digits;
          ++i;
        }
        for (int k = digits; k < 3; ++k) ms *= 10;
      }
    }
    if (i < s.size()) {
      if (s[i] == 'Z' || s[i] == 'z') {
        ++i;
      } else if (s[i] == '+' || s[i] == '-') {
        int oh = 0, om = 0;
        int sign = s[i] == '-' ? -1 : 1;
        if (!num(i + 1, 2, &oh)) return InvalidArgumentError("bad UTC offset");
        size_t j = i + 3;
        if (j < s.size() && s[j] == ':') ++j;
        if (j + 2 <= s.size() && num(j, 2, &om)) j += 2;
        offset_min = sign * (oh * 60 + om);
        i = j;
      }
    }
  }
  if (i != s.size()) return InvalidArgumentError("trailing text in time '" + std::string(s.substr(0, 40)) + "'");
  int64_t days = DaysFromCivil(y, mo, d);
  return ((days * 86400 + h * 3600 + mi * 60 + sec) - offset_min * 60) * 1000 + ms;
}

std::string FormatIsoTime(int64_t ms) {
  int64_t secs = ms >= 0 ? ms / 1000 : (ms - 999) / 1000;
  int64_t frac = ms - secs * 1000;
  int64_t days = secs >= 0 ? secs / 86400 : (secs - 86399) / 86400;
  int64_t rem = secs - days * 86400;
  // civil_from_days
  int64_t z = days + 719468;
  const int64_t era = (z >= 0 ? z : z - 146096) / 146097;
  const unsigned doe = static_cast<unsigned>(z - era * 146097);
  const unsigned yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
  int64_t y = static_cast<int64_t>(yoe) + era * 400;
  const unsigned doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
  const unsigned mp = (5 * doy + 2) / 153;
  const unsigned d = doy - (153 * mp + 2) / 5 + 1;
  const unsigned m = mp < 10 ? mp + 3 : mp - 9;
  y += m <= 2;
  char buf[96];
  snprintf(buf, sizeof buf, "%04lld-%02u-%02uT%02lld:%02lld:%02lld.%03lldZ",
           static_cast<long long>(y), m, d, static_cast<long long>(rem / 3600),
           static_cast<long long>(rem / 60 % 60), static_cast<long long>(rem % 60),
           static_cast<long long>(frac));
  return buf;
}

// ---------------------------------------------------------------------------------------------
// Reports and alerts

std::string LoadIssue::ToString() const {
  std::string out = file;
  if (line > 0) out += ":" + std::to_string(line) + ":" + std::to_string(column);
  out += ": ";
  if (!rule_id.empty()) out += "[" + rule_id + "] ";
  out += reason;
  return out;
}

std::string Alert::ToJson() const {
  json::Writer w;
  w.BeginObject();
  w.Key("rule").BeginObject();
  w.Key("id").String(rule->id);
  w.Key("title").String(rule->title);
  w.Key("level").String(rule->level);
  w.Key("tags").BeginArray();
  for (const auto& t : rule->tags) w.String(t);
  w.EndArray();
  w.Key("file").String(rule->file);
  w.EndObject();
  w.Key("time").String(FormatIsoTime(time_ms));
  if (!rule->is_correlation) {
    if (!event_json.empty()) w.Key("event").Raw(event_json);
  } else {
    w.Key("correlation").BeginObject();
    w.Key("type").String(rule->correlation_type);
    w.Key("group_by").BeginObject();
    for (const auto& [k, v] : group_by) w.Key(k).String(v);
    w.EndObject();
    w.Key("value").Double(value);
    w.Key("first_time").String(FormatIsoTime(first_time_ms));
    w.Key("events").BeginArray();
    for (const auto& e : evidence) w.Raw(e);
    w.EndArray();
    w.EndObject();
  }
  w.EndObject();
  return w.Take();
}

void VectorAlertSink::OnAlert(const Alert& a) {
  alerts.push_back({a.rule->id, a.rule->title, a.rule->level, a.time_ms, a.value, a.group_by,
                    a.evidence.size(), a.ToJson()});
}

// ---------------------------------------------------------------------------------------------
// Loading

static bool IsRuleFile(const std::filesystem::path& p) {
  auto ext = p.extension().string();
  return ext == ".yml" || ext == ".yaml";
}

static Result<std::shared_ptr<const RuleSetData>> Build(
    const std::vector<std::pair<std::string, std::string>>& texts, const LoadOptions& options,
    LoadReport* report) {
  internal::Loader loader(options, report);
  if (options.builtin_mappings) {
    for (const auto& [name, text] : internal::BuiltinMappings()) {
      KW_RETURN_IF_ERROR(loader.AddMapping(text, name));
    }
  }
  for (const auto& path : options.mapping_files) {
    KW_ASSIGN_OR_RETURN(std::string text, ReadFile(path, 4u << 20));
    KW_RETURN_IF_ERROR(loader.AddMapping(text, path));
  }
  for (const auto& [name, text] : texts) loader.AddRules(text, name);
  return std::shared_ptr<const RuleSetData>(loader.Finish());
}

Result<RuleSet> RuleSet::LoadFromStrings(
    const std::vector<std::pair<std::string, std::string>>& name_and_yaml,
    const LoadOptions& options, LoadReport* report) {
  LoadReport local;
  if (!report) report = &local;
  KW_ASSIGN_OR_RETURN(auto data, Build(name_and_yaml, options, report));
  return RuleSet(std::move(data));
}

Result<std::vector<std::string>> RuleFiles(const std::vector<std::string>& paths) {
  namespace fs = std::filesystem;
  std::vector<std::string> files;
  for (const auto& p : paths) {
    std::error_code ec;
    if (fs::is_directory(p, ec)) {
      for (fs::recursive_directory_iterator it(p, fs::directory_options::skip_permission_denied, ec), end;
           !ec && it != end; it.increment(ec)) {
        if (it->is_regular_file(ec) && IsRuleFile(it->path())) files.push_back(it->path().string());
      }
      if (ec) return UnavailableError("cannot list '" + p + "': " + ec.message());
    } else if (fs::exists(p, ec)) {
      files.push_back(p);
    } else {
      return NotFoundError("rule path '" + p + "' does not exist");
    }
  }
  std::sort(files.begin(), files.end());
  return files;
}

Result<RuleSet> RuleSet::Load(const std::vector<std::string>& paths, const LoadOptions& options,
                              LoadReport* report) {
  LoadReport local;
  if (!report) report = &local;
  KW_ASSIGN_OR_RETURN(std::vector<std::string> files, RuleFiles(paths));
  std::vector<std::pair<std::string, std::string>> texts;
  texts.reserve(files.size());
  for (const auto& f : files) {
    auto text = ReadFile(f, options.max_file_bytes);
    if (!text.ok()) {
      ++report->files;
      report->rejected.push_back({f, 0, 0, "", "", text.status().message()});
      continue;
    }
    texts.emplace_back(f, std::move(*text));
  }
  KW_ASSIGN_OR_RETURN(auto data, Build(texts, options, report));
  return RuleSet(std::move(data));
}

size_t RuleSet::rule_count() const { return d_->rules.size(); }
size_t RuleSet::correlation_count() const { return d_->correlations.size(); }
size_t RuleSet::filter_count() const { return d_->filters.size(); }

std::vector<const RuleInfo*> RuleSet::Rules() const {
  std::vector<const RuleInfo*> out;
  for (const auto& r : d_->rules) out.push_back(&r.info);
  for (const auto& c : d_->correlations) out.push_back(&c.info);
  return out;
}

// ---------------------------------------------------------------------------------------------
// Engine

namespace {

// What a hint means for this RuleSet: the rule groups that may apply (some gated by mapping
// conditions on the event) and where the event time is.
struct HintPlan {
  std::string product, service, category;
  struct Gate {
    int group;
    std::vector<int> condition_entries;  // mapping entries whose conditions must hold
  };
  std::vector<Gate> gates;
  std::vector<std::pair<int, TimeFormat>> time_fields;
};

// A match fed into a correlation: from a detection rule (fields read from the event) or from
// an inner correlation (fields from its group-by values).
struct CorrInput {
  int ref_pos;  // position in the correlation's refs
  int64_t time;
  std::string key;                  // group-by values joined
  const std::vector<std::pair<std::string, std::string>>* group_by;
  std::string value;  // value_count/sum/avg field value
  bool has_value;
  // Event JSON or inner alert JSON, shared by every correlation window the event joins.
  std::shared_ptr<const std::string> evidence;
};

struct WindowEntry {
  int64_t time;
  int ref_pos;
  std::string value;
  double number;
  bool has_number;
  bool has_value;
  std::shared_ptr<const std::string> evidence;
};

struct GroupState {
  std::deque<WindowEntry> entries;
  std::vector<std::pair<std::string, std::string>> group_by;
  int64_t newest = INT64_MIN;
  // The measure of the window that ends at the newest entry, kept up to date while events
  // arrive in time order (event_count, value_count, value_sum, value_avg), so that each event
  // costs O(1) instead of a scan of the window: entries [inc_begin, size) with their distinct
  // values and how many entries hold each, or their sum. value_percentile counts its open
  // window's values in inc_values too.
  bool inc_valid = false;
  size_t inc_begin = 0;
  StringMap<uint32_t> inc_values;
  double inc_sum = 0;
  size_t inc_numbers = 0;
  // Correlations decided when their window closes (see Engine::Impl::at_close): the open
  // window's first event time, or INT64_MIN; events up to closed_until belong to windows
  // already decided.
  int64_t win_start = INT64_MIN;
  int64_t closed_until = INT64_MIN;
};

// value_percentile keeps the text of this many events of each value as evidence.
constexpr uint32_t kPercentileEvidencePerValue = 3;

// Bounds the memory an adversarial stream (a new user name per event) can make one correlation
// hold; beyond it, inputs for new groups are dropped and counted.
constexpr size_t kMaxGroupsPerCorrelation = 1 << 20;

struct CorrState {
  std::unordered_map<std::string, GroupState> groups;
  int64_t newest = INT64_MIN;
  uint64_t inputs = 0;
  // Correlations decided when their window closes: (window end, group key), soonest first.
  std::priority_queue<std::pair<int64_t, std::string>, std::vector<std::pair<int64_t, std::string>>,
                      std::greater<>>
      closes;
};

}  // namespace

struct Engine::Impl {
  std::shared_ptr<const RuleSetData> d;
  simdjson::dom::parser parser{64u << 20};
  std::string buf;
  internal::HsScratch hs_scratch;
  bool scratch_ok = true;
  EventView view;
  std::vector<std::unique_ptr<HintPlan>> plans;
  HintPlan* last_plan = nullptr;
  std::vector<uint32_t> stamp;
  uint32_t stamp_gen = 0;
  std::vector<int8_t> entry_memo;
  std::vector<CorrState> corr;
  std::vector<bool> at_close;  // per correlation: decided when its window closes
  int64_t last_time = 0;
  CorrInput feed_in;
  std::vector<std::pair<std::string, std::string>> feed_gb;
  std::shared_ptr<const std::string> event_evidence;  // this event's text, once a window needs it
  simdjson::dom::element root;  // the last event parsed, when has_root (a JSON object)
  bool has_root = false;
  Stats* stats;

  Impl(const RuleSet& rs, Stats* s)
      : d(rs.d_), view(rs.d_.get(), &hs_scratch), stamp(rs.d_->rules.size(), 0),
        entry_memo(rs.d_->mappings.size(), -1), corr(rs.d_->correlations.size()), stats(s) {
    // A count can only grow while its window is open: a threshold from above (lt, lte) or an
    // exact value (eq, neq) is decided when the window closes, not at the first event.
    for (const auto& c : d->correlations) {
      bool counts = c.type == CorrelationType::kEventCount || c.type == CorrelationType::kValueCount;
      if (c.type == CorrelationType::kValuePercentile) {
        at_close.push_back(true);  // a share is only known once the window is complete
        continue;
      }
      bool upper = false;
      for (const auto& [op, n] : c.conditions) {
        upper = upper || op == internal::CompareOp::kLt || op == internal::CompareOp::kLte ||
                op == internal::CompareOp::kEq || op == internal::CompareOp::kNeq;
      }
      at_close.push_back(counts && upper);
    }
    buf.reserve(64 << 10);
    for (const auto& db : d->field_dbs) {
      // Only fails when out of memory; matching then falls back to no alerts on those fields.
      if (db) scratch_ok = scratch_ok && hs_scratch.Fit(*db).ok();
    }
  }

  HintPlan* PlanFor(const LogSource& h) {
    if (last_plan && last_plan->product == h.product && last_plan->service == h.service &&
        last_plan->category == h.category) {
      return last_plan;
    }
    for (auto& p : plans) {
      if (p->product == h.product && p->service == h.service && p->category == h.category) {
        return last_plan = p.get();
      }
    }
    // Hints come from readers (a handful of distinct ones); bound the cache anyway.
    if (plans.size() >= 256) plans.clear();
    auto plan = std::make_unique<HintPlan>();
    plan->product = AsciiLowerCopy(h.product);
    plan->service = AsciiLowerCopy(h.service);
    plan->category = AsciiLowerCopy(h.category);
    for (size_t g = 0; g < d->groups.size(); ++g) {
      const auto& ls = d->groups[g].logsource;
      HintPlan::Gate gate{static_cast<int>(g), {}};
      bool ok = true;
      // The product must match the hint (or the hint leaves it open); service and category may
      // also be decided by the mapping's conditions on the event.
      auto check = [&](const std::string& want, const std::string& have,
                       std::string internal::LogSourceKey::*attr) {
        if (!ok || want.empty() || want == have) return;
        for (size_t e = 0; attr != &internal::LogSourceKey::product && e < d->mappings.size(); ++e) {
          const MappingEntry& me = d->mappings[e];
          if (!me.has_conditions || me.logsource.*attr != want) continue;
          if (!me.logsource.SubsetOf(ls)) continue;
          gate.condition_entries.push_back(static_cast<int>(e));
          return;
        }
        if (!have.empty()) ok = false;
      };
      check(ls.product, plan->product, &internal::LogSourceKey::product);
      check(ls.service, plan->service, &internal::LogSourceKey::service);
      check(ls.category, plan->category, &internal::LogSourceKey::category);
      if (ok) plan->gates.push_back(std::move(gate));
    }
    internal::LogSourceKey hint_key{plan->product, plan->service, plan->category};
    // Most specific timestamp definitions first.
    std::vector<std::pair<int, const MappingEntry*>> ts;
    for (const MappingEntry& me : d->mappings) {
      if (me.timestamp_field_id < 0 || me.has_conditions || !me.logsource.SubsetOf(hint_key)) continue;
      int spec = !me.logsource.product.empty() + !me.logsource.service.empty() +
                 !me.logsource.category.empty();
      ts.push_back({spec, &me});
    }
    std::stable_sort(ts.begin(), ts.end(), [](auto& a, auto& b) { return a.first > b.first; });
    for (auto& [spec, me] : ts) plan->time_fields.push_back({me->timestamp_field_id, me->timestamp_format});
    for (int f : d->default_time_fields) plan->time_fields.push_back({f, TimeFormat::kAuto});
    // Keep the raw hint strings for comparison (plan strings are lower-cased copies).
    plan->product = std::string(h.product);
    plan->service = std::string(h.service);
    plan->category = std::string(h.category);
    plans.push_back(std::move(plan));
    return last_plan = plans.back().get();
  }

  bool EventTime(const HintPlan& plan, int64_t* out) {
    for (const auto& [field, fmt] : plan.time_fields) {
      auto span = view.Resolve(field);
      for (uint32_t i = span.begin; i < span.begin + span.count; ++i) {
        const EventView::Value& v = view.value(i);
        std::string_view text;
        if (!view.Raw(i, &text)) continue;
        bool numeric = v.type == simdjson::dom::element_type::INT64 ||
                       v.type == simdjson::dom::element_type::UINT64 ||
                       v.type == simdjson::dom::element_type::DOUBLE;
        if (numeric || fmt == TimeFormat::kEpochSeconds || fmt == TimeFormat::kEpochMillis) {
          auto n = ParseNumber(text);
          if (!n) continue;
          bool millis = fmt == TimeFormat::kEpochMillis || (fmt == TimeFormat::kAuto && *n > 1e11);
          *out = static_cast<int64_t>(millis ? *n : *n * 1000);
          return true;
        }
        auto t = ParseIsoTime(text);
        if (t.ok()) {
          *out = *t;
          return true;
        }
      }
    }
    return false;
  }

  // ---- correlations ----

  bool ConditionHolds(const CorrelationRule& c, double v, double default_target) {
    if (c.conditions.empty()) return v >= default_target;
    for (const auto& [op, n] : c.conditions) {
      if (!internal::Compare(v, op, n)) return false;
    }
    return true;
  }

  // The measure of entries [b, e) of a window.
  double Measure(const CorrelationRule& c, const std::deque<WindowEntry>& w, size_t b, size_t e) {
    switch (c.type) {
      case CorrelationType::kEventCount:
        return static_cast<double>(e - b);
      case CorrelationType::kValueCount: {
        std::unordered_set<std::string_view> seen;
        for (size_t i = b; i < e; ++i) {
          if (w[i].has_value) seen.insert(w[i].value);
        }
        return static_cast<double>(seen.size());
      }
      case CorrelationType::kTemporal: {
        uint64_t mask = 0;
        for (size_t i = b; i < e; ++i) {
          int p = w[i].ref_pos;
          if (p < 64) mask |= 1ull << p;
        }
        return static_cast<double>(__builtin_popcountll(mask));
      }
      case CorrelationType::kTemporalOrdered: {
        size_t next = 0;
        for (size_t i = b; i < e && next < c.refs.size(); ++i) {
          if (w[i].ref_pos == static_cast<int>(next)) ++next;
        }
        return static_cast<double>(next);
      }
      case CorrelationType::kValueSum:
      case CorrelationType::kValueAvg: {
        double sum = 0;
        size_t n = 0;
        for (size_t i = b; i < e; ++i) {
          if (w[i].has_number) {
            sum += w[i].number;
            ++n;
          }
        }
        if (c.type == CorrelationType::kValueSum) return sum;
        return n ? sum / static_cast<double>(n) : NAN;
      }
      case CorrelationType::kValueMedian: {
        std::vector<double> xs;
        for (size_t i = b; i < e; ++i) {
          if (w[i].has_number) xs.push_back(w[i].number);
        }
        if (xs.empty()) return NAN;
        std::sort(xs.begin(), xs.end());
        size_t m = xs.size() / 2;
        return xs.size() % 2 ? xs[m] : (xs[m - 1] + xs[m]) / 2;
      }
      case CorrelationType::kValuePercentile:
        return NAN;  // one share per value: decided in ClosePercentile
    }
    return 0;
  }

  void Feed(int ci, CorrInput& in, AlertSink& sink) {
    const CorrelationRule& c = d->correlations[ci];
    CorrState& cs = corr[ci];
    // Lateness is judged per group, in the group's own event time: whether an event can still
    // join a window then depends only on the events of its group, not on how other groups (other
    // tenants, files read earlier) are interleaved with it, or on which worker runs the group.
    auto known = cs.groups.find(in.key);
    if (known != cs.groups.end() && known->second.newest != INT64_MIN &&
        in.time < known->second.newest - c.timespan_ms) {
      ++stats->late_events;
      return;
    }
    cs.newest = std::max(cs.newest, in.time);
    if (at_close[ci]) CloseDue(ci, cs.newest, sink);
    bool swept = false;
    if (++cs.inputs % 4096 == 0) {
      swept = true;
      for (auto it = cs.groups.begin(); it != cs.groups.end();) {
        if (it->second.newest < cs.newest - 2 * c.timespan_ms) it = cs.groups.erase(it);
        else ++it;
      }
    }
    if (cs.groups.size() >= kMaxGroupsPerCorrelation && cs.groups.count(in.key) == 0) {
      swept = true;
      for (auto it = cs.groups.begin(); it != cs.groups.end();) {
        if (it->second.newest < cs.newest - c.timespan_ms) it = cs.groups.erase(it);
        else ++it;
      }
      if (cs.groups.size() >= kMaxGroupsPerCorrelation) {
        ++stats->correlation_groups_dropped;
        return;
      }
    }
    // The sweeps above may have erased the group `known` pointed to.
    if (swept) known = cs.groups.find(in.key);
    if (known == cs.groups.end()) known = cs.groups.try_emplace(in.key).first;
    GroupState& g = known->second;
    if (g.group_by.empty() && in.group_by) g.group_by = *in.group_by;
    if (at_close[ci]) {
      // Tumbling windows from a group's first event: an event past the open window's end
      // decides that window and opens the next.
      if (g.win_start != INT64_MIN && in.time > g.win_start + c.timespan_ms) CloseWindow(ci, g, sink);
      if (in.time <= g.closed_until) {
        ++stats->late_events;
        return;
      }
      if (g.win_start == INT64_MIN) {
        g.win_start = in.time;
        cs.closes.emplace(in.time + c.timespan_ms, in.key);
      }
    }
    g.newest = std::max(g.newest, in.time);
    WindowEntry we{in.time, in.ref_pos, {}, 0, false, in.has_value, std::move(in.evidence)};
    if (we.has_value) {
      auto n = ParseNumber(in.value);
      if (n) {
        we.number = *n;
        we.has_number = true;
      }
      // Only value_count and value_percentile need the text (the sums and the median use the
      // number). Copied, so the input keeps its buffer for the next event.
      if (c.type == CorrelationType::kValueCount || c.type == CorrelationType::kValuePercentile) {
        we.value = in.value;
      }
    }
    // Insert in time order; equal times keep arrival order.
    // (Events mostly come in time order: check the end before searching.)
    auto pos = g.entries.empty() || g.entries.back().time <= we.time
                   ? g.entries.end()
                   : std::upper_bound(g.entries.begin(), g.entries.end(), we.time,
                                      [](int64_t t, const WindowEntry& e) { return t < e.time; });
    size_t at = static_cast<size_t>(pos - g.entries.begin());
    const bool in_order = pos == g.entries.end();
    if (!in_order) g.inc_valid = false;  // indices and the window's contents moved
    auto inserted = g.entries.insert(pos, std::move(we));
    if (c.type == CorrelationType::kValuePercentile) {
      // The evidence of a percentile alert is the events of its rare values: keep the text of
      // the first few events of each value (the window's value counts live in inc_values).
      if (inserted->has_value && CountValue(g, inserted->value) > kPercentileEvidencePerValue) {
        inserted->evidence.reset();
      }
    } else if (g.entries.size() > kMaxEvidenceEvents) {
      // Only the newest kMaxEvidenceEvents entries of a group keep their event's text: the
      // evidence an alert can report. Older entries keep what the measures need.
      size_t keep_from = g.entries.size() - kMaxEvidenceEvents;
      g.entries[keep_from - 1].evidence.reset();
      if (at < keep_from) g.entries[at].evidence.reset();
    }
    // Entries older than this cannot share a window with any event still accepted.
    while (!g.entries.empty() && g.entries.front().time < g.newest - 2 * c.timespan_ms) {
      if (g.inc_valid) {
        // After a gap, the whole previous window may be this old.
        if (g.inc_begin == 0) IncRemove(c, g, g.entries.front());
        else --g.inc_begin;
      }
      g.entries.pop_front();
      --at;
    }
    if (at_close[ci]) return;  // decided when the window closes
    double target = static_cast<double>(c.refs.size());
    bool temporal = c.type == CorrelationType::kTemporal || c.type == CorrelationType::kTemporalOrdered;
    if (in_order && Incremental(c.type)) {
      // The one window that contains the new entry ends at it.
      size_t end = at;
      int64_t start_t = g.entries[end].time - c.timespan_ms;
      if (!g.inc_valid) {
        g.inc_values.clear();
        g.inc_sum = 0;
        g.inc_numbers = 0;
        g.inc_begin = static_cast<size_t>(
            std::lower_bound(g.entries.begin(), g.entries.begin() + end, start_t,
                             [](const WindowEntry& e, int64_t t) { return e.time < t; }) -
            g.entries.begin());
        for (size_t i = g.inc_begin; i < end; ++i) IncAdd(c, g, g.entries[i]);
        g.inc_valid = true;
      }
      IncAdd(c, g, g.entries[end]);
      while (g.entries[g.inc_begin].time < start_t) IncRemove(c, g, g.entries[g.inc_begin++]);
      double v = IncMeasure(c, g, end + 1);
      if (std::isnan(v) || !ConditionHolds(c, v, INFINITY)) return;
      Fire(ci, g, g.inc_begin, end + 1, v, sink);
      ClearWindow(g);
      return;
    }
    // Windows that contain the new entry: those ending at it and at later entries within span.
    for (size_t end = at; end < g.entries.size(); ++end) {
      int64_t end_t = g.entries[end].time;
      if (end_t - g.entries[at].time > c.timespan_ms) break;
      size_t begin = static_cast<size_t>(
          std::lower_bound(g.entries.begin(), g.entries.begin() + end + 1, end_t - c.timespan_ms,
                           [](const WindowEntry& e, int64_t t) { return e.time < t; }) -
          g.entries.begin());
      double v = Measure(c, g.entries, begin, end + 1);
      if (std::isnan(v)) continue;
      if (!ConditionHolds(c, v, temporal ? target : INFINITY)) continue;
      Fire(ci, g, begin, end + 1, v, sink);
      ClearWindow(g);
      return;
    }
  }

  // Decides the windows of correlation `ci` that ended before `now` (event time).
  void CloseDue(int ci, int64_t now, AlertSink& sink) {
    const CorrelationRule& c = d->correlations[ci];
    CorrState& cs = corr[ci];
    while (!cs.closes.empty() && cs.closes.top().first < now) {
      auto [end, key] = cs.closes.top();
      cs.closes.pop();
      auto it = cs.groups.find(key);
      // Skip entries of windows already decided (by a later event of their group).
      if (it == cs.groups.end() || it->second.win_start == INT64_MIN ||
          it->second.win_start + c.timespan_ms != end) {
        continue;
      }
      CloseWindow(ci, it->second, sink);
    }
  }
  void CloseWindow(int ci, GroupState& g, AlertSink& sink) {
    const CorrelationRule& c = d->correlations[ci];
    if (c.type == CorrelationType::kValuePercentile) {
      ClosePercentile(ci, g, sink);
    } else if (!g.entries.empty()) {
      double v = Measure(c, g.entries, 0, g.entries.size());
      if (!std::isnan(v) && ConditionHolds(c, v, INFINITY)) Fire(ci, g, 0, g.entries.size(), v, sink);
    }
    g.closed_until = g.win_start + c.timespan_ms;
    g.win_start = INT64_MIN;
    ClearWindow(g);
  }

  // value_percentile: each value's share of the window's events (with a value), in percent;
  // the values whose share meets the condition are reported in one alert: `value` is the
  // smallest such share, group_by adds the field with that value, evidence holds the events of
  // the values reported.
  void ClosePercentile(int ci, GroupState& g, AlertSink& sink) {
    const CorrelationRule& c = d->correlations[ci];
    uint64_t total = 0;
    for (const auto& [value, n] : g.inc_values) total += n;
    if (total == 0) return;
    StringSet hits;
    double rarest = INFINITY;
    std::string_view rarest_value;
    for (const auto& [value, n] : g.inc_values) {
      double share = 100.0 * static_cast<double>(n) / static_cast<double>(total);
      if (!ConditionHolds(c, share, INFINITY)) continue;
      hits.insert(value);
      if (share < rarest || (share == rarest && value < rarest_value)) {
        rarest = share;
        rarest_value = value;
      }
    }
    if (hits.empty()) return;
    std::vector<std::pair<std::string, std::string>> facts = g.group_by;
    facts.emplace_back(c.field, std::string(rarest_value));
    std::swap(g.group_by, facts);
    Fire(ci, g, 0, g.entries.size(), rarest, sink, &hits);
    std::swap(g.group_by, facts);
  }

  static bool Incremental(CorrelationType t) {
    return t == CorrelationType::kEventCount || t == CorrelationType::kValueCount ||
           t == CorrelationType::kValueSum || t == CorrelationType::kValueAvg;
  }
  // Counts one more entry holding `value` in g.inc_values; returns its count.
  static uint32_t CountValue(GroupState& g, const std::string& value) {
    auto it = g.inc_values.find(std::string_view(value));
    if (it == g.inc_values.end()) it = g.inc_values.emplace(value, 0).first;
    return ++it->second;
  }
  static void IncAdd(const CorrelationRule& c, GroupState& g, const WindowEntry& e) {
    if (e.has_value && c.type == CorrelationType::kValueCount) CountValue(g, e.value);
    if (e.has_number) {
      g.inc_sum += e.number;
      ++g.inc_numbers;
    }
  }
  static void IncRemove(const CorrelationRule& c, GroupState& g, const WindowEntry& e) {
    if (e.has_value && c.type == CorrelationType::kValueCount) {
      auto it = g.inc_values.find(std::string_view(e.value));
      if (--it->second == 0) g.inc_values.erase(it);
    }
    if (e.has_number) {
      g.inc_sum -= e.number;
      --g.inc_numbers;
    }
  }
  static double IncMeasure(const CorrelationRule& c, const GroupState& g, size_t end) {
    switch (c.type) {
      case CorrelationType::kEventCount: return static_cast<double>(end - g.inc_begin);
      case CorrelationType::kValueCount: return static_cast<double>(g.inc_values.size());
      case CorrelationType::kValueSum: return g.inc_sum;
      case CorrelationType::kValueAvg:
        return g.inc_numbers ? g.inc_sum / static_cast<double>(g.inc_numbers) : NAN;
      default: return NAN;
    }
  }
  static void ClearWindow(GroupState& g) {
    g.entries.clear();
    g.inc_valid = false;
    g.inc_values.clear();
  }

  // `only_values`: evidence from the entries carrying these values only (value_percentile).
  void Fire(int ci, GroupState& g, size_t b, size_t e, double v, AlertSink& sink,
            const StringSet* only_values = nullptr) {
    const CorrelationRule& c = d->correlations[ci];
    Alert a;
    a.rule = &c.info;
    a.time_ms = g.entries[e - 1].time;
    a.first_time_ms = g.entries[b].time;
    a.group_by = g.group_by;
    a.value = v;
    // The newest events of the window that still hold their text (at most kMaxEvidenceEvents).
    for (size_t i = b; i < e && a.evidence.size() < kMaxEvidenceEvents; ++i) {
      const WindowEntry& we = g.entries[i];
      if (!we.evidence || (only_values && !only_values->count(std::string_view(we.value)))) continue;
      a.evidence.push_back(*we.evidence);
    }
    if (c.emit) {
      ++stats->alerts;
      sink.OnAlert(a);
    }
    if (c.parents.empty()) return;
    auto summary = std::make_shared<const std::string>(a.ToJson());
    for (int p : c.parents) {
      const CorrelationRule& pc = d->correlations[p];
      for (size_t k = 0; k < pc.refs.size(); ++k) {
        if (!pc.refs[k].correlation || pc.refs[k].index != ci) continue;
        CorrInput in;
        in.ref_pos = static_cast<int>(k);
        in.time = a.time_ms;
        std::vector<std::pair<std::string, std::string>> gb;
        auto lookup = [&](const std::string& name) -> std::string {
          std::string field = name;
          auto al = pc.aliases.find(name);
          if (al != pc.aliases.end()) {
            auto f = al->second.find(c.info.name);
            if (f == al->second.end()) f = al->second.find(c.info.id);
            if (f != al->second.end()) field = f->second;
          }
          for (const auto& [gk, gv] : a.group_by) {
            if (AsciiEqualsIgnoreCase(gk, field)) return gv;
          }
          return "";
        };
        for (const auto& name : pc.group_by) {
          std::string v = lookup(name);
          in.key += v;
          in.key += '\x1f';
          gb.push_back({name, std::move(v)});
        }
        in.group_by = &gb;
        in.has_value = false;
        if (!pc.field.empty()) {
          in.value = lookup(pc.field);
          in.has_value = !in.value.empty();
        }
        in.evidence = summary;
        Feed(p, in, sink);
      }
    }
  }

  void FeedFromRule(const DetectionRule& r, int rule_index, std::string_view event_json,
                    int64_t time, AlertSink& sink) {
    for (int ci : r.correlations) {
      const CorrelationRule& c = d->correlations[ci];
      for (size_t k = 0; k < c.refs.size(); ++k) {
        if (c.refs[k].correlation || c.refs[k].index != rule_index) continue;
        // The input, its key and group-by list reuse their buffers from event to event: no
        // allocation unless the group is new; the event's text is copied once however many
        // windows it joins.
        CorrInput& in = feed_in;
        in.ref_pos = static_cast<int>(k);
        in.time = time;
        in.key.clear();
        in.value.clear();
        feed_gb.resize(c.group_by.size());
        for (size_t g = 0; g < c.group_by.size(); ++g) {
          auto& [name, v] = feed_gb[g];
          name.assign(c.group_by[g]);
          v.clear();
          view.FirstText(c.group_fields[k][g], &v);
          in.key += v;
          in.key += '\x1f';
        }
        in.group_by = &feed_gb;
        in.has_value = c.value_field[k] >= 0 && view.FirstText(c.value_field[k], &in.value);
        if (!event_evidence) event_evidence = std::make_shared<const std::string>(event_json);
        in.evidence = event_evidence;
        Feed(ci, in, sink);
      }
    }
  }

  void Evaluate(int ri, std::string_view event_json, int64_t time, AlertSink& sink) {
    if (stamp[ri] == stamp_gen) return;
    stamp[ri] = stamp_gen;
    const DetectionRule& r = d->rules[ri];
    ++stats->rule_evaluations;
    if (!view.MatchDetection(r.detection)) return;
    for (int f : r.filters) {
      if (view.MatchDetection(d->filters[f].detection)) {
        ++stats->suppressed_by_filter;
        return;
      }
    }
    ++stats->detection_matches;
    if (r.emit) {
      Alert a;
      a.rule = &r.info;
      a.time_ms = time;
      a.event_json = event_json;
      ++stats->alerts;
      sink.OnAlert(a);
    }
    if (!r.correlations.empty()) FeedFromRule(r, ri, event_json, time, sink);
  }

  Status Process(std::string_view event_json, bool padded, const LogSource& hint, AlertSink& sink) {
    ++stats->events;
    event_evidence.reset();
    has_root = false;
    if (!scratch_ok) return ResourceExhaustedError("could not allocate Hyperscan scratch space");
    const char* text = event_json.data();
    if (!padded) {
      if (buf.capacity() < event_json.size() + simdjson::SIMDJSON_PADDING) {
        buf.reserve(2 * (event_json.size() + simdjson::SIMDJSON_PADDING));
      }
      buf.assign(event_json);
      text = buf.data();
    }
    auto err = parser.parse(text, event_json.size(), false).get(root);
    if (err) {
      ++stats->malformed_events;
      return InvalidArgumentError(std::string("event is not valid JSON: ") +
                                  simdjson::error_message(err));
    }
    if (root.type() != simdjson::dom::element_type::OBJECT) {
      ++stats->malformed_events;
      return InvalidArgumentError("event is not a JSON object");
    }
    has_root = true;
    view.Reset(root);
    HintPlan* plan = PlanFor(hint);
    int64_t t;
    if (EventTime(*plan, &t)) {
      last_time = t;
    } else {
      ++stats->events_without_time;
      t = last_time;
    }
    if (++stamp_gen == 0) {
      std::fill(stamp.begin(), stamp.end(), 0);
      stamp_gen = 1;
    }
    std::fill(entry_memo.begin(), entry_memo.end(), -1);
    for (const HintPlan::Gate& gate : plan->gates) {
      bool pass = true;
      for (int e : gate.condition_entries) {
        int8_t& m = entry_memo[e];
        if (m < 0) m = view.MatchDetection(d->mappings[e].conditions) ? 1 : 0;
        if (m == 0) {
          pass = false;
          break;
        }
      }
      if (!pass) continue;
      const RuleGroup& g = d->groups[gate.group];
      for (int ri : g.unindexed) Evaluate(ri, event_json, t, sink);
      for (const auto& idx : g.index) {
        EventView::Span s = view.Resolve(idx.field);
        for (uint32_t i = s.begin; i < s.begin + s.count; ++i) {
          std::string_view low;
          if (!view.Lower(i, &low)) continue;
          auto it = idx.by_value.find(low);
          if (it == idx.by_value.end()) continue;
          for (int ri : it->second) Evaluate(ri, event_json, t, sink);
        }
      }
      for (int f : g.hs_fields) {
        EventView::Span m = view.ScanField(f);
        for (uint32_t i = m.begin; i < m.begin + m.count; ++i) {
          int ri = d->prefilter_rule[view.matched_id(i)];
          if (ri >= 0 && d->rules[ri].group == gate.group) Evaluate(ri, event_json, t, sink);
        }
      }
    }
    return Status::Ok();
  }
};

Engine::Engine(const RuleSet& rules) : impl_(std::make_unique<Impl>(rules, &stats_)) {}
Engine::~Engine() = default;

Status Engine::Process(std::string_view event_json, const LogSource& hint, AlertSink& sink) {
  return impl_->Process(event_json, /*padded=*/false, hint, sink);
}

Status Engine::ProcessPadded(std::string_view event_json, const LogSource& hint, AlertSink& sink) {
  return impl_->Process(event_json, /*padded=*/true, hint, sink);
}

const simdjson::dom::element* Engine::last_event() const {
  return impl_->has_root ? &impl_->root : nullptr;
}

void Engine::Flush(AlertSink& sink) {
  for (size_t ci = 0; ci < impl_->corr.size(); ++ci) {
    if (impl_->at_close[ci]) impl_->CloseDue(static_cast<int>(ci), INT64_MAX, sink);
  }
  for (auto& c : impl_->corr) {
    c.groups.clear();
    c.newest = INT64_MIN;
    c.closes = {};
  }
}

}  // namespace kw::detect
