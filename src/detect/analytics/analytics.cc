// Baseline database (SQLite), schema version 1. Every table is rewritten row by row from the
// in-memory baselines at Commit (INSERT OR REPLACE of the rows changed since the last commit).
//
//   meta(key PRIMARY KEY, value)                      schema_version = 1
//   tenant(tenant PRIMARY KEY, first_ms)              first event seen: start of learning
//   app_tenant(tenant, app, client_app, first_ms, mailboxes, state)     state 1: first seen by
//                                                     an alert, not learning; 2: Keyward issued it
//                                                     tokens in the tenant (registered there)
//   app_mailbox(tenant, app, client_app, mailbox, first_ms)
//   user_profile(tenant, user, first_ms, events, days, last_day, last_alert_ms, hist)
//       hist: 168 little-endian uint32 counts, hour of week (Monday 00:00 UTC = 0)
//   user_prefix(tenant, user, prefix, first_ms, state)   state 0 known, 1 alerted (never learned),
//                                                        2 probation (seen on one day, no sign-in)
//   tenant_prefix(tenant, prefix, users)                 users with the prefix known
//   session(sid PRIMARY KEY, tenant, last_ms, state)     M365 SessionIds: 0 signed in (or
//                                                        learned), 1 reported without sign-in
//   issued_token(jti PRIMARY KEY, tenant, issued_ms, state)  Keyward: 0 issued, 1 reported
//   vouched_session(sid PRIMARY KEY, last_ms)         sessions (SessionId, or Keyward token id)
//                                                     begun by a sign-in or on a known network
#include "detect/analytics/analytics.h"

#include <arpa/inet.h>

#include <algorithm>
#include <array>
#include <cstring>
#include <deque>
#include <unordered_map>
#include <unordered_set>

#include <fmt/format.h>
#include <simdjson.h>
#include <yaml-cpp/yaml.h>

#include "core/file.h"
#include "core/json.h"
#include "core/string_map.h"

