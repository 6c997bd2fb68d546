#include "sim/simulation.h"

#include <fmt/format.h>
#include <sys/stat.h>

#include <algorithm>
#include <array>
#include <optional>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <deque>
#include <filesystem>
#include <memory>
#include <mutex>
#include <random>
#include <set>
#include <thread>
#include <unordered_map>

#include "audit/audit_log.h"
#include "core/base64url.h"
#include "core/clock.h"
#include "crypto/crypto.h"
#include "detect/analytics/live.h"
#include "http/server.h"
#include "identity/audit_log_sink.h"
#include "identity/directory.h"
#include "identity/key_ring.h"
#include "identity/key_store.h"
#include "identity/master_key.h"
#include "identity/service.h"
#include "mail/json_value.h"
#include "mail/service.h"
#include "sim/http_client.h"
#include "sim/legacy_verifier.h"
#include "token/jws.h"

namespace kw::sim {
namespace {

using SteadyClock = std::chrono::steady_clock;
using mail::ParseJson;
using mail::Value;

constexpr int64_t kHourMs = 3600 * 1000;
constexpr int64_t kDayMs = 24 * kHourMs;
constexpr const char* kMailAudience = "api://keyward-mail";
constexpr const char* kScopes = "openid Mail.Read Mail.ReadWrite Mail.Send";
constexpr const char* kUsing = R"("using":["urn:ietf:params:jmap:core","urn:ietf:params:jmap:mail","urn:ietf:params:jmap:submission"])";

double Seconds(SteadyClock::duration d) { return std::chrono::duration<double>(d).count(); }

// What the simulator knows of each mail audit record: the ground truth for scoring alerts.
struct RecordInfo {
  SteadyClock::time_point wall;
  int64_t sim_ms = 0;
  std::string tenant_id;
  std::string operation;
  std::string reason;
  bool actor = false;
};

// Sits between the mail service and the audit log and remembers every record it passes.
class RecordingWriter final : public audit::AuditWriter {
 public:
  RecordingWriter(audit::AuditLog* log, const Clock* clock, std::set<std::string> actor_ips)
      : log_(log), clock_(clock), actor_ips_(std::move(actor_ips)) {}

  Result<uint64_t> Append(audit::AuditRecord r) override {
    RecordInfo info;
    info.wall = SteadyClock::now();
    info.sim_ms = clock_->NowMillis();
    info.tenant_id = r.tenant_id;
    info.operation = r.operation;
    info.reason = r.reason;
    info.actor = actor_ips_.count(r.client_ip) != 0;
    auto seq = log_->Append(std::move(r));
    if (seq.ok()) {
      std::lock_guard lock(mu_);
      if (info.actor) actor_seqs_.push_back(*seq);
      infos_.emplace(*seq, std::move(info));
    }
    return seq;
  }

  // The actor's records appended since the last call (the actor works sequentially).
  std::vector<uint64_t> TakeActorSeqs() {
    std::lock_guard lock(mu_);
    std::vector<uint64_t> out;
    out.swap(actor_seqs_);
    return out;
  }
  const RecordInfo* Find(uint64_t seq) const {
    std::lock_guard lock(mu_);
    auto it = infos_.find(seq);
    return it == infos_.end() ? nullptr : &it->second;  // entries are never erased
  }

 private:
  audit::AuditLog* const log_;
  const Clock* const clock_;
  const std::set<std::string> actor_ips_;
  mutable std::mutex mu_;
  std::unordered_map<uint64_t, RecordInfo> infos_;
  std::vector<uint64_t> actor_seqs_;
};

struct AlertSeen {
  uint64_t seq = 0;
  std::string rule_id, title, tenant;
  SteadyClock::time_point wall;
};

struct Token {
  std::string access, refresh;
  int64_t exp_ms = 0;
  int day = -1;
};

struct UserState {
  std::string user_id;
  std::string account_id;
  std::map<std::string, std::string> mailbox_by_role;
  std::string identity_id;
  Token tokens[kClientKinds];
};

struct StolenKeys {
  std::optional<crypto::PrivateKey> active, retired, revoked;
  std::string active_kid, retired_kid, revoked_kid;
  crypto::Algorithm active_alg = crypto::Algorithm::kES256, retired_alg = crypto::Algorithm::kES256,
                    revoked_alg = crypto::Algorithm::kES256;
  std::string active_public_pem;
};

struct ActorSession {
  int tenant = 0;
  int64_t sim_ms = 0;
  Probe probe = Probe::kNone;
  bool accepted = false;
  std::string reason;
  std::vector<uint64_t> seqs;
};

// Everything a worker needs, shared.
struct World {
  const SimOptions* o = nullptr;
  Mode mode = Mode::kStrict;
  const Population* pop = nullptr;
  std::string base;
  FakeClock* clock = nullptr;
  std::vector<std::array<std::string, kClientKinds>> apps;  // client ids by tenant and kind
  std::vector<UserState> users;
  StolenKeys stolen;
  RecordingWriter* writer = nullptr;

  std::atomic<uint64_t> request_errors{0}, server_errors{0};
  std::atomic<uint64_t> user_sessions{0}, user_sessions_failed{0};
  std::mutex mu;  // guards what follows
  std::vector<ActorSession> sessions;
  std::set<std::string> exposed_messages;  // account/email
  std::set<std::string> exposed_mailboxes;
  int attachments_exposed = 0;
};

std::string Email(const World& w, int u) {
  const SimUser& su = w.pop->users[u];
  return su.username + "@" + w.pop->tenants[su.tenant].domain;
}

std::string RandomHex(std::mt19937_64& rng, int bytes) {
  std::string out;
  for (int i = 0; i < bytes; ++i) out += fmt::format("{:02x}", static_cast<unsigned>(rng() & 0xff));
  return out;
}

// One simulated client: a user's or the actor's requests through one keep-alive connection.
class Driver {
 public:
  Driver(World* w, HttpClient* http) : w_(w), http_(http) {}

