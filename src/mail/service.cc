#include "mail/service.h"

#include <sys/stat.h>

#include <fmt/format.h>

#include "core/base64url.h"
#include "core/log.h"
#include "crypto/crypto.h"
#include "http/message.h"
#include "token/reason.h"

namespace kw::mail {
namespace {

http::Response Unauthorized(std::string_view description) {
  http::Response r = http::ErrorResponse(401, "invalid_token", description);
  r.SetHeader("WWW-Authenticate",
              fmt::format("Bearer realm=\"keyward-mail\", error=\"invalid_token\", error_description=\"{}\"",
                          description));
  return r;
}

http::Response AuditUnavailable() {
  return http::ErrorResponse(503, "audit_unavailable",
                             "the access could not be recorded in the audit log");
}

bool HasScope(std::string_view scp, std::string_view want) {
  size_t i = 0;
  while (i < scp.size()) {
    size_t sp = scp.find(' ', i);
    std::string_view s = scp.substr(i, sp == std::string_view::npos ? std::string_view::npos : sp - i);
    if (s == want) return true;
    if (sp == std::string_view::npos) break;
    i = sp + 1;
  }
  return false;
}

// A MIME type token for Content-Type of a download ("type" query parameter).
bool SafeMediaType(std::string_view t) {
  if (t.empty() || t.size() > 127) return false;
  size_t slash = t.find('/');
  if (slash == std::string_view::npos || slash == 0 || slash + 1 == t.size()) return false;
  for (char c : t) {
    if (!(std::isalnum(static_cast<unsigned char>(c)) || c == '/' || c == '.' || c == '+' || c == '-' ||
          c == '_')) {
      return false;
    }
  }
  return true;
}

std::string SafeFileName(std::string_view name) {
  std::string out;
  for (unsigned char c : name) {
    if (c < 0x20 || c == '"' || c == '\\' || c == 0x7f) out.push_back('_');
    else out.push_back(static_cast<char>(c));
  }
  return SanitizeUtf8(out);
}

}  // namespace

MailService::MailService(MailServiceOptions options) : options_(std::move(options)) {}
MailService::~MailService() = default;

Result<std::unique_ptr<MailService>> MailService::Open(MailServiceOptions options) {
  if (options.data_dir.empty()) return InvalidArgumentError("mail service: data_dir is required");
  if (!options.trust_store) return InvalidArgumentError("mail service: trust_store is required");
  if (options.issuers.empty()) return InvalidArgumentError("mail service: issuers are required");
  if (options.audience.empty()) return InvalidArgumentError("mail service: audience is required");
  if (!options.audit) return InvalidArgumentError("mail service: an audit writer is required");
  if (!options.clock) return InvalidArgumentError("mail service: clock is required");
  if (::mkdir(options.data_dir.c_str(), 0700) != 0 && errno != EEXIST) {
    return UnavailableError(fmt::format("mail service: cannot create {}", options.data_dir));
  }
  std::unique_ptr<MailService> s(new MailService(std::move(options)));
  StoreOptions so;
  so.path = s->options_.data_dir + "/mail.db";
  so.clock = s->options_.clock;
  so.parse_limits.max_bytes = static_cast<size_t>(s->options_.limits.max_size_upload);
  KW_ASSIGN_OR_RETURN(s->store_, Store::Open(so));
  s->push_ = std::make_unique<PushHub>(s->store_.get());
  s->limiter_ = std::make_unique<RateLimiter>(s->options_.rate_per_second, s->options_.rate_burst,
                                              s->options_.clock);
  s->processor_ = std::make_unique<Processor>(s->store_.get(), s->options_.audit, s->options_.limits,
                                              s->options_.clock, s->limiter_.get());
  token::VerifierPolicy policy;
  policy.issuers = s->options_.issuers;
  policy.audiences = {s->options_.audience};
  policy.cache = s->options_.token_cache;
  s->verifier_ = std::make_unique<token::Verifier>(s->options_.trust_store, policy, s->options_.clock);
  if (!s->options_.base_url.empty()) {
    std::string b = s->options_.base_url;
    while (!b.empty() && b.back() == '/') b.pop_back();
    s->base_url_ = b;
  }
  return s;
}

Status MailService::SetBaseUrl(std::string base_url) {
  while (!base_url.empty() && base_url.back() == '/') base_url.pop_back();
  if (base_url.empty()) return InvalidArgumentError("empty base URL");
  std::lock_guard lock(mu_);
  if (!base_url_.empty()) return FailedPreconditionError("base URL already set");
  base_url_ = std::move(base_url);
  return Status::Ok();
}

std::string MailService::base_url() const {
  std::lock_guard lock(mu_);
  return base_url_;
}

std::variant<http::Response, MailService::Caller> MailService::Authenticate(
    const http::Request& req, std::string_view resource) {
  audit::AuditRecord base;
  base.client_ip = req.ClientIp();
  if (auto ua = req.Header("User-Agent")) base.user_agent = SanitizeUtf8(ua->substr(0, 512));
  base.resource = std::string(resource);

  auto reject = [&](std::string_view reason, std::string_view description,
                    const token::VerifyResult* vr) -> http::Response {
    audit::AuditRecord r = base;
    r.operation = "TokenRejected";
    r.result = "Failed";
    r.reason = std::string(reason);
    Value detail = Value::MakeObject();
    detail.Add("description", std::string(description));
    if (vr) {
      r.tenant_id = SanitizeUtf8(vr->tid);
      r.token_tenant_id = SanitizeUtf8(vr->tid);
      r.token_issuer = SanitizeUtf8(vr->iss);
      r.token_kid = SanitizeUtf8(vr->kid);
      detail.Add("kid", SanitizeUtf8(vr->kid));
      detail.Add("alg", SanitizeUtf8(vr->alg));
      detail.Add("iss", SanitizeUtf8(vr->iss));
      detail.Add("tid", SanitizeUtf8(vr->tid));
      if (!vr->claims_json.empty()) {
        auto claims = ParseJson(vr->claims_json, 64 * 1024);
        if (claims.ok() && claims->is_object()) {
          if (const Value* v = claims->Find("sub"); v && v->is_string()) r.user_id = v->as_string();
          if (const Value* v = claims->Find("preferred_username"); v && v->is_string()) r.user_upn = v->as_string();
          if (const Value* v = claims->Find("azp"); v && v->is_string()) r.client_app_id = v->as_string();
          if (const Value* v = claims->Find("jti"); v && v->is_string()) r.token_id = v->as_string();
          if (const Value* v = claims->Find("iat"); v && v->is_int()) r.token_issued_at = v->as_int();
          detail.Add("claims", std::move(*claims));
        } else {
          detail.Add("claims", SanitizeUtf8(vr->claims_json.substr(0, 4096)));
        }
      }
    }
    r.detail = detail.Serialize();
    if (!processor_->Audit(std::move(r)).ok()) return AuditUnavailable();
    return Unauthorized(description);
  };

  if (req.headers.count("Authorization") != 1) {
    return reject("missing_token", req.headers.count("Authorization") == 0
                                       ? "an Authorization: Bearer token is required"
                                       : "more than one Authorization header",
                  nullptr);
  }
  std::string_view value = *req.Header("Authorization");
  if (value.size() < 7 || (value.substr(0, 7) != "Bearer " && value.substr(0, 7) != "bearer ")) {
    return reject("missing_token", "the Authorization scheme must be Bearer", nullptr);
  }
  std::string_view tok = value.substr(7);
  token::VerifyResult vr = options_.verify_override ? options_.verify_override(tok) : verifier_->Verify(tok);
  if (!vr.ok()) {
    return reject(token::ReasonCode(vr.reason), token::ReasonDescription(vr.reason), &vr);
  }
  const token::Claims& c = vr.token->claims;
  Caller caller;
  caller.who.tenant_id = c.tid;
  caller.who.user_id = c.sub;
  caller.who.client_app_id = c.azp;
  caller.who.app_only = !c.sub.empty() && c.sub == c.azp;
  caller.who.scope_read = HasScope(c.scp, "Mail.Read") || HasScope(c.scp, "Mail.ReadWrite");
  caller.who.scope_write = HasScope(c.scp, "Mail.ReadWrite");
  caller.who.scope_send = HasScope(c.scp, "Mail.Send");
  // preferred_username is not among the parsed claims; read it from the claims JSON (small).
  if (c.json.find("preferred_username") != std::string::npos) {
    auto claims = ParseJson(c.json, 64 * 1024);
    if (claims.ok()) {
      if (const Value* v = claims->Find("preferred_username"); v && v->is_string()) {
        caller.who.user_name = v->as_string();
      }
    }
  }
  base.user_id = caller.who.app_only ? "" : c.sub;
  base.user_upn = caller.who.user_name;
  base.client_app_id = c.azp;
  base.token_id = c.jti;
  base.session_id = HexEncode(crypto::Sha256(c.jti.empty() ? std::string(tok) : c.jti)).substr(0, 32);
  base.token_kid = vr.token->kid;
  base.token_issuer = c.iss;
  base.token_tenant_id = c.tid;
  base.token_issued_at = c.iat.value_or(0);
  if (caller.who.app_only) {
    Value d = Value::MakeObject();
    d.Add("appOnly", true);
    d.Add("scp", c.scp);
    base.detail = d.Serialize();
  }
  caller.base = std::move(base);
  return caller;
}

http::Response MailService::Session(const http::Request& req) {
  std::string base = base_url();
  if (base.empty()) return http::ErrorResponse(503, "temporarily_unavailable", "no base URL yet");
  auto auth = Authenticate(req, "jmap:session");
  if (auto* r = std::get_if<http::Response>(&auth)) return std::move(*r);
  Caller& caller = std::get<Caller>(auth);
  const Principal& who = caller.who;
  if (options_.auto_provision && !who.app_only && !who.tenant_id.empty() && !who.user_id.empty()) {
    std::string name = who.user_name.empty() ? who.user_id : who.user_name;
    std::string email = name.find('@') != std::string::npos ? name : fmt::format("{}@{}", name, who.tenant_id);
    auto a = store_->EnsureAccount(who.tenant_id, who.user_id, name, email);
    if (!a.ok()) return http::ErrorResponse(500, "server_error", "the account could not be opened");
  }
  auto accounts = processor_->AccountsFor(who);
  if (!accounts.ok()) return http::ErrorResponse(500, "server_error", "the accounts could not be read");

  audit::AuditRecord rec = caller.base;
  rec.operation = "MailboxLogin";
  rec.result = "Succeeded";
  rec.tenant_id = who.tenant_id;
  if (!who.app_only && !accounts->empty()) {
    rec.mailbox_id = accounts->front().id;
    rec.mailbox_owner = accounts->front().name;
  }
  if (!processor_->Audit(std::move(rec)).ok()) return AuditUnavailable();

  const JmapLimits& l = options_.limits;
  Value caps = Value::MakeObject();
  Value core = Value::MakeObject();
  core.Add("maxSizeUpload", l.max_size_upload);
  core.Add("maxConcurrentUpload", l.max_concurrent_upload);
  core.Add("maxSizeRequest", l.max_size_request);
  core.Add("maxConcurrentRequests", l.max_concurrent_requests);
  core.Add("maxCallsInRequest", l.max_calls_in_request);
  core.Add("maxObjectsInGet", l.max_objects_in_get);
  core.Add("maxObjectsInSet", l.max_objects_in_set);
  Value coll = Value::MakeArray();
  coll.Push("i;ascii-casemap");
  coll.Push("i;unicode-casemap");
  core.Add("collationAlgorithms", std::move(coll));
  caps.Add(std::string(kCapCore), std::move(core));
  caps.Add(std::string(kCapMail), Value::MakeObject());
  caps.Add(std::string(kCapSubmission), Value::MakeObject());

  Value accts = Value::MakeObject();
  for (const auto& a : *accounts) {
    Value v = Value::MakeObject();
    v.Add("name", a.email);
    v.Add("isPersonal", !who.app_only);
    v.Add("isReadOnly", who.app_only && !who.scope_write);
    Value ac = Value::MakeObject();
    Value mail = Value::MakeObject();
    mail.Add("maxMailboxesPerEmail", Value());
    mail.Add("maxMailboxDepth", 10);
    mail.Add("maxSizeMailboxName", 255);
    mail.Add("maxSizeAttachmentsPerEmail", l.max_size_upload);
    Value sorts = Value::MakeArray();
    for (const char* s : {"receivedAt", "sentAt", "size", "from", "to", "subject"}) sorts.Push(s);
    mail.Add("emailQuerySortOptions", std::move(sorts));
    mail.Add("mayCreateTopLevelMailbox", !who.app_only || who.scope_write);
    ac.Add(std::string(kCapMail), std::move(mail));
    Value sub = Value::MakeObject();
    sub.Add("maxDelayedSend", 0);
    sub.Add("submissionExtensions", Value::MakeObject());
    ac.Add(std::string(kCapSubmission), std::move(sub));
    v.Add("accountCapabilities", std::move(ac));
    accts.Add(a.id, std::move(v));
  }
  Value primary = Value::MakeObject();
  if (!who.app_only && !accounts->empty()) {
    primary.Add(std::string(kCapMail), accounts->front().id);
    primary.Add(std::string(kCapSubmission), accounts->front().id);
  }
  Value session = Value::MakeObject();
  session.Add("capabilities", std::move(caps));
  session.Add("accounts", std::move(accts));
  session.Add("primaryAccounts", std::move(primary));
  session.Add("username", who.user_name.empty() ? who.user_id : who.user_name);
  session.Add("apiUrl", base + "/jmap/api");
  session.Add("downloadUrl", base + "/jmap/download/{accountId}/{blobId}/{name}?type={type}");
  session.Add("uploadUrl", base + "/jmap/upload/{accountId}");
  session.Add("eventSourceUrl", base + "/jmap/eventsource?types={types}&closeafter={closeafter}&ping={ping}");
  session.Add("state", processor_->SessionState(who));
  http::Response r = http::JsonResponse(200, session.Serialize());
  r.SetHeader("Cache-Control", "no-cache, no-store, must-revalidate");
  return r;
}

http::Response MailService::Api(const http::Request& req) {
  if (base_url().empty()) return http::ErrorResponse(503, "temporarily_unavailable", "no base URL yet");
  auto auth = Authenticate(req, "jmap:api");
  if (auto* r = std::get_if<http::Response>(&auth)) return std::move(*r);
  Caller& caller = std::get<Caller>(auth);
  int64_t now = options_.clock->NowMillis();
  int64_t last = last_prune_ms_.load();
  if (now - last > 3'600'000 && last_prune_ms_.compare_exchange_strong(last, now)) {
    auto pruned = store_->Prune();
    if (!pruned.ok()) Log(LogLevel::kWarning, "mail: change log prune failed: {}", pruned.status().ToString());
  }
  JmapResponse jr = processor_->Process(caller.who, caller.base, req.body);
  http::Response r;
  r.status = jr.status;
  r.content_type = jr.content_type;
  r.body = std::move(jr.body);
  if (jr.retry_after > 0) r.SetHeader("Retry-After", std::to_string(jr.retry_after));
  r.SetHeader("Cache-Control", "no-cache, no-store, must-revalidate");
  return r;
}

http::Response MailService::Upload(const http::Request& req) {
  if (base_url().empty()) return http::ErrorResponse(503, "temporarily_unavailable", "no base URL yet");
  auto auth = Authenticate(req, "jmap:upload");
  if (auto* r = std::get_if<http::Response>(&auth)) return std::move(*r);
  Caller& caller = std::get<Caller>(auth);
  std::string account_id(req.PathParam("accountId"));
  auto account = processor_->Authorize(caller.who, account_id, Access::kWrite);
  audit::AuditRecord rec = caller.base;
  rec.operation = "Create";
  rec.resource = "jmap:upload";
  rec.mailbox_id = account_id;
  rec.tenant_id = caller.who.tenant_id;
  if (!account.ok()) {
    rec.result = "Failed";
    bool forbidden = account.status().code() == StatusCode::kPermissionDenied;
    rec.reason = forbidden ? "forbidden" : "accountNotFound";
    if (!processor_->Audit(std::move(rec)).ok()) return AuditUnavailable();
    return forbidden ? http::ErrorResponse(403, "forbidden", account.status().message())
                     : http::ErrorResponse(404, "not_found", "no such account");
  }
  int64_t retry = 0;
  if (!limiter_->Allow(account_id, &retry)) {
    http::Response r = http::ErrorResponse(429, "rate_limited", "the mailbox's request rate is exceeded");
    r.SetHeader("Retry-After", std::to_string(retry));
    return r;
  }
  if (static_cast<int64_t>(req.body.size()) > options_.limits.max_size_upload) {
    return http::ErrorResponse(413, "request_too_large", "the upload is larger than maxSizeUpload");
  }
  std::string type = "application/octet-stream";
  if (auto ct = req.Header("Content-Type")) {
    std::string_view t = *ct;
    t = t.substr(0, t.find(';'));
    if (SafeMediaType(t)) type = std::string(t);
  }
  rec.tenant_id = account->tenant_id;
  rec.mailbox_owner = account->name;
  rec.result = "Succeeded";
  std::string blob_id;
  Status s = store_->Write([&](Txn& t) -> Status {
    KW_ASSIGN_OR_RETURN(blob_id, t.PutBlob(account->id, req.body));
    rec.items.push_back(audit::AuditItem{blob_id, "", ""});
    return processor_->Audit(std::move(rec));
  });
  if (!s.ok()) {
    if (s.code() == StatusCode::kUnavailable) return AuditUnavailable();
    return http::ErrorResponse(500, "server_error", "the blob could not be stored");
  }
  Value v = Value::MakeObject();
  v.Add("accountId", account->id);
  v.Add("blobId", blob_id);
  v.Add("type", type);
  v.Add("size", static_cast<int64_t>(req.body.size()));
  return http::JsonResponse(201, v.Serialize());
}

http::Response MailService::Download(const http::Request& req) {
  if (base_url().empty()) return http::ErrorResponse(503, "temporarily_unavailable", "no base URL yet");
  auto auth = Authenticate(req, "jmap:download");
  if (auto* r = std::get_if<http::Response>(&auth)) return std::move(*r);
  Caller& caller = std::get<Caller>(auth);
  std::string account_id(req.PathParam("accountId"));
  std::string blob_id(req.PathParam("blobId"));
  auto account = processor_->Authorize(caller.who, account_id, Access::kRead);
  audit::AuditRecord rec = caller.base;
  rec.operation = "MailItemsAccessed";
  rec.access_type = "Bind";
  rec.resource = "jmap:download";
  rec.mailbox_id = account_id;
  rec.tenant_id = caller.who.tenant_id;
  if (!account.ok()) {
    rec.result = "Failed";
    bool forbidden = account.status().code() == StatusCode::kPermissionDenied;
    rec.reason = forbidden ? "forbidden" : "accountNotFound";
    if (!processor_->Audit(std::move(rec)).ok()) return AuditUnavailable();
    return forbidden ? http::ErrorResponse(403, "forbidden", account.status().message())
                     : http::ErrorResponse(404, "not_found", "no such account");
  }
  int64_t retry = 0;
  if (!limiter_->Allow(account_id, &retry)) {
    http::Response r = http::ErrorResponse(429, "rate_limited", "the mailbox's request rate is exceeded");
    r.SetHeader("Retry-After", std::to_string(retry));
    return r;
  }
  rec.tenant_id = account->tenant_id;
  rec.mailbox_owner = account->name;
  std::string data;
  bool found = false;
  Status s = store_->Read([&](Txn& t) -> Status {
    auto d = t.GetBlob(account->id, blob_id);
    if (!d.ok()) {
      if (d.status().code() != StatusCode::kNotFound) return d.status();
      rec.result = "Failed";
      rec.reason = "blobNotFound";
      rec.items.push_back(audit::AuditItem{blob_id, "", ""});
      return processor_->Audit(std::move(rec));
    }
    found = true;
    data = std::move(*d);
    KW_ASSIGN_OR_RETURN(auto refs, t.EmailsWithBlob(account->id, blob_id));
    KW_ASSIGN_OR_RETURN(auto paths, t.MailboxPaths(account->id));
    for (const auto& e : refs) {
      rec.items.push_back(audit::AuditItem{e.id, e.message_id.empty() ? "" : "<" + e.message_id + ">",
                                           paths[e.mailbox_id]});
    }
    if (refs.empty()) rec.items.push_back(audit::AuditItem{blob_id, "", ""});
    rec.result = "Succeeded";
    Value d2 = Value::MakeObject();
    d2.Add("blobId", blob_id);
    rec.detail = d2.Serialize();
    return processor_->Audit(std::move(rec));
  });
  if (!s.ok()) {
    if (s.code() == StatusCode::kUnavailable) return AuditUnavailable();
    return http::ErrorResponse(500, "server_error", "the blob could not be read");
  }
  if (!found) return http::ErrorResponse(404, "not_found", "no such blob");
  http::Response r;
  r.status = 200;
  auto type = req.QueryParam("type");
  r.content_type = type && SafeMediaType(*type) ? std::string(*type) : "application/octet-stream";
  r.body = std::move(data);
  std::string name = SafeFileName(req.PathParam("name"));
  r.SetHeader("Content-Disposition", fmt::format("attachment; filename=\"{}\"", name));
  r.SetHeader("Cache-Control", "private, immutable, max-age=31536000");
  return r;
}

Status MailService::AddRoutes(http::Router* router) {
  KW_RETURN_IF_ERROR(router->Add("GET", "/.well-known/jmap", [this](const http::Request& r) { return Session(r); }));
  KW_RETURN_IF_ERROR(router->Add("POST", "/jmap/api", [this](const http::Request& r) { return Api(r); }));
  KW_RETURN_IF_ERROR(router->Add("POST", "/jmap/upload/{accountId}", [this](const http::Request& r) { return Upload(r); }));
  KW_RETURN_IF_ERROR(router->Add("GET", "/jmap/eventsource",
                                 [this](const http::Request& r) { return EventSource(r); }));
  return router->Add("GET", "/jmap/download/{accountId}/{blobId}/{name}",
                     [this](const http::Request& r) { return Download(r); });
}

http::Response MailService::EventSource(const http::Request& req) {
  if (base_url().empty()) return http::ErrorResponse(503, "temporarily_unavailable", "no base URL yet");
  auto parsed = ParsePushQuery(req.query);
  if (!parsed.ok()) return http::ErrorResponse(400, "invalid_request", parsed.status().message());
  auto auth = Authenticate(req, "jmap:eventsource");
  if (auto* r = std::get_if<http::Response>(&auth)) return std::move(*r);
  Caller& caller = std::get<Caller>(auth);
  if (!caller.who.scope_read) {
    return http::ErrorResponse(403, "forbidden", "the token does not allow reading mail");
  }
  auto accounts = processor_->AccountsFor(caller.who);
  if (!accounts.ok()) return http::ErrorResponse(500, "server_error", "the accounts could not be read");
  PushRequest push = std::move(*parsed);
  for (const auto& a : *accounts) push.account_ids.push_back(a.id);
  if (auto last = req.Header("Last-Event-ID")) push.last_event_id = std::string(last->substr(0, 4096));

  audit::AuditRecord rec = caller.base;
  rec.operation = "MailboxLogin";
  rec.result = "Succeeded";
  rec.tenant_id = caller.who.tenant_id;
  if (!accounts->empty()) {
    rec.mailbox_id = accounts->front().id;
    rec.mailbox_owner = accounts->front().name;
  }
  if (!processor_->Audit(std::move(rec)).ok()) return AuditUnavailable();

  auto body = push_->Subscribe(std::move(push));
  if (!body.ok()) {
    if (body.status().code() == StatusCode::kResourceExhausted) {
      http::Response r = http::ErrorResponse(503, "temporarily_unavailable", body.status().message());
      r.SetHeader("Retry-After", "30");
      return r;
    }
    return http::ErrorResponse(500, "server_error", "the event stream could not be opened");
  }
  http::Response r;
  r.content_type = "text/event-stream";
  r.SetHeader("Cache-Control", "no-cache, no-store");
  r.SetHeader("X-Accel-Buffering", "no");  // proxies must not hold events back
  r.stream = std::move(*body);
  return r;
}

Result<http::Router> MailService::BuildRouter() {
  http::Router router;
  KW_RETURN_IF_ERROR(AddRoutes(&router));
  return router;
}

}  // namespace kw::mail
