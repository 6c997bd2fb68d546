#include "identity/service.h"

#include "core/html.h"

#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <optional>
#include <set>
#include <vector>

#include <fmt/format.h>
#include <openssl/crypto.h>

#include "core/base64url.h"
#include "core/file.h"
#include "core/json.h"
#include "core/log.h"
#include "crypto/crypto.h"
#include "http/form.h"
#include "token/jws.h"
#include "token/verifier.h"

namespace kw::identity {
namespace {

constexpr std::string_view kPathPrefix = "/{tenant}/v2.0";

// RFC 6749 §5.2 error with the no-cache headers of §5.1; `basic_challenge` adds the
// WWW-Authenticate a 401 invalid_client requires.
http::Response OAuthError(int status, std::string_view code, std::string_view description,
                          bool basic_challenge = false) {
  http::Response r = http::ErrorResponse(status, code, description);
  r.SetHeader("Pragma", "no-cache");
  if (basic_challenge) r.SetHeader("WWW-Authenticate", "Basic realm=\"keyward\", charset=\"UTF-8\"");
  return r;
}

http::Response NoStoreJson(std::string body) {
  http::Response r = http::JsonResponse(200, std::move(body));
  r.SetHeader("Cache-Control", "no-store");
  r.SetHeader("Pragma", "no-cache");
  return r;
}

// Standard base64 with padding (RFC 4648 §4), strictly: length a multiple of 4, at most two
// "=" at the end, canonical (zero spare bits, checked by Base64UrlDecode).
Result<std::string> DecodeBase64Standard(std::string_view in) {
  if (in.size() % 4 != 0) return InvalidArgumentError("bad base64 length");
  size_t pad = 0;
  while (pad < 2 && pad < in.size() && in[in.size() - 1 - pad] == '=') ++pad;
  std::string url(in.substr(0, in.size() - pad));
  for (char& ch : url) {
    if (ch == '-' || ch == '_' || ch == '=') return InvalidArgumentError("bad base64 character");
    if (ch == '+') ch = '-';
    if (ch == '/') ch = '_';
  }
  return Base64UrlDecode(url);
}

struct ClientCredentials {
  std::string id;
  std::string secret;
  bool basic = false;
  bool public_client = false;  // client_id in the body, no secret: a public client
};

// The admin API's bearer token from `path`, created (0600, 32 random bytes) if missing.
// PermissionDenied for a file readable by group or others, InvalidArgument for a short one.
Result<std::string> LoadOrCreateAdminToken(const std::string& path) {
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0) {
    if (errno != ENOENT) {
      return UnavailableError(fmt::format("cannot stat {}: {}", path, std::strerror(errno)));
    }
    std::string token = Base64UrlEncode(crypto::RandomBytes(32));
    KW_RETURN_IF_ERROR(WriteFileAtomic(path, token + "\n", 0600));
    Log(LogLevel::kInfo, "identity: created admin API token file {}", path);
    return token;
  }
  if ((st.st_mode & 077) != 0) {
    return PermissionDeniedError(fmt::format(
        "the admin token file {} is readable by group or others (mode {:o}); chmod 600 it", path,
        st.st_mode & 0777));
  }
  KW_ASSIGN_OR_RETURN(std::string token, ReadFile(path, 4096));
  while (!token.empty() && (token.back() == '\n' || token.back() == '\r')) token.pop_back();
  if (token.size() < 32) {
    return InvalidArgumentError(
        fmt::format("the admin token in {} is shorter than 32 characters", path));
  }
  return token;
}

// RFC 3986 percent-encoding of everything but unreserved characters.
std::string PercentEncode(std::string_view s) {
  static constexpr char kHex[] = "0123456789ABCDEF";
  std::string out;
  for (unsigned char c : s) {
    if (std::isalnum(c) || c == '-' || c == '.' || c == '_' || c == '~') {
      out.push_back(static_cast<char>(c));
    } else {
      out.push_back('%');
      out.push_back(kHex[c >> 4]);
      out.push_back(kHex[c & 15]);
    }
  }
  return out;
}

// Reads the client's credentials from Authorization: Basic (RFC 6749 §2.3.1, each half
// form-urlencoded) or from client_id/client_secret in the body. Returns an error response for
// a malformed header, two methods at once, or no credentials.
std::optional<http::Response> ExtractClientCredentials(const http::Request& req,
                                                       const http::Params& form,
                                                       ClientCredentials* out) {
  size_t headers = req.headers.count("Authorization");
  auto body_id = form.find("client_id");
  auto body_secret = form.find("client_secret");
  if (headers > 1) return OAuthError(400, "invalid_request", "repeated Authorization header");
  if (headers == 1) {
    std::string_view value = *req.Header("Authorization");
    constexpr std::string_view kBasic = "Basic ";
    if (value.size() < kBasic.size() ||
        !std::equal(kBasic.begin(), kBasic.end(), value.begin(),
                    [](char a, char b) { return std::tolower(a) == std::tolower(b); })) {
      return OAuthError(401, "invalid_client", "client authentication must use HTTP Basic", true);
    }
    auto decoded = DecodeBase64Standard(value.substr(kBasic.size()));
    size_t colon = decoded.ok() ? decoded->find(':') : std::string::npos;
    if (colon == std::string::npos) {
      return OAuthError(401, "invalid_client", "malformed Basic credentials", true);
    }
    auto id = http::PercentDecode(std::string_view(*decoded).substr(0, colon), true);
    auto secret = http::PercentDecode(std::string_view(*decoded).substr(colon + 1), true);
    if (!id.ok() || !secret.ok() || id->empty()) {
      return OAuthError(401, "invalid_client", "malformed Basic credentials", true);
    }
    if (body_secret != form.end()) {
      return OAuthError(400, "invalid_request",
                        "more than one client authentication method was used");
    }
    if (body_id != form.end() && body_id->second != *id) {
      return OAuthError(400, "invalid_request", "client_id does not match the Basic credentials");
    }
    out->id = std::move(*id);
    out->secret = std::move(*secret);
    out->basic = true;
    return std::nullopt;
  }
  if (body_id == form.end()) {
    return OAuthError(401, "invalid_client", "client authentication is required", true);
  }
  out->id = body_id->second;
  if (body_secret == form.end()) {
    out->public_client = true;
  } else {
    out->secret = body_secret->second;
  }
  return std::nullopt;
}

// Splits a scope parameter (RFC 6749 §3.3: scope-tokens separated by single spaces).
std::optional<std::vector<std::string>> SplitScopes(std::string_view s) {
  std::vector<std::string> out;
  while (true) {
    size_t sp = s.find(' ');
    std::string_view item = s.substr(0, sp);
    if (item.empty()) return std::nullopt;
    if (std::find(out.begin(), out.end(), item) == out.end()) out.emplace_back(item);
    if (sp == std::string_view::npos) break;
    s.remove_prefix(sp + 1);
  }
  return out;
}

std::string JoinScopes(const std::vector<std::string>& scopes) {
  std::string out;
  for (const auto& s : scopes) {
    if (!out.empty()) out.push_back(' ');
    out += s;
  }
  return out;
}

std::string Quoted(std::string_view s) { return http::PrintableForMessage(s, 80); }

// OpenID Connect scopes every client may request at the authorization endpoint.
bool IsOidcScope(std::string_view s) {
  return s == "openid" || s == "profile" || s == "email" || s == "offline_access";
}

// Authenticates `c` for `tenant`: a confidential client by its secret, a public client by its
// registration alone (the grant must then be one a public client may use).
Result<ClientApp> AuthenticateFor(Directory& dir, const ClientCredentials& c,
                                  std::string_view tenant) {
  Result<ClientApp> app = c.public_client ? dir.GetApp(c.id) : dir.AuthenticateClient(c.id, c.secret);
  if (!app.ok() || app->tenant_id != tenant || (c.public_client && app->confidential)) {
    return UnauthenticatedError("invalid client");
  }
  return app;
}

}  // namespace

