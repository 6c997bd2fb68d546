#include "identity/service.h"

#include <sys/stat.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <optional>
#include <set>
#include <vector>

#include <fmt/format.h>

#include "core/base64url.h"
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
};

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
  if (body_id == form.end() || body_secret == form.end()) {
    return OAuthError(401, "invalid_client", "client authentication is required", true);
  }
  out->id = body_id->second;
  out->secret = body_secret->second;
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
  KW_ASSIGN_OR_RETURN(auto keys, SqliteKeyStore::OpenFile(dir + "/keys.db"));
  s->key_store_ = std::move(keys);
  KW_ASSIGN_OR_RETURN(auto audit, FileAuditSink::Open(dir + "/identity-audit.jsonl"));
  s->audit_ = std::move(audit);
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
    base_url_ = std::move(base_url);
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
  auto del = revocation_db_->Prepare("DELETE FROM revoked_tokens WHERE exp < ?");
  if (!del.ok()) return first.ok() ? del.status() : first;
  Status s = del->Bind(1, horizon).Run();
  return first.ok() ? s : first;
}

void IdentityService::TickLoop() {
  std::unique_lock lock(tick_mu_);
  while (!tick_cv_.wait_for(lock, std::chrono::seconds(options_.tick_interval_seconds),
                            [this] { return stopping_; })) {
    lock.unlock();
    Status s = Tick();
    if (!s.ok()) Log(LogLevel::kError, "identity: periodic key ring tick failed: {}", s.message());
    lock.lock();
  }
}

// ---- helpers ----