namespace kw::detect::analytics {
namespace {

constexpr int64_t kDayMs = 86400000;
constexpr char kSep = '\x1f';

// user_prefix.state
constexpr int kPrefixKnown = 0;
constexpr int kPrefixAlerted = 1;
constexpr int kPrefixProbation = 2;

std::string Join(std::initializer_list<std::string_view> parts) {
  std::string out;
  bool first = true;
  for (auto p : parts) {
    if (!first) out.push_back(kSep);
    first = false;
    out.append(p);
  }
  return out;
}

// Hash maps keyed by joined strings, looked up with a string_view built in a reused buffer, so
// that a lookup of an existing key allocates nothing.
template <typename V>
using KeyMap = StringMap<V>;
using KeySet = StringSet;

// Join() into *out, reusing its buffer.
std::string_view JoinInto(std::string* out, std::initializer_list<std::string_view> parts) {
  out->clear();
  bool first = true;
  for (auto p : parts) {
    if (!first) out->push_back(kSep);
    first = false;
    out->append(p);
  }
  return *out;
}

void MarkDirty(KeySet& set, std::string_view key) {
  if (set.find(key) == set.end()) set.emplace(key);
}

// The entry for `key`, value-initialised (or `init`) when new.
template <typename V>
V& Slot(KeyMap<V>& m, std::string_view key, const V& init = V()) {
  auto it = m.find(key);
  if (it == m.end()) it = m.emplace(std::string(key), init).first;
  return it->second;
}

std::vector<std::string> Split(const std::string& key) {
  std::vector<std::string> out;
  size_t start = 0;
  while (true) {
    size_t at = key.find(kSep, start);
    out.push_back(key.substr(start, at - start));
    if (at == std::string::npos) break;
    start = at + 1;
  }
  return out;
}

uint64_t Fnv1a(std::string_view s) {
  uint64_t h = 1469598103934665603ull;
  for (unsigned char c : s) {
    h ^= c;
    h *= 1099511628211ull;
  }
  return h;
}

// Monday 00:00 UTC = 0. 1970-01-01 was a Thursday.
int HourOfWeek(int64_t ms) {
  int64_t day = (ms >= 0 ? ms : ms - kDayMs + 1) / kDayMs;
  int weekday = static_cast<int>(((day + 3) % 7 + 7) % 7);
  int hour = static_cast<int>(((ms % kDayMs) + kDayMs) % kDayMs / 3600000);
  return weekday * 24 + hour;
}

int64_t DayOf(int64_t ms) { return (ms >= 0 ? ms : ms - kDayMs + 1) / kDayMs; }

// ---- record view -------------------------------------------------------------------------------

std::string_view Str(simdjson::dom::object o, std::string_view key) {
  std::string_view v;
  if (o[key].get(v) != simdjson::SUCCESS) return {};
  return v;
}

// First string member among `keys` (exact names, then case-insensitive).
std::string_view AnyStr(simdjson::dom::object o, std::initializer_list<std::string_view> keys) {
  for (auto k : keys) {
    auto v = Str(o, k);
    if (!v.empty()) return v;
  }
  for (auto field : o) {
    for (auto k : keys) {
      if (field.key.size() == k.size() &&
          std::equal(k.begin(), k.end(), field.key.begin(),
                     [](char a, char b) { return std::tolower(a) == std::tolower(b); })) {
        std::string_view v;
        if (field.value.get(v) == simdjson::SUCCESS && !v.empty()) return v;
      }
    }
  }
  return {};
}

// The fields the stateful detectors read, from one UAL record (M365 or Keyward's rendering).
struct RecordView {
  bool keyward = false;
  int64_t time_ms = 0;
  bool has_time = false;
  std::string_view id, operation, tenant, user, mailbox, app, client_app, ip, session;
  std::string_view token_tenant, result;
  bool bind = false, sync = false;
  std::vector<std::string_view> items;
  std::string_view token_id;
  int64_t token_iat_ms = 0;
  std::string_view signin_session;  // UserLoggedIn: DeviceProperties SessionId
  std::string detail_jti;           // Keyward TokenIssued: jti from detail, when only there
};

bool Succeeded(std::string_view r) {
  return r.empty() || r == "Succeeded" || r == "Success" || r == "succeeded" || r == "success" ||
         r == "PartiallySucceeded";
}

// The jti named in a Keyward detail, which is a JSON object (or its text) or, for identity's
// own events, a sentence with "jti '<id>'".
std::string JtiFromDetail(simdjson::dom::element detail, simdjson::dom::parser& scratch) {
  std::string_view text;
  simdjson::dom::object obj;
  if (detail.get(obj) == simdjson::SUCCESS) {
    return std::string(AnyStr(obj, {"jti", "token_id", "TokenId"}));
  }
  if (detail.get(text) != simdjson::SUCCESS) return "";
  if (!text.empty() && text.front() == '{') {
    simdjson::dom::element e;
    if (scratch.parse(text.data(), text.size()).get(e) == simdjson::SUCCESS &&
        e.get(obj) == simdjson::SUCCESS) {
      return std::string(AnyStr(obj, {"jti", "token_id", "TokenId"}));
    }
    return "";
  }
  size_t at = text.find("jti '");
  if (at == std::string_view::npos) return "";
  at += 5;
  size_t end = text.find('\'', at);
  if (end == std::string_view::npos) return "";
  return std::string(text.substr(at, end - at));
}

void ReadView(simdjson::dom::object o, simdjson::dom::parser& scratch, RecordView* v) {
  *v = RecordView();
  v->id = Str(o, "Id");
  v->operation = Str(o, "Operation");
  v->tenant = Str(o, "OrganizationId");
  v->user = Str(o, "UserId");
  v->mailbox = AnyStr(o, {"MailboxOwnerUPN", "MailboxGuid"});
  v->app = Str(o, "AppId");
  v->client_app = Str(o, "ClientAppId");
  v->ip = AnyStr(o, {"ClientIPAddress", "ClientIP", "ActorIpAddress"});
  v->session = Str(o, "SessionId");
  v->token_tenant = Str(o, "TokenTenantId");
  v->result = Str(o, "ResultStatus");
  auto t = Str(o, "CreationTime");
  if (!t.empty()) {
    auto ms = ParseIsoTime(t);
    if (ms.ok()) {
      v->time_ms = *ms;
      v->has_time = true;
    }
  }
  simdjson::dom::array arr;
  if (o["OperationProperties"].get(arr) == simdjson::SUCCESS) {
    for (auto p : arr) {
      simdjson::dom::object po;
      if (p.get(po) != simdjson::SUCCESS) continue;
      if (Str(po, "Name") == "MailAccessType") {
        auto val = Str(po, "Value");
        v->bind = val == "Bind";
        v->sync = val == "Sync";
      }
    }
  }
  if (o["Folders"].get(arr) == simdjson::SUCCESS) {
    for (auto f : arr) {
      simdjson::dom::array items;
      if (f["FolderItems"].get(items) != simdjson::SUCCESS) continue;
      for (auto it : items) {
        simdjson::dom::object io;
        if (it.get(io) != simdjson::SUCCESS) continue;
        auto mid = AnyStr(io, {"InternetMessageId", "Id"});
        if (!mid.empty()) v->items.push_back(mid);
      }
    }
  }
  simdjson::dom::object ctx;
  if (o["AppAccessContext"].get(ctx) == simdjson::SUCCESS) {
    v->token_id = Str(ctx, "UniqueTokenId");
    auto iat = Str(ctx, "IssuedAtTime");
    if (!iat.empty()) {
      auto ms = ParseIsoTime(iat);
      if (ms.ok()) v->token_iat_ms = *ms;
    }
    if (v->client_app.empty()) v->client_app = Str(ctx, "ClientAppId");
  }
  if (o["DeviceProperties"].get(arr) == simdjson::SUCCESS) {
    for (auto p : arr) {
      simdjson::dom::object po;
      if (p.get(po) == simdjson::SUCCESS && Str(po, "Name") == "SessionId") {
        v->signin_session = Str(po, "Value");
      }
    }
  }
  simdjson::dom::object kw;
  if (o["Keyward"].get(kw) == simdjson::SUCCESS) {
    v->keyward = true;
    auto tid = AnyStr(kw, {"token_id", "TokenId", "jti"});
    if (!tid.empty()) v->token_id = tid;
    if (v->token_iat_ms == 0) {
      int64_t iat = 0;
      for (auto k : {"token_issued_at", "TokenIssuedAt"}) {
        if (kw[k].get(iat) == simdjson::SUCCESS && iat > 0) {
          v->token_iat_ms = iat * 1000;
          break;
        }
      }
    }
    auto at = AnyStr(kw, {"access_type", "AccessType"});
    if (at == "Bind") v->bind = true;
    if (at == "Sync") v->sync = true;
    simdjson::dom::element detail;
    if (v->token_id.empty()) {
      for (auto k : {"Detail", "detail", "DetailText"}) {
        if (kw[k].get(detail) == simdjson::SUCCESS) {
          v->detail_jti = JtiFromDetail(detail, scratch);
          if (!v->detail_jti.empty()) break;
        }
      }
    }
  }
  if (!v->bind && !v->sync && !v->items.empty()) v->bind = true;
}

// ---- alerts ------------------------------------------------------------------------------------

RuleInfo MakeInfo(std::string id, std::string name, std::string title, std::string level,
                  std::string description, std::vector<std::string> tags) {
  RuleInfo r;
  r.id = std::move(id);
  r.name = name;
  r.title = std::move(title);
  r.level = std::move(level);
  r.status = "experimental";
  r.description = std::move(description);
  r.author = "Keyward";
  for (const auto& t : tags) {
    if (t.rfind("attack.", 0) == 0) r.attack.push_back(t);
  }
  r.tags = std::move(tags);
  r.references = {"/work/shared/reference/storm-0558.md", "docs/storm-0558-analytics.md"};
  r.product = "m365";
  r.service = "audit";
  r.file = "builtin:stateful/" + name;
  r.is_correlation = true;
  r.correlation_type = "stateful:" + name;
  return r;
}

struct StatefulRules {
  RuleInfo app_tenant = MakeInfo(
      "8ce9d18e-3dbd-419e-83b7-190d0f9d4962", "first_seen_app_tenant",
      "An application never seen reading mail in this tenant is reading mail", "high",
      "MailItemsAccessed by an (AppId, ClientAppId) pair that no mailbox of the tenant saw during "
      "the learning period or since (the State Department's 2023 'Big Yellow Taxi' rule).",
      {"attack.collection", "attack.t1114.002", "attack.defense_evasion", "attack.t1550.001"});
  RuleInfo app_mailbox = MakeInfo(
      "a59fde64-bfd9-44bd-99f9-b7cab756bde6", "first_seen_app_mailbox",
      "A rarely used application reads a mailbox it never read before", "medium",
      "MailItemsAccessed by an (AppId, ClientAppId) pair known in the tenant but used by only a few "
      "mailboxes, on a mailbox it never read before.",
      {"attack.collection", "attack.t1114.002", "attack.defense_evasion", "attack.t1550.001"});
  RuleInfo bulk = MakeInfo(
      "a6ef5b51-5e14-4ffb-a64c-3313b02cd7dd", "bulk_bind_reads",
      "Bulk mail reads: many distinct messages bound by one session in a short window", "high",
      "MailItemsAccessed Bind records of one session (SessionId; else tenant, mailbox and app) "
      "name at least the configured number of distinct InternetMessageIds within the window.",
      {"attack.collection", "attack.t1114.002"});
  RuleInfo network = MakeInfo(
      "c5e1c166-9dac-4926-8ad6-47eebe1a1c65", "new_network_unusual_hour",
      "Mail read from a network never seen for the user, at an hour the user does not work",
      "medium",
      "MailItemsAccessed from a /24 (IPv4) or /48 (IPv6) prefix the user never used (and that is "
      "not the tenant's own), at an hour of the week when the user has no history.",
      {"attack.initial_access", "attack.t1078.004", "attack.collection", "attack.t1114.002"});
  RuleInfo session = MakeInfo(
      "cc18f5c6-7d48-4c62-802f-c0aa68a0d920", "session_without_signin",
      "Mail session with no sign-in behind it", "high",
      "MailItemsAccessed in a SessionId for which no UserLoggedIn was recorded (a forged token "
      "never passes through the identity provider).",
      {"attack.defense_evasion", "attack.t1550.001", "attack.credential_access", "attack.t1606",
       "attack.collection", "attack.t1114.002"});
  RuleInfo token = MakeInfo(
      "4575bd83-c14f-4013-bb74-f9abdcdcaa0a", "token_never_issued",
      "Mail read with a token that Keyward never issued", "critical",
      "A Keyward mail record whose token id (jti) has no TokenIssued record, although the token "
      "claims to be issued while the analytics were watching the log.",
      {"attack.defense_evasion", "attack.t1550.001", "attack.credential_access", "attack.t1606",
       "attack.collection", "attack.t1114.002"});
};

struct PendingAlert {
  const RuleInfo* rule;
  int64_t time_ms;
  std::vector<std::pair<std::string, std::string>> facts;
  double value;
  int64_t first_time_ms;
  std::vector<std::string> evidence;
};

void Emit(const PendingAlert& p, AlertSink& sink) {
  Alert a;
  a.rule = p.rule;
  a.time_ms = p.time_ms;
  a.group_by = p.facts;
  a.value = p.value;
  a.first_time_ms = p.first_time_ms;
  a.evidence = p.evidence;
  sink.OnAlert(a);
}

class NullSink final : public AlertSink {
 public:
  void OnAlert(const Alert&) override {}
};

class CountingSink final : public AlertSink {
 public:
  CountingSink(AlertSink& inner, uint64_t* count) : inner_(inner), count_(count) {}
  void OnAlert(const Alert& a) override {
    ++*count_;
    inner_.OnAlert(a);
  }