// ---- construction ----

IdentityService::IdentityService(IdentityServiceOptions options) : options_(std::move(options)) {}

IdentityService::~IdentityService() {
  {
    std::lock_guard lock(tick_mu_);
    stopping_ = true;
  }
  tick_cv_.notify_all();
  if (ticker_.joinable()) ticker_.join();
  if (lock_fd_ >= 0) ::close(lock_fd_);  // releases the flock
}

Result<std::unique_ptr<IdentityService>> IdentityService::Open(IdentityServiceOptions options) {
  if (options.data_dir.empty()) return InvalidArgumentError("identity service: no data directory");
  if (!options.clock) return InvalidArgumentError("identity service: no clock");
  KW_RETURN_IF_ERROR(options.ring_policy.Validate());
  if (options.access_token_lifetime_seconds < 1 || options.access_token_lifetime_seconds > 3600 ||
      options.access_token_lifetime_seconds > options.ring_policy.max_token_lifetime_seconds) {
    return InvalidArgumentError(fmt::format(
        "access token lifetime {} s must be within 1..3600 and the key ring's maximum ({} s)",
        options.access_token_lifetime_seconds, options.ring_policy.max_token_lifetime_seconds));
  }
  if (options.tick_interval_seconds < 0) {
    return InvalidArgumentError("tick interval must not be negative");
  }
  const std::string dir = options.data_dir;
  if (::mkdir(dir.c_str(), 0700) != 0 && errno != EEXIST) {
    return UnavailableError(
        fmt::format("cannot create data directory {}: {}", dir, std::strerror(errno)));
  }

  std::string base_url = std::move(options.base_url);
  options.base_url.clear();
  std::unique_ptr<IdentityService> s(new IdentityService(std::move(options)));

  // One service per data directory: two would rotate the same rings independently.
  s->lock_fd_ = ::open((dir + "/serve.lock").c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600);
  if (s->lock_fd_ < 0) {
    return UnavailableError(fmt::format("cannot open {}/serve.lock: {}", dir, std::strerror(errno)));
  }
  if (::flock(s->lock_fd_, LOCK_EX | LOCK_NB) != 0) {
    return FailedPreconditionError(fmt::format(
        "another keyward process (a running `keyward serve`?) has the data directory {} open; "
        "use its admin API instead",
        dir));
  }

  // The master key first: nothing else should be created next to an unsafe key file.
  const std::string key_path = dir + "/master.key";
  auto master = MasterKey::Load(key_path);
  if (!master.ok() && master.status().code() == StatusCode::kNotFound) {
    master = MasterKey::Create(key_path);
    if (master.ok()) Log(LogLevel::kInfo, "identity: created master key file {}", key_path);
  }
  if (!master.ok()) return master.status();
  s->master_ = std::make_shared<const MasterKey>(std::move(*master));

  KW_ASSIGN_OR_RETURN(auto db, sqlite::Db::Open(dir + "/keyward.db"));
  KW_ASSIGN_OR_RETURN(s->directory_, Directory::Open(std::shared_ptr<sqlite::Db>(std::move(db)),
                                                     s->options_.clock,
                                                     s->options_.password_cost));
  // A connection of its own, so that revocations never run inside a Directory transaction.
  KW_ASSIGN_OR_RETURN(auto rdb, sqlite::Db::Open(dir + "/keyward.db"));
  s->revocation_db_ = std::move(rdb);
  KW_RETURN_IF_ERROR(s->revocation_db_->Exec(
      "CREATE TABLE IF NOT EXISTS revoked_tokens (jti TEXT PRIMARY KEY, exp INTEGER NOT NULL, "
      "revoked_at INTEGER NOT NULL) STRICT"));
  {
    KW_ASSIGN_OR_RETURN(auto q, s->revocation_db_->Prepare(
                                    "SELECT jti, exp FROM revoked_tokens WHERE exp >= ?"));
    q.Bind(1, s->options_.clock->NowSeconds() - s->options_.ring_policy.clock_skew_seconds);
    while (true) {
      KW_ASSIGN_OR_RETURN(bool row, q.Step());
      if (!row) break;
      s->revoked_[q.Text(0)] = q.Int(1);
    }
  }
  KW_ASSIGN_OR_RETURN(auto gdb, sqlite::Db::Open(dir + "/keyward.db"));
  KW_ASSIGN_OR_RETURN(s->grants_, GrantStore::Open(std::shared_ptr<sqlite::Db>(std::move(gdb)),
                                                   s->options_.clock));
  KW_ASSIGN_OR_RETURN(auto keys, SqliteKeyStore::OpenFile(dir + "/keys.db"));
  s->key_store_ = std::move(keys);
  KW_ASSIGN_OR_RETURN(s->key_data_version_, s->key_store_->DataVersion());
  if (s->options_.enable_admin_api) {
    KW_ASSIGN_OR_RETURN(std::string admin, LoadOrCreateAdminToken(dir + "/admin.token"));
    s->admin_token_sha256_ = crypto::Sha256(admin);
  }
  if (s->options_.audit_sink) {
    s->audit_ = s->options_.audit_sink;
  } else {
    KW_ASSIGN_OR_RETURN(auto audit, FileAuditSink::Open(dir + "/identity-audit.jsonl"));
    s->audit_ = std::move(audit);
  }
  s->trust_store_ = std::make_shared<token::TrustStore>();

  if (!base_url.empty()) KW_RETURN_IF_ERROR(s->SetBaseUrl(std::move(base_url)));
  if (s->options_.tick_interval_seconds > 0) {
    s->ticker_ = std::thread([raw = s.get()] { raw->TickLoop(); });
  }
  return s;
}

Status IdentityService::SetBaseUrl(std::string base_url) {
  while (!base_url.empty() && base_url.back() == '/') base_url.pop_back();
  if (base_url.empty()) return InvalidArgumentError("base URL must not be empty");
  {
    std::lock_guard lock(mu_);
    if (!base_url_.empty()) return FailedPreconditionError("base URL already set");
    base_url_ = base_url;
  }
  Status written = WriteFileAtomic(options_.data_dir + "/base-url", base_url + "\n", 0600);
  if (!written.ok()) {
    Log(LogLevel::kWarning, "identity: cannot record the base URL: {}", written.message());
  }
  return Ring(kConsumerTenantId).status();
}

std::string IdentityService::base_url() const {
  std::lock_guard lock(mu_);
  return base_url_;
}

std::string IdentityService::IssuerFor(std::string_view tenant_id) const {
  std::string base = base_url();
  return base.empty() ? std::string() : IssuerUrl(base, tenant_id);
}

