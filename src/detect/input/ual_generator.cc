#include "detect/input/ual_generator.h"

#include <fmt/format.h>
#include <simdjson.h>
#include <zlib.h>

#include <algorithm>
#include <array>
#include <cstdio>
#include <cstring>
#include <queue>
#include <vector>

#include "core/json.h"

namespace kw::detect {
namespace {

// xoshiro256** seeded with splitmix64: fixed output on every platform and library version.
class Rng {
 public:
  explicit Rng(uint64_t seed) {
    for (uint64_t& s : s_) s = SplitMix(&seed);
  }
  uint64_t Next() {
    const uint64_t result = Rotl(s_[1] * 5, 7) * 9;
    const uint64_t t = s_[1] << 17;
    s_[2] ^= s_[0];
    s_[3] ^= s_[1];
    s_[1] ^= s_[2];
    s_[0] ^= s_[3];
    s_[2] ^= t;
    s_[3] = Rotl(s_[3], 45);
    return result;
  }
  // Uniform in [0, n); n > 0. Lemire's multiply-shift (bias < 2^-32 for the n used here).
  uint64_t Below(uint64_t n) {
    return static_cast<uint64_t>((static_cast<unsigned __int128>(Next()) * n) >> 64);
  }
  // Uniform in [lo, hi].
  int64_t Range(int64_t lo, int64_t hi) { return lo + static_cast<int64_t>(Below(hi - lo + 1)); }
  // True with probability per_mille / 1000.
  bool Chance(uint32_t per_mille) { return Below(1000) < per_mille; }