  Result<HttpReply> Call(std::string_view method, const std::string& target, std::string_view body,
                         HeaderList headers) {
    auto r = http_->Send(method, target, body, headers);
    if (!r.ok()) {
      w_->request_errors.fetch_add(1);
    } else if (r->status >= 500) {
      w_->server_errors.fetch_add(1);
    }
    return r;
  }

  HeaderList Headers(const std::string& ua, const std::string& ip, const std::string& bearer,
                     const char* content_type = nullptr) {
    HeaderList h = {{"User-Agent", ua}, {"X-Forwarded-For", ip}};
    if (!bearer.empty()) h.emplace_back("Authorization", "Bearer " + bearer);
    if (content_type) h.emplace_back("Content-Type", content_type);
    return h;
  }

  // ---- a user's session ----

  void UserSession(const Activity& a) {
    w_->user_sessions.fetch_add(1);
    if (!UserSessionSteps(a)) w_->user_sessions_failed.fetch_add(1);
  }

  // False when the session could not do its work (sign-in, token or session resource failed).
  bool UserSessionSteps(const Activity& a) {
    std::mt19937_64 rng(a.seed);
    UserState& st = w_->users[a.user];
    const std::string ua = ClientUserAgent(a.client);
    Token& tok = st.tokens[a.client];
    int64_t now = w_->clock->NowMillis();
    if (tok.refresh.empty() || tok.day != a.day) {
      if (!SignIn(a, rng, &tok)) return false;
    } else if (now >= tok.exp_ms - 60'000) {
      if (!Refresh(a, &tok) && !SignIn(a, rng, &tok)) return false;
    }
    auto session = Call("GET", "/.well-known/jmap", "", Headers(ua, a.ip, tok.access));
    if (!session.ok() || session->status != 200) return false;
    if (st.account_id.empty()) {
      auto v = ParseJson(session->body);
      if (!v.ok()) return false;
      const Value* pa = v->Find("primaryAccounts");
      const Value* id = pa ? pa->Find("urn:ietf:params:jmap:mail") : nullptr;
      if (!id || !id->is_string()) return false;
      st.account_id = id->as_string();
    }
    const std::string& acct = st.account_id;
    if (st.mailbox_by_role.empty()) {
      auto mb = Api(ua, a.ip, tok.access, fmt::format(R"([["Mailbox/get",{{"accountId":"{}"}},"m"]])", acct));
      if (!mb) return false;
      const Value* list = Arg(*mb, 0, "list");
      if (!list || !list->is_array()) return false;
      for (const auto& m : list->as_array()) {
        const Value* role = m.Find("role");
        if (role && role->is_string()) st.mailbox_by_role[role->as_string()] = m.Find("id")->as_string();
      }
    }
    std::string inbox = st.mailbox_by_role["inbox"];
    // The inbox list: the ten newest, headers and preview.
    auto listed = Api(ua, a.ip, tok.access, fmt::format(
        R"([["Email/query",{{"accountId":"{0}","filter":{{"inMailbox":"{1}"}},"sort":[{{"property":"receivedAt","isAscending":false}}],"limit":10}},"q"],)"
        R"(["Email/get",{{"accountId":"{0}","#ids":{{"resultOf":"q","name":"Email/query","path":"/ids"}},"properties":["subject","from","receivedAt","preview","keywords"]}},"g"]])",
        acct, inbox));
    if (!listed) return false;
    std::vector<std::string> ids;
    if (const Value* v = Arg(*listed, 0, "ids"); v && v->is_array()) {
      for (const auto& id : v->as_array()) ids.push_back(id.as_string());
    }
    std::uniform_real_distribution<double> p(0, 1);
    if (!ids.empty() && p(rng) < 0.5) {  // open one message
      Api(ua, a.ip, tok.access, fmt::format(
          R"([["Email/get",{{"accountId":"{}","ids":["{}"],"properties":["subject","from","to","textBody","bodyValues"],"fetchTextBodyValues":true}},"g"]])",
          acct, ids[rng() % ids.size()]));
    }
    if (a.client == kRolloutClient) return true;  // the CRM connector only reads
    if (p(rng) < 0.15) Send(a, rng, tok.access);
    if (!ids.empty() && p(rng) < 0.10 && !st.mailbox_by_role["trash"].empty()) {  // tidy up
      Api(ua, a.ip, tok.access, fmt::format(
          R"([["Email/set",{{"accountId":"{}","update":{{"{}":{{"mailboxIds":{{"{}":true}}}}}}}},"d"]])", acct,
          ids.back(), st.mailbox_by_role["trash"]));
    }
    return true;
  }

  bool SignIn(const Activity& a, std::mt19937_64& rng, Token* tok) {
    const SimUser& su = w_->pop->users[a.user];
    const SimTenant& t = w_->pop->tenants[su.tenant];
    const std::string& client_id = w_->apps[su.tenant][a.client];
    const std::string redirect = "https://app." + t.domain + "/callback";
    std::string verifier = RandomHex(rng, 32);
    std::string challenge = Base64UrlEncode(crypto::Sha256(verifier));
    std::string form = fmt::format(
        "response_type=code&client_id={}&redirect_uri={}&scope={}&code_challenge={}&code_challenge_method=S256"
        "&state={}&username={}&password={}",
        FormEncode(client_id), FormEncode(redirect), FormEncode(kScopes), challenge, RandomHex(rng, 8),
        FormEncode(su.username), FormEncode(su.password));
    const std::string ua = ClientUserAgent(a.client);
    auto login = Call("POST", "/" + t.id + "/v2.0/authorize", form,
                      Headers(ua, a.ip, "", "application/x-www-form-urlencoded"));
    if (!login.ok() || login->status != 303) return false;
    size_t at = login->location.find("code=");
    if (at == std::string::npos) return false;
    std::string code = login->location.substr(at + 5, login->location.find('&', at) - at - 5);
    std::string exchange = fmt::format(
        "grant_type=authorization_code&code={}&redirect_uri={}&client_id={}&code_verifier={}", code,
        FormEncode(redirect), FormEncode(client_id), verifier);
    if (!TokenRequest(su.tenant, a, exchange, tok)) return false;
    tok->day = a.day;
    return true;
  }