Result<KeyRing*> IdentityService::Ring(std::string_view tenant_id) {
  std::unique_lock lock(mu_);
  if (base_url_.empty()) return FailedPreconditionError("the service has no base URL yet");
  if (auto it = rings_.find(tenant_id); it != rings_.end()) return it->second.get();
  lock.unlock();
  // The directory call runs unlocked: it is the slow part and needs no service state.
  KW_ASSIGN_OR_RETURN(Tenant tenant, directory_->GetTenant(tenant_id));
  lock.lock();
  if (auto it = rings_.find(tenant_id); it != rings_.end()) return it->second.get();
  IssuerIdentity who{IssuerUrl(base_url_, tenant.id),
                     tenant.consumer ? token::IssuerKind::kConsumer
                                     : token::IssuerKind::kEnterprise,
                     tenant.id};
  KeyRing::Deps deps{master_, key_store_, audit_, options_.clock};
  KW_ASSIGN_OR_RETURN(auto ring, KeyRing::Open(who, options_.ring_policy, std::move(deps)));
  KW_RETURN_IF_ERROR(ring->Tick().status());
  KW_RETURN_IF_ERROR(ring->AttachTrustStore(trust_store_));
  KeyRing* raw = ring.get();
  rings_.emplace(tenant.id, std::move(ring));
  return raw;
}

Status IdentityService::Tick() {
  std::vector<KeyRing*> rings;
  int64_t horizon = options_.clock->NowSeconds() - options_.ring_policy.clock_skew_seconds;
  {
    std::lock_guard lock(mu_);
    for (auto& [id, ring] : rings_) rings.push_back(ring.get());
    std::erase_if(revoked_, [horizon](const auto& kv) { return kv.second < horizon; });
  }
  Status first;
  for (KeyRing* ring : rings) {
    Status s = ring->Tick().status();
    if (!s.ok() && first.ok()) first = s;
  }
  if (auto pruned = grants_->Prune(); !pruned.ok() && first.ok()) first = pruned.status();
  auto del = revocation_db_->Prepare("DELETE FROM revoked_tokens WHERE exp < ?");
  if (!del.ok()) return first.ok() ? del.status() : first;
  Status s = del->Bind(1, horizon).Run();
  return first.ok() ? s : first;
}

Result<std::vector<std::string>> IdentityService::RefreshKeysFromStore() {
  std::vector<std::string> revoked;
  KW_ASSIGN_OR_RETURN(int64_t version, key_store_->DataVersion());
  std::vector<KeyRing*> rings;
  {
    std::lock_guard lock(mu_);
    if (version == key_data_version_) return revoked;
    key_data_version_ = version;
    for (auto& [id, ring] : rings_) rings.push_back(ring.get());
  }
  for (KeyRing* ring : rings) {
    KW_ASSIGN_OR_RETURN(std::vector<std::string> kids, ring->RefreshFromStore());
    revoked.insert(revoked.end(), kids.begin(), kids.end());
  }
  return revoked;
}

void IdentityService::TickLoop() {
  const auto tick_every = std::chrono::seconds(options_.tick_interval_seconds);
  const auto refresh_every = std::chrono::milliseconds(
      std::clamp<int64_t>(options_.key_refresh_interval_ms, 10, 1000 * options_.tick_interval_seconds));
  auto next_tick = std::chrono::steady_clock::now() + tick_every;
  std::unique_lock lock(tick_mu_);
  while (!tick_cv_.wait_for(lock, refresh_every, [this] { return stopping_; })) {
    lock.unlock();
    auto refreshed = RefreshKeysFromStore();
    if (!refreshed.ok()) {
      Log(LogLevel::kError, "identity: key refresh failed: {}", refreshed.status().message());
    }
    if (std::chrono::steady_clock::now() >= next_tick) {
      next_tick += tick_every;
      Status s = Tick();
      if (!s.ok()) Log(LogLevel::kError, "identity: periodic key ring tick failed: {}", s.message());
    }
    lock.lock();
  }
}

// ---- helpers ----

namespace {
// The request being handled on this thread (handlers run synchronously on an I/O thread), so
// that every audit event of a request carries its peer address and user agent.
thread_local const http::Request* tl_request = nullptr;
}  // namespace

void IdentityService::Audit(AuditEventType type, std::string_view tenant_id, std::string_view kid,
                            std::string detail, AuditEvent e) {
  e.time = options_.clock->NowSeconds();
  e.type = type;
  e.issuer = IssuerFor(tenant_id);
  e.issuer_kind = tenant_id == kConsumerTenantId ? token::IssuerKind::kConsumer
                                                 : token::IssuerKind::kEnterprise;
  e.tenant_id = std::string(tenant_id);
  e.kid = std::string(kid);
  e.detail = std::move(detail);
  if (tl_request) {
    e.client_ip = tl_request->ClientIp();
    if (auto ua = tl_request->Header("User-Agent")) e.user_agent = std::string(ua->substr(0, 256));
  }
  audit_->Record(e);
}

bool IdentityService::IsRevoked(std::string_view jti) const {
  std::lock_guard lock(mu_);
  return revoked_.find(std::string(jti)) != revoked_.end();
}

Status IdentityService::RecordRevoked(const std::string& jti, int64_t exp) {
  {
    std::lock_guard lock(mu_);
    revoked_[jti] = exp;
  }
  KW_ASSIGN_OR_RETURN(auto ins, revocation_db_->Prepare(
                                    "INSERT OR IGNORE INTO revoked_tokens (jti, exp, revoked_at) "
                                    "VALUES (?, ?, ?)"));
  return ins.Bind(1, jti).Bind(2, exp).Bind(3, options_.clock->NowSeconds()).Run();
}

std::shared_ptr<const token::VerifiedToken> IdentityService::VerifyForClient(
    std::string_view token_text, const ClientApp& client, std::string_view tenant_id,
    std::string* why) {
  if (client.audiences.empty()) {
    *why = "the client has no audience";
    return nullptr;
  }
  // Load the ring of the tenant the token claims (if it is one of ours), so that keys of that
  // ring from earlier runs are in the trust store. Nothing here is trusted yet.
  {
    token::ParsedJws jws;
    token::Claims claims;
    std::string ignored;
    if (token::ParseCompactJws(token_text, {}, &jws, &ignored) == token::Reason::kOk &&
        token::ParseClaims(jws.payload, {}, &claims, &ignored) == token::Reason::kOk &&
        !claims.tid.empty()) {
      Ring(claims.tid).status().IgnoreError();
    }
  }
  token::VerifierPolicy policy;
  policy.issuers = {IssuerUrl(base_url(), token::kTenantPlaceholder)};
  policy.audiences = client.audiences;
  policy.allow_consumer_tokens = true;  // the consumer issuer is one of this service's issuers
  policy.clock_skew_seconds = options_.ring_policy.clock_skew_seconds;
  policy.cache.max_entries = 0;  // per-request verifier: no cache, so no store listener
  token::Verifier verifier(trust_store_, std::move(policy), options_.clock);
  token::VerifyResult r = verifier.Verify(token_text);
  if (!r.ok()) {
    *why = fmt::format("{}: {}", token::ReasonCode(r.reason), r.detail);
    return nullptr;
  }
  if (r.token->claims.tid != tenant_id) {
    *why = "the token belongs to another tenant";
    return nullptr;
  }
  if (r.token->claims.jti.empty() || IsRevoked(r.token->claims.jti)) {
    *why = r.token->claims.jti.empty() ? "the token has no jti" : "the token was revoked";
    return nullptr;
  }
  return r.token;
}

// ---- handlers ----