 private:
  static uint64_t Rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }
  static uint64_t SplitMix(uint64_t* x) {
    uint64_t z = (*x += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
  }
  uint64_t s_[4];
};

constexpr char kHexLower[] = "0123456789abcdef";
constexpr char kHexUpper[] = "0123456789ABCDEF";
constexpr char kBase64[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

std::string Guid(Rng& rng) {
  uint64_t a = rng.Next(), b = rng.Next();
  char buf[36];
  int k = 0;
  for (int i = 0; i < 32; ++i) {
    if (i == 8 || i == 12 || i == 16 || i == 20) buf[k++] = '-';
    uint64_t src = i < 16 ? a : b;
    buf[k++] = kHexLower[(src >> ((i % 16) * 4)) & 15];
  }
  // RFC 4122 version 4, variant 1.
  buf[14] = '4';
  buf[19] = kHexLower[8 + (b & 3)];
  return std::string(buf, 36);
}

std::string Hex(Rng& rng, int n, bool upper) {
  std::string s(n, '0');
  const char* digits = upper ? kHexUpper : kHexLower;
  uint64_t x = 0;
  for (int i = 0; i < n; ++i) {
    if (i % 16 == 0) x = rng.Next();
    s[i] = digits[x & 15];
    x >>= 4;
  }
  return s;
}

std::string Base64Id(Rng& rng, int n) {
  std::string s(n, 'A');
  uint64_t x = 0;
  for (int i = 0; i < n; ++i) {
    if (i % 10 == 0) x = rng.Next();
    s[i] = kBase64[x & 63];
    x >>= 6;
  }
  return s;
}

// Days since 1970-01-01 → civil date (Howard Hinnant's algorithm).
void CivilFromDays(int64_t z, int* y, unsigned* m, unsigned* d) {
  z += 719468;
  const int64_t era = (z >= 0 ? z : z - 146096) / 146097;
  const unsigned doe = static_cast<unsigned>(z - era * 146097);
  const unsigned yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
  const int64_t yy = static_cast<int64_t>(yoe) + era * 400;
  const unsigned doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
  const unsigned mp = (5 * doy + 2) / 153;
  *d = doy - (153 * mp + 2) / 5 + 1;
  *m = mp < 10 ? mp + 3 : mp - 9;
  *y = static_cast<int>(yy + (*m <= 2));
}

// "2023-05-15T08:01:02" into buf[19].
void FormatTime(int64_t unix_seconds, char* buf) {
  int64_t days = unix_seconds >= 0 ? unix_seconds / 86400 : (unix_seconds - 86399) / 86400;
  int64_t secs = unix_seconds - days * 86400;
  int y;
  unsigned m, d;
  CivilFromDays(days, &y, &m, &d);
  auto two = [](char* p, unsigned v) {
    p[0] = static_cast<char>('0' + v / 10);
    p[1] = static_cast<char>('0' + v % 10);
  };
  buf[0] = static_cast<char>('0' + (y / 1000) % 10);
  buf[1] = static_cast<char>('0' + (y / 100) % 10);
  two(buf + 2, static_cast<unsigned>(y % 100));
  buf[4] = '-';
  two(buf + 5, m);
  buf[7] = '-';
  two(buf + 8, d);
  buf[10] = 'T';
  two(buf + 11, static_cast<unsigned>(secs / 3600));
  buf[13] = ':';
  two(buf + 14, static_cast<unsigned>(secs / 60 % 60));
  buf[16] = ':';
  two(buf + 17, static_cast<unsigned>(secs % 60));
}

// 0 = Monday.
int Weekday(int64_t unix_seconds) {
  int64_t days = unix_seconds >= 0 ? unix_seconds / 86400 : (unix_seconds - 86399) / 86400;
  return static_cast<int>(((days + 3) % 7 + 7) % 7);  // 1970-01-01 was a Thursday
}

constexpr std::string_view kOwaAppId = "00000002-0000-0ff1-ce00-000000000000";
constexpr std::string_view kOfficeAppId =
    "d3590ed6-52b3-4102-aeff-aad2292ab01c";  // Outlook desktop
constexpr std::string_view kOutlookMobileAppId = "27922004-5251-4030-b22d-91ecd9a37ea4";
constexpr std::string_view kOneOutlookWebAppId = "9199bf20-a13f-4107-85dc-02114787ef48";

constexpr std::string_view kProxyIps[] = {
    "51.89.156.153",   "176.31.90.129",  "137.74.181.100", "193.36.119.45",  "185.158.248.159",
    "131.153.78.188",  "37.143.130.146", "146.70.157.45",  "185.195.200.39", "185.38.142.229",
    "146.70.121.44",   "31.42.177.181",  "185.51.134.52",  "173.44.226.70",  "45.14.227.233",
    "185.236.231.109", "178.73.220.149", "45.14.227.212",  "91.222.173.225", "146.70.35.168",
    "146.70.157.213",  "31.42.177.201",  "5.252.176.8",    "80.85.158.215",  "193.149.129.88",
    "5.252.178.68",    "116.202.251.8",  "185.158.248.93", "20.108.240.252", "146.70.135.182",
};

constexpr std::string_view kActorClientInfo = "Client=REST;Client=RESTSystem;;";

constexpr std::string_view kTenantNames[] = {
    "contoso", "fabrikam",  "northwind", "tailspin",     "wingtip",   "adatum",
    "litware", "proseware", "woodgrove", "fourthcoffee", "relecloud", "alpineski",
};

constexpr std::string_view kFirstNames[] = {
    "alex",  "maria", "james",  "fatima", "li",   "olga",  "samuel", "priya",  "lukas", "emma",
    "noah",  "sofia", "daniel", "yuki",   "omar", "chloe", "mateo",  "hannah", "ivan",  "grace",
    "tomas", "aisha", "peter",  "lena",   "ravi", "julia", "marco",  "nina",   "kofi",  "sara",
};
constexpr std::string_view kLastNames[] = {
    "smith",   "garcia",  "muller", "nguyen", "kowalski", "rossi",  "dubois",  "tanaka",  "silva",
    "johnson", "ivanova", "brown",  "haddad", "okafor",   "larsen", "novak",   "schmidt", "kim",
    "martin",  "lopez",   "weber",  "jensen", "costa",    "murphy", "fischer", "patel",   "clark",
};

constexpr std::string_view kFolders[] = {"\\Inbox",  "\\Sent Items",      "\\Archive",
                                         "\\Drafts", "\\Inbox\\Projects", "\\Deleted Items"};
constexpr int kFolderCount = 6;

constexpr std::string_view kSubjectWords[] = {
    "budget", "review",   "meeting",   "notes",    "quarterly", "plan",
    "draft",  "contract", "update",    "travel",   "proposal",  "agenda",
    "report", "invoice",  "follow-up", "schedule", "design",
};

constexpr std::string_view kServers[] = {"DM6PR04MB6251", "BN6PR11MB1234",   "AM6PR07MB5526",
                                         "VI1PR08MB3417", "SN4PR0201MB3550", "PH0PR12MB5481"};
constexpr std::string_view kRegions[] = {"namprd04", "namprd11", "eurprd07",
                                         "eurprd08", "namprd02", "namprd12"};

enum class Client : uint8_t { kDesktop, kOwa, kMobileIos, kMobileAndroid, kThirdParty };

struct Tenant {
  std::string id;
  std::string domain;
  std::string name;  // OrganizationName, e.g. contoso.onmicrosoft.com
  std::string sid_prefix;
  std::array<uint8_t, 3> corp_net[2];
  std::string third_party_app;  // a tenant-approved REST app (CRM connector)
  int server = 0;
};

struct User {
  int tenant = 0;
  std::string upn;
  std::string object_id;  // Entra object id (UserKey of AzureActiveDirectory records)
  std::string puid;       // UserKey of Exchange records
  std::string sid;
  std::string mailbox_guid;
  std::array<std::string, kFolderCount> folder_ids;
  int tz_offset_hours = 0;
  int work_start = 9;
  int work_end = 17;
  std::array<uint8_t, 3> home_net;
  uint8_t home_host = 1;
  std::vector<Client> clients;
  bool admin = false;
  // Current session.
  std::string session_id;
  int64_t session_last = -1'000'000;
  Client session_client = Client::kDesktop;
  bool session_remote = false;
};

enum class Kind : uint8_t {
  kMailItemsAccessed,
  kSend,
  kMailboxLogin,
  kUserLoggedIn,
  kUserLoginFailed,
  kMoveToDeletedItems,
  kNewInboxRule,
  kActorBind,
};

struct Pending {
  int64_t time_ms;
  uint64_t seq;
  Kind kind;
  uint32_t user;
  uint32_t session;  // actor session index
  bool operator>(const Pending& o) const {
    return time_ms != o.time_ms ? time_ms > o.time_ms : seq > o.seq;
  }
};

struct ActorSession {
  std::string ip;
  std::string token_id;
  int64_t issued_at;
  std::string session_id;
};

// Appends "key":"value" pairs; every value here is known not to need escaping unless noted.
class Out {
 public:
  explicit Out(std::string* s) : s_(s) {}
  void Begin() {
    s_->push_back('{');
    first_ = true;
  }
  void End() { s_->push_back('}'); }
  void Key(std::string_view k) {
    if (!first_) s_->push_back(',');
    first_ = false;
    s_->push_back('"');
    s_->append(k);
    s_->append("\":");
  }
  void Str(std::string_view k, std::string_view v) {
    Key(k);
    s_->push_back('"');
    s_->append(v);
    s_->push_back('"');
  }
  // For values that may hold a backslash or a quote (folder paths, user agents).
  void Quoted(std::string_view k, std::string_view v) {
    Key(k);
    json::AppendQuoted(s_, v);
  }
  void Int(std::string_view k, int64_t v) {
    Key(k);
    char buf[24];
    auto r = fmt::format_to_n(buf, sizeof buf, "{}", v);
    s_->append(buf, r.size);
  }
  void Bool(std::string_view k, bool v) {
    Key(k);
    s_->append(v ? "true" : "false");
  }
  void Raw(std::string_view k, std::string_view json) {
    Key(k);
    s_->append(json);
  }
  std::string* s() { return s_; }

 private:
  std::string* s_;
  bool first_ = true;
};

std::string Ip(const std::array<uint8_t, 3>& net, int host) {
  return fmt::format("{}.{}.{}.{}", net[0], net[1], net[2], host);
}

}  // namespace

std::string RecordTypeName(int record_type) {
  switch (record_type) {
    case 1:
      return "ExchangeAdmin";
    case 2:
      return "ExchangeItem";
    case 3:
      return "ExchangeItemGroup";
    case 6:
      return "SharePointFileOperation";
    case 8:
      return "AzureActiveDirectory";
    case 15:
      return "AzureActiveDirectoryStsLogon";
    case 25:
      return "MicrosoftTeams";
    case 50:
      return "ExchangeItemAggregated";
    default:
      return std::to_string(record_type);
  }
}

class UalGenerator::Impl {
 public:
  explicit Impl(UalGeneratorOptions o) : o_(o), rng_(o.seed) {
    o_.tenants = std::max(1, o_.tenants);
    o_.users_per_tenant = std::max(1, o_.users_per_tenant);
    o_.records_per_user_per_day = std::max(1, o_.records_per_user_per_day);
    Build();
    clock_ms_ = o_.start_unix_seconds * 1000;
    // Users are active about 9.6 "full-rate hours" a working day (see Accept), so the candidate
    // rate per user is records_per_user_per_day / 9.6 h.
    int64_t total_users = static_cast<int64_t>(users_.size());
    mean_gap_us_ = std::max<int64_t>(
        1, 34'560'000'000LL / (static_cast<int64_t>(o_.records_per_user_per_day) * total_users));
    next_candidate_ms_ = clock_ms_;
    scheduled_day_ = -1;
  }

  void Generate(uint64_t max_records, uint64_t max_bytes,
                const std::function<void(const GeneratedRecord&)>& sink) {
    if (max_records == 0 && max_bytes == 0) return;
    uint64_t records = 0, bytes = 0;
    while ((max_records == 0 || records < max_records) && (max_bytes == 0 || bytes < max_bytes)) {
      if (!pending_.empty() && pending_.top().time_ms <= next_candidate_ms_) {
        Pending p = pending_.top();
        pending_.pop();
        Render(p);
        sink(rec_);
        ++records;
        bytes += rec_.audit_data.size();
        continue;
      }
      clock_ms_ = next_candidate_ms_;
      sub_us_ += rng_.Range(0, 2 * mean_gap_us_);
      next_candidate_ms_ += sub_us_ / 1000;
      sub_us_ %= 1000;
      ScheduleActorDay(clock_ms_ / 1000);
      uint32_t u = static_cast<uint32_t>(rng_.Below(users_.size()));
      if (!Accept(users_[u], clock_ms_ / 1000)) continue;
      StartActivity(u, clock_ms_);
    }
  }

  const UalGeneratorOptions& options() const { return o_; }
  std::string_view actor_app_id() const { return actor_app_; }

 private:
  void Build() {
    actor_app_ = Guid(rng_);
    for (int t = 0; t < o_.tenants; ++t) {
      Tenant tn;
      tn.id = Guid(rng_);
      std::string base(kTenantNames[t % std::size(kTenantNames)]);
      if (t >= static_cast<int>(std::size(kTenantNames))) base += std::to_string(t);
      tn.domain = base + ".com";
      tn.name = base + ".onmicrosoft.com";
      tn.sid_prefix =
          fmt::format("S-1-5-21-{}-{}-{}", rng_.Range(1000000000, 4000000000LL),
                      rng_.Range(1000000000, 4000000000LL), rng_.Range(1000000000, 4000000000LL));
      for (auto& net : tn.corp_net) {
        net = {static_cast<uint8_t>(rng_.Range(20, 200)), static_cast<uint8_t>(rng_.Range(0, 255)),
               static_cast<uint8_t>(rng_.Range(0, 255))};
      }
      tn.third_party_app = Guid(rng_);
      tn.server = static_cast<int>(rng_.Below(std::size(kServers)));
      int base_tz = static_cast<int>(rng_.Range(-8, 2));
      tenants_.push_back(std::move(tn));
      for (int i = 0; i < o_.users_per_tenant; ++i) {
        User u;
        u.tenant = t;
        std::string_view first = kFirstNames[rng_.Below(std::size(kFirstNames))];
        std::string_view last = kLastNames[rng_.Below(std::size(kLastNames))];
        u.upn = fmt::format("{}.{}{}@{}", first, last, i, tenants_[t].domain);
        u.object_id = Guid(rng_);
        u.puid = "1003" + Hex(rng_, 12, true);
        u.sid = fmt::format("{}-{}", tenants_[t].sid_prefix, 1000 + i);
        u.mailbox_guid = Guid(rng_);
        for (auto& f : u.folder_ids) f = "LgAAAAA" + Base64Id(rng_, 60);
        u.tz_offset_hours = base_tz + static_cast<int>(rng_.Range(-1, 1));
        u.work_start = static_cast<int>(rng_.Range(7, 10));
        u.work_end = u.work_start + static_cast<int>(rng_.Range(8, 10));
        static constexpr uint8_t kIspFirst[] = {24, 73, 81, 86, 90, 98, 109, 176, 188, 212};
        u.home_net = {kIspFirst[rng_.Below(std::size(kIspFirst))],
                      static_cast<uint8_t>(rng_.Range(0, 255)),
                      static_cast<uint8_t>(rng_.Range(0, 255))};
        u.home_host = static_cast<uint8_t>(rng_.Range(2, 254));
        u.clients.push_back(rng_.Chance(700) ? Client::kDesktop : Client::kOwa);
        if (rng_.Chance(400)) u.clients.push_back(Client::kOwa);
        if (rng_.Chance(600)) {
          u.clients.push_back(rng_.Chance(500) ? Client::kMobileIos : Client::kMobileAndroid);
        }
        if (rng_.Chance(60)) u.clients.push_back(Client::kThirdParty);
        u.admin = i == 0;
        users_.push_back(std::move(u));
      }
    }
    if (o_.actor.enabled) {
      int n = std::min<int>(std::max(1, o_.actor.target_mailboxes), o_.users_per_tenant);
      // Distinct users of the first tenant, chosen by a partial shuffle.
      std::vector<uint32_t> idx(o_.users_per_tenant);
      for (int i = 0; i < o_.users_per_tenant; ++i) idx[i] = static_cast<uint32_t>(i);
      for (int i = 0; i < n; ++i) std::swap(idx[i], idx[i + rng_.Below(idx.size() - i)]);
      actor_targets_.assign(idx.begin(), idx.begin() + n);
    }
  }

  // Whether a candidate event for u at time t happens (thinning by the user's local rhythm).
  bool Accept(const User& u, int64_t t) {
    int64_t local = t + static_cast<int64_t>(u.tz_offset_hours) * 3600;
    int hour = static_cast<int>(((local % 86400) + 86400) % 86400 / 3600);
    bool weekend = Weekday(local) >= 5;
    uint32_t per_mille;
    if (hour >= u.work_start && hour < u.work_end) {
      per_mille = weekend ? 90 : 1000;
    } else if (hour == u.work_start - 1 || hour == u.work_end) {
      per_mille = weekend ? 30 : 400;
    } else if (hour >= 6 && hour < 23) {
      per_mille = weekend ? 20 : 60;
    } else {
      per_mille = 10;
    }
    return rng_.Chance(per_mille);
  }

  void Push(int64_t time_ms, Kind kind, uint32_t user, uint32_t session = 0) {
    pending_.push(Pending{time_ms, seq_++, kind, user, session});
  }

  void StartActivity(uint32_t ui, int64_t t_ms) {
    User& u = users_[ui];
    int64_t t = t_ms / 1000;
    if (t - u.session_last > 2 * 3600) {
      // A new session: sign in, then open the mailbox.
      u.session_id = Guid(rng_);
      u.session_client = u.clients[rng_.Below(u.clients.size())];
      int64_t local = t + static_cast<int64_t>(u.tz_offset_hours) * 3600;
      int hour = static_cast<int>(((local % 86400) + 86400) % 86400 / 3600);
      bool working = hour >= u.work_start && hour < u.work_end && Weekday(local) < 5;
      u.session_remote = !working || rng_.Chance(250);
      u.session_last = t;
      if (rng_.Chance(30)) {
        Push(t_ms, Kind::kUserLoginFailed, ui);
        t_ms += rng_.Range(5000, 40000);
      }
      Push(t_ms, Kind::kUserLoggedIn, ui);
      Push(t_ms + rng_.Range(800, 4000), Kind::kMailboxLogin, ui);
      return;
    }
    u.session_last = t;
    uint64_t r = rng_.Below(1000);
    Kind k;
    if (r < 700)
      k = Kind::kMailItemsAccessed;
    else if (r < 810)
      k = Kind::kSend;
    else if (r < 890)
      k = Kind::kMoveToDeletedItems;
    else if (r < 950)
      k = Kind::kMailboxLogin;
    else if (r < 998)
      k = Kind::kUserLoggedIn;
    else
      k = Kind::kNewInboxRule;
    if (k == Kind::kNewInboxRule && !rng_.Chance(300)) k = Kind::kMailItemsAccessed;
    Push(t_ms, k, ui);
  }

  void ScheduleActorDay(int64_t t) {
    if (!o_.actor.enabled) return;
    int64_t day = (t >= 0 ? t : t - 86399) / 86400;
    if (day <= scheduled_day_) return;
    scheduled_day_ = day;
    int64_t start_day = o_.start_unix_seconds / 86400 + o_.actor.start_day;
    if (day < start_day || Weekday(day * 86400) >= 5) return;
    for (int s = 0; s < o_.actor.sessions_per_day; ++s) {
      int64_t begin_ms = (day * 86400 + rng_.Range(0, 9 * 3600 - 1800)) * 1000;
      ActorSession as;
      as.ip = std::string(kProxyIps[rng_.Below(std::size(kProxyIps))]);
      as.token_id = Base64Id(rng_, 22);
      for (char& c : as.token_id) {
        if (c == '+') c = '-';
        if (c == '/') c = '_';
      }
      as.issued_at = begin_ms / 1000 - rng_.Range(60, 1800);
      as.session_id = Guid(rng_);
      uint32_t si = static_cast<uint32_t>(actor_sessions_.size());
      actor_sessions_.push_back(std::move(as));
      uint32_t target = actor_targets_[rng_.Below(actor_targets_.size())];
      int64_t at = begin_ms;
      for (int i = 0; i < o_.actor.reads_per_session; ++i) {
        Push(at, Kind::kActorBind, target, si);
        at += rng_.Range(2000, 20000);
      }
    }
  }

  // Client properties: AppId, ClientInfoString, IP.
  struct ClientView {
    std::string_view app_id;
    std::string client_info;
    std::string ip;
    std::string_view user_agent;
    std::string_view os;
    std::string_view browser;
  };

  ClientView ViewOf(const User& u) {
    const Tenant& tn = tenants_[u.tenant];
    ClientView v;
    v.ip = u.session_remote ? Ip(u.home_net, u.home_host)
                            : Ip(tn.corp_net[u.upn.size() % 2], 10 + (u.puid[5] % 200));
    static constexpr std::string_view kEdge =
        "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
        "Chrome/113.0.0.0 Safari/537.36 Edg/113.0.1774.42";
    switch (u.session_client) {
      case Client::kDesktop:
        v.app_id = kOfficeAppId;
        v.client_info = "Client=MSExchangeRPC";
        v.user_agent = "Microsoft Office/16.0 (Windows NT 10.0; Microsoft Outlook 16.0.16327; Pro)";
        v.os = "Windows10";
        v.browser = "Other";
        break;
      case Client::kOwa:
        v.app_id = kOwaAppId;
        v.client_info = fmt::format("Client=OWA;Action=ViaProxy;{};", kEdge);
        v.user_agent = kEdge;
        v.os = "Windows10";
        v.browser = "Edge";
        break;
      case Client::kMobileIos:
        v.app_id = kOutlookMobileAppId;
        v.client_info = "Client=OutlookService;Outlook-iOS/2.0;";
        v.user_agent = "Outlook-iOS/723.4027091.prod.iphone (4.2321.0)";
        v.os = "Ios";
        v.browser = "Other";
        break;
      case Client::kMobileAndroid:
        v.app_id = kOutlookMobileAppId;
        v.client_info = "Client=OutlookService;Outlook-Android/2.0;";
        v.user_agent = "Outlook-Android/2.0";
        v.os = "Android";
        v.browser = "Other";
        break;
      case Client::kThirdParty:
        v.app_id = tn.third_party_app;
        v.client_info = std::string(kActorClientInfo);
        v.user_agent = "python-requests/2.31.0";
        v.os = "Linux";
        v.browser = "Other";
        // A server-side integration: always from the tenant's own network.
        v.ip = Ip(tn.corp_net[1], 250);
        break;
    }
    return v;
  }

  std::string MessageId(const User& u) {
    const Tenant& tn = tenants_[u.tenant];
    std::string_view server = kServers[tn.server];
    return fmt::format("<{}{}@{}.{}.prod.outlook.com>", server, Hex(rng_, 16, true), server,
                       kRegions[tn.server]);
  }

  std::string Subject() {
    int n = static_cast<int>(rng_.Range(2, 4));
    std::string s;
    for (int i = 0; i < n; ++i) {
      if (i > 0) s.push_back(' ');
      std::string_view w = kSubjectWords[rng_.Below(std::size(kSubjectWords))];
      s.append(w);
      if (i == 0) s[s.size() - w.size()] = static_cast<char>(std::toupper(s[s.size() - w.size()]));
    }
    return s;
  }

  void Common(Out& o, const User& u, std::string_view op, int record_type,
              std::string_view workload, bool aad, std::string_view result_status = {}) {
    const Tenant& tn = tenants_[u.tenant];
    o.Begin();
    o.Str("CreationTime", std::string_view(time_buf_, 19));
    id_ = Guid(rng_);
    o.Str("Id", id_);
    o.Str("Operation", op);
    o.Str("OrganizationId", tn.id);
    o.Int("RecordType", record_type);
    if (result_status.empty()) result_status = aad ? "Success" : "Succeeded";
    o.Str("ResultStatus", result_status);
    o.Str("UserKey", aad ? std::string_view(u.object_id) : std::string_view(u.puid));
    o.Int("UserType", 0);
    o.Int("Version", 1);
    o.Str("Workload", workload);
    o.Str("UserId", u.upn);
  }

  void MailboxFields(Out& o, const User& u, const ClientView& v, std::string_view session) {
    const Tenant& tn = tenants_[u.tenant];
    o.Str("AppId", v.app_id);
    o.Str("ClientAppId", v.app_id);
    o.Str("ClientIPAddress", v.ip);
    o.Quoted("ClientInfoString", v.client_info);
    o.Bool("ExternalAccess", false);
    o.Int("InternalLogonType", 0);
    o.Int("LogonType", 0);
    o.Str("LogonUserSid", u.sid);
    o.Str("MailboxGuid", u.mailbox_guid);
    o.Str("MailboxOwnerSid", u.sid);
    o.Str("MailboxOwnerUPN", u.upn);
    o.Str("OrganizationName", tn.name);
    o.Str("OriginatingServer", fmt::format("{} (15.20.6433.024)", kServers[tn.server]));
    o.Str("SessionId", session);
    o.Str("TokenTenantId", tn.id);
  }

  void FolderItems(Out& o, const User& u, int folder, int items) {
    std::string& s = *o.s();
    o.Key("Folders");
    s += "[{\"FolderItems\":[";
    for (int i = 0; i < items; ++i) {
      if (i > 0) s.push_back(',');
      s += "{\"InternetMessageId\":\"";
      s += MessageId(u);
      s += "\"}";
    }
    s += "],\"Id\":\"";
    s += u.folder_ids[folder];
    s += "\",\"Path\":";
    json::AppendQuoted(&s, kFolders[folder]);
    s += "}]";
  }

  void Render(const Pending& p) {
    User& u = users_[p.user];
    const Tenant& tn = tenants_[u.tenant];
    int64_t secs = p.time_ms / 1000;
    FormatTime(secs, time_buf_);
    buf_.clear();
    Out o(&buf_);
    rec_ = GeneratedRecord();
    rec_.unix_seconds = secs;
    int record_type = 2;
    std::string_view op;
    ClientView v = ViewOf(u);
    switch (p.kind) {
      case Kind::kMailItemsAccessed: {
        op = "MailItemsAccessed";
        record_type = 50;
        bool sync = u.session_client == Client::kDesktop && rng_.Chance(700);
        int folder = static_cast<int>(rng_.Below(5));
        int items = sync ? 0 : static_cast<int>(rng_.Range(1, 4));
        Common(o, u, op, record_type, "Exchange", false);
        MailboxFields(o, u, v, u.session_id);
        if (sync) {
          std::string& s = buf_;
          o.Key("Folders");
          s += "[{\"Id\":\"";
          s += u.folder_ids[folder];
          s += "\",\"Path\":";
          json::AppendQuoted(&s, kFolders[folder]);
          s += "}]";
        } else {
          FolderItems(o, u, folder, items);
        }
        o.Int("OperationCount", sync ? 1 : items);
        o.Raw(
            "OperationProperties",
            sync
                ? R"([{"Name":"MailAccessType","Value":"Sync"},{"Name":"IsThrottled","Value":"False"}])"
                : R"([{"Name":"MailAccessType","Value":"Bind"},{"Name":"IsThrottled","Value":"False"}])");
        o.End();
        break;
      }
      case Kind::kActorBind: {
        const ActorSession& as = actor_sessions_[p.session];
        op = "MailItemsAccessed";
        record_type = 50;
        rec_.actor = true;
        ClientView av;
        av.app_id = actor_app_;
        av.client_info = std::string(kActorClientInfo);
        av.ip = as.ip;
        int folder = static_cast<int>(rng_.Below(3));
        int items = static_cast<int>(rng_.Range(5, 30));
        Common(o, u, op, record_type, "Exchange", false);
        MailboxFields(o, u, av, as.session_id);
        FolderItems(o, u, folder, items);
        o.Int("OperationCount", items);
        o.Raw(
            "OperationProperties",
            R"([{"Name":"MailAccessType","Value":"Bind"},{"Name":"IsThrottled","Value":"False"}])");
        char issued[19];
        FormatTime(as.issued_at, issued);
        std::string& s = buf_;
        o.Key("AppAccessContext");
        s += "{\"ClientAppId\":\"";
        s += actor_app_;
        s += "\",\"IssuedAtTime\":\"";
        s.append(issued, 19);
        s += "\",\"UniqueTokenId\":\"";
        s += as.token_id;
        s += "\"}";
        o.End();
        break;
      }
      case Kind::kSend: {
        op = "Send";
        Common(o, u, op, record_type, "Exchange", false);
        MailboxFields(o, u, v, u.session_id);
        std::string& s = buf_;
        o.Key("Item");
        s += "{\"Id\":\"RgAAAAA";
        s += Base64Id(rng_, 60);
        s += "\",\"InternetMessageId\":\"";
        s += MessageId(u);
        s += "\",\"ParentFolder\":{\"Id\":\"";
        s += u.folder_ids[1];
        s += "\",\"Path\":\"\\\\Sent Items\"},\"SizeInBytes\":";
        s += std::to_string(rng_.Range(2000, 900000));
        s += ",\"Subject\":";
        json::AppendQuoted(&s, Subject());
        s += "}";
        o.End();
        break;
      }
      case Kind::kMoveToDeletedItems: {
        op = "MoveToDeletedItems";
        Common(o, u, op, record_type, "Exchange", false);
        MailboxFields(o, u, v, u.session_id);
        std::string& s = buf_;
        o.Key("AffectedItems");
        s += "[{\"Id\":\"RgAAAAA";
        s += Base64Id(rng_, 60);
        s += "\",\"InternetMessageId\":\"";
        s += MessageId(u);
        s += "\",\"ParentFolder\":{\"Id\":\"";
        s += u.folder_ids[0];
        s += "\",\"Path\":\"\\\\Inbox\"},\"Subject\":";
        json::AppendQuoted(&s, Subject());
        s += "}]";
        o.Bool("CrossMailboxOperation", false);
        o.Raw("DestFolder",
              fmt::format(R"({{"Id":"{}","Path":"\\Deleted Items"}})", u.folder_ids[5]));
        o.Raw("Folder", fmt::format(R"({{"Id":"{}","Path":"\\Inbox"}})", u.folder_ids[0]));
        o.End();
        break;
      }
      case Kind::kMailboxLogin: {
        op = "MailboxLogin";
        Common(o, u, op, record_type, "Exchange", false);
        MailboxFields(o, u, v, u.session_id);
        o.Str("ClientVersion", "15.20.6433.024");
        o.End();
        break;
      }
      case Kind::kUserLoggedIn:
      case Kind::kUserLoginFailed: {
        bool ok = p.kind == Kind::kUserLoggedIn;
        op = ok ? "UserLoggedIn" : "UserLoginFailed";
        record_type = 15;
        Common(o, u, op, record_type, "AzureActiveDirectory", true, ok ? "Success" : "Failed");
        std::string& s = buf_;
        o.Str("ClientIP", v.ip);
        o.Str("ObjectId", kOwaAppId);
        o.Int("AzureActiveDirectoryEventType", 1);
        o.Key("ExtendedProperties");
        s += "[{\"Name\":\"ResultStatusDetail\",\"Value\":\"";
        s += ok ? "Success" : "UserError";
        s += "\"},{\"Name\":\"UserAgent\",\"Value\":";
        json::AppendQuoted(&s, v.user_agent);
        s += "},{\"Name\":\"RequestType\",\"Value\":\"";
        s += ok ? "OAuth2:Authorize" : "Login:login";
        s += "\"}]";
        o.Raw("ModifiedProperties", "[]");
        o.Key("Actor");
        s += "[{\"ID\":\"" + u.object_id + "\",\"Type\":0},{\"ID\":\"" + u.upn + "\",\"Type\":5}]";
        o.Str("ActorContextId", tn.id);
        o.Str("ActorIpAddress", v.ip);
        o.Str("InterSystemsId", Guid(rng_));
        o.Str("IntraSystemId", Guid(rng_));
        o.Key("Target");
        s += "[{\"ID\":\"";
        s += kOwaAppId;
        s += "\",\"Type\":0}]";
        o.Str("TargetContextId", tn.id);
        o.Str("ApplicationId", u.session_client == Client::kOwa ? kOneOutlookWebAppId : v.app_id);
        o.Key("DeviceProperties");
        s += "[{\"Name\":\"OS\",\"Value\":\"" + std::string(v.os) +
             "\"},{\"Name\":\"BrowserType\",\"Value\":\"" + std::string(v.browser) +
             "\"},{\"Name\":\"SessionId\",\"Value\":\"" + u.session_id + "\"}]";
        o.Str("ErrorNumber", ok ? "0" : "50126");
        if (!ok) o.Str("LogonError", "InvalidUserNameOrPassword");
        o.End();
        break;
      }
      case Kind::kNewInboxRule: {
        op = "New-InboxRule";
        record_type = 1;
        Common(o, u, op, record_type, "Exchange", false);
        std::string rule = Subject();
        std::string& s = buf_;
        o.Quoted("ObjectId", fmt::format("{}\\{}", u.upn, rule));
        o.Str("ClientIP", v.ip);
        o.Str("AppId", v.app_id);
        o.Str("ClientAppId", v.app_id);
        o.Bool("ExternalAccess", false);
        o.Str("OrganizationName", tn.name);
        o.Str("OriginatingServer", fmt::format("{} (15.20.6433.024)", kServers[tn.server]));
        o.Str("SessionId", u.session_id);
        o.Key("Parameters");
        s += "[{\"Name\":\"AlwaysDeleteOutlookRulesBlob\",\"Value\":\"False\"},"
             "{\"Name\":\"Force\",\"Value\":\"False\"},"
             "{\"Name\":\"MoveToFolder\",\"Value\":\"Archive\"},{\"Name\":\"Name\",\"Value\":";
        json::AppendQuoted(&s, rule);
        s += "},{\"Name\":\"SubjectContainsWords\",\"Value\":\"";
        s += kSubjectWords[rng_.Below(std::size(kSubjectWords))];
        s += "\"},{\"Name\":\"StopProcessingRules\",\"Value\":\"True\"}]";
        o.End();
        break;
      }
    }
    rec_.audit_data = buf_;
    rec_.id = id_;
    rec_.creation_time = std::string_view(time_buf_, 19);
    rec_.user_id = u.upn;
    rec_.operation = op;
    rec_.record_type = record_type;
  }

  UalGeneratorOptions o_;
  Rng rng_;
  std::vector<Tenant> tenants_;
  std::vector<User> users_;
  std::string actor_app_;
  std::vector<uint32_t> actor_targets_;
  std::vector<ActorSession> actor_sessions_;
  std::priority_queue<Pending, std::vector<Pending>, std::greater<Pending>> pending_;
  uint64_t seq_ = 0;
  int64_t clock_ms_ = 0;
  int64_t next_candidate_ms_ = 0;
  int64_t sub_us_ = 0;
  int64_t mean_gap_us_ = 1;
  int64_t scheduled_day_ = -1;
  char time_buf_[19] = {};
  std::string buf_;
  std::string id_;
  GeneratedRecord rec_;
};

UalGenerator::UalGenerator(UalGeneratorOptions options) : impl_(std::make_unique<Impl>(options)) {}
UalGenerator::~UalGenerator() = default;
void UalGenerator::Generate(uint64_t max_records, uint64_t max_bytes,
                            const std::function<void(const GeneratedRecord&)>& sink) {
  impl_->Generate(max_records, max_bytes, sink);
}
const UalGeneratorOptions& UalGenerator::options() const { return impl_->options(); }
std::string_view UalGenerator::actor_app_id() const { return impl_->actor_app_id(); }

// ---------------------------------------------------------------------------------------------
// Renderings

namespace {

void AppendCsvField(std::string* out, std::string_view v) {
  out->push_back('"');
  size_t start = 0;
  for (size_t q = v.find('"'); q != std::string_view::npos; q = v.find('"', start)) {
    out->append(v.substr(start, q - start + 1));
    out->push_back('"');
    start = q + 1;
  }
  out->append(v.substr(start));
  out->push_back('"');
}

}  // namespace

void AppendUalCsvHeader(std::string* out) {
  out->append(
      "\xEF\xBB\xBF\"RecordType\",\"CreationDate\",\"UserIds\",\"Operations\",\"AuditData\","
      "\"ResultIndex\",\"ResultCount\",\"Identity\",\"IsValid\",\"ObjectState\"\r\n");
}

void AppendUalCsvRow(const GeneratedRecord& r, uint64_t index, std::string* out) {
  AppendCsvField(out, RecordTypeName(r.record_type));
  out->push_back(',');
  AppendCsvField(out, fmt::format("{}.0000000Z", r.creation_time));
  out->push_back(',');
  AppendCsvField(out, r.user_id);
  out->push_back(',');
  AppendCsvField(out, r.operation);
  out->push_back(',');
  AppendCsvField(out, r.audit_data);
  out->push_back(',');
  AppendCsvField(out, std::to_string(index));
  out->push_back(',');
  AppendCsvField(out, "50000");
  out->push_back(',');
  AppendCsvField(out, r.id);
  out->append(",\"True\",\"Unchanged\"\r\n");
}

struct SentinelRenderer::State {
  simdjson::dom::parser parser;
  std::string padded;
};

SentinelRenderer::SentinelRenderer() : state_(std::make_unique<State>()) {}
SentinelRenderer::~SentinelRenderer() = default;

Status SentinelRenderer::Append(std::string_view audit_data, std::string* out) {
  simdjson::dom::element e;
  auto err = state_->parser.parse(audit_data.data(), audit_data.size(), true).get(e);
  if (err) return InvalidArgumentError(fmt::format("AuditData: {}", simdjson::error_message(err)));
  simdjson::dom::object o;
  if (e.get(o)) return InvalidArgumentError("AuditData is not a JSON object");
  static constexpr std::pair<std::string_view, std::string_view> kRenames[] = {
      {"Id", "OfficeId"},
      {"Workload", "OfficeWorkload"},
      {"ClientIPAddress", "Client_IPAddress"},
      {"LogonType", "Logon_Type"},
      {"ObjectId", "OfficeObjectId"},
  };
  out->append(
      "{\"TenantId\":\"4b2462a4-bbee-495a-a0e1-f23ae524cc9c\",\"SourceSystem\":"
      "\"OfficeActivityManager\"");
  for (auto f : o) {
    std::string_view key = f.key;
    if (key == "CreationTime") {
      std::string_view t;
      if (f.value.get(t) == simdjson::SUCCESS) {
        out->append(",\"TimeGenerated\":");
        json::AppendQuoted(out, fmt::format("{}Z", t));
      }
      continue;
    }
    for (const auto& [from, to] : kRenames) {
      if (key == from) {
        key = to;
        break;
      }
    }
    out->push_back(',');
    json::AppendQuoted(out, key);
    out->push_back(':');
    int64_t n;
    bool b;
    if (key == "RecordType" && f.value.get(n) == simdjson::SUCCESS) {
      json::AppendQuoted(out, RecordTypeName(static_cast<int>(n)));
    } else if (key == "UserType" && f.value.get(n) == simdjson::SUCCESS) {
      static constexpr std::string_view kNames[] = {
          "Regular",     "Reserved",         "Admin",        "DcAdmin",     "System",
          "Application", "ServicePrincipal", "CustomPolicy", "SystemPolicy"};
      json::AppendQuoted(out, n >= 0 && n < 9 ? std::string(kNames[n]) : std::to_string(n));
    } else if (key == "Logon_Type" && f.value.get(n) == simdjson::SUCCESS) {
      json::AppendQuoted(out, std::to_string(n));
    } else if (key == "ExternalAccess" && f.value.get(b) == simdjson::SUCCESS) {
      out->append(b ? "\"true\"" : "\"false\"");
    } else if (f.value.is_array() || f.value.is_object()) {
      json::AppendQuoted(out, simdjson::minify(f.value));
    } else {
      out->append(simdjson::minify(f.value));
    }
  }
  out->append(",\"Type\":\"OfficeActivity\"}");
  return Status::Ok();
}

// ---------------------------------------------------------------------------------------------
// Files

namespace {

class FileWriter {
 public:
  static Result<std::unique_ptr<FileWriter>> Open(const std::string& path, bool gzip) {
    auto w = std::unique_ptr<FileWriter>(new FileWriter());
    w->path_ = path;
    if (gzip) {
      w->gz_ = gzopen(path.c_str(), "wb1");
      if (w->gz_ == nullptr) {
        return UnavailableError(fmt::format("{}: cannot open for writing", path));
      }
      gzbuffer(w->gz_, 1 << 20);
    } else {
      w->f_ = std::fopen(path.c_str(), "wb");
      if (w->f_ == nullptr) {
        return UnavailableError(
            fmt::format("{}: cannot open for writing: {}", path, std::strerror(errno)));
      }
    }
    return w;
  }
  ~FileWriter() { Close().IgnoreError(); }

