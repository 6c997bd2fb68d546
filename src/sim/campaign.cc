#include "sim/campaign.h"

#include <fmt/format.h>

#include <algorithm>
#include <random>
#include <tuple>

#include "crypto/crypto.h"

namespace kw::sim {
namespace {

constexpr int64_t kHourMs = 3600 * 1000;
constexpr int64_t kDayMs = 24 * kHourMs;

// One generator, one draw order: the population never depends on anything but the options.
class Rng {
 public:
  explicit Rng(uint64_t seed) : g_(seed) {}
  int Int(int lo, int hi) { return std::uniform_int_distribution<int>(lo, hi)(g_); }  // [lo, hi]
  bool Chance(double p) { return std::uniform_real_distribution<double>(0, 1)(g_) < p; }
  uint64_t U64() { return g_(); }
  std::string Ip(int first) { return fmt::format("{}.{}.{}.{}", first, Int(0, 255), Int(0, 255), Int(1, 254)); }

 private:
  std::mt19937_64 g_;
};

std::string Uuid(Rng& r) {
  uint64_t a = r.U64(), b = r.U64();
  return fmt::format("{:08x}-{:04x}-4{:03x}-{:04x}-{:012x}", a >> 32, (a >> 16) & 0xffff, a & 0xfff,
                     0x8000 | ((b >> 48) & 0x3fff), b & 0xffffffffffffULL);
}

bool Weekday(int day) { return day % 7 < 5; }  // day 0 is a Monday

}  // namespace

const char* ClientName(int kind) {
  switch (kind) {
    case kWebClient: return "Keyward Web";
    case kDesktopClient: return "Keyward Desktop";
    case kMobileClient: return "Keyward Mobile";
    default: return "Contoso CRM";
  }
}

const char* ClientUserAgent(int kind) {
  switch (kind) {
    case kWebClient:
      return "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/112.0 Safari/537.36";
    case kDesktopClient: return "KeywardDesktop/3.2 (Windows NT 10.0)";
    case kMobileClient: return "KeywardMobile/5.1 (iPhone; iOS 16.4)";
    default: return "ContosoCRM-Connector/1.0";
  }
}

const char* ProbeName(Probe p) {
  switch (p) {
    case Probe::kNone: return "consumer key";
    case Probe::kAlgNone: return "alg none";
    case Probe::kHs256PublicKey: return "HS256 keyed with the public key";
    case Probe::kRetiredKey: return "retired consumer key";
    case Probe::kRevokedKey: return "revoked consumer key";
  }
  return "?";
}

Population MakePopulation(const SimOptions& o) {
  Rng r(o.seed);
  Population p;
  int n_tenants = std::max(1, o.tenants);
  for (int t = 0; t < n_tenants; ++t) {
    SimTenant st;
    st.id = Uuid(r);
    st.name = fmt::format("Tenant {:03d}", t);
    st.domain = fmt::format("t{:03d}.example", t);
    st.office_prefix = fmt::format("52.{}.{}.", 1 + t / 250, t % 250);
    p.tenants.push_back(std::move(st));
  }
  // Targets: a seeded choice.
  std::vector<int> order(n_tenants);
  for (int i = 0; i < n_tenants; ++i) order[i] = i;
  std::shuffle(order.begin(), order.end(), std::mt19937_64(o.seed ^ 0x5eedULL));
  int n_targets = std::clamp(o.targets, 1, n_tenants);
  for (int i = 0; i < n_targets; ++i) p.tenants[order[i]].target = true;
  // The rollout tenant: the first non-target in the order (none if every tenant is a target).
  if (n_targets < n_tenants) p.tenants[order[n_targets]].rollout_day = o.learning_days;

  p.users_of_tenant.resize(n_tenants);
  int n_users = std::max(n_tenants, o.users);
  for (int u = 0; u < n_users; ++u) {
    SimUser su;
    su.tenant = u % n_tenants;
    su.username = fmt::format("u{:05d}", u);
    su.password = fmt::format("pw-{:016x}", r.U64());
    su.utc_offset_h = r.Int(-8, 3);  // Americas to Eastern Europe
    su.start_h = r.Int(7, 9);
    su.end_h = su.start_h + r.Int(8, 10);
    int c = r.Int(0, 9);
    su.client = c < 5 ? kWebClient : (c < 8 ? kDesktopClient : kMobileClient);
    su.office_ip = p.tenants[su.tenant].office_prefix + std::to_string(r.Int(2, 250));
    su.home_ip = r.Ip(73);
    su.mobile_ip = r.Ip(172);
    if (r.Chance(0.02)) {
      su.travel_day = r.Int(o.learning_days, std::max(o.learning_days, o.days - 1));
      su.travel_ip = r.Ip(185);
    }
    if (r.Chance(0.03)) {
      su.new_mobile_day = r.Int(o.learning_days, std::max(o.learning_days, o.days - 1));
      su.new_mobile_ip = r.Ip(174);
    }
    p.users_of_tenant[su.tenant].push_back(u);
    p.users.push_back(std::move(su));
  }
  for (int t = 0; t < n_tenants; ++t) {
    if (!p.tenants[t].target) continue;
    auto& members = p.users_of_tenant[t];
    int n = std::min<int>(static_cast<int>(members.size()), r.Int(1, 3));
    for (int i = 0; i < n; ++i) p.victims.push_back(members[i]);
  }
  for (int i = 0; i < 4; ++i) p.actor_proxies.push_back(r.Ip(45));
  p.actor_app_id = Uuid(r);
  p.actor_user_agent = "python-requests/2.28.1";
  return p;
}

std::vector<Activity> MakeSchedule(const SimOptions& o, const Population& p) {
  Rng r(o.seed * 7919 + 17);
  std::vector<Activity> out;
  auto at = [&](int day, double local_hour, int offset_h) {
    double utc_hour = local_hour - offset_h;
    return o.start_ms + day * kDayMs + static_cast<int64_t>(utc_hour * kHourMs);
  };
  for (int day = 0; day < o.days; ++day) {
    for (size_t u = 0; u < p.users.size(); ++u) {
      const SimUser& su = p.users[u];
      const SimTenant& st = p.tenants[su.tenant];
      int sessions = Weekday(day) ? r.Int(2, 4) : (r.Chance(0.25) ? 1 : 0);
      bool travelling = day == su.travel_day;
      bool new_mobile = day == su.new_mobile_day;
      for (int s = 0; s < sessions; ++s) {
        Activity a;
        a.kind = ActivityKind::kUserSession;
        a.user = static_cast<int>(u);
        a.day = day;
        double hour = su.start_h + (su.end_h - su.start_h) * (r.Int(0, 999) / 1000.0);
        int offset = su.utc_offset_h - (travelling ? 7 : 0);  // abroad: another time zone
        a.time_ms = at(day, hour, offset);
        a.client = su.client;
        int where = r.Int(0, 9);
        if (a.client == kMobileClient) {
          a.ip = su.mobile_ip;
        } else {
          a.ip = where < 8 ? su.office_ip : su.home_ip;
        }
        if (st.rollout_day >= 0 && day >= st.rollout_day && r.Chance(0.5)) a.client = kRolloutClient;
        if (travelling) a.ip = su.travel_ip;
        if (new_mobile && a.client == kMobileClient) a.ip = su.new_mobile_ip;
        a.seed = r.U64();
        if (a.time_ms >= o.start_ms && a.time_ms < o.start_ms + o.days * kDayMs) out.push_back(std::move(a));
      }
    }
  }
  // The actor.
  bool probed = false;
  for (int day = o.learning_days; day < o.days; ++day) {
    if (!Weekday(day)) continue;
    for (int victim : p.victims) {
      Activity a;
      a.kind = ActivityKind::kActorVisit;
      a.user = victim;
      a.day = day;
      a.time_ms = o.start_ms + day * kDayMs + r.Int(0, 9 * 60 - 1) * 60 * 1000LL;
      a.ip = p.actor_proxies[r.Int(0, static_cast<int>(p.actor_proxies.size()) - 1)];
      a.seed = r.U64();
      out.push_back(std::move(a));
    }
    if (!probed && !p.victims.empty()) {
      probed = true;
      int i = 0;
      for (Probe pr : {Probe::kAlgNone, Probe::kHs256PublicKey, Probe::kRetiredKey, Probe::kRevokedKey}) {
        for (int rep = 0; rep < 2; ++rep) {
          Activity a;
          a.kind = ActivityKind::kActorProbe;
          a.probe = pr;
          a.user = p.victims[rep == 0 ? 0 : r.Int(0, static_cast<int>(p.victims.size()) - 1)];
          a.day = day;
          a.time_ms = o.start_ms + day * kDayMs + kHourMs + (i++) * 7 * 60 * 1000LL;
          a.ip = p.actor_proxies[0];
          a.seed = r.U64();
          out.push_back(std::move(a));
        }
      }
    }
  }
  std::stable_sort(out.begin(), out.end(), [](const Activity& a, const Activity& b) {
    return std::tie(a.time_ms, a.kind, a.user) < std::tie(b.time_ms, b.kind, b.user);
  });
  return out;
}

std::string Fingerprint(const Population& p, const std::vector<Activity>& schedule) {
  std::string text;
  for (const auto& t : p.tenants) text += fmt::format("T {} {} {} {} {}\n", t.id, t.domain, t.target, t.office_prefix, t.rollout_day);
  for (const auto& u : p.users) {
    text += fmt::format("U {} {} {} {} {} {} {} {} {} {} {} {} {}\n", u.tenant, u.username, u.password,
                        u.utc_offset_h, u.start_h, u.end_h, u.client, u.office_ip, u.home_ip, u.mobile_ip,
                        u.travel_day, u.travel_ip, u.new_mobile_day);
  }
  for (int v : p.victims) text += fmt::format("V {}\n", v);
  for (const auto& ip : p.actor_proxies) text += fmt::format("P {}\n", ip);
  text += p.actor_app_id + "\n";
  for (const auto& a : schedule) {
    text += fmt::format("A {} {} {} {} {} {} {} {}\n", a.time_ms, static_cast<int>(a.kind), a.user, a.day,
                        a.client, a.ip, static_cast<int>(a.probe), a.seed);
  }
  std::string digest = crypto::Sha256(text);
  std::string hex;
  for (unsigned char c : digest) hex += fmt::format("{:02x}", c);
  return hex;
}

}  // namespace kw::sim