http::Response IdentityService::Discovery(const http::Request& req) {
  std::string tenant(req.PathParam("tenant"));
  auto t = directory_->GetTenant(tenant);
  if (!t.ok()) {
    if (t.status().code() == StatusCode::kNotFound) {
      return http::ErrorResponse(404, "not_found", "unknown tenant");
    }
    Log(LogLevel::kError, "identity: discovery: {} (request {})", t.status().message(),
        req.request_id);
    return http::ErrorResponse(500, "server_error", "internal error");
  }
  std::string issuer = IssuerFor(tenant);
  if (issuer.empty()) return http::ErrorResponse(503, "temporarily_unavailable", "starting up");
  json::Writer w;
  w.BeginObject()
      .Key("issuer").String(issuer)
      .Key("authorization_endpoint").String(issuer + "/authorize")
      .Key("jwks_uri").String(issuer + "/keys")
      .Key("token_endpoint").String(issuer + "/token")
      .Key("introspection_endpoint").String(issuer + "/introspect")
      .Key("revocation_endpoint").String(issuer + "/revoke");
  w.Key("response_types_supported").BeginArray().String("code").EndArray();
  w.Key("response_modes_supported").BeginArray().String("query").EndArray();
  w.Key("code_challenge_methods_supported").BeginArray().String("S256").EndArray();
  w.Key("authorization_response_iss_parameter_supported").Bool(true);
  w.Key("scopes_supported").BeginArray();
  for (std::string_view sc : {"openid", "profile", "email", "offline_access"}) w.String(sc);
  w.EndArray();
  w.Key("grant_types_supported").BeginArray()
      .String("authorization_code").String("refresh_token").String("client_credentials");
  if (options_.enable_password_grant) w.String("password");
  w.EndArray();
  w.Key("token_endpoint_auth_methods_supported").BeginArray()
      .String("client_secret_basic").String("client_secret_post").String("none").EndArray();
  w.Key("introspection_endpoint_auth_methods_supported").BeginArray()
      .String("client_secret_basic").String("client_secret_post").EndArray();
  w.Key("revocation_endpoint_auth_methods_supported").BeginArray()
      .String("client_secret_basic").String("client_secret_post").String("none").EndArray();
  w.Key("id_token_signing_alg_values_supported").BeginArray()
      .String(crypto::AlgorithmName(options_.ring_policy.algorithm)).EndArray();
  w.Key("subject_types_supported").BeginArray().String("public").EndArray();
  w.Key("claims_supported").BeginArray();
  for (std::string_view c : {"iss", "sub", "aud", "exp", "iat", "nbf", "jti", "tid", "azp", "scp",
                             "auth_time", "nonce", "preferred_username"}) {
    w.String(c);
  }
  w.EndArray();
  w.Key("tenant_id").String(tenant);
  w.Key("tenant_kind").String(t->consumer ? "consumer" : "enterprise");
  w.EndObject();
  return http::JsonResponse(200, w.Take());
}

http::Response IdentityService::Keys(const http::Request& req) {
  auto ring = Ring(req.PathParam("tenant"));
  if (!ring.ok()) {
    if (ring.status().code() == StatusCode::kNotFound) {
      return http::ErrorResponse(404, "not_found", "unknown tenant");
    }
    if (ring.status().code() == StatusCode::kFailedPrecondition) {
      return http::ErrorResponse(503, "temporarily_unavailable", "starting up");
    }
    Log(LogLevel::kError, "identity: keys: {} (request {})", ring.status().message(),
        req.request_id);
    return http::ErrorResponse(500, "server_error", "internal error");
  }
  http::Response r = http::JsonResponse(200, (*ring)->Jwks());
  // Clients must revalidate: a revoked key leaves the JWKS at once.
  r.SetHeader("Cache-Control", "no-cache");
  return r;
}