  bool Refresh(const Activity& a, Token* tok) {
    const SimUser& su = w_->pop->users[a.user];
    std::string form = fmt::format("grant_type=refresh_token&refresh_token={}&client_id={}", FormEncode(tok->refresh),
                                   FormEncode(w_->apps[su.tenant][a.client]));
    return TokenRequest(su.tenant, a, form, tok);
  }

  bool TokenRequest(int tenant, const Activity& a, const std::string& form, Token* tok) {
    auto r = Call("POST", "/" + w_->pop->tenants[tenant].id + "/v2.0/token", form,
                  Headers(ClientUserAgent(a.client), a.ip, "", "application/x-www-form-urlencoded"));
    if (!r.ok() || r->status != 200) return false;
    auto v = ParseJson(r->body);
    if (!v.ok()) return false;
    const Value* access = v->Find("access_token");
    const Value* refresh = v->Find("refresh_token");
    const Value* expires = v->Find("expires_in");
    if (!access || !access->is_string()) return false;
    tok->access = access->as_string();
    if (refresh && refresh->is_string()) tok->refresh = refresh->as_string();
    tok->exp_ms = w_->clock->NowMillis() + (expires && expires->is_int() ? expires->as_int() : 3600) * 1000;
    return true;
  }

  void Send(const Activity& a, std::mt19937_64& rng, const std::string& access) {
    UserState& st = w_->users[a.user];
    const SimUser& su = w_->pop->users[a.user];
    const std::string ua = ClientUserAgent(a.client);
    if (st.identity_id.empty()) {
      auto ids = Api(ua, a.ip, access, fmt::format(R"([["Identity/get",{{"accountId":"{}"}},"i"]])", st.account_id));
      const Value* list = ids ? Arg(*ids, 0, "list") : nullptr;
      if (!list || !list->is_array() || list->as_array().empty()) return;
      st.identity_id = list->as_array()[0].Find("id")->as_string();
    }
    const auto& colleagues = w_->pop->users_of_tenant[su.tenant];
    int to = colleagues[rng() % colleagues.size()];
    Api(ua, a.ip, access, fmt::format(
        R"([["Email/set",{{"accountId":"{0}","create":{{"e":{{"mailboxIds":{{"{1}":true}},"keywords":{{"$draft":true}},)"
        R"("from":[{{"email":"{2}"}}],"to":[{{"email":"{3}"}}],"subject":"Re: plan for week {4}",)"
        R"("bodyValues":{{"b":{{"value":"Following up on the plan. Regards."}}}},"textBody":[{{"partId":"b","type":"text/plain"}}]}}}}}},"c"],)"
        R"(["EmailSubmission/set",{{"accountId":"{0}","create":{{"s":{{"emailId":"#e","identityId":"{5}"}}}},)"
        R"("onSuccessUpdateEmail":{{"#s":{{"mailboxIds/{1}":null,"mailboxIds/{6}":true,"keywords/$draft":null}}}}}},"s"]])",
        st.account_id, st.mailbox_by_role["drafts"], Email(*w_, a.user), Email(*w_, to), rng() % 52 + 1,
        st.identity_id, st.mailbox_by_role["sent"]));
  }

  // POSTs a JMAP request; the parsed response, or nullopt.
  std::optional<Value> Api(const std::string& ua, const std::string& ip, const std::string& bearer,
                           const std::string& calls) {
    auto r = Call("POST", "/jmap/api", fmt::format(R"({{{},"methodCalls":{}}})", kUsing, calls),
                  Headers(ua, ip, bearer, "application/json"));
    if (!r.ok() || r->status != 200) return std::nullopt;
    auto v = ParseJson(r->body);
    if (!v.ok()) return std::nullopt;
    return std::move(*v);
  }

  // Member `name` of the arguments of method response `i`.
  static const Value* Arg(const Value& response, size_t i, std::string_view name) {
    const Value* mr = response.Find("methodResponses");
    if (!mr || !mr->is_array() || mr->as_array().size() <= i) return nullptr;
    const Value& inv = mr->as_array()[i];
    if (!inv.is_array() || inv.as_array().size() < 2) return nullptr;
    return inv.as_array()[1].Find(name);
  }

  // ---- the actor ----

  std::string Forge(const Activity& a, std::mt19937_64& rng) {
    const SimUser& victim = w_->pop->users[a.user];
    const SimTenant& t = w_->pop->tenants[victim.tenant];
    int64_t now = w_->clock->NowSeconds();
    std::string claims = fmt::format(
        R"({{"aud":"{}","iss":"{}/{}/v2.0","iat":{},"nbf":{},"exp":{},"azp":"{}","appid":"{}","scp":"Mail.Read Mail.ReadWrite","sub":"{}","tid":"{}","preferred_username":"{}","jti":"{}"}})",
        kMailAudience, w_->base, t.id, now, now, now + 3600, w_->pop->actor_app_id, w_->pop->actor_app_id,
        w_->users[a.user].user_id, t.id, Email(*w_, a.user), RandomHex(rng, 16));
    const StolenKeys& k = w_->stolen;
    auto sign = [&](const std::optional<crypto::PrivateKey>& key, crypto::Algorithm alg, const std::string& kid) {
      if (!key) return std::string("invalid");
      auto s = token::SignCompact(*key, alg, kid, claims);
      return s.ok() ? *s : std::string("invalid");
    };
    auto unsigned_part = [&](std::string_view alg) {
      return Base64UrlEncode(fmt::format(R"({{"alg":"{}","kid":"{}","typ":"JWT"}})", alg, k.active_kid)) + "." +
             Base64UrlEncode(claims);
    };
    switch (a.probe) {
      case Probe::kNone: return sign(k.active, k.active_alg, k.active_kid);
      case Probe::kAlgNone: return unsigned_part("none") + ".";
      case Probe::kHs256PublicKey: {
        std::string input = unsigned_part("HS256");
        return input + "." + Base64UrlEncode(crypto::HmacSha256(k.active_public_pem, input));
      }
      case Probe::kRetiredKey: return sign(k.retired, k.retired_alg, k.retired_kid);
      case Probe::kRevokedKey: return sign(k.revoked, k.revoked_alg, k.revoked_kid);
    }
    return "invalid";
  }