 private:
  AlertSink& inner_;
  uint64_t* count_;
};

}  // namespace

// ---- addresses ---------------------------------------------------------------------------------

namespace {

// The common case, "a.b.c.d" or "a.b.c.d:port" in canonical dotted decimal, without inet_pton or
// an allocation: "a.b.c.0/24" into *out. False for anything else (NetworkPrefix decides).
bool FastIpv4Prefix(std::string_view address, std::string* out) {
  size_t colon = address.find(':');
  if (colon != std::string_view::npos) {
    if (address.find(':', colon + 1) != std::string_view::npos) return false;
    address = address.substr(0, colon);
  }
  size_t part_start[4];
  int parts = 0;
  size_t i = 0;
  while (parts < 4) {
    size_t start = i;
    int value = 0;
    while (i < address.size() && address[i] >= '0' && address[i] <= '9' && i - start < 3) {
      value = value * 10 + (address[i] - '0');
      ++i;
    }
    size_t len = i - start;
    if (len == 0 || value > 255 || (len > 1 && address[start] == '0')) return false;
    part_start[parts++] = start;
    if (parts == 4) break;
    if (i >= address.size() || address[i] != '.') return false;
    ++i;
  }
  if (i != address.size()) return false;
  out->assign(address.substr(0, part_start[3]));
  out->append("0/24");
  return true;
}

}  // namespace

std::string NetworkPrefix(std::string_view address) {
  std::string fast;
  if (FastIpv4Prefix(address, &fast)) return fast;
  std::string a(address);
  // "[v6]:port" / "[v6]"
  if (!a.empty() && a.front() == '[') {
    size_t close = a.find(']');
    if (close == std::string::npos) return "";
    a = a.substr(1, close - 1);
  } else if (std::count(a.begin(), a.end(), ':') == 1) {
    a = a.substr(0, a.find(':'));  // "v4:port"
  }
  in_addr v4;
  in6_addr v6;
  if (inet_pton(AF_INET, a.c_str(), &v4) == 1) {
    const auto* b = reinterpret_cast<const unsigned char*>(&v4);
    return fmt::format("{}.{}.{}.0/24", b[0], b[1], b[2]);
  }
  if (inet_pton(AF_INET6, a.c_str(), &v6) == 1) {
    const unsigned char* b = v6.s6_addr;
    static const unsigned char kMapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
    if (std::memcmp(b, kMapped, 12) == 0) return fmt::format("{}.{}.{}.0/24", b[12], b[13], b[14]);
    return fmt::format("{:x}:{:x}:{:x}::/48", (b[0] << 8) | b[1], (b[2] << 8) | b[3],
                       (b[4] << 8) | b[5]);
  }
  return "";
}

// ---- indicators --------------------------------------------------------------------------------

Status ParseIndicators(std::string_view yaml, const std::string& name,
                       std::map<std::string, std::vector<std::string>>* out) {
  try {
    YAML::Node root = YAML::Load(std::string(yaml));
    YAML::Node ph = root.IsMap() ? root["placeholders"] : YAML::Node();
    if (!ph || !ph.IsMap()) {
      return InvalidArgumentError(name + ": an indicators file holds a 'placeholders' map");
    }
    for (const auto& kv : ph) {
      std::string key = kv.first.as<std::string>();
      if (key.empty() || key.find('%') != std::string::npos) {
        return InvalidArgumentError(fmt::format("{}:{}: placeholder name '{}' is empty or has %",
                                                name, kv.first.Mark().line + 1, key));
      }
      if (!kv.second.IsSequence()) {
        return InvalidArgumentError(fmt::format("{}:{}: placeholder '{}' must be a list of values",
                                                name, kv.second.Mark().line + 1, key));
      }
      auto& list = (*out)[key];
      for (const auto& v : kv.second) {
        if (!v.IsScalar()) {
          return InvalidArgumentError(fmt::format("{}:{}: placeholder '{}': a value must be a scalar",
                                                  name, v.Mark().line + 1, key));
        }
        std::string s = v.Scalar();
        list.push_back(s);
        in_addr a;
        if (inet_pton(AF_INET, s.c_str(), &a) == 1) list.push_back(s + ":*");
      }
    }
  } catch (const YAML::Exception& e) {
    return InvalidArgumentError(
        fmt::format("{}:{}:{}: {}", name, e.mark.line + 1, e.mark.column + 1, e.msg));
  }
  return Status::Ok();
}

// ---- the analytics -----------------------------------------------------------------------------

class StormAnalytics::Impl {
 public:
  AnalyticsOptions o;
  std::unique_ptr<sqlite::Db> db;
  std::optional<RuleSet> rules;
  std::unique_ptr<Engine> engine;
  StatefulRules srules;
  simdjson::dom::parser parser;
  simdjson::dom::parser scratch;
  std::string buf;
  RecordView v;
  Stats stats;
  int64_t clock_ms = INT64_MIN;  // newest event time seen

  // Baselines (keys joined with kSep; see the schema at the top of the file).
  struct AppTenant {
    int64_t first_ms;
    int64_t mailboxes;
    int state;  // 0 learned, 1 first seen by an alert, kAppSanctioned
  };
  // Keyward issued tokens to the app in the tenant (a TokenIssued record): registered there.
  static constexpr int kAppSanctioned = 2;
  struct UserProfile {
    int64_t first_ms = 0, events = 0, days = 0, last_day = INT64_MIN, last_alert_ms = INT64_MIN;
    std::array<uint32_t, 168> hist{};
    uint64_t total = 0;  // sum of hist
  };
  struct Expiring {
    std::string tenant;
    int64_t time_ms;
    int state;
  };
  KeyMap<int64_t> tenant_first;
  KeyMap<AppTenant> app_tenant;
  KeyMap<int64_t> app_mailbox;
  KeyMap<UserProfile> users;
  KeyMap<std::pair<int64_t, int>> user_prefix;  // first_ms, state
  KeyMap<int64_t> tenant_prefix;                // users
  KeyMap<Expiring> sessions;
  KeyMap<Expiring> tokens;
  KeyMap<int64_t> vouched;  // session key -> last seen
  KeySet d_tenant, d_app_tenant, d_app_mailbox, d_users, d_user_prefix, d_tenant_prefix,
      d_sessions, d_tokens, d_vouched;
  // Event time per tenant (newest event of the tenant). Windows, grace periods and retention
  // count in the tenant's own time, so a tenant's alerts depend only on its own records (a hunt
  // may run each tenant on another worker; merged exports need not interleave tenants in time).
  KeyMap<int64_t> tenant_clock;
  int64_t now_ms = INT64_MIN;  // tenant_clock of the current record's tenant
  // Reused key buffers (no allocation for keys already known).
  std::string k_app, k_mailbox, k_bulk, k_user, k_user_prefix, k_tenant_prefix, k_session[2],
      k_prefix, k_scratch;
  std::vector<std::string> spare;  // recycled evidence strings of bulk windows

  // In-memory windows.
  struct BulkState {
    std::deque<std::pair<int64_t, uint64_t>> items;  // time, hash of InternetMessageId
    std::unordered_map<uint64_t, int> counts;
    std::deque<std::pair<int64_t, std::string>> records;  // time, record JSON (evidence)
    std::string tenant;
    int64_t newest = 0;
    int64_t last_alert_ms = INT64_MIN;
  };
  KeyMap<BulkState> bulk;
  uint64_t bulk_ops = 0;
  struct PendingSession {
    int64_t deadline_ms;
    PendingAlert alert;
  };
  KeyMap<PendingSession> pending_sessions;

  Status OpenDb();
  Status LoadBaselines();
  Status LoadRules(LoadReport* report);
  Status Write();

  bool Learning(std::string_view tenant, int64_t t) {
    auto it = tenant_first.find(tenant);
    if (it == tenant_first.end()) return true;
    return t < it->second + o.learning_days * kDayMs;
  }

  std::vector<std::pair<std::string, std::string>> BaseFacts() {
    std::vector<std::pair<std::string, std::string>> f;
    f.emplace_back("OrganizationId", std::string(v.tenant));
    if (!v.user.empty()) f.emplace_back("UserId", std::string(v.user));
    if (!v.mailbox.empty()) f.emplace_back("Mailbox", std::string(v.mailbox));
    return f;
  }