void IdentityService::Audit(AuditEventType type, std::string_view tenant_id, std::string_view kid,
                            std::string detail) {
  AuditEvent e;
  e.time = options_.clock->NowSeconds();
  e.type = type;
  e.issuer = IssuerFor(tenant_id);
  e.issuer_kind = tenant_id == kConsumerTenantId ? token::IssuerKind::kConsumer
                                                 : token::IssuerKind::kEnterprise;
  e.tenant_id = std::string(tenant_id);
  e.kid = std::string(kid);
  e.detail = std::move(detail);
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
      .Key("jwks_uri").String(issuer + "/keys")
      .Key("token_endpoint").String(issuer + "/token")
      .Key("introspection_endpoint").String(issuer + "/introspect")
      .Key("revocation_endpoint").String(issuer + "/revoke");
  w.Key("grant_types_supported").BeginArray().String("client_credentials");
  if (options_.enable_password_grant) w.String("password");
  w.EndArray();
  for (std::string_view key : {"token_endpoint_auth_methods_supported",
                               "introspection_endpoint_auth_methods_supported",
                               "revocation_endpoint_auth_methods_supported"}) {
    w.Key(key).BeginArray().String("client_secret_basic").String("client_secret_post").EndArray();
  }
  w.Key("id_token_signing_alg_values_supported").BeginArray()
      .String(crypto::AlgorithmName(options_.ring_policy.algorithm)).EndArray();
  w.Key("subject_types_supported").BeginArray().String("public").EndArray();
  w.Key("claims_supported").BeginArray();
  for (std::string_view c : {"iss", "sub", "aud", "exp", "iat", "nbf", "jti", "tid", "azp", "scp"}) {
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
  auto app = directory_->AuthenticateClient(creds.id, creds.secret);
  if (!app.ok() || app->tenant_id != tenant) {
    // One answer for an unknown client, a wrong secret and another tenant's client.
    return refuse(401, "invalid_client", "client authentication failed", creds.basic);
  }

  auto grant_it = form->find("grant_type");
  if (grant_it == form->end()) return refuse(400, "invalid_request", "grant_type is required");
  const std::string& grant = grant_it->second;
  std::string subject = app->client_id;
  std::string username;
  if (grant == "password" && options_.enable_password_grant) {
    auto u = form->find("username");
    auto p = form->find("password");
    if (u == form->end() || p == form->end()) {
      return refuse(400, "invalid_request", "username and password are required");
    }
    auto user = directory_->Authenticate(tenant, u->second, p->second);
    if (!user.ok()) {
      Audit(AuditEventType::kSignInFailed, tenant, "",
            fmt::format("user '{}' via client '{}': invalid username or password",
                        Quoted(u->second), client_label));
      return refuse(400, "invalid_grant", "invalid username or password");
    }
    subject = user->id;
    username = user->username;
  } else if (grant != "client_credentials") {
    return refuse(400, "unsupported_grant_type", "the grant type is not supported");
  }

  std::vector<std::string> scopes = app->scopes;
  if (auto s = form->find("scope"); s != form->end()) {
    auto requested = SplitScopes(s->second);
    if (!requested) return refuse(400, "invalid_scope", "malformed scope parameter");
    for (const auto& one : *requested) {
      if (std::find(app->scopes.begin(), app->scopes.end(), one) == app->scopes.end()) {
        return refuse(400, "invalid_scope",
                      fmt::format("scope '{}' is not granted to this client", Quoted(one)));
      }
    }
    scopes = std::move(*requested);
  }
  auto resource = form->find("resource");
  auto audience_param = form->find("audience");
  if (resource != form->end() && audience_param != form->end()) {
    return refuse(400, "invalid_request", "give resource or audience, not both");
  }
  if (audience_param != form->end()) resource = audience_param;
  if (app->audiences.empty()) {
    return refuse(400, "unauthorized_client", "the client has no registered audience");
  }
  std::string audience = app->audiences.front();
  if (resource != form->end()) {
    if (std::find(app->audiences.begin(), app->audiences.end(), resource->second) ==
        app->audiences.end()) {
      return refuse(400, "invalid_target", "the requested audience is not allowed for this client");
    }
    audience = resource->second;
  }

  auto signing = (*ring)->SigningKey();
  if (!signing.ok()) {
    Log(LogLevel::kError, "identity: token: no signing key for {}: {} (request {})",
        (*ring)->issuer().Describe(), signing.status().message(), req.request_id);
    return refuse(500, "server_error", "no signing key is available");
  }
  const int64_t now = options_.clock->NowSeconds();
  const int64_t exp = std::min(now + options_.access_token_lifetime_seconds, signing->latest_exp);
  const std::string jti = Base64UrlEncode(crypto::RandomBytes(16));
  const std::string scp = JoinScopes(scopes);
  json::Writer w;
  w.BeginObject()
      .Key("iss").String((*ring)->issuer().issuer)
      .Key("sub").String(subject)
      .Key("aud").String(audience)
      .Key("exp").Int(exp)
      .Key("iat").Int(now)
      .Key("nbf").Int(now)
      .Key("jti").String(jti)
      .Key("tid").String(tenant)
      .Key("azp").String(app->client_id)
      .Key("scp").String(scp);
  if (!username.empty()) w.Key("preferred_username").String(username);
  w.EndObject();
  auto token_text = (*ring)->SignJwt(w.str());
  if (!token_text.ok()) {
    Log(LogLevel::kError, "identity: token: signing failed for {}: {} (request {})",
        (*ring)->issuer().Describe(), token_text.status().message(), req.request_id);
    return refuse(500, "server_error", "the token could not be signed");
  }
  std::string kid;
  {
    token::ParsedJws jws;
    std::string ignored;
    if (token::ParseCompactJws(*token_text, {}, &jws, &ignored) == token::Reason::kOk) kid = jws.kid;
  }
  Audit(AuditEventType::kTokenIssued, tenant, kid,
        fmt::format("client '{}' grant '{}' sub '{}' jti '{}' aud '{}' scope '{}' exp {}",
                    client_label, grant, subject, jti, Quoted(audience), Quoted(scp), exp));
  json::Writer out;
  out.BeginObject()
      .Key("access_token").String(*token_text)
      .Key("token_type").String("Bearer")
      .Key("expires_in").Int(exp - now)
      .Key("scope").String(scp)
      .EndObject();
  return NoStoreJson(out.Take());
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
  auto app = directory_->AuthenticateClient(creds.id, creds.secret);
  if (!app.ok() || app->tenant_id != tenant) {
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
  // RFC 7009 §2.2: an invalid token (unknown, expired, already revoked) is not an error.
  if (!verified) return http::JsonResponse(200, "{}");
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

Result<http::Router> IdentityService::BuildRouter() {
  http::Router router;
  auto route = [&](std::string_view method, std::string_view suffix,
                   http::Response (IdentityService::*fn)(const http::Request&)) {
    return router.Add(method, fmt::format("{}{}", kPathPrefix, suffix),
                      [this, fn](const http::Request& r) { return (this->*fn)(r); });
  };
  KW_RETURN_IF_ERROR(route("GET", "/.well-known/openid-configuration", &IdentityService::Discovery));
  KW_RETURN_IF_ERROR(route("GET", "/keys", &IdentityService::Keys));
  KW_RETURN_IF_ERROR(route("POST", "/token", &IdentityService::Token));
  KW_RETURN_IF_ERROR(route("POST", "/introspect", &IdentityService::Introspect));
  KW_RETURN_IF_ERROR(route("POST", "/revoke", &IdentityService::Revoke));
  return router;
}

}  // namespace kw::identity