  void ActorActivity(const Activity& a) {
    std::mt19937_64 rng(a.seed);
    const SimUser& victim = w_->pop->users[a.user];
    const std::string& ua = w_->pop->actor_user_agent;
    std::string token = Forge(a, rng);
    ActorSession s;
    s.tenant = victim.tenant;
    s.sim_ms = w_->clock->NowMillis();
    s.probe = a.probe;
    w_->writer->TakeActorSeqs();  // nothing of another session may leak into this one
    auto session = Call("GET", "/.well-known/jmap", "", Headers(ua, a.ip, token));
    s.accepted = session.ok() && session->status == 200;
    if (s.accepted) Exfiltrate(a, ua, token, *session);  // a probe that gets in is used at once
    s.seqs = w_->writer->TakeActorSeqs();
    if (!s.accepted && !s.seqs.empty()) {
      if (const RecordInfo* info = w_->writer->Find(s.seqs.front())) s.reason = info->reason;
    }
    std::lock_guard lock(w_->mu);
    w_->sessions.push_back(std::move(s));
  }

  void Exfiltrate(const Activity& a, const std::string& ua, const std::string& token, const HttpReply& session) {
    auto v = ParseJson(session.body);
    if (!v.ok()) return;
    const Value* pa = v->Find("primaryAccounts");
    const Value* id = pa ? pa->Find("urn:ietf:params:jmap:mail") : nullptr;
    if (!id || !id->is_string()) return;
    std::string acct = id->as_string();
    Api(ua, a.ip, token, fmt::format(R"([["Mailbox/get",{{"accountId":"{}"}},"m"]])", acct));
    auto q = Api(ua, a.ip, token, fmt::format(R"([["Email/query",{{"accountId":"{}","limit":1000}},"q"]])", acct));
    const Value* ids = q ? Arg(*q, 0, "ids") : nullptr;
    if (!ids || !ids->is_array()) return;
    std::vector<std::string> all;
    for (const auto& e : ids->as_array()) all.push_back(e.as_string());
    int exposed = 0, attachments = 0;
    for (size_t i = 0; i < all.size(); i += 50) {
      std::string list;
      for (size_t j = i; j < std::min(all.size(), i + 50); ++j) list += (list.empty() ? "\"" : ",\"") + all[j] + "\"";
      auto got = Api(ua, a.ip, token, fmt::format(
          R"([["Email/get",{{"accountId":"{}","ids":[{}],"properties":["subject","from","to","receivedAt","messageId","attachments","bodyValues","textBody"],"fetchAllBodyValues":true}},"g"]])",
          acct, list));
      const Value* emails = got ? Arg(*got, 0, "list") : nullptr;
      if (!emails || !emails->is_array()) continue;
      for (const auto& e : emails->as_array()) {
        ++exposed;
        {
          std::lock_guard lock(w_->mu);
          w_->exposed_messages.insert(acct + "/" + e.Find("id")->as_string());
        }
        const Value* atts = e.Find("attachments");
        if (!atts || !atts->is_array()) continue;
        for (const auto& att : atts->as_array()) {
          const Value* blob = att.Find("blobId");
          if (!blob || !blob->is_string()) continue;
          auto r = Call("GET", fmt::format("/jmap/download/{}/{}/file.bin?type=application/octet-stream", acct,
                                           blob->as_string()),
                        "", Headers(ua, a.ip, token));
          if (r.ok() && r->status == 200) ++attachments;
        }
      }
    }
    std::lock_guard lock(w_->mu);
    if (exposed > 0) w_->exposed_mailboxes.insert(acct);
    w_->attachments_exposed += attachments;
  }