http::Response IdentityService::Token(const http::Request& req) {
  const std::string tenant(req.PathParam("tenant"));
  auto ring = Ring(tenant);
  if (!ring.ok()) {
    if (ring.status().code() == StatusCode::kNotFound) {
      return http::ErrorResponse(404, "not_found", "unknown tenant");
    }
    if (ring.status().code() == StatusCode::kFailedPrecondition) {
      return http::ErrorResponse(503, "temporarily_unavailable", "starting up");
    }
    Log(LogLevel::kError, "identity: token: {} (request {})", ring.status().message(),
        req.request_id);
    return http::ErrorResponse(500, "server_error", "internal error");
  }
  std::string client_label = "(none)";
  std::string grant_label = "(none)";
  auto refuse = [&](int status, std::string_view code, std::string_view description,
                    bool challenge = false) {
    Audit(AuditEventType::kTokenRefused, tenant, "",
          fmt::format("client '{}' grant '{}' refused: {}: {}", client_label, grant_label, code,
                      description));
    return OAuthError(status, code, description, challenge);
  };

  auto form = http::ParseFormRequest(req);
  if (!form.ok()) return refuse(400, "invalid_request", form.status().message());
  if (auto g = form->find("grant_type"); g != form->end()) grant_label = Quoted(g->second);

  ClientCredentials creds;
  if (auto err = ExtractClientCredentials(req, *form, &creds)) {
    Audit(AuditEventType::kTokenRefused, tenant, "",
          fmt::format("client '(none)' grant '{}' refused: client authentication: {}",
                      grant_label, err->status == 401 ? "invalid_client" : "invalid_request"));
    return *err;
  }
  client_label = Quoted(creds.id);
  auto app = AuthenticateFor(*directory_, creds, tenant);
  if (!app.ok()) {
    // One answer for an unknown client, a wrong secret and another tenant's client.
    return refuse(401, "invalid_client", "client authentication failed", creds.basic);
  }

  auto grant_it = form->find("grant_type");
  if (grant_it == form->end()) return refuse(400, "invalid_request", "grant_type is required");
  const std::string& grant = grant_it->second;
  auto param = [&](std::string_view name) -> const std::string* {
    auto it = form->find(name);
    return it == form->end() ? nullptr : &it->second;
  };
  if (creds.public_client && (grant == "client_credentials" || grant == "password")) {
    return refuse(400, "unauthorized_client",
                  "a public client may use authorization_code and refresh_token only");
  }

  Issue issue;
  issue.grant = grant;
  if (grant == "authorization_code") {
    const std::string* code = param("code");
    const std::string* redirect = param("redirect_uri");
    const std::string* verifier = param("code_verifier");
    if (!code || !redirect || !verifier) {
      return refuse(400, "invalid_request", "code, redirect_uri and code_verifier are required");
    }
    auto redeemed = grants_->RedeemCode(*code, app->client_id, *redirect, *verifier);
    if (!redeemed.ok()) {
      Log(LogLevel::kError, "identity: token: {} (request {})", redeemed.status().message(),
          req.request_id);
      return refuse(500, "server_error", "internal error");
    }
    if (redeemed->refusal != GrantRefusal::kNone) {
      RevokeJtis(redeemed->revoked_jtis, tenant, "authorization code replayed");
      return refuse(400, "invalid_grant",
                    fmt::format("the authorization code is invalid ({})",
                                GrantRefusalName(redeemed->refusal)));
    }
    Grant& g = redeemed->grant;
    issue.subject = g.user_id;
    issue.username = g.username;
    issue.audience = g.audience;
    issue.nonce = g.nonce;
    issue.auth_time = g.auth_time;
    issue.family_id = redeemed->family_id;
    issue.refresh_token = redeemed->refresh_token;
    issue.scopes = *SplitScopes(g.scope.empty() ? std::string("openid") : g.scope);
    issue.id_token = std::find(issue.scopes.begin(), issue.scopes.end(), "openid") !=
                     issue.scopes.end();
  } else if (grant == "refresh_token") {
    const std::string* rt = param("refresh_token");
    if (!rt) return refuse(400, "invalid_request", "refresh_token is required");
    auto rotated = grants_->RotateRefresh(*rt, app->client_id);
    if (!rotated.ok()) {
      Log(LogLevel::kError, "identity: token: {} (request {})", rotated.status().message(),
          req.request_id);
      return refuse(500, "server_error", "internal error");
    }
    if (rotated->refusal != GrantRefusal::kNone) {
      if (rotated->refusal == GrantRefusal::kRefreshReused) {
        RevokeJtis(rotated->revoked_jtis, tenant, "refresh token reused");
        Audit(AuditEventType::kTokenRevoked, tenant, "",
              fmt::format("refresh token reuse by client '{}': family '{}' revoked with {} "
                          "access tokens",
                          client_label, rotated->family_id, rotated->revoked_jtis.size()));
      }
      return refuse(400, "invalid_grant", fmt::format("the refresh token is invalid ({})",
                                                      GrantRefusalName(rotated->refusal)));
    }
    Grant& g = rotated->grant;
    issue.subject = g.user_id;
    issue.username = g.username;
    issue.audience = g.audience;
    issue.auth_time = g.auth_time;
    issue.family_id = rotated->family_id;
    issue.refresh_token = rotated->refresh_token;
    std::vector<std::string> granted = *SplitScopes(g.scope.empty() ? std::string("openid") : g.scope);
    issue.scopes = granted;
    if (const std::string* sc = param("scope")) {
      // RFC 6749 §6: a narrower scope, never a wider one.
      auto requested = SplitScopes(*sc);
      if (!requested) return refuse(400, "invalid_scope", "malformed scope parameter");
      for (const auto& one : *requested) {
        if (std::find(granted.begin(), granted.end(), one) == granted.end()) {
          return refuse(400, "invalid_scope",
                        fmt::format("scope '{}' was not granted", Quoted(one)));
        }
      }
      issue.scopes = std::move(*requested);
    }
    issue.id_token = std::find(issue.scopes.begin(), issue.scopes.end(), "openid") !=
                     issue.scopes.end();
  } else if (grant == "client_credentials" ||
             (grant == "password" && options_.enable_password_grant)) {
    issue.subject = app->client_id;
    if (grant == "password") {
      const std::string* u = param("username");
      const std::string* p = param("password");
      if (!u || !p) return refuse(400, "invalid_request", "username and password are required");
      auto user = directory_->Authenticate(tenant, *u, *p);
      if (!user.ok()) {
        Audit(AuditEventType::kSignInFailed, tenant, "",
              fmt::format("user '{}' via client '{}': invalid username or password", Quoted(*u),
                          client_label));
        return refuse(400, "invalid_grant", "invalid username or password");
      }
      issue.subject = user->id;
      issue.username = user->username;
      issue.auth_time = options_.clock->NowSeconds();
    }
    issue.scopes = app->scopes;
    if (const std::string* sc = param("scope")) {
      auto requested = SplitScopes(*sc);
      if (!requested) return refuse(400, "invalid_scope", "malformed scope parameter");
      for (const auto& one : *requested) {
        if (std::find(app->scopes.begin(), app->scopes.end(), one) == app->scopes.end()) {
          return refuse(400, "invalid_scope",
                        fmt::format("scope '{}' is not granted to this client", Quoted(one)));
        }
      }
      issue.scopes = std::move(*requested);
    }
    const std::string* resource = param("resource");
    const std::string* audience_param = param("audience");
    if (resource && audience_param) {
      return refuse(400, "invalid_request", "give resource or audience, not both");
    }
    if (audience_param) resource = audience_param;
    if (app->audiences.empty()) {
      return refuse(400, "unauthorized_client", "the client has no registered audience");
    }
    issue.audience = app->audiences.front();
    if (resource) {
      if (std::find(app->audiences.begin(), app->audiences.end(), *resource) ==
          app->audiences.end()) {
        return refuse(400, "invalid_target",
                      "the requested audience is not allowed for this client");
      }
      issue.audience = *resource;
    }
  } else {
    return refuse(400, "unsupported_grant_type", "the grant type is not supported");
  }
  return IssueTokens(**ring, tenant, *app, client_label, issue, req.request_id);
}

http::Response IdentityService::IssueTokens(KeyRing& ring, const std::string& tenant,
                                            const ClientApp& app, const std::string& client_label,
                                            const Issue& issue, const std::string& request_id) {
  auto fail = [&](std::string_view what, const Status& s) {
    Log(LogLevel::kError, "identity: token: {} for {}: {} (request {})", what,
        ring.issuer().Describe(), s.message(), request_id);
    Audit(AuditEventType::kTokenRefused, tenant, "",
          fmt::format("client '{}' grant '{}' refused: server_error: {}", client_label,
                      issue.grant, what));
    return OAuthError(500, "server_error", "the token could not be issued");
  };
  // OpenID scopes name what the client may learn of the user, not what the API may do: they
  // stay out of the access token's scp.
  std::vector<std::string> api_scopes;
  for (const auto& sc : issue.scopes) {
    if (!IsOidcScope(sc)) api_scopes.push_back(sc);
  }
  const int64_t now = options_.clock->NowSeconds();
  // The key is chosen once, so the access and ID tokens carry the same kid and expiry bound.
  auto signing = ring.SigningKey();
  if (!signing.ok()) return fail("no signing key is available", signing.status());
  const int64_t exp = std::min(now + options_.access_token_lifetime_seconds, signing->latest_exp);
  const std::string jti = Base64UrlEncode(crypto::RandomBytes(16));
  const std::string scp = JoinScopes(api_scopes);
  json::Writer w;
  w.BeginObject()
      .Key("iss").String(ring.issuer().issuer)
      .Key("sub").String(issue.subject)
      .Key("aud").String(issue.audience)
      .Key("exp").Int(exp)
      .Key("iat").Int(now)
      .Key("nbf").Int(now)
      .Key("jti").String(jti)
      .Key("tid").String(tenant)
      .Key("azp").String(app.client_id)
      .Key("scp").String(scp);
  if (!issue.username.empty()) w.Key("preferred_username").String(issue.username);
  w.EndObject();
  auto access = ring.SignJwt(w.str());
  if (!access.ok()) return fail("signing the access token failed", access.status());
  std::string kid;
  {
    token::ParsedJws jws;
    std::string ignored;
    if (token::ParseCompactJws(*access, {}, &jws, &ignored) == token::Reason::kOk) kid = jws.kid;
  }
  std::string id_token;
  if (issue.id_token) {
    json::Writer idw;
    idw.BeginObject()
        .Key("iss").String(ring.issuer().issuer)
        .Key("sub").String(issue.subject)
        .Key("aud").String(app.client_id)
        .Key("exp").Int(exp)
        .Key("iat").Int(now)
        .Key("nbf").Int(now)
        .Key("tid").String(tenant)
        .Key("azp").String(app.client_id);
    if (issue.auth_time) idw.Key("auth_time").Int(issue.auth_time);
    if (!issue.nonce.empty()) idw.Key("nonce").String(issue.nonce);
    if (!issue.username.empty()) idw.Key("preferred_username").String(issue.username);
    idw.EndObject();
    auto signed_id = ring.SignJwt(idw.str());
    if (!signed_id.ok()) return fail("signing the ID token failed", signed_id.status());
    id_token = std::move(signed_id).value();
  }
  if (!issue.family_id.empty()) {
    Status s = grants_->AddFamilyJti(issue.family_id, jti, exp);
    if (!s.ok()) return fail("recording the token in its refresh family failed", s);
  }
  AuditEvent facts;
  facts.token_id = jti;
  facts.client_id = app.client_id;
  facts.subject = issue.subject;
  facts.username = issue.username;
  Audit(AuditEventType::kTokenIssued, tenant, kid,
        fmt::format("client '{}' grant '{}' sub '{}' jti '{}' aud '{}' scope '{}' exp {}{}{}",
                    client_label, issue.grant, issue.subject, jti, Quoted(issue.audience),
                    Quoted(scp), exp, id_token.empty() ? "" : " with id_token",
                    issue.refresh_token.empty() ? "" : " with refresh_token"),
        std::move(facts));
  json::Writer out;
  out.BeginObject()
      .Key("access_token").String(*access)
      .Key("token_type").String("Bearer")
      .Key("expires_in").Int(exp - now)
      .Key("scope").String(JoinScopes(issue.scopes));
  if (!id_token.empty()) out.Key("id_token").String(id_token);
  if (!issue.refresh_token.empty()) out.Key("refresh_token").String(issue.refresh_token);
  out.EndObject();
  return NoStoreJson(out.Take());
}

