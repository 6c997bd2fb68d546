// storm_eval: measures the Storm-0558 analytics on generated Microsoft 365 audit data with an
// injected actor (ual_generator.h): per analytic, true and false positives and the time from the
// actor's first access to the first alert; optionally with travelling users (a day abroad, with
// activity shifted by some hours and from a hotel network) to measure the noise of the new-network
// detector. Not a test: run by hand, the numbers go to docs/storm-0558-analytics.md.
//
//   storm_eval [--users N] [--tenants N] [--days N] [--learning-days N] [--actor-day N]
//              [--travellers-per-mille N] [--travel-shift-hours N] [--seed N]
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <queue>
#include <set>
#include <string>
#include <unordered_map>
#include <unordered_set>

#include <fmt/format.h>
#include <simdjson.h>

#include "detect/analytics/analytics.h"
#include "detect/input/ual_generator.h"

using namespace kw::detect;
using namespace kw::detect::analytics;

namespace {

struct PerRule {
  std::string title;
  uint64_t tp = 0, fp = 0;
  int64_t first_tp_ms = 0;
  std::set<std::string> fp_users;
};

std::string IdOf(simdjson::dom::parser& p, std::string_view json, std::string* user) {
  simdjson::dom::element e;
  if (p.parse(json.data(), json.size()).get(e) != simdjson::SUCCESS) return "";
  std::string_view id, u;
  if (e["Id"].get(id) != simdjson::SUCCESS) return "";
  if (user && e["UserId"].get(u) == simdjson::SUCCESS) *user = std::string(u);
  return std::string(id);
}

class EvalSink : public AlertSink {
 public:
  EvalSink(const std::unordered_set<std::string>* actor, std::map<std::string, PerRule>* rules)
      : actor_(actor), rules_(rules) {}
  void OnAlert(const Alert& a) override {
    PerRule& r = (*rules_)[a.rule->id];
    r.title = a.rule->title;
    bool tp = false;
    std::string user;
    auto check = [&](std::string_view json) {
      std::string u;
      std::string id = IdOf(parser_, json, &u);
      if (user.empty()) user = u;
      if (actor_->count(id)) tp = true;
    };
    if (!a.event_json.empty()) check(a.event_json);
    for (const auto& e : a.evidence) check(e);
    if (tp) {
      if (r.tp++ == 0) r.first_tp_ms = a.time_ms;
    } else {
      ++r.fp;
      r.fp_users.insert(user);
    }
  }

 private:
  const std::unordered_set<std::string>* actor_;
  std::map<std::string, PerRule>* rules_;
  simdjson::dom::parser parser_;
};

// Replaces the value of a string member "key":"..." (first occurrence).
void ReplaceMember(std::string* json, std::string_view key, std::string_view value) {
  std::string pat = fmt::format("\"{}\":\"", key);
  size_t at = json->find(pat);
  if (at == std::string::npos) return;
  at += pat.size();
  size_t end = json->find('"', at);
  json->replace(at, end - at, value);
}

}  // namespace

