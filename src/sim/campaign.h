// The simulated world: a population of tenants and users, and a schedule of what they and the
// actor do, both derived from SimOptions alone (seeded, reproducible: the same options give the
// same population and the same schedule, byte for byte; see Fingerprint).
//
// Population: `tenants` tenants (the first `targets` of them, after a seeded shuffle, are the
// campaign's targets), `users` users spread over them. Each tenant registers three client
// applications (web, desktop, mobile; public clients using the authorization code flow) and one
// tenant that is not a target also has a fourth app that it rolls out to its users on the first
// day after learning (honest noise: a new legitimate app starts reading mail). Each user has a
// time zone, working hours, an office network (the tenant's /24), a home network, a mobile
// carrier network, a usual client, and a mailbox seeded with `messages_per_user` messages.
// Honest noise beside the rollout: some users travel for a day (another network, other hours;
// they sign in from there) and some use their phone on a new network for a day.
//
// Schedule (sim time, from start_ms, a Monday 00:00 UTC): on weekdays each user opens 2-4
// sessions within working hours, on weekends sometimes one. The actor starts on day
// `learning_days` (the detection baselines learn before), works 00:00-09:00 UTC on weekdays,
// visits each victim mailbox (1-3 per target tenant) once a day with a fresh forged token, and on
// its first day probes with alg "none", HS256 keyed with the public key, a retired consumer key
// and a revoked one.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace kw::sim {

struct SimOptions {
  int tenants = 200;
  int targets = 25;
  int users = 5000;
  int days = 4;
  int learning_days = 2;
  int messages_per_user = 6;
  uint64_t seed = 20230515;
  int workers = 64;                     // concurrent client threads (requests wait on fsync)
  int64_t start_ms = 1683504000000;     // Monday 2023-05-08 00:00 UTC
  int64_t slice_ms = 15 * 60 * 1000;    // activities of one slice run concurrently, all stamped
                                        // with the slice's start
  bool fsync = true;                    // the audit log's durability (false only in tests)
  double speed = 0;                     // at most this many simulated seconds per wall second;
                                        // 0: as fast as the services answer
};

enum ClientKind { kWebClient = 0, kDesktopClient = 1, kMobileClient = 2, kRolloutClient = 3 };
inline constexpr int kClientKinds = 4;
const char* ClientName(int kind);       // "Keyward Web", ...
const char* ClientUserAgent(int kind);

struct SimTenant {
  std::string id;      // a UUID derived from the seed
  std::string name;    // "Tenant 007"
  std::string domain;  // "t007.example"
  bool target = false;
  std::string office_prefix;  // "52.3.7." (+ host)
  int rollout_day = -1;       // day its fourth app is rolled out, -1: never
};

struct SimUser {
  int tenant = 0;
  std::string username;  // "u0042" (the mailbox is username@domain)
  std::string password;
  int utc_offset_h = 0;
  int start_h = 8, end_h = 17;  // local working hours [start, end)
  int client = kWebClient;      // usual client
  std::string office_ip, home_ip, mobile_ip;
  int travel_day = -1;          // a day spent elsewhere (another network, hours shifted)
  std::string travel_ip;
  int new_mobile_day = -1;      // a day on a new mobile network
  std::string new_mobile_ip;
};

struct Population {
  std::vector<SimTenant> tenants;
  std::vector<SimUser> users;
  std::vector<std::vector<int>> users_of_tenant;
  std::vector<int> victims;            // user indexes the actor reads
  std::vector<std::string> actor_proxies;
  std::string actor_app_id;            // a client id never registered anywhere
  std::string actor_user_agent;
};

enum class ActivityKind { kUserSession, kActorVisit, kActorProbe };
enum class Probe { kNone, kAlgNone, kHs256PublicKey, kRetiredKey, kRevokedKey };
const char* ProbeName(Probe p);

struct Activity {
  int64_t time_ms = 0;
  ActivityKind kind = ActivityKind::kUserSession;
  int user = 0;          // the user, or the victim for actor activities
  int day = 0;
  int client = kWebClient;
  std::string ip;
  Probe probe = Probe::kNone;
  uint64_t seed = 0;     // for the activity's own random choices
};

Population MakePopulation(const SimOptions& o);
// Sorted by time (ties in a fixed order).
std::vector<Activity> MakeSchedule(const SimOptions& o, const Population& p);
// SHA-256 (hex) of a canonical text of the population and schedule.
std::string Fingerprint(const Population& p, const std::vector<Activity>& schedule);

}  // namespace kw::sim