void IdentityService::RevokeJtis(const std::vector<std::string>& jtis, std::string_view tenant,
                                 std::string_view why) {
  const int64_t horizon = options_.clock->NowSeconds() + options_.access_token_lifetime_seconds;
  for (const auto& jti : jtis) {
    Status s = RecordRevoked(jti, horizon);
    if (!s.ok()) {
      Log(LogLevel::kError, "identity: cannot persist revocation of jti '{}': {}", jti,
          s.message());
    }
    Audit(AuditEventType::kTokenRevoked, tenant, "", fmt::format("jti '{}' revoked: {}", jti, why));
  }
}

std::variant<http::Response, IdentityService::ClientTokenRequest>
IdentityService::ReadClientTokenRequest(const http::Request& req, std::string_view action) {
  const std::string tenant(req.PathParam("tenant"));
  auto t = directory_->GetTenant(tenant);
  if (!t.ok()) return http::ErrorResponse(404, "not_found", "unknown tenant");
  if (base_url().empty()) return http::ErrorResponse(503, "temporarily_unavailable", "starting up");
  auto form = http::ParseFormRequest(req);
  if (!form.ok()) return OAuthError(400, "invalid_request", form.status().message());
  ClientCredentials creds;
  if (auto err = ExtractClientCredentials(req, *form, &creds)) return *err;
  // RFC 7009 lets a public client revoke its own tokens; introspection is for resource
  // servers, which are confidential.
  auto app = creds.public_client && action == "introspection"
                 ? Result<ClientApp>(UnauthenticatedError("public client"))
                 : AuthenticateFor(*directory_, creds, tenant);
  if (!app.ok()) {
    Audit(AuditEventType::kTokenRefused, tenant, "",
          fmt::format("{} by client '{}' refused: invalid_client", action, Quoted(creds.id)));
    return OAuthError(401, "invalid_client", "client authentication failed", creds.basic);
  }
  auto token_it = form->find("token");
  if (token_it == form->end()) return OAuthError(400, "invalid_request", "token is required");
  return ClientTokenRequest{tenant, std::move(app).value(), token_it->second};
}

http::Response IdentityService::Introspect(const http::Request& req) {
  auto read = ReadClientTokenRequest(req, "introspection");
  if (auto* error = std::get_if<http::Response>(&read)) return std::move(*error);
  const auto& [tenant, app, token] = std::get<ClientTokenRequest>(read);
  std::string why;
  auto verified = VerifyForClient(token, app, tenant, &why);
  if (!verified) return NoStoreJson(R"({"active":false})");
  const token::Claims& c = verified->claims;
  json::Writer w;
  w.BeginObject().Key("active").Bool(true);
  w.Key("iss").String(c.iss).Key("sub").String(c.sub);
  w.Key("aud").BeginArray();
  for (const auto& a : c.aud) w.String(a);
  w.EndArray();
  if (c.exp) w.Key("exp").Int(*c.exp);
  if (c.iat) w.Key("iat").Int(*c.iat);
  if (c.nbf) w.Key("nbf").Int(*c.nbf);
  w.Key("jti").String(c.jti).Key("tid").String(c.tid);
  w.Key("client_id").String(c.azp).Key("scope").String(c.scp);
  w.Key("token_type").String("Bearer").Key("kid").String(verified->kid);
  w.EndObject();
  return NoStoreJson(w.Take());
}

http::Response IdentityService::Revoke(const http::Request& req) {
  auto read = ReadClientTokenRequest(req, "revocation");
  if (auto* error = std::get_if<http::Response>(&read)) return std::move(*error);
  const auto& [tenant, app, token] = std::get<ClientTokenRequest>(read);
  std::string why;
  auto verified = VerifyForClient(token, app, tenant, &why);
  if (!verified) {
    // Not a valid access token of this client: perhaps one of its refresh tokens.
    auto jtis = grants_->RevokeFamilyOf(token, app.client_id, "revoked by the client (RFC 7009)");
    if (jtis.ok()) {
      RevokeJtis(*jtis, tenant, "its refresh token was revoked");
      Audit(AuditEventType::kTokenRevoked, tenant, "",
            fmt::format("refresh token family revoked by client '{}' with {} access tokens",
                        app.client_id, jtis->size()));
    } else if (jtis.status().code() != StatusCode::kNotFound) {
      Log(LogLevel::kError, "identity: revoking a refresh token: {}", jtis.status().message());
    }
    // RFC 7009 §2.2: an invalid token (unknown, expired, already revoked) is not an error.
    return http::JsonResponse(200, "{}");
  }
  const token::Claims& c = verified->claims;
  if (c.azp != app.client_id) {
    Audit(AuditEventType::kTokenRefused, tenant, verified->kid,
          fmt::format("revocation of jti '{}' by client '{}' refused: issued to another client",
                      c.jti, app.client_id));
    return OAuthError(400, "unauthorized_client", "the token was not issued to this client");
  }
  Status s = RecordRevoked(c.jti, c.exp.value_or(0));
  if (!s.ok()) {
    // Revoked in this process already; only the restart survival is lost.
    Log(LogLevel::kError, "identity: cannot persist revocation of jti '{}': {}", c.jti,
        s.message());
  }
  Audit(AuditEventType::kTokenRevoked, tenant, verified->kid,
        fmt::format("jti '{}' sub '{}' revoked by client '{}'", c.jti, c.sub, app.client_id));
  return http::JsonResponse(200, "{}");
}

// ---- authorization endpoint and login form ----