 private:
  World* w_;
  HttpClient* http_;
};

// ---- setup ----

std::string MakeMessage(std::mt19937_64& rng, const std::string& from, const std::string& to, int n,
                        bool attachment, int64_t date_s) {
  static const char* kSubjects[] = {"Quarterly planning", "Budget review", "Travel approval", "Contract draft",
                                    "Meeting notes", "Policy update", "Vendor proposal", "Delegation visit",
                                    "Project status", "Security briefing"};
  std::string subject = fmt::format("{} #{}", kSubjects[rng() % 10], n);
  std::string date = FormatDateRfc5322(date_s, "+0000");
  std::string head = fmt::format("From: {}\r\nTo: {}\r\nSubject: {}\r\nDate: {}\r\nMessage-ID: <{:016x}@{}>\r\nMIME-Version: 1.0\r\n",
                                 from, to, subject, date, rng(), from.substr(from.find('@') + 1));
  std::string body = fmt::format("Hello,\r\n\r\nPlease find the notes on {} below. Figures are preliminary.\r\n\r\nBest regards\r\n", subject);
  if (!attachment) return head + "Content-Type: text/plain; charset=utf-8\r\n\r\n" + body;
  std::string pdf(1500, '\0');
  for (auto& c : pdf) c = static_cast<char>(rng() & 0xff);
  std::string b64 = Base64UrlEncode(pdf);  // then made standard base64 for MIME
  for (char& c : b64) c = c == '-' ? '+' : (c == '_' ? '/' : c);
  while (b64.size() % 4 != 0) b64 += '=';
  std::string wrapped;
  for (size_t i = 0; i < b64.size(); i += 76) wrapped += b64.substr(i, 76) + "\r\n";
  return head + "Content-Type: multipart/mixed; boundary=\"b1\"\r\n\r\n--b1\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n" +
         body + "--b1\r\nContent-Type: application/pdf; name=\"report.pdf\"\r\nContent-Disposition: attachment; filename=\"report.pdf\"\r\n"
         "Content-Transfer-Encoding: base64\r\n\r\n" + wrapped + "--b1--\r\n";
}

Status StealConsumerKeys(const std::string& dir, StolenKeys* out) {
  KW_ASSIGN_OR_RETURN(auto master, identity::MasterKey::Load(dir + "/master.key"));
  KW_ASSIGN_OR_RETURN(auto store, identity::SqliteKeyStore::OpenFile(dir + "/keys.db"));
  KW_ASSIGN_OR_RETURN(auto keys, store->LoadAll());
  std::string seen;
  for (const auto& k : keys) {
    if (k.issuer.tenant_id != identity::kConsumerTenantId) continue;
    seen += fmt::format(" {}:{}", k.kid, identity::SigningKeyStateName(k.state));
    auto priv = identity::UnsealKeyRecord(master, k);
    if (!priv.ok()) return InternalError(fmt::format("sim: cannot unseal {}: {}", k.kid, priv.status().message()));
    switch (k.state) {
      case identity::SigningKeyState::kActive:
        out->active_public_pem = priv->public_key().ToPem();
        out->active = std::move(*priv);
        out->active_kid = k.kid;
        out->active_alg = k.alg;
        break;
      case identity::SigningKeyState::kRetired:
      case identity::SigningKeyState::kRetiring:
        out->retired = std::move(*priv);
        out->retired_kid = k.kid;
        out->retired_alg = k.alg;
        break;
      case identity::SigningKeyState::kRevoked:
        out->revoked = std::move(*priv);
        out->revoked_kid = k.kid;
        out->revoked_alg = k.alg;
        break;
      default:
        break;
    }
  }
  if (!out->active) return InternalError("sim: no active consumer key to steal; consumer keys:" + seen);
  return Status::Ok();
}

double Percentile(std::vector<double> v, double q) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  size_t i = static_cast<size_t>(q * (v.size() - 1) + 0.5);
  return v[std::min(i, v.size() - 1)];
}

}  // namespace

const char* ModeName(Mode m) { return m == Mode::kStrict ? "strict" : "legacy-2023"; }