  void Stateful(std::string_view json, ProcessMode mode, AlertSink& sink);
  Status Run(std::string_view json, const simdjson::dom::element& root, ProcessMode mode,
             AlertSink& sink) {
    simdjson::dom::object obj;
    if (root.get(obj) != simdjson::SUCCESS) {
      ++stats.malformed;
      return InvalidArgumentError("analytics: the record is not a JSON object");
    }
    ReadView(obj, scratch, &v);
    Stateful(json, mode, sink);
    return Status::Ok();
  }
  void FirstSeenApp(std::string_view json, bool learning, std::vector<PendingAlert>* out);
  void Bulk(std::string_view json, bool emit, std::vector<PendingAlert>* out);
  void Network(std::string_view json, bool learning, std::vector<PendingAlert>* out);
  void Sessions(std::string_view json, bool learning, std::vector<PendingAlert>* out);
  void Tokens(std::string_view json, std::vector<PendingAlert>* out);
  // Reports pending sessions of `tenant` whose grace period ended by its clock (all tenants'
  // when `all`).
  void ExpirePending(AlertSink& sink, std::string_view tenant, bool all);
  std::string RecycledCopy(std::string_view text) {
    std::string out;
    if (!spare.empty()) {
      out = std::move(spare.back());
      spare.pop_back();
    }
    out.assign(text);
    return out;
  }
  void Recycle(std::string&& text) {
    if (spare.size() < 256) spare.push_back(std::move(text));
  }
  int64_t ClockOf(std::string_view tenant) const {
    auto it = tenant_clock.find(tenant);
    return it == tenant_clock.end() ? clock_ms : it->second;
  }
  void Prune();
};

Status StormAnalytics::Impl::OpenDb() {
  auto d = sqlite::Db::Open(o.db_path);
  if (!d.ok()) return UnavailableError("analytics baseline database: " + d.status().message());
  db = std::move(d).value();
  KW_RETURN_IF_ERROR(db->Exec(R"sql(
    CREATE TABLE IF NOT EXISTS meta(key TEXT PRIMARY KEY, value TEXT NOT NULL);
    CREATE TABLE IF NOT EXISTS tenant(tenant TEXT PRIMARY KEY, first_ms INTEGER NOT NULL);
    CREATE TABLE IF NOT EXISTS app_tenant(tenant TEXT, app TEXT, client_app TEXT,
      first_ms INTEGER NOT NULL, mailboxes INTEGER NOT NULL, state INTEGER NOT NULL,
      PRIMARY KEY(tenant, app, client_app));
    CREATE TABLE IF NOT EXISTS app_mailbox(tenant TEXT, app TEXT, client_app TEXT, mailbox TEXT,
      first_ms INTEGER NOT NULL, PRIMARY KEY(tenant, app, client_app, mailbox));
    CREATE TABLE IF NOT EXISTS user_profile(tenant TEXT, user TEXT, first_ms INTEGER NOT NULL,
      events INTEGER NOT NULL, days INTEGER NOT NULL, last_day INTEGER NOT NULL,
      last_alert_ms INTEGER NOT NULL, hist BLOB NOT NULL, PRIMARY KEY(tenant, user));
    CREATE TABLE IF NOT EXISTS user_prefix(tenant TEXT, user TEXT, prefix TEXT,
      first_ms INTEGER NOT NULL, state INTEGER NOT NULL, PRIMARY KEY(tenant, user, prefix));
    CREATE TABLE IF NOT EXISTS tenant_prefix(tenant TEXT, prefix TEXT, users INTEGER NOT NULL,
      PRIMARY KEY(tenant, prefix));
    CREATE TABLE IF NOT EXISTS session(sid TEXT PRIMARY KEY, tenant TEXT NOT NULL,
      last_ms INTEGER NOT NULL, state INTEGER NOT NULL);
    CREATE TABLE IF NOT EXISTS issued_token(jti TEXT PRIMARY KEY, tenant TEXT NOT NULL,
      issued_ms INTEGER NOT NULL, state INTEGER NOT NULL);
    CREATE TABLE IF NOT EXISTS vouched_session(sid TEXT PRIMARY KEY, last_ms INTEGER NOT NULL);
    CREATE INDEX IF NOT EXISTS session_by_tenant_time ON session(tenant, last_ms);
    CREATE INDEX IF NOT EXISTS issued_token_by_tenant_time ON issued_token(tenant, issued_ms);
    CREATE INDEX IF NOT EXISTS vouched_session_by_time ON vouched_session(last_ms);
    INSERT OR IGNORE INTO meta(key, value) VALUES('schema_version', '1');
  )sql"));
  auto st = db->Prepare("SELECT value FROM meta WHERE key = 'schema_version'");
  if (!st.ok()) return st.status();
  KW_ASSIGN_OR_RETURN(bool row, st->Step());
  if (!row || st->Text(0) != "1") {
    return FailedPreconditionError(o.db_path + ": analytics baseline schema version '" +
                                   (row ? st->Text(0) : std::string()) + "' is not 1");
  }
  return Status::Ok();
}

Status StormAnalytics::Impl::LoadBaselines() {
  auto each = [&](std::string_view sql, const std::function<void(sqlite::Statement&)>& fn) -> Status {
    KW_ASSIGN_OR_RETURN(auto st, db->Prepare(sql));
    while (true) {
      KW_ASSIGN_OR_RETURN(bool row, st.Step());
      if (!row) return Status::Ok();
      fn(st);
    }
  };
  KW_RETURN_IF_ERROR(each("SELECT tenant, first_ms FROM tenant", [&](sqlite::Statement& s) {
    tenant_first[s.Text(0)] = s.Int(1);
  }));
  KW_RETURN_IF_ERROR(each("SELECT tenant, app, client_app, first_ms, mailboxes, state FROM app_tenant",
                          [&](sqlite::Statement& s) {
                            app_tenant[Join({s.Text(0), s.Text(1), s.Text(2)})] =
                                AppTenant{s.Int(3), s.Int(4), static_cast<int>(s.Int(5))};
                          }));
  KW_RETURN_IF_ERROR(each("SELECT tenant, app, client_app, mailbox, first_ms FROM app_mailbox",
                          [&](sqlite::Statement& s) {
                            app_mailbox[Join({s.Text(0), s.Text(1), s.Text(2), s.Text(3)})] = s.Int(4);
                          }));
  KW_RETURN_IF_ERROR(each(
      "SELECT tenant, user, first_ms, events, days, last_day, last_alert_ms, hist FROM user_profile",
      [&](sqlite::Statement& s) {
        UserProfile p;
        p.first_ms = s.Int(2);
        p.events = s.Int(3);
        p.days = s.Int(4);
        p.last_day = s.Int(5);
        p.last_alert_ms = s.Int(6);
        std::string h = s.Blob(7);
        for (size_t i = 0; i < 168 && 4 * i + 3 < h.size(); ++i) {
          p.hist[i] = static_cast<uint32_t>(static_cast<unsigned char>(h[4 * i])) |
                      static_cast<uint32_t>(static_cast<unsigned char>(h[4 * i + 1])) << 8 |
                      static_cast<uint32_t>(static_cast<unsigned char>(h[4 * i + 2])) << 16 |
                      static_cast<uint32_t>(static_cast<unsigned char>(h[4 * i + 3])) << 24;
          p.total += p.hist[i];
        }
        users[Join({s.Text(0), s.Text(1)})] = p;
      }));
  KW_RETURN_IF_ERROR(each("SELECT tenant, user, prefix, first_ms, state FROM user_prefix",
                          [&](sqlite::Statement& s) {
                            user_prefix[Join({s.Text(0), s.Text(1), s.Text(2)})] = {
                                s.Int(3), static_cast<int>(s.Int(4))};
                          }));
  KW_RETURN_IF_ERROR(each("SELECT tenant, prefix, users FROM tenant_prefix", [&](sqlite::Statement& s) {
    tenant_prefix[Join({s.Text(0), s.Text(1)})] = s.Int(2);
  }));
  KW_RETURN_IF_ERROR(each("SELECT sid, tenant, last_ms, state FROM session", [&](sqlite::Statement& s) {
    sessions[s.Text(0)] = Expiring{s.Text(1), s.Int(2), static_cast<int>(s.Int(3))};
  }));
  KW_RETURN_IF_ERROR(each("SELECT jti, tenant, issued_ms, state FROM issued_token",
                          [&](sqlite::Statement& s) {
                            tokens[s.Text(0)] = Expiring{s.Text(1), s.Int(2), static_cast<int>(s.Int(3))};
                          }));
  KW_RETURN_IF_ERROR(each("SELECT sid, last_ms FROM vouched_session", [&](sqlite::Statement& s) {
    vouched[s.Text(0)] = s.Int(1);
  }));
  for (const auto& [k, e] : sessions) clock_ms = std::max(clock_ms, e.time_ms);
  for (const auto& [k, p] : users) clock_ms = std::max(clock_ms, p.last_alert_ms);
  return Status::Ok();
}

Status StormSigmaSources(const AnalyticsOptions& o,
                         std::vector<std::pair<std::string, std::string>>* texts,
                         std::map<std::string, std::vector<std::string>>* placeholders) {
  if (o.indicators_path.empty()) {
    KW_RETURN_IF_ERROR(ParseIndicators(BuiltinIndicators(), "builtin:indicators.yml", placeholders));
  } else {
    KW_ASSIGN_OR_RETURN(std::string text, ReadFile(o.indicators_path, 4u << 20));
    KW_RETURN_IF_ERROR(ParseIndicators(text, o.indicators_path, placeholders));
  }
  for (const auto& p : o.extra_indicator_paths) {
    KW_ASSIGN_OR_RETURN(std::string text, ReadFile(p, 4u << 20));
    KW_RETURN_IF_ERROR(ParseIndicators(text, p, placeholders));
  }
  if (o.rule_paths.empty()) {
    for (const auto& t : BuiltinStormRules()) texts->push_back(t);
    return Status::Ok();
  }
  KW_ASSIGN_OR_RETURN(std::vector<std::string> files, RuleFiles(o.rule_paths));
  for (const auto& f : files) {
    KW_ASSIGN_OR_RETURN(std::string text, ReadFile(f, 4u << 20));
    texts->emplace_back(f, std::move(text));
  }
  return Status::Ok();
}

Status StormAnalytics::Impl::LoadRules(LoadReport* report) {
  if (!o.run_sigma) return Status::Ok();  // the caller loads and runs them (StormSigmaSources)
  LoadOptions lo;
  std::vector<std::pair<std::string, std::string>> texts;
  KW_RETURN_IF_ERROR(StormSigmaSources(o, &texts, &lo.placeholders));
  LoadReport local;
  LoadReport* r = report ? report : &local;
  KW_ASSIGN_OR_RETURN(RuleSet rs, RuleSet::LoadFromStrings(texts, lo, r));
  if (o.rule_paths.empty() && !r->rejected.empty()) {
    return InternalError("built-in Storm-0558 rule rejected: " + r->rejected.front().ToString());
  }
  rules = std::move(rs);
  engine = std::make_unique<Engine>(*rules);
  return Status::Ok();
}

void StormAnalytics::Impl::FirstSeenApp(std::string_view json, bool learning,
                                        std::vector<PendingAlert>* out) {
  if (v.operation != "MailItemsAccessed" || v.tenant.empty()) return;
  std::string_view app = v.app.empty() ? v.client_app : v.app;
  std::string_view client = v.client_app.empty() ? v.app : v.client_app;
  if (app.empty()) return;
  std::string_view tkey = JoinInto(&k_app, {v.tenant, app, client});
  auto it = app_tenant.find(tkey);
  bool tenant_alert = false;
  if (it == app_tenant.end()) {
    tenant_alert = !learning;
    if (tenant_alert) {
      size_t known = 0;
      std::string prefix = Join({v.tenant, ""});
      for (const auto& [k, a] : app_tenant) known += k.rfind(prefix, 0) == 0;
      auto facts = BaseFacts();
      facts.emplace_back("AppId", std::string(app));
      facts.emplace_back("ClientAppId", std::string(client));
      facts.emplace_back("apps_known_in_tenant", std::to_string(known));
      facts.emplace_back("learning_ended",
                         FormatIsoTime(Slot(tenant_first, v.tenant) + o.learning_days * kDayMs));
      if (!v.ip.empty()) facts.emplace_back("ClientIPAddress", std::string(v.ip));
      out->push_back({&srules.app_tenant, v.time_ms, std::move(facts), 0, v.time_ms,
                      {std::string(json)}});
    }
    it = app_tenant.emplace(std::string(tkey), AppTenant{v.time_ms, 0, tenant_alert ? 1 : 0}).first;
    MarkDirty(d_app_tenant, tkey);
  }
  if (v.mailbox.empty()) return;
  std::string_view mkey = JoinInto(&k_mailbox, {v.tenant, app, client, v.mailbox});
  if (app_mailbox.find(mkey) != app_mailbox.end()) return;
  if (!learning && !tenant_alert && it->second.state != kAppSanctioned &&
      it->second.mailboxes <= o.app_rare_mailboxes) {
    auto facts = BaseFacts();
    facts.emplace_back("AppId", std::string(app));
    facts.emplace_back("ClientAppId", std::string(client));
    facts.emplace_back("app_first_seen", FormatIsoTime(it->second.first_ms));
    facts.emplace_back("app_first_seen_by_alert", it->second.state == 1 ? "true" : "false");
    facts.emplace_back("mailboxes_read_before", std::to_string(it->second.mailboxes));
    if (!v.ip.empty()) facts.emplace_back("ClientIPAddress", std::string(v.ip));
    out->push_back({&srules.app_mailbox, v.time_ms, std::move(facts),
                    static_cast<double>(it->second.mailboxes), v.time_ms, {std::string(json)}});
  }
  app_mailbox.emplace(std::string(mkey), v.time_ms);
  MarkDirty(d_app_mailbox, mkey);
  ++it->second.mailboxes;
  MarkDirty(d_app_tenant, tkey);
}

void StormAnalytics::Impl::Bulk(std::string_view json, bool emit, std::vector<PendingAlert>* out) {
  if (v.operation != "MailItemsAccessed" || !v.bind || v.items.empty()) return;
  std::string_view key = v.session.empty()
                             ? JoinInto(&k_bulk, {"m", v.tenant, v.mailbox, v.app, v.client_app})
                             : JoinInto(&k_bulk, {"s", v.tenant, v.session});
  auto found = bulk.find(key);
  if (found == bulk.end()) {
    found = bulk.emplace(std::string(key), BulkState()).first;
    found->second.tenant.assign(v.tenant);
  }
  BulkState& b = found->second;
  b.newest = std::max(b.newest, v.time_ms);
  int64_t cutoff = b.newest - o.bulk_window_ms;
  for (auto id : v.items) {
    uint64_t h = Fnv1a(id);
    b.items.push_back({v.time_ms, h});
    ++b.counts[h];
  }
  b.records.push_back({v.time_ms, RecycledCopy(json)});
  while (!b.items.empty() && b.items.front().first < cutoff) {
    auto c = b.counts.find(b.items.front().second);
    if (--c->second == 0) b.counts.erase(c);
    b.items.pop_front();
  }
  while (!b.records.empty() && b.records.front().first < cutoff) {
    Recycle(std::move(b.records.front().second));
    b.records.pop_front();
  }
  // Evidence memory stays bounded: keep the first few and the latest records of the window.
  if (b.records.size() > 2 * kMaxEvidenceEvents) {
    auto middle = b.records.begin() + kMaxEvidenceEvents / 2;
    Recycle(std::move(middle->second));
    b.records.erase(middle);
  }
  if (static_cast<int>(b.counts.size()) < o.bulk_distinct_items) return;
  if (b.last_alert_ms != INT64_MIN && v.time_ms < b.last_alert_ms + o.bulk_realert_ms) return;
  b.last_alert_ms = v.time_ms;
  if (emit) {
    auto facts = BaseFacts();
    if (!v.session.empty()) facts.emplace_back("SessionId", std::string(v.session));
    if (!v.app.empty()) facts.emplace_back("AppId", std::string(v.app));
    if (!v.ip.empty()) facts.emplace_back("ClientIPAddress", std::string(v.ip));
    facts.emplace_back("distinct_items", std::to_string(b.counts.size()));
    facts.emplace_back("window_seconds", std::to_string(o.bulk_window_ms / 1000));
    PendingAlert p{&srules.bulk, v.time_ms, std::move(facts), static_cast<double>(b.counts.size()),
                   b.items.front().first, {}};
    size_t n = b.records.size();
    for (size_t i = 0; i < n; ++i) {
      if (n > kMaxEvidenceEvents && i >= kMaxEvidenceEvents / 2 && i < n - kMaxEvidenceEvents / 2) continue;
      p.evidence.push_back(b.records[i].second);
    }
    out->push_back(std::move(p));
  }
  b.items.clear();
  b.counts.clear();
  for (auto& r : b.records) Recycle(std::move(r.second));
  b.records.clear();
}

void StormAnalytics::Impl::Network(std::string_view json, bool learning,
                                   std::vector<PendingAlert>* out) {
  if (v.tenant.empty() || v.user.empty() || v.ip.empty() || !Succeeded(v.result)) return;
  std::string_view prefix;
  if (FastIpv4Prefix(v.ip, &k_prefix)) {
    prefix = k_prefix;
  } else {
    k_prefix = NetworkPrefix(v.ip);
    prefix = k_prefix;
  }
  if (prefix.empty()) return;
  bool signin = v.operation == "UserLoggedIn" || v.operation == "TokenIssued";
  bool mail = v.operation == "MailItemsAccessed";
  std::string_view ukey = JoinInto(&k_user, {v.tenant, v.user});
  std::string_view pkey = JoinInto(&k_user_prefix, {v.tenant, v.user, prefix});
  std::string_view tpkey = JoinInto(&k_tenant_prefix, {v.tenant, prefix});
  UserProfile& u = Slot(users, ukey);
  if (u.events == 0) u.first_ms = v.time_ms;
  auto up = user_prefix.find(pkey);
  int state = up == user_prefix.end() ? -1 : up->second.second;
  if (state == kPrefixAlerted) return;  // a reported network never becomes the user's habit
  // A prefix becomes the user's when a sign-in vouches for it, during learning, or when it is
  // seen again on another day; until then (probation) it teaches the profile nothing.
  // Sessions: a SessionId (M365) or token id (Keyward) that began with a sign-in or on a known
  // network vouches for the networks it roams to (a laptop going home keeps its session).
  std::string_view skeys[2];
  int nkeys = 0;
  if (!v.session.empty()) skeys[nkeys] = JoinInto(&k_session[nkeys], {"s", v.tenant, v.session}), ++nkeys;
  if (!v.signin_session.empty()) {
    skeys[nkeys] = JoinInto(&k_session[nkeys], {"s", v.tenant, v.signin_session});
    ++nkeys;
  }
  std::string_view tid = !v.token_id.empty() ? std::string_view(v.token_id) : v.detail_jti;
  if (!tid.empty() && nkeys < 2) skeys[nkeys] = JoinInto(&k_session[nkeys], {"t", tid}), ++nkeys;
  bool session_vouched = false;
  for (int i = 0; i < nkeys; ++i) {
    auto vt = vouched.find(skeys[i]);
    // Older than retention counts as unknown whether or not Prune has dropped it yet.
    session_vouched = session_vouched ||
                      (vt != vouched.end() && vt->second >= now_ms - o.session_retention_ms);
  }
  bool vouched_now = signin || learning || session_vouched ||
                     (state == kPrefixProbation && DayOf(v.time_ms) != DayOf(up->second.first));
  if (state == kPrefixKnown || vouched_now) {
    for (int i = 0; i < nkeys; ++i) {
      auto it = vouched.find(skeys[i]);
      bool fresh = it == vouched.end();
      if (fresh) it = vouched.emplace(std::string(skeys[i]), v.time_ms).first;
      if (fresh || v.time_ms > it->second + 3600000 ||
          it->second < now_ms - o.session_retention_ms) {  // refreshed hourly, written when changed
        it->second = v.time_ms;
        MarkDirty(d_vouched, skeys[i]);
      }
    }
  }
  bool vouched = vouched_now;
  if (state != kPrefixKnown && vouched) {
    Slot(user_prefix, pkey) = {v.time_ms, kPrefixKnown};
    MarkDirty(d_user_prefix, pkey);
    ++Slot(tenant_prefix, tpkey);
    MarkDirty(d_tenant_prefix, tpkey);
    state = kPrefixKnown;
  }
  int how = HourOfWeek(v.time_ms);
  if (state == kPrefixKnown) {
    ++u.events;
    int64_t day = DayOf(v.time_ms);
    if (day != u.last_day) {
      ++u.days;
      u.last_day = day;
    }
    ++u.hist[how];
    ++u.total;
    MarkDirty(d_users, ukey);
    return;
  }
  if (state == -1) {
    Slot(user_prefix, pkey) = {v.time_ms, kPrefixProbation};
    MarkDirty(d_user_prefix, pkey);
  }
  auto tp = tenant_prefix.find(tpkey);
  bool tenant_prefix_known = tp != tenant_prefix.end() && tp->second >= o.tenant_prefix_users;
  if (!mail || tenant_prefix_known || u.events < o.network_min_user_events ||
      u.days < o.network_min_user_days ||
      (u.last_alert_ms != INT64_MIN && v.time_ms < u.last_alert_ms + o.network_realert_ms)) {
    return;
  }
  int hour = how % 24;
  uint64_t hod = 0;  // the user's events at this hour of day (+-1 h), any day of the week
  for (int d = 0; d < 7; ++d) {
    for (int k = -1; k <= 1; ++k) hod += u.hist[((d * 24 + hour + k) % 168 + 168) % 168];
  }
  double frac = u.total ? static_cast<double>(hod) / static_cast<double>(u.total) : 0;
  if (frac >= o.unusual_hour_fraction) return;
  auto facts = BaseFacts();
  facts.emplace_back("ClientIPAddress", std::string(v.ip));
  facts.emplace_back("prefix", std::string(prefix));
  size_t nprefixes = 0;
  std::string upfx = Join({v.tenant, v.user, ""});
  for (const auto& [k, st] : user_prefix) nprefixes += k.rfind(upfx, 0) == 0 && st.second == kPrefixKnown;
  facts.emplace_back("prefixes_known_for_user", std::to_string(nprefixes));
  facts.emplace_back("hour_of_week_utc", std::to_string(how));
  facts.emplace_back("user_events_at_this_hour_of_day", std::to_string(hod));
  facts.emplace_back("user_events", std::to_string(u.total));
  if (!v.app.empty()) facts.emplace_back("AppId", std::string(v.app));
  out->push_back({&srules.network, v.time_ms, std::move(facts), frac, v.time_ms, {std::string(json)}});
  u.last_alert_ms = v.time_ms;
  Slot(user_prefix, pkey) = {v.time_ms, kPrefixAlerted};
  MarkDirty(d_user_prefix, pkey);
  MarkDirty(d_users, ukey);
}

void StormAnalytics::Impl::Sessions(std::string_view json, bool learning,
                                    std::vector<PendingAlert>* out) {
  (void)out;
  if (v.keyward) return;  // Keyward records: token issuance (Tokens) is the stronger check
  if (v.operation == "UserLoggedIn" && !v.signin_session.empty() && Succeeded(v.result)) {
    std::string_view sid = v.signin_session;
    auto it = sessions.find(sid);
    if (it == sessions.end()) {
      sessions.emplace(std::string(sid), Expiring{std::string(v.tenant), v.time_ms, 0});
    } else if (it->second.state != 1 || it->second.time_ms < now_ms - o.session_retention_ms) {
      it->second = Expiring{std::string(v.tenant), v.time_ms, 0};
    }
    MarkDirty(d_sessions, sid);
    auto p = pending_sessions.find(sid);
    if (p != pending_sessions.end()) pending_sessions.erase(p);
    return;
  }
  if (v.operation != "MailItemsAccessed" || v.session.empty()) return;
  std::string_view sid = v.session;
  auto it = sessions.find(sid);
  // A session past retention is unknown, whether or not Prune has dropped it yet.
  if (it != sessions.end() && it->second.time_ms < now_ms - o.session_retention_ms) {
    sessions.erase(it);
    it = sessions.end();
  }
  if (it != sessions.end()) {
    if (it->second.state == 0 && v.time_ms > it->second.time_ms + 3600000) {
      it->second.time_ms = v.time_ms;  // keep long sessions from expiring (written hourly)
      MarkDirty(d_sessions, sid);
    }
    return;
  }
  if (learning) {
    sessions.emplace(std::string(sid), Expiring{std::string(v.tenant), v.time_ms, 0});
    MarkDirty(d_sessions, sid);
    return;
  }
  if (pending_sessions.find(sid) != pending_sessions.end()) return;
  auto facts = BaseFacts();
  facts.emplace_back("SessionId", std::string(sid));
  if (!v.app.empty()) facts.emplace_back("AppId", std::string(v.app));
  if (!v.ip.empty()) facts.emplace_back("ClientIPAddress", std::string(v.ip));
  facts.emplace_back("grace_seconds", std::to_string(o.session_grace_ms / 1000));
  pending_sessions[std::string(sid)] = PendingSession{
      v.time_ms + o.session_grace_ms,
      PendingAlert{&srules.session, v.time_ms, std::move(facts), 0, v.time_ms, {std::string(json)}}};
}

void StormAnalytics::Impl::ExpirePending(AlertSink& sink, std::string_view tenant, bool all) {
  for (auto it = pending_sessions.begin(); it != pending_sessions.end();) {
    // facts.front() is the OrganizationId (BaseFacts).
    const std::string& owner = it->second.alert.facts.front().second;
    if (!all && (owner != tenant || it->second.deadline_ms >= now_ms)) {
      ++it;
      continue;
    }
    sessions[it->first] = Expiring{owner, it->second.alert.time_ms, 1};
    MarkDirty(d_sessions, it->first);
    ++stats.stateful_alerts;
    Emit(it->second.alert, sink);
    it = pending_sessions.erase(it);
  }
}

void StormAnalytics::Impl::Tokens(std::string_view json, std::vector<PendingAlert>* out) {
  if (!v.keyward) return;
  if (v.operation == "TokenIssued") {
    // The tenant's own identity service issued a token to this app: an app the tenant
    // registered, not a stranger. The first-seen and rare-app detectors leave it alone (a forged
    // token naming it is still caught: its jti was never issued).
    std::string_view app = v.app.empty() ? v.client_app : v.app;
    std::string_view client = v.client_app.empty() ? v.app : v.client_app;
    if (!app.empty() && !v.tenant.empty()) {
      std::string_view tkey = JoinInto(&k_app, {v.tenant, app, client});
      auto a = app_tenant.find(tkey);
      if (a == app_tenant.end()) {
        app_tenant.emplace(std::string(tkey), AppTenant{v.time_ms, 0, kAppSanctioned});
        MarkDirty(d_app_tenant, tkey);
      } else if (a->second.state != kAppSanctioned) {
        a->second.state = kAppSanctioned;
        MarkDirty(d_app_tenant, tkey);
      }
    }
    std::string_view jti = !v.token_id.empty() ? v.token_id : std::string_view(v.detail_jti);
    if (jti.empty()) return;  // an authorization code, not an access token
    Slot(tokens, jti) = Expiring{std::string(v.tenant), v.time_ms, 0};
    MarkDirty(d_tokens, jti);
    return;
  }
  if (v.operation != "MailItemsAccessed" || v.token_id.empty() || !Succeeded(v.result)) return;
  std::string jti(v.token_id);
  auto known = tokens.find(jti);
  // Past retention counts as never seen, whether or not Prune has dropped it yet.
  if (known != tokens.end() && known->second.time_ms >= now_ms - o.session_retention_ms) return;
  // Only tokens claiming issuance after the analytics began watching this tenant can be judged.
  auto tf = tenant_first.find(v.tenant);
  int64_t watch_start = tf == tenant_first.end() ? v.time_ms : tf->second;
  int64_t iat = v.token_iat_ms;
  // iat has whole seconds: a token of the same second as the first record counts as watched.
  if (iat == 0 || iat / 1000 < watch_start / 1000) return;
  tokens[jti] = Expiring{std::string(v.tenant), v.time_ms, 1};
  d_tokens.insert(jti);
  auto facts = BaseFacts();
  facts.emplace_back("token_id", jti);
  facts.emplace_back("token_issued_at", FormatIsoTime(iat));
  facts.emplace_back("watching_since", FormatIsoTime(watch_start));
  if (!v.client_app.empty()) facts.emplace_back("ClientAppId", std::string(v.client_app));
  if (!v.ip.empty()) facts.emplace_back("ClientIPAddress", std::string(v.ip));
  out->push_back({&srules.token, v.time_ms, std::move(facts), 0, v.time_ms, {std::string(json)}});
}

// Memory only: lookups already treat entries past retention as absent, so when Prune runs does
// not change any alert.
void StormAnalytics::Impl::Prune() {
  for (auto* m : {&sessions, &tokens}) {
    for (auto it = m->begin(); it != m->end();) {
      if (it->second.time_ms < ClockOf(it->second.tenant) - o.session_retention_ms) {
        it = m->erase(it);
      } else {
        ++it;
      }
    }
  }
  // Vouched keys: "s" tenant sid, or "t" jti (no tenant: the newest time of any tenant).
  for (auto it = vouched.begin(); it != vouched.end();) {
    std::string_view k = it->first;
    int64_t clock = clock_ms;
    if (k.size() > 2 && k[0] == 's') {
      size_t end = k.find(kSep, 2);
      clock = ClockOf(k.substr(2, end == std::string_view::npos ? end : end - 2));
    }
    if (it->second < clock - o.session_retention_ms) {
      it = vouched.erase(it);
    } else {
      ++it;
    }
  }
  const int64_t idle = 2 * std::max(o.bulk_window_ms, o.bulk_realert_ms);
  for (auto it = bulk.begin(); it != bulk.end();) {
    if (it->second.newest < ClockOf(it->second.tenant) - idle) {
      it = bulk.erase(it);
    } else {
      ++it;
    }
  }
}

void StormAnalytics::Impl::Stateful(std::string_view json, ProcessMode mode, AlertSink& sink) {
  if (!v.has_time) return;
  clock_ms = std::max(clock_ms, v.time_ms);
  auto tc = tenant_clock.find(v.tenant);
  if (tc == tenant_clock.end()) tc = tenant_clock.emplace(std::string(v.tenant), v.time_ms).first;
  tc->second = std::max(tc->second, v.time_ms);
  now_ms = tc->second;
  std::vector<PendingAlert> alerts;
  if (mode == ProcessMode::kWarmup) {
    Bulk(json, false, &alerts);
    return;
  }
  if (!v.tenant.empty() && tenant_first.find(v.tenant) == tenant_first.end()) {
    tenant_first.emplace(std::string(v.tenant), v.time_ms);
    MarkDirty(d_tenant, v.tenant);
  }
  bool learning = v.tenant.empty() || Learning(v.tenant, v.time_ms);
  if (learning) ++stats.learning_records;
  Tokens(json, &alerts);
  FirstSeenApp(json, learning, &alerts);
  Bulk(json, true, &alerts);
  Network(json, learning, &alerts);
  Sessions(json, learning, &alerts);
  ExpirePending(sink, v.tenant, false);
  for (const auto& a : alerts) {
    ++stats.stateful_alerts;
    Emit(a, sink);
  }
  if (++bulk_ops % 65536 == 0) Prune();
}

Status StormAnalytics::Impl::Write() {
  auto put = [&](KeySet& dirty, std::string_view sql,
                 const std::function<bool(const std::string&, sqlite::Statement&)>& bind) -> Status {
    if (dirty.empty()) return Status::Ok();
    KW_ASSIGN_OR_RETURN(auto st, db->Prepare(sql));
    for (const auto& k : dirty) {
      if (!bind(k, st)) continue;
      KW_RETURN_IF_ERROR(st.Run());
      KW_RETURN_IF_ERROR(st.Reset());
    }
    return Status::Ok();
  };
  KW_RETURN_IF_ERROR(put(d_tenant, "INSERT OR REPLACE INTO tenant VALUES(?1, ?2)",
                         [&](const std::string& k, sqlite::Statement& s) {
                           s.Bind(1, k).Bind(2, tenant_first.at(k));
                           return true;
                         }));
  KW_RETURN_IF_ERROR(put(d_app_tenant, "INSERT OR REPLACE INTO app_tenant VALUES(?1, ?2, ?3, ?4, ?5, ?6)",
                         [&](const std::string& k, sqlite::Statement& s) {
                           auto p = Split(k);
                           const auto& a = app_tenant.at(k);
                           s.Bind(1, p[0]).Bind(2, p[1]).Bind(3, p[2]).Bind(4, a.first_ms)
                               .Bind(5, a.mailboxes).Bind(6, static_cast<int64_t>(a.state));
                           return true;
                         }));
  KW_RETURN_IF_ERROR(put(d_app_mailbox, "INSERT OR REPLACE INTO app_mailbox VALUES(?1, ?2, ?3, ?4, ?5)",
                         [&](const std::string& k, sqlite::Statement& s) {
                           auto p = Split(k);
                           s.Bind(1, p[0]).Bind(2, p[1]).Bind(3, p[2]).Bind(4, p[3])
                               .Bind(5, app_mailbox.at(k));
                           return true;
                         }));
  KW_RETURN_IF_ERROR(put(d_users,
                         "INSERT OR REPLACE INTO user_profile VALUES(?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
                         [&](const std::string& k, sqlite::Statement& s) {
                           auto p = Split(k);
                           const auto& u = users.at(k);
                           std::string h(168 * 4, '\0');
                           for (size_t i = 0; i < 168; ++i) {
                             for (int b = 0; b < 4; ++b) h[4 * i + b] = static_cast<char>(u.hist[i] >> (8 * b));
                           }
                           s.Bind(1, p[0]).Bind(2, p[1]).Bind(3, u.first_ms).Bind(4, u.events)
                               .Bind(5, u.days).Bind(6, u.last_day).Bind(7, u.last_alert_ms)
                               .BindBlob(8, h);
                           return true;
                         }));
  KW_RETURN_IF_ERROR(put(d_user_prefix, "INSERT OR REPLACE INTO user_prefix VALUES(?1, ?2, ?3, ?4, ?5)",
                         [&](const std::string& k, sqlite::Statement& s) {
                           auto p = Split(k);
                           const auto& e = user_prefix.at(k);
                           s.Bind(1, p[0]).Bind(2, p[1]).Bind(3, p[2]).Bind(4, e.first)
                               .Bind(5, static_cast<int64_t>(e.second));
                           return true;
                         }));
  KW_RETURN_IF_ERROR(put(d_tenant_prefix, "INSERT OR REPLACE INTO tenant_prefix VALUES(?1, ?2, ?3)",
                         [&](const std::string& k, sqlite::Statement& s) {
                           auto p = Split(k);
                           s.Bind(1, p[0]).Bind(2, p[1]).Bind(3, tenant_prefix.at(k));
                           return true;
                         }));
  KW_RETURN_IF_ERROR(put(d_sessions, "INSERT OR REPLACE INTO session VALUES(?1, ?2, ?3, ?4)",
                         [&](const std::string& k, sqlite::Statement& s) {
                           auto it = sessions.find(k);
                           if (it == sessions.end()) return false;
                           s.Bind(1, k).Bind(2, it->second.tenant).Bind(3, it->second.time_ms)
                               .Bind(4, static_cast<int64_t>(it->second.state));
                           return true;
                         }));
  KW_RETURN_IF_ERROR(put(d_tokens, "INSERT OR REPLACE INTO issued_token VALUES(?1, ?2, ?3, ?4)",
                         [&](const std::string& k, sqlite::Statement& s) {
                           auto it = tokens.find(k);
                           if (it == tokens.end()) return false;
                           s.Bind(1, k).Bind(2, it->second.tenant).Bind(3, it->second.time_ms)
                               .Bind(4, static_cast<int64_t>(it->second.state));
                           return true;
                         }));
  KW_RETURN_IF_ERROR(put(d_vouched, "INSERT OR REPLACE INTO vouched_session VALUES(?1, ?2)",
                         [&](const std::string& k, sqlite::Statement& s) {
                           auto it = vouched.find(k);
                           if (it == vouched.end()) return false;
                           s.Bind(1, k).Bind(2, it->second);
                           return true;
                         }));
  // Retention in each tenant's own time (vouched_session rows carry no tenant: the newest time
  // of any tenant).
  for (const auto& [tenant, clock] : tenant_clock) {
    int64_t cutoff = clock - o.session_retention_ms;
    for (std::string_view sql : {"DELETE FROM session WHERE tenant = ?1 AND last_ms < ?2",
                                 "DELETE FROM issued_token WHERE tenant = ?1 AND issued_ms < ?2"}) {
      KW_ASSIGN_OR_RETURN(auto st, db->Prepare(sql));
      st.Bind(1, tenant).Bind(2, cutoff);
      KW_RETURN_IF_ERROR(st.Run());
    }
  }
  if (clock_ms != INT64_MIN) {
    KW_ASSIGN_OR_RETURN(auto st, db->Prepare("DELETE FROM vouched_session WHERE last_ms < ?1"));
    st.Bind(1, clock_ms - o.session_retention_ms);
    KW_RETURN_IF_ERROR(st.Run());
  }
  return Status::Ok();
}

// ---- public API ----------------------------------------------------------------------------------

StormAnalytics::StormAnalytics(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
StormAnalytics::~StormAnalytics() = default;

Result<std::unique_ptr<StormAnalytics>> StormAnalytics::Open(const AnalyticsOptions& options,
                                                             LoadReport* report) {
  if (options.learning_days < 0) return InvalidArgumentError("learning_days must be >= 0");
  if (options.bulk_distinct_items < 1 || options.bulk_window_ms <= 0) {
    return InvalidArgumentError("bulk_distinct_items must be >= 1 and bulk_window_ms > 0");
  }
  if (options.unusual_hour_fraction < 0 || options.unusual_hour_fraction > 1) {
    return InvalidArgumentError("unusual_hour_fraction must be within [0, 1]");
  }
  if (options.db_path.empty()) return InvalidArgumentError("db_path is empty (use \":memory:\")");
  auto impl = std::make_unique<Impl>();
  impl->o = options;
  KW_RETURN_IF_ERROR(impl->LoadRules(report));
  KW_RETURN_IF_ERROR(impl->OpenDb());
  KW_RETURN_IF_ERROR(impl->LoadBaselines());
  return std::unique_ptr<StormAnalytics>(new StormAnalytics(std::move(impl)));
}

Status StormAnalytics::Process(std::string_view record_json, const LogSource& hint,
                               AlertSink& sink, ProcessMode mode) {
  Impl& m = *impl_;
  ++m.stats.records;
  const simdjson::dom::element* root = nullptr;
  simdjson::dom::element parsed;
  if (m.engine) {
    NullSink null;
    CountingSink counting(sink, &m.stats.sigma_alerts);
    AlertSink& sigma_sink = mode == ProcessMode::kWarmup ? static_cast<AlertSink&>(null) : counting;
    Status s = m.engine->Process(record_json, hint, sigma_sink);
    if (!s.ok()) {
      ++m.stats.malformed;
      return s;
    }
    root = m.engine->last_event();  // parsed once, by the engine
  } else {
    m.buf.assign(record_json);
    if (m.parser.parse(m.buf).get(parsed) != simdjson::SUCCESS) {
      ++m.stats.malformed;
      return InvalidArgumentError("analytics: the record is not valid JSON");
    }
    root = &parsed;
  }
  return m.Run(record_json, *root, mode, sink);
}

Status StormAnalytics::ProcessParsed(std::string_view record_json,
                                     const simdjson::dom::element& root, AlertSink& sink,
                                     ProcessMode mode) {
  ++impl_->stats.records;
  return impl_->Run(record_json, root, mode, sink);
}

void StormAnalytics::Flush(AlertSink& sink) {
  Impl& m = *impl_;
  // End of input: no sign-in can come any more for the sessions in their grace period.
  m.ExpirePending(sink, {}, /*all=*/true);
  for (auto& [k, b] : m.bulk) {
    for (auto& r : b.records) m.Recycle(std::move(r.second));
  }
  m.bulk.clear();
  NullSink null;
  if (m.engine) m.engine->Flush(null);
}

Status StormAnalytics::Commit(const std::function<Status(sqlite::Db&)>& extra) {
  Impl& m = *impl_;
  Status s = m.db->Transaction([&]() -> Status {
    KW_RETURN_IF_ERROR(m.Write());
    if (extra) KW_RETURN_IF_ERROR(extra(*m.db));
    return Status::Ok();
  });
  if (!s.ok()) return s.WithContext("analytics: commit");
  for (auto* d : {&m.d_tenant, &m.d_app_tenant, &m.d_app_mailbox, &m.d_users, &m.d_user_prefix,
                  &m.d_tenant_prefix, &m.d_sessions, &m.d_tokens, &m.d_vouched}) {
    d->clear();
  }
  ++m.stats.commits;
  return Status::Ok();
}

sqlite::Db& StormAnalytics::db() { return *impl_->db; }

std::vector<const RuleInfo*> StormAnalytics::Rules() const {
  std::vector<const RuleInfo*> out;
  if (impl_->rules) out = impl_->rules->Rules();
  const StatefulRules& s = impl_->srules;
  for (const RuleInfo* r : {&s.app_tenant, &s.app_mailbox, &s.bulk, &s.network, &s.session, &s.token}) {
    out.push_back(r);
  }
  return out;
}

StormAnalytics::Stats StormAnalytics::stats() const { return impl_->stats; }

}  // namespace kw::detect::analytics