namespace {


http::Response HtmlResponse(int status, std::string body) {
  http::Response r;
  r.status = status;
  r.content_type = "text/html; charset=utf-8";
  r.body = std::move(body);
  r.SetHeader("Cache-Control", "no-store");
  r.SetHeader("Pragma", "no-cache");
  // No script, no framing (clickjacking of the login form), no external resources.
  r.SetHeader("Content-Security-Policy",
              "default-src 'none'; style-src 'unsafe-inline'; frame-ancestors 'none'");
  r.SetHeader("X-Frame-Options", "DENY");
  r.SetHeader("Referrer-Policy", "no-referrer");
  return r;
}

constexpr std::string_view kPageHead =
    "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>{}</title>"
    "<style>body{{font-family:sans-serif;max-width:24em;margin:4em auto}}"
    "label,input,button{{display:block;width:100%;margin:.4em 0}}.e{{color:#b00}}</style>"
    "</head><body>";

http::Response ErrorPage(int status, std::string_view message) {
  return HtmlResponse(status, fmt::format(kPageHead, "Sign-in error") +
                                  fmt::format("<h1>Sign-in error</h1><p class=\"e\">{}</p>"
                                              "</body></html>",
                                              HtmlEscape(message)));
}

// The authorization request parameters carried through the login form.
constexpr std::string_view kAuthorizeParams[] = {
    "response_type", "client_id", "redirect_uri", "scope", "state",
    "code_challenge", "code_challenge_method", "nonce", "resource"};

// 303 to `redirect_uri` with `params` added to its query (RFC 6749 §4.1.2).
http::Response RedirectWith(std::string_view redirect_uri,
                            const std::vector<std::pair<std::string, std::string>>& params) {
  std::string location(redirect_uri);
  char sep = location.find('?') == std::string::npos ? '?' : '&';
  for (const auto& [k, v] : params) {
    location += sep;
    location += k;
    location += '=';
    location += PercentEncode(v);
    sep = '&';
  }
  http::Response r;
  r.status = 303;
  r.SetHeader("Location", location);
  r.SetHeader("Cache-Control", "no-store");
  return r;
}

}  // namespace

http::Response IdentityService::Authorize(const http::Request& req) {
  const std::string tenant(req.PathParam("tenant"));
  auto t = directory_->GetTenant(tenant);
  if (!t.ok()) return ErrorPage(404, "Unknown tenant.");
  const std::string issuer = IssuerFor(tenant);
  if (issuer.empty()) return ErrorPage(503, "The service is starting; try again.");

  http::Params params;
  if (req.method == "POST") {
    auto form = http::ParseFormRequest(req);
    if (!form.ok()) return ErrorPage(400, form.status().message());
    params = std::move(*form);
  } else {
    params = req.query;
  }
  auto get = [&](std::string_view name) -> std::string {
    auto it = params.find(name);
    return it == params.end() ? std::string() : it->second;
  };
  const std::string client_id = get("client_id");
  const std::string redirect_uri = get("redirect_uri");
  const std::string state = get("state");
  // Until the client and its redirect URI are verified, errors go to the user, never to a URI.
  if (client_id.empty()) return ErrorPage(400, "The request has no client_id.");
  auto app = directory_->GetApp(client_id);
  if (!app.ok() || app->tenant_id != tenant) {
    return ErrorPage(400, "The application is not registered in this tenant.");
  }
  if (redirect_uri.empty() ||
      std::find(app->redirect_uris.begin(), app->redirect_uris.end(), redirect_uri) ==
          app->redirect_uris.end()) {
    Audit(AuditEventType::kTokenRefused, tenant, "",
          fmt::format("authorization for client '{}' refused: unregistered redirect_uri",
                      Quoted(client_id)));
    return ErrorPage(400, "The redirect_uri is not registered for this application.");
  }
  auto redirect_error = [&](std::string_view code, std::string_view description) {
    Audit(AuditEventType::kTokenRefused, tenant, "",
          fmt::format("authorization for client '{}' refused: {}: {}", Quoted(client_id), code,
                      description));
    std::vector<std::pair<std::string, std::string>> out{{"error", std::string(code)},
                                                         {"error_description",
                                                          std::string(description)}};
    if (!state.empty()) out.emplace_back("state", state);
    out.emplace_back("iss", issuer);
    return RedirectWith(redirect_uri, out);
  };
  if (get("response_type") != "code") {
    return redirect_error("unsupported_response_type", "only response_type=code is supported");
  }
  if (get("code_challenge_method") != "S256" || !ValidS256Challenge(get("code_challenge"))) {
    return redirect_error("invalid_request",
                          "PKCE is required: code_challenge (S256) and code_challenge_method=S256");
  }
  std::vector<std::string> scopes;
  if (auto it = params.find("scope"); it != params.end()) {
    auto requested = SplitScopes(it->second);
    if (!requested) return redirect_error("invalid_scope", "malformed scope parameter");
    for (const auto& one : *requested) {
      if (!IsOidcScope(one) &&
          std::find(app->scopes.begin(), app->scopes.end(), one) == app->scopes.end()) {
        return redirect_error("invalid_scope",
                              fmt::format("scope '{}' is not granted to this client", Quoted(one)));
      }
    }
    scopes = std::move(*requested);
  }
  // An access token with no API scope would open nothing: default to the app's scopes.
  if (std::none_of(scopes.begin(), scopes.end(), [](const auto& s) { return !IsOidcScope(s); })) {
    for (const auto& s : app->scopes) scopes.push_back(s);
  }
  if (app->audiences.empty()) {
    return redirect_error("unauthorized_client", "the client has no registered audience");
  }
  std::string audience = app->audiences.front();
  if (std::string resource = get("resource"); !resource.empty()) {
    if (std::find(app->audiences.begin(), app->audiences.end(), resource) ==
        app->audiences.end()) {
      return redirect_error("invalid_target", "the requested resource is not allowed");
    }
    audience = resource;
  }

  const std::string username = get("username");
  const std::string password = get("password");
  std::string error;
  if (req.method == "POST" && (params.count("username") || params.count("password"))) {
    if (username.empty() || password.empty()) {
      error = "Enter your user name and password.";
    } else {
      auto user = directory_->Authenticate(tenant, username, password);
      if (!user.ok()) {
        Audit(AuditEventType::kSignInFailed, tenant, "",
              fmt::format("user '{}' via client '{}' at the login form: invalid username or "
                          "password",
                          Quoted(username), Quoted(client_id)));
        error = "Invalid user name or password.";
      } else {
        Grant g{app->client_id, tenant,           user->id, user->username,
                JoinScopes(scopes), audience,     get("nonce"), options_.clock->NowSeconds()};
        auto code = grants_->IssueCode(g, redirect_uri, get("code_challenge"));
        if (!code.ok()) {
          Log(LogLevel::kError, "identity: authorize: {} (request {})", code.status().message(),
              req.request_id);
          return redirect_error("server_error", "the authorization code could not be issued");
        }
        Audit(AuditEventType::kTokenIssued, tenant, "",
              fmt::format("authorization code for user '{}' to client '{}' scope '{}'",
                          Quoted(user->username), Quoted(client_id), Quoted(g.scope)));
        std::vector<std::pair<std::string, std::string>> out{{"code", *code}};
        if (!state.empty()) out.emplace_back("state", state);
        out.emplace_back("iss", issuer);
        return RedirectWith(redirect_uri, out);
      }
    }
  }
  std::string page = fmt::format(kPageHead, "Sign in");
  page += fmt::format("<h1>Sign in</h1><p>{} wants to access your mailbox.</p>",
                      HtmlEscape(app->name));
  if (!error.empty()) page += fmt::format("<p class=\"e\" role=\"alert\">{}</p>", HtmlEscape(error));
  page += fmt::format("<form method=\"post\" action=\"{}/authorize\">", HtmlEscape(issuer));
  for (std::string_view name : kAuthorizeParams) {
    auto it = params.find(name);
    if (it == params.end()) continue;
    page += fmt::format("<input type=\"hidden\" name=\"{}\" value=\"{}\">", name,
                        HtmlEscape(it->second));
  }
  page += fmt::format(
      "<label for=\"username\">User name</label>"
      "<input id=\"username\" name=\"username\" autocomplete=\"username\" value=\"{}\" required>"
      "<label for=\"password\">Password</label>"
      "<input id=\"password\" name=\"password\" type=\"password\" "
      "autocomplete=\"current-password\" required>"
      "<button type=\"submit\">Sign in</button></form></body></html>",
      HtmlEscape(username));
  return HtmlResponse(error.empty() ? 200 : 401, std::move(page));
}