Result<ModeResult> RunSimulation(const SimOptions& o, Mode mode, const std::string& dir,
                                 const ProgressFn& progress) {
  auto say = [&](const std::string& line) {
    if (progress) progress(line);
  };
  const auto wall_start = SteadyClock::now();
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  if (ec) return UnavailableError(fmt::format("sim: cannot create {}: {}", dir, ec.message()));
  if (!std::filesystem::is_empty(dir, ec)) return FailedPreconditionError(fmt::format("sim: {} is not empty", dir));
  ::chmod(dir.c_str(), 0700);

  Population pop = MakePopulation(o);
  std::vector<Activity> schedule = MakeSchedule(o, pop);
  // The tenants exist a day before the simulated period: their first keys, published on
  // creation, have finished their pre-publication period when the first user signs in.
  FakeClock clock(o.start_ms - 27 * kHourMs);

  audit::AuditLogOptions ao;
  ao.dir = dir + "/audit";
  ao.clock = &clock;
  ao.fsync = o.fsync;
  ao.retention_days = 0;
  KW_ASSIGN_OR_RETURN(auto opened_log, audit::AuditLog::Open(ao));
  std::shared_ptr<audit::AuditLog> log = std::move(opened_log);

  KW_ASSIGN_OR_RETURN(uint16_t port, http::PickFreePort("127.0.0.1"));
  World w;
  w.o = &o;
  w.mode = mode;
  w.pop = &pop;
  w.base = fmt::format("http://127.0.0.1:{}", port);
  w.clock = &clock;

  identity::IdentityServiceOptions io;
  io.base_url = w.base;
  io.data_dir = dir;
  io.password_cost = identity::PasswordCost::Minimum();
  io.audit_sink = std::make_shared<identity::AuditLogSink>(log);
  io.clock = &clock;
  io.tick_interval_seconds = 0;  // the simulation ticks the rings on simulated time
  io.enable_admin_api = false;
  KW_ASSIGN_OR_RETURN(auto identity, identity::IdentityService::Open(io));

  say(fmt::format("[{}] setting up {} tenants, {} users", ModeName(mode), pop.tenants.size(), pop.users.size()));
  identity::Directory& d = identity->directory();
  w.apps.resize(pop.tenants.size());
  for (size_t t = 0; t < pop.tenants.size(); ++t) {
    const SimTenant& st = pop.tenants[t];
    KW_RETURN_IF_ERROR(d.CreateTenant(st.name, st.id).status());
    for (int kind = 0; kind < kClientKinds; ++kind) {
      if (kind == kRolloutClient && st.rollout_day < 0) continue;
      identity::ClientApp app;
      app.tenant_id = st.id;
      app.name = ClientName(kind);
      app.confidential = false;
      app.redirect_uris = {"https://app." + st.domain + "/callback"};
      app.audiences = {kMailAudience};
      app.scopes = {"Mail.Read", "Mail.ReadWrite", "Mail.Send"};
      KW_ASSIGN_OR_RETURN(auto created, d.CreateApp(app));
      w.apps[t][kind] = created.app.client_id;
    }
    KW_RETURN_IF_ERROR(identity->Ring(st.id).status());
  }
  w.users.resize(pop.users.size());
  for (size_t u = 0; u < pop.users.size(); ++u) {
    const SimUser& su = pop.users[u];
    KW_ASSIGN_OR_RETURN(auto user, d.CreateUser(pop.tenants[su.tenant].id, su.username, su.password));
    w.users[u].user_id = user.id;
  }
  // The consumer ring: two rotations, the oldest key revoked; then the premise: its keys leave
  // the building.
  KW_ASSIGN_OR_RETURN(identity::KeyRing * consumer, identity->Ring(identity::kConsumerTenantId));
  clock.AdvanceMillis(10'000);
  KW_ASSIGN_OR_RETURN(std::string second_kid, consumer->Rotate(true, "simulation: scheduled rotation"));
  clock.AdvanceMillis(10'000);
  KW_ASSIGN_OR_RETURN(std::string third_kid, consumer->Rotate(true, "simulation: scheduled rotation"));
  clock.AdvanceMillis(10'000);
  {
    KW_ASSIGN_OR_RETURN(auto ks, identity::SqliteKeyStore::OpenFile(dir + "/keys.db"));
    KW_ASSIGN_OR_RETURN(auto records, ks->LoadAll());
    for (const auto& k : records) {
      if (k.issuer.tenant_id == identity::kConsumerTenantId && k.kid != second_kid && k.kid != third_kid) {
        KW_RETURN_IF_ERROR(consumer->Revoke(k.kid, "simulation: retired and revoked"));
      }
    }
  }
  clock.SetMillis(o.start_ms - 2 * kHourMs);  // the rotated keys' tokens expired: they retire
  KW_RETURN_IF_ERROR(identity->Tick());
  KW_RETURN_IF_ERROR(StealConsumerKeys(dir, &w.stolen));

  std::set<std::string> proxies(pop.actor_proxies.begin(), pop.actor_proxies.end());
  RecordingWriter writer(log.get(), &clock, proxies);
  w.writer = &writer;
  LegacyVerifier legacy(identity->trust_store(), {kMailAudience}, &clock);
  mail::MailServiceOptions mo;
  mo.data_dir = dir;
  mo.base_url = w.base;
  mo.trust_store = identity->trust_store();
  mo.issuers = {identity::IssuerUrl(w.base, token::kTenantPlaceholder)};
  mo.audience = kMailAudience;
  mo.audit = &writer;
  mo.clock = &clock;
  if (mode == Mode::kLegacy2023) {
    mo.verify_override = [&legacy](std::string_view t) { return legacy.Verify(t); };
  }
  KW_ASSIGN_OR_RETURN(auto mail_service, mail::MailService::Open(std::move(mo)));

  // Mailboxes and their contents, through the store's delivery path (as LMTP hands mail over).
  std::mt19937_64 mrng(o.seed + 99);
  std::vector<mail::Store::Delivery> batch;
  int seeded = 0;
  auto flush = [&]() -> Status {
    if (batch.empty()) return Status::Ok();
    KW_ASSIGN_OR_RETURN(auto results, mail_service->store().DeliverBatch(batch));
    for (const auto& r : results) seeded += r.ok() ? 1 : 0;
    batch.clear();
    return Status::Ok();
  };
  for (size_t u = 0; u < pop.users.size(); ++u) {
    const SimUser& su = pop.users[u];
    std::string email = Email(w, static_cast<int>(u));
    KW_ASSIGN_OR_RETURN(auto account, mail_service->store().EnsureAccount(pop.tenants[su.tenant].id,
                                                                          w.users[u].user_id, email, email));
    w.users[u].account_id = account.id;
    const auto& colleagues = pop.users_of_tenant[su.tenant];
    for (int m = 0; m < o.messages_per_user; ++m) {
      std::string from = (mrng() % 3 == 0) ? fmt::format("partner{}@partner{}.example", mrng() % 50, mrng() % 20)
                                           : Email(w, colleagues[mrng() % colleagues.size()]);
      int64_t date = o.start_ms / 1000 - static_cast<int64_t>(mrng() % (30 * 86400));
      batch.push_back({account.id, MakeMessage(mrng, from, email, m, mrng() % 4 == 0, date)});
      if (batch.size() >= 1000) KW_RETURN_IF_ERROR(flush());
    }
  }
  KW_RETURN_IF_ERROR(flush());

  // One server for both services, as `keyward serve` runs them.
  KW_ASSIGN_OR_RETURN(auto router, identity->BuildRouter());
  KW_ASSIGN_OR_RETURN(auto mail_router, mail_service->BuildRouter());
  KW_RETURN_IF_ERROR(router.Merge(mail_router));
  http::ServerOptions so;
  so.port = port;
  so.threads = 64;  // as keyward serve: handlers wait on fsync of audit records
  so.max_body_bytes = 50u << 20;
  so.trusted_proxies = {"127.0.0.1"};
  so.clock = &clock;
  so.max_connections = 4096;
  http::Server server(so, std::move(router));
  KW_RETURN_IF_ERROR(server.Start());

  std::mutex alerts_mu;
  std::vector<AlertSeen> alerts;
  detect::analytics::LiveOptions lo;
  lo.analytics.db_path = dir + "/detect.db";
  lo.analytics.learning_days = o.learning_days;
  lo.alerts_path = dir + "/alerts.jsonl";
  lo.log_alerts = false;
  lo.on_alert = [&](const std::string& json) {
    AlertSeen a;
    a.wall = SteadyClock::now();
    auto v = ParseJson(json);
    if (!v.ok()) return;
    auto str = [&](const char* k) {
      const Value* x = v->Find(k);
      return x && x->is_string() ? x->as_string() : std::string();
    };
    const Value* seq = v->Find("audit_seq");
    a.seq = seq && seq->is_int() ? static_cast<uint64_t>(seq->as_int()) : 0;
    a.rule_id = str("rule_id");
    a.title = str("title");
    a.tenant = str("tenant");
    std::lock_guard lock(alerts_mu);
    alerts.push_back(std::move(a));
  };
  KW_ASSIGN_OR_RETURN(auto live, detect::analytics::LiveDetector::Start(log.get(), lo));
  const double setup_seconds = Seconds(SteadyClock::now() - wall_start);

  // ---- the schedule ----
  // Persistent workers, each with a FIFO: a user's activities always go to the same worker (so
  // they run in order), the actor's to a worker of its own. The clock moves to the next slice
  // only when the previous one has finished: a sign-in's authorization code (60 s) must not
  // expire between its two requests because the clock ran ahead.
  int workers = std::max(1, o.workers);
  std::vector<std::unique_ptr<HttpClient>> clients;
  for (int i = 0; i <= workers; ++i) clients.push_back(std::make_unique<HttpClient>(port));  // [workers]: the actor
  struct Queue {
    std::mutex mu;
    std::condition_variable cv;
    std::deque<std::pair<const Activity*, size_t>> items;
    bool stop = false;
  };
  std::vector<Queue> queues(workers + 1);
  const int64_t end_ms = o.start_ms + o.days * kDayMs;
  const size_t slices = static_cast<size_t>((end_ms - o.start_ms + o.slice_ms - 1) / o.slice_ms);
  std::mutex done_mu;
  std::condition_variable done_cv;
  std::vector<int> pending(slices, 0);  // guarded by done_mu
  std::vector<std::thread> threads;
  for (int b = 0; b <= workers; ++b) {
    threads.emplace_back([&, b] {
      Driver driver(&w, clients[b].get());
      Queue& q = queues[b];
      while (true) {
        std::pair<const Activity*, size_t> item;
        {
          std::unique_lock lock(q.mu);
          q.cv.wait(lock, [&] { return q.stop || !q.items.empty(); });
          if (q.items.empty()) return;
          item = q.items.front();
          q.items.pop_front();
        }
        if (item.first->kind == ActivityKind::kUserSession) {
          driver.UserSession(*item.first);
        } else {
          driver.ActorActivity(*item.first);
        }
        std::lock_guard lock(done_mu);
        if (--pending[item.second] == 0) done_cv.notify_all();
      }
    });
  }
  size_t done_prefix = 0;  // guarded by done_mu: slices [0, done_prefix) have finished
  auto wait_through = [&](size_t last_slice) {  // every slice <= last_slice finished
    std::unique_lock lock(done_mu);
    done_cv.wait(lock, [&] {
      while (done_prefix < slices && done_prefix <= last_slice && pending[done_prefix] == 0) ++done_prefix;
      return done_prefix > last_slice || done_prefix == slices;
    });
  };
  const auto traffic_start = SteadyClock::now();
  size_t next = 0;
  int last_day = -1;
  Status traffic_status;
  for (size_t k = 0; k < slices; ++k) {
    const int64_t slice = o.start_ms + static_cast<int64_t>(k) * o.slice_ms;
    if (k > 0) wait_through(k - 1);
    clock.SetMillis(slice);
    if (slice % kHourMs == 0) {
      traffic_status = identity->Tick();
      if (!traffic_status.ok()) break;
    }
    int day = static_cast<int>((slice - o.start_ms) / kDayMs);
    if (day != last_day) {
      last_day = day;
      uint64_t done = 0;
      for (auto& c : clients) done += c->requests();
      double secs = Seconds(SteadyClock::now() - traffic_start);
      say(fmt::format("[{}] day {}/{} ({}) requests {} ({:.0f}/s), alerts {}", ModeName(mode), day + 1, o.days,
                      day < o.learning_days ? "learning" : "campaign", done, secs > 0 ? done / secs : 0.0,
                      [&] { std::lock_guard l(alerts_mu); return alerts.size(); }()));
    }
    size_t end = next;
    while (end < schedule.size() && schedule[end].time_ms < slice + o.slice_ms) ++end;
    {
      std::lock_guard lock(done_mu);
      pending[k] = static_cast<int>(end - next);
    }
    for (size_t i = next; i < end; ++i) {
      const Activity& a = schedule[i];
      Queue& q = queues[a.kind == ActivityKind::kUserSession ? a.user % workers : workers];
      {
        std::lock_guard lock(q.mu);
        q.items.emplace_back(&a, k);
      }
      q.cv.notify_one();
    }
    next = end;
    if (o.speed > 0) {  // hold simulated time to `speed` times the wall clock
      auto due = traffic_start + std::chrono::duration_cast<SteadyClock::duration>(
                                     std::chrono::duration<double>((slice + o.slice_ms - o.start_ms) / 1000.0 / o.speed));
      std::this_thread::sleep_until(due);
    }
  }
  if (slices > 0) wait_through(slices - 1);
  for (auto& q : queues) {
    {
      std::lock_guard lock(q.mu);
      q.stop = true;
    }
    q.cv.notify_all();
  }
  for (auto& t : threads) t.join();
  KW_RETURN_IF_ERROR(traffic_status);
  const double traffic_seconds = Seconds(SteadyClock::now() - traffic_start);
  uint64_t requests = 0;
  for (auto& c : clients) requests += c->requests();
  say(fmt::format("[{}] traffic done: {} requests in {:.1f} s; waiting for detection to catch up", ModeName(mode),
                  requests, traffic_seconds));
  uint64_t last = log->last_seq();
  if (!live->WaitForSeq(last, 120'000)) {
    return UnavailableError(fmt::format("sim: live detection did not reach seq {} in 120 s", last));
  }
  live->Stop();
  server.Stop();

  // ---- scoring ----
  ModeResult res;
  res.mode = mode;
  res.data_dir = dir;
  res.users = static_cast<int>(pop.users.size());
  res.tenants = static_cast<int>(pop.tenants.size());
  res.days = o.days;
  res.messages_seeded = seeded;
  res.requests = requests;
  res.request_errors = w.request_errors.load();
  res.server_errors = w.server_errors.load();
  res.user_sessions = w.user_sessions.load();
  res.user_sessions_failed = w.user_sessions_failed.load();
  res.setup_seconds = setup_seconds;
  res.traffic_seconds = traffic_seconds;
  res.requests_per_second = traffic_seconds > 0 ? requests / traffic_seconds : 0;
  res.audit_records = last;
  res.mailboxes_exposed = static_cast<int>(w.exposed_mailboxes.size());
  res.messages_exposed = static_cast<int>(w.exposed_messages.size());
  res.attachments_exposed = w.attachments_exposed;

  std::map<std::string, int> tenant_index;
  for (size_t t = 0; t < pop.tenants.size(); ++t) tenant_index[pop.tenants[t].id] = static_cast<int>(t);
  std::map<int, TenantOutcome> targets;
  for (size_t t = 0; t < pop.tenants.size(); ++t) {
    if (!pop.tenants[t].target) continue;
    TenantOutcome& to = targets[static_cast<int>(t)];
    to.tenant_id = pop.tenants[t].id;
    to.name = pop.tenants[t].name;
  }
  // Which session each actor record belongs to.
  std::unordered_map<uint64_t, size_t> session_of;
  for (size_t i = 0; i < w.sessions.size(); ++i) {
    for (uint64_t s : w.sessions[i].seqs) session_of[s] = i;
  }
  std::vector<std::set<std::string>> session_rules(w.sessions.size());
  std::map<std::string, RuleOutcome> rules;
  std::vector<double> latencies;
  std::set<uint64_t> alerted_seqs;
  std::sort(alerts.begin(), alerts.end(), [](const AlertSeen& a, const AlertSeen& b) { return a.seq < b.seq; });
  for (const AlertSeen& a : alerts) {
    ++res.alerts;
    RuleOutcome& r = rules[a.rule_id];
    r.rule_id = a.rule_id;
    r.title = a.title;
    const RecordInfo* info = writer.Find(a.seq);
    if (info) latencies.push_back(std::chrono::duration<double, std::milli>(a.wall - info->wall).count());
    bool actor = info && info->actor;
    std::string tenant_name = a.tenant;
    if (auto it = tenant_index.find(a.tenant); it != tenant_index.end()) tenant_name = pop.tenants[it->second].name;
    if (actor) {
      ++res.true_alerts;
      ++r.true_alerts;
      alerted_seqs.insert(a.seq);
      if (auto it = session_of.find(a.seq); it != session_of.end()) session_rules[it->second].insert(a.rule_id);
      if (auto it = tenant_index.find(info->tenant_id); it != tenant_index.end()) {
        auto t = targets.find(it->second);
        if (t != targets.end() && (t->second.first_alert_ms < 0 || info->sim_ms < t->second.first_alert_ms)) {
          t->second.first_alert_ms = info->sim_ms;
        }
      }
      if (res.timeline.size() < 3000) res.timeline.push_back({info->sim_ms, "alert", tenant_name, a.title});
    } else {
      ++res.false_alerts;
      ++r.false_alerts;
      int64_t when = info ? info->sim_ms : 0;
      if (res.timeline.size() < 3000) res.timeline.push_back({when, "false-alarm", tenant_name, a.title});
      if (res.false_alarm_samples.size() < 20) {
        res.false_alarm_samples.push_back(fmt::format("{} | {} | record {} {}", a.title, tenant_name,
                                                      info ? info->operation : std::string("(identity)"), a.seq));
      }
    }
  }
  for (size_t i = 0; i < w.sessions.size(); ++i) {
    const ActorSession& s = w.sessions[i];
    ++res.actor_sessions;
    ++res.forged_attempts;
    const char* technique = ProbeName(s.probe);
    auto& tech = res.by_technique[technique];
    ++tech.first;
    if (s.accepted) {
      ++res.forged_accepted;
      ++tech.second;
    } else {
      ++res.forged_refused;
      ++res.refused_by_reason[s.reason.empty() ? "(no record)" : s.reason];
    }
    if (!s.seqs.empty() && alerted_seqs.count(s.seqs.front())) ++res.attempts_alerted;
    bool covered = !session_rules[i].empty();
    if (covered) ++res.actor_sessions_alerted;
    for (const auto& rule : session_rules[i]) ++rules[rule].sessions_covered;
    auto t = targets.find(s.tenant);
    if (t != targets.end()) {
      ++t->second.sessions;
      if (covered) ++t->second.sessions_alerted;
      if (t->second.first_access_ms < 0 || s.sim_ms < t->second.first_access_ms) t->second.first_access_ms = s.sim_ms;
    }
    if (res.timeline.size() < 3000) {
      res.timeline.push_back({s.sim_ms, s.accepted ? "actor" : "refused", pop.tenants[s.tenant].name,
                              fmt::format("{}: {}", technique, s.accepted ? "mailbox opened" : "refused (" + s.reason + ")")});
    }
  }
  for (auto& [id, r] : rules) res.rules.push_back(r);
  std::sort(res.rules.begin(), res.rules.end(), [](const RuleOutcome& a, const RuleOutcome& b) {
    return a.true_alerts + a.false_alerts > b.true_alerts + b.false_alerts;
  });
  for (auto& [t, to] : targets) {
    if (to.first_access_ms >= 0 && to.first_alert_ms >= 0) {
      ++res.targets_detected;
      res.max_time_to_detect_ms = std::max(res.max_time_to_detect_ms, to.first_alert_ms - to.first_access_ms);
    }
    res.targets.push_back(to);
  }
  std::sort(res.timeline.begin(), res.timeline.end(),
            [](const TimelineEntry& a, const TimelineEntry& b) { return a.time_ms < b.time_ms; });
  double user_days = static_cast<double>(res.users) * res.days;
  res.false_alarms_per_10k_user_days = user_days > 0 ? res.false_alerts * 10000.0 / user_days : 0;
  res.latency_p50_ms = Percentile(latencies, 0.50);
  res.latency_p99_ms = Percentile(latencies, 0.99);
  res.latency_max_ms = latencies.empty() ? 0 : *std::max_element(latencies.begin(), latencies.end());
  res.wall_seconds = Seconds(SteadyClock::now() - wall_start);
  return res;
}

}  // namespace kw::sim