int main(int argc, char** argv) {
  int users = 1000, tenants = 4, days = 7, learning_days = 2, actor_day = 3, seed = 1;
  int travellers_per_mille = 0, shift_hours = 8, per_day = 150;
  for (int i = 1; i + 1 < argc; i += 2) {
    std::string f = argv[i];
    int v = std::atoi(argv[i + 1]);
    if (f == "--users") users = v;
    else if (f == "--tenants") tenants = v;
    else if (f == "--days") days = v;
    else if (f == "--learning-days") learning_days = v;
    else if (f == "--actor-day") actor_day = v;
    else if (f == "--travellers-per-mille") travellers_per_mille = v;
    else if (f == "--travel-shift-hours") shift_hours = v;
    else if (f == "--records-per-user-day") per_day = v;
    else if (f == "--seed") seed = v;
    else {
      std::fprintf(stderr, "unknown flag %s\n", f.c_str());
      return 2;
    }
  }
  UalGeneratorOptions g;
  g.seed = static_cast<uint64_t>(seed);
  g.tenants = tenants;
  g.users_per_tenant = users / tenants;
  g.records_per_user_per_day = per_day;
  g.actor.enabled = true;
  g.actor.start_day = actor_day;
  UalGenerator gen(g);
  AnalyticsOptions o;
  o.learning_days = learning_days;
  auto a = StormAnalytics::Open(o);
  if (!a.ok()) {
    std::fprintf(stderr, "%s\n", a.status().ToString().c_str());
    return 1;
  }
  std::unordered_set<std::string> actor_ids;
  std::map<std::string, PerRule> rules;
  EvalSink sink(&actor_ids, &rules);
  const LogSource hint{"m365", "audit", ""};
  int64_t end_s = g.start_unix_seconds + int64_t{days} * 86400;
  int64_t actor_first_ms = 0;
  uint64_t records = 0, actor_records = 0, travelled_records = 0;
  // Travellers: a stable pick of users, each abroad for one day between actor_day and the end.
  auto travelling = [&](std::string_view user, int64_t t, int* day_out) {
    if (travellers_per_mille == 0) return false;
    uint64_t h = std::hash<std::string_view>()(user);
    if (h % 1000 >= static_cast<uint64_t>(travellers_per_mille)) return false;
    int span = std::max(1, days - learning_days - 1);
    int day = learning_days + 1 + static_cast<int>((h >> 20) % span);
    *day_out = day;
    return (t - g.start_unix_seconds) / 86400 == day;
  };
  std::set<std::string> travellers_seen;
  using Held = std::pair<int64_t, std::string>;
  std::priority_queue<Held, std::vector<Held>, std::greater<Held>> held;
  auto process = [&](const std::string& json) {
    kw::Status s = (*a)->Process(json, hint, sink);
    if (!s.ok()) std::fprintf(stderr, "record: %s\n", s.ToString().c_str());
  };
  bool done = false;
  while (!done) {
    gen.Generate(100000, 0, [&](const GeneratedRecord& r) {
      if (r.unix_seconds >= end_s) {
        done = true;
        return;
      }
      if (done) return;
      while (!held.empty() && held.top().first <= r.unix_seconds) {
        process(held.top().second);
        held.pop();
      }
      ++records;
      if (r.actor) {
        ++actor_records;
        actor_ids.insert(std::string(r.id));
        if (actor_first_ms == 0) actor_first_ms = r.unix_seconds * 1000;
      }
      int day = 0;
      if (!r.actor && travelling(r.user_id, r.unix_seconds, &day)) {
        // Abroad: the day's activity happens shift_hours later, from a hotel /24 of the user's own.
        std::string json(r.audit_data);
        uint64_t h = std::hash<std::string_view>()(r.user_id);
        std::string ip = fmt::format("203.{}.{}.{}", (h >> 8) % 200 + 1, (h >> 16) % 250, 20);
        for (auto k : {"ClientIPAddress", "ClientIP", "ActorIpAddress"}) ReplaceMember(&json, k, ip);
        int64_t t = r.unix_seconds + int64_t{shift_hours} * 3600;
        std::string ct = FormatIsoTime(t * 1000).substr(0, 19);
        ReplaceMember(&json, "CreationTime", ct);
        held.push({t, std::move(json)});
        travellers_seen.insert(std::string(r.user_id));
        ++travelled_records;
        return;
      }
      process(std::string(r.audit_data));
    });
  }
  while (!held.empty()) {
    process(held.top().second);
    held.pop();
  }
  (*a)->Flush(sink);
  double user_days = static_cast<double>(users) * days;
  std::printf("users %d (%d tenants), %d days, learning %d days, actor from day %d, seed %d\n",
              users, tenants, days, learning_days, actor_day, seed);
  std::printf("records %llu, actor records %llu, travellers %zu (%llu records shifted %d h)\n",
              static_cast<unsigned long long>(records), static_cast<unsigned long long>(actor_records),
              travellers_seen.size(), static_cast<unsigned long long>(travelled_records), shift_hours);
  std::printf("actor first access %s\n", FormatIsoTime(actor_first_ms).c_str());
  std::printf("%-38s %-62s %6s %6s %10s %14s\n", "rule", "title", "TP", "FP", "FP/10k u/d",
              "first TP after");
  for (const RuleInfo* info : (*a)->Rules()) {
    auto it = rules.find(info->id);
    PerRule r = it == rules.end() ? PerRule{} : it->second;
    std::string ttd = r.tp ? fmt::format("{:.1f} min", (r.first_tp_ms - actor_first_ms) / 60000.0) : "-";
    std::printf("%-38s %-62.62s %6llu %6llu %10.2f %14s\n", info->id.c_str(), info->title.c_str(),
                static_cast<unsigned long long>(r.tp), static_cast<unsigned long long>(r.fp),
                r.fp * 10000.0 / user_days, ttd.c_str());
    if (r.fp && r.fp_users.size() <= 5) {
      for (const auto& u : r.fp_users) {
        std::printf("    fp user %s%s\n", u.c_str(), travellers_seen.count(u) ? " (traveller)" : "");
      }
    }
  }
  auto st = (*a)->stats();
  std::printf("stats: records %llu, learning %llu, sigma alerts %llu, stateful alerts %llu\n",
              static_cast<unsigned long long>(st.records), static_cast<unsigned long long>(st.learning_records),
              static_cast<unsigned long long>(st.sigma_alerts), static_cast<unsigned long long>(st.stateful_alerts));
  return 0;
}