// ---- admin API ----

bool IdentityService::AdminAuthorized(const http::Request& req) const {
  if (admin_token_sha256_.empty() || req.headers.count("Authorization") != 1) return false;
  std::string_view value = *req.Header("Authorization");
  constexpr std::string_view kBearer = "Bearer ";
  if (value.substr(0, kBearer.size()) != kBearer) return false;
  std::string given = crypto::Sha256(value.substr(kBearer.size()));
  return given.size() == admin_token_sha256_.size() &&
         CRYPTO_memcmp(given.data(), admin_token_sha256_.data(), given.size()) == 0;
}

http::Response IdentityService::AdminListKeys(const http::Request& req) {
  auto keys = key_store_->LoadAll();
  if (!keys.ok()) {
    Log(LogLevel::kError, "identity: admin: {} (request {})", keys.status().message(),
        req.request_id);
    return http::ErrorResponse(500, "server_error", "internal error");
  }
  return http::JsonResponse(200, KeyRecordsJson(*keys, options_.clock->NowSeconds()));
}

http::Response IdentityService::AdminRotate(const http::Request& req) {
  auto form = http::ParseFormRequest(req);
  if (!form.ok()) return http::ErrorResponse(400, "invalid_request", form.status().message());
  auto reason = form->find("reason");
  auto immediate = form->find("immediate");
  if (reason == form->end() || reason->second.empty()) {
    return http::ErrorResponse(400, "invalid_request", "a reason is required");
  }
  if (immediate != form->end() && immediate->second != "true" && immediate->second != "false") {
    return http::ErrorResponse(400, "invalid_request", "immediate must be true or false");
  }
  auto ring = Ring(req.PathParam("tenant"));
  if (!ring.ok()) {
    return ring.status().code() == StatusCode::kNotFound
               ? http::ErrorResponse(404, "not_found", "unknown tenant")
               : http::ErrorResponse(503, "temporarily_unavailable", "starting up");
  }
  auto kid = (*ring)->Rotate(immediate != form->end() && immediate->second == "true",
                             "admin API: " + reason->second);
  if (!kid.ok()) {
    Log(LogLevel::kError, "identity: admin rotate: {} (request {})", kid.status().message(),
        req.request_id);
    return http::ErrorResponse(500, "server_error", "the rotation failed");
  }
  json::Writer w;
  w.BeginObject().Key("kid").String(*kid).Key("issuer").String((*ring)->issuer().issuer).EndObject();
  return http::JsonResponse(200, w.Take());
}

http::Response IdentityService::AdminRevoke(const http::Request& req) {
  auto form = http::ParseFormRequest(req);
  if (!form.ok()) return http::ErrorResponse(400, "invalid_request", form.status().message());
  auto reason = form->find("reason");
  if (reason == form->end() || reason->second.empty()) {
    return http::ErrorResponse(400, "invalid_request", "a reason is required");
  }
  const std::string kid(req.PathParam("kid"));
  auto rec = key_store_->LoadKid(kid);
  if (!rec.ok()) return http::ErrorResponse(404, "not_found", "unknown key");
  auto ring = Ring(rec->issuer.kind == token::IssuerKind::kConsumer ? kConsumerTenantId
                                                                     : rec->issuer.tenant_id);
  if (!ring.ok() || !((*ring)->issuer() == rec->issuer)) {
    // A key of an issuer URL this service no longer serves (another base URL): revoke it in the
    // store so that no later service trusts it.
    rec->state = SigningKeyState::kRevoked;
    rec->revoked_at = options_.clock->NowSeconds();
    rec->revoked_reason = "admin API: " + reason->second;
    Status s = key_store_->Update(*rec);
    if (!s.ok()) return http::ErrorResponse(500, "server_error", "the revocation failed");
    return http::JsonResponse(200, "{\"revoked\":true}");
  }
  Status s = (*ring)->Revoke(kid, "admin API: " + reason->second);
  if (!s.ok()) {
    Log(LogLevel::kError, "identity: admin revoke: {} (request {})", s.message(), req.request_id);
    return http::ErrorResponse(500, "server_error", "the revocation failed");
  }
  return http::JsonResponse(200, "{\"revoked\":true}");
}


Result<http::Router> IdentityService::BuildRouter() {
  http::Router router;
  auto route = [&](std::string_view method, std::string_view suffix,
                   http::Response (IdentityService::*fn)(const http::Request&)) {
    return router.Add(method, fmt::format("{}{}", kPathPrefix, suffix),
                      [this, fn](const http::Request& r) {
                        tl_request = &r;
                        http::Response resp = (this->*fn)(r);
                        tl_request = nullptr;
                        return resp;
                      });
  };
  KW_RETURN_IF_ERROR(route("GET", "/.well-known/openid-configuration", &IdentityService::Discovery));
  KW_RETURN_IF_ERROR(route("GET", "/keys", &IdentityService::Keys));
  KW_RETURN_IF_ERROR(route("POST", "/token", &IdentityService::Token));
  KW_RETURN_IF_ERROR(route("POST", "/introspect", &IdentityService::Introspect));
  KW_RETURN_IF_ERROR(route("POST", "/revoke", &IdentityService::Revoke));
  KW_RETURN_IF_ERROR(route("GET", "/authorize", &IdentityService::Authorize));
  KW_RETURN_IF_ERROR(route("POST", "/authorize", &IdentityService::Authorize));
  if (!admin_token_sha256_.empty()) {
    auto admin = [&](std::string_view method, std::string_view path,
                     http::Response (IdentityService::*fn)(const http::Request&)) {
      return router.Add(method, path, [this, fn](const http::Request& r) {
        if (!AdminAuthorized(r)) {
          http::Response resp =
              http::ErrorResponse(401, "unauthorized", "the admin API needs the admin bearer token");
          resp.SetHeader("WWW-Authenticate", "Bearer realm=\"keyward-admin\"");
          return resp;
        }
        return (this->*fn)(r);
      });
    };
    KW_RETURN_IF_ERROR(admin("GET", "/admin/keys", &IdentityService::AdminListKeys));
    KW_RETURN_IF_ERROR(
        admin("POST", "/admin/tenants/{tenant}/keys/rotate", &IdentityService::AdminRotate));
    KW_RETURN_IF_ERROR(admin("POST", "/admin/keys/{kid}/revoke", &IdentityService::AdminRevoke));
  }
  return router;
}

}  // namespace kw::identity
