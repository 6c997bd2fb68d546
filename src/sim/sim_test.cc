// The campaign simulator: reproducibility of the world, then a small seeded run of both modes
// against the real services, checked against the targets.
#include "sim/simulation.h"

#include <gtest/gtest.h>

#include <set>

#include "core/test_util.h"
#include "sim/campaign.h"
#include "sim/report.h"

namespace kw::sim {
namespace {

constexpr int64_t kHourMs = 3600 * 1000;
constexpr int64_t kDayMs = 24 * kHourMs;

SimOptions Small() {
  SimOptions o;
  o.tenants = 6;
  o.targets = 2;
  o.users = 60;
  o.days = 3;  // Monday and Tuesday learn; the actor works on Wednesday
  o.learning_days = 2;
  o.messages_per_user = 4;
  o.workers = 6;
  o.seed = 7;
  return o;
}

TEST(Campaign, SameSeedSameWorldOtherSeedAnother) {
  SimOptions o = Small();
  Population a = MakePopulation(o), b = MakePopulation(o);
  std::string fa = Fingerprint(a, MakeSchedule(o, a));
  EXPECT_EQ(fa, Fingerprint(b, MakeSchedule(o, b)));
  o.seed = 8;
  Population c = MakePopulation(o);
  EXPECT_NE(fa, Fingerprint(c, MakeSchedule(o, c)));
}

TEST(Campaign, PopulationAndActorScheduleFollowTheScenario) {
  SimOptions o = Small();
  o.tenants = 40;
  o.targets = 10;
  o.users = 1000;
  o.days = 7;
  Population p = MakePopulation(o);
  int targets = 0, rollout = 0;
  for (const auto& t : p.tenants) {
    targets += t.target;
    if (t.rollout_day >= 0) {
      ++rollout;
      EXPECT_FALSE(t.target);
      EXPECT_EQ(t.rollout_day, o.learning_days);
    }
  }
  EXPECT_EQ(targets, 10);
  EXPECT_EQ(rollout, 1);
  EXPECT_EQ(p.users.size(), 1000u);
  std::set<int> victim_tenants;
  for (int v : p.victims) {
    EXPECT_TRUE(p.tenants[p.users[v].tenant].target);
    victim_tenants.insert(p.users[v].tenant);
  }
  EXPECT_EQ(victim_tenants.size(), 10u);  // every target has a victim
  std::set<std::string> proxies(p.actor_proxies.begin(), p.actor_proxies.end());
  auto schedule = MakeSchedule(o, p);
  int visits = 0, probes = 0, sessions = 0, noise_ips = 0;
  int64_t prev = 0;
  for (const auto& a : schedule) {
    EXPECT_GE(a.time_ms, prev);  // sorted
    prev = a.time_ms;
    int64_t in_day = (a.time_ms - o.start_ms) % kDayMs;
    if (a.kind == ActivityKind::kUserSession) {
      ++sessions;
      EXPECT_EQ(proxies.count(a.ip), 0u);
      const SimUser& u = p.users[a.user];
      if (a.ip == u.travel_ip || a.ip == u.new_mobile_ip) ++noise_ips;
      continue;
    }
    EXPECT_EQ(proxies.count(a.ip), 1u);
    EXPECT_GE(a.day, o.learning_days);
    EXPECT_LT(a.day % 7, 5) << "the actor works on weekdays";
    EXPECT_LT(in_day, 9 * kHourMs) << "the actor works 00:00-09:00 UTC";
    (a.kind == ActivityKind::kActorVisit ? visits : probes)++;
  }
  EXPECT_EQ(probes, 8);  // four techniques, twice each
  EXPECT_EQ(visits, static_cast<int>(p.victims.size()) * 3);  // Wed, Thu, Fri
  EXPECT_GT(sessions, 1000 * 5 * 2);
  EXPECT_GT(noise_ips, 0) << "travellers and new mobile networks";
}

// The CI run: a few tenants for three simulated days, both modes, the real services.
TEST(Simulation, StrictRefusesEverythingAndLegacyIsDetected) {
  test::TempDir dir("kw-sim");
  SimOptions o = Small();
  SimReport report;
  report.options = o;
  {
    Population p = MakePopulation(o);
    report.fingerprint = Fingerprint(p, MakeSchedule(o, p));
  }
  for (Mode m : {Mode::kStrict, Mode::kLegacy2023}) {
    auto r = RunSimulation(o, m, dir.File(ModeName(m)), nullptr);
    ASSERT_TRUE(r.ok()) << r.status().ToString();
    report.modes.push_back(std::move(*r));
  }
  const ModeResult& strict = report.modes[0];
  const ModeResult& legacy = report.modes[1];
  SCOPED_TRACE(FormatSummary(report));

  // Both modes saw the same campaign.
  EXPECT_EQ(strict.forged_attempts, legacy.forged_attempts);
  EXPECT_GT(strict.forged_attempts, 8);
  EXPECT_EQ(strict.request_errors, 0u);
  EXPECT_EQ(strict.server_errors, 0u);
  EXPECT_EQ(legacy.server_errors, 0u);
  EXPECT_GT(strict.requests, 500u);
  for (const auto& r : report.modes) {
    EXPECT_GT(r.user_sessions, 100u);
    EXPECT_EQ(r.user_sessions_failed, 0u) << ModeName(r.mode);
  }

  // strict: nothing gets in, with the reason codes the verifier owes, and every attempt alerts.
  EXPECT_EQ(strict.forged_accepted, 0);
  EXPECT_EQ(strict.messages_exposed, 0);
  EXPECT_GT(strict.refused_by_reason.count("key_issuer_mismatch"), 0u);
  EXPECT_GT(strict.refused_by_reason.count("alg_not_allowed"), 0u);
  EXPECT_EQ(strict.attempts_alerted, strict.forged_attempts);

  // legacy-2023: the consumer key opens mailboxes (the flaw) and detection catches every target.
  EXPECT_GT(legacy.forged_accepted, 0);
  EXPECT_EQ(legacy.by_technique.at(ProbeName(Probe::kAlgNone)).second, 0);
  EXPECT_EQ(legacy.by_technique.at(ProbeName(Probe::kRevokedKey)).second, 0);
  EXPECT_GT(legacy.messages_exposed, 0);
  EXPECT_EQ(legacy.targets_detected, o.targets);
  EXPECT_GE(legacy.max_time_to_detect_ms, 0);
  EXPECT_LE(legacy.max_time_to_detect_ms, kHourMs);
  EXPECT_GE(legacy.actor_sessions_alerted * 100, 95 * legacy.actor_sessions);

  // False alarms: the honest noise must not page anyone.
  for (const auto& r : report.modes) {
    EXPECT_LE(r.false_alarms_per_10k_user_days, 1.0) << ModeName(r.mode);
  }

  // The report is one well-formed, self-contained page.
  std::string html = RenderHtml(report);
  EXPECT_EQ(html.rfind("<!DOCTYPE html>", 0), 0u);
  EXPECT_NE(html.find("</html>"), std::string::npos);
  EXPECT_EQ(html.find("http://"), html.find("http://www.w3.org/2000/svg"));  // no external resource
  auto count = [&](std::string_view s) {
    size_t n = 0;
    for (size_t at = html.find(s); at != std::string::npos; at = html.find(s, at + 1)) ++n;
    return n;
  };
  EXPECT_EQ(count("<table"), count("</table>"));
  EXPECT_EQ(count("<svg"), count("</svg>"));
  EXPECT_EQ(count("<svg"), 2u);
}

}  // namespace
}  // namespace kw::sim