  Status Write(std::string_view data) {
    if (data.empty()) return Status::Ok();
    if (gz_ != nullptr) {
      if (gzwrite(gz_, data.data(), static_cast<unsigned>(data.size())) !=
          static_cast<int>(data.size())) {
        return UnavailableError(fmt::format("{}: write failed", path_));
      }
    } else if (std::fwrite(data.data(), 1, data.size(), f_) != data.size()) {
      return UnavailableError(fmt::format("{}: write failed: {}", path_, std::strerror(errno)));
    }
    return Status::Ok();
  }

  Status Close() {
    int rc = 0;
    if (gz_ != nullptr) {
      rc = gzclose(gz_) == Z_OK ? 0 : -1;
      gz_ = nullptr;
    }
    if (f_ != nullptr) {
      rc = std::fclose(f_);
      f_ = nullptr;
    }
    if (rc != 0) return UnavailableError(fmt::format("{}: close failed", path_));
    return Status::Ok();
  }

 private:
  FileWriter() = default;
  std::string path_;
  gzFile gz_ = nullptr;
  FILE* f_ = nullptr;
};

}  // namespace

Result<GenerateFileStats> WriteGeneratedLog(const std::string& path,
                                            const UalGeneratorOptions& options,
                                            const GenerateFileOptions& fo) {
  if (fo.max_records == 0 && fo.max_bytes == 0) {
    return InvalidArgumentError("generating a log needs a record count or a byte size");
  }
  bool gz = fo.gzip || (path.size() > 3 && path.compare(path.size() - 3, 3, ".gz") == 0);
  KW_ASSIGN_OR_RETURN(auto out, FileWriter::Open(path, gz));
  std::unique_ptr<FileWriter> truth;
  if (!fo.truth_path.empty()) {
    KW_ASSIGN_OR_RETURN(truth, FileWriter::Open(fo.truth_path, false));
  }
  UalGenerator gen(options);
  SentinelRenderer sentinel;
  GenerateFileStats stats;
  std::string buf, truth_buf;
  buf.reserve(2 << 20);
  Status status;
  if (fo.rendering == UalRendering::kCsv) AppendUalCsvHeader(&buf);
  if (fo.rendering == UalRendering::kAuditDataArray) buf.append("[\n");
  gen.Generate(fo.max_records, fo.max_bytes, [&](const GeneratedRecord& r) {
    if (!status.ok()) return;
    switch (fo.rendering) {
      case UalRendering::kAuditDataLines:
        buf.append(r.audit_data);
        buf.push_back('\n');
        break;
      case UalRendering::kAuditDataArray:
        if (stats.records > 0) buf.append(",\n");
        buf.append(r.audit_data);
        break;
      case UalRendering::kCsv:
        AppendUalCsvRow(r, stats.records + 1, &buf);
        break;
      case UalRendering::kSentinel: {
        Status s = sentinel.Append(r.audit_data, &buf);
        if (!s.ok()) status = s;
        buf.push_back('\n');
        break;
      }
    }
    ++stats.records;
    if (r.actor) {
      ++stats.actor_records;
      if (truth) {
        truth_buf.append(r.id);
        truth_buf.push_back('\n');
      }
    }
    if (buf.size() >= (1 << 20)) {
      stats.bytes_written += buf.size();
      Status s = out->Write(buf);
      if (!s.ok()) status = s;
      buf.clear();
    }
    if (truth && truth_buf.size() >= (1 << 16)) {
      Status s = truth->Write(truth_buf);
      if (!s.ok()) status = s;
      truth_buf.clear();
    }
  });
  if (fo.rendering == UalRendering::kAuditDataArray) buf.append("\n]\n");
  KW_RETURN_IF_ERROR(status);
  stats.bytes_written += buf.size();
  KW_RETURN_IF_ERROR(out->Write(buf));
  KW_RETURN_IF_ERROR(out->Close());
  if (truth) {
    KW_RETURN_IF_ERROR(truth->Write(truth_buf));
    KW_RETURN_IF_ERROR(truth->Close());
  }
  return stats;
}

}  // namespace kw::detect
