// MailService: the JMAP mail service's HTTP surface (RFC 8620 §2, §3.1, §6), behind Keyward's
// strict token verifier, recording every access in the audit log.
//
// Start here to serve mail:
//
//   kw::mail::MailServiceOptions options;
//   options.data_dir = "/var/lib/keyward";            // mail.db lives here
//   options.trust_store = identity->trust_store();    // the identity service's shared store
//   options.issuers = {base + "/{tenantid}/v2.0"};
//   options.audience = "https://mail.example";
//   options.audit = audit_log.get();                  // an audit::AuditWriter
//   KW_ASSIGN_OR_RETURN(auto mail, kw::mail::MailService::Open(options));
//   KW_ASSIGN_OR_RETURN(auto router, mail->BuildRouter());
//   ... http::Server on that router; then mail->SetBaseUrl("http://127.0.0.1:PORT").
//
// Routes (every one needs "Authorization: Bearer <access token>"):
//   GET  /.well-known/jmap                         the Session object (capabilities with limits,
//        the accounts the token reaches, primaryAccounts, username, apiUrl, downloadUrl,
//        uploadUrl, eventSourceUrl, state);
//        Cache-Control: no-cache, no-store. A user token without an account gets one
//        (auto_provision) with the default mailboxes. Audit: MailboxLogin.
//   POST /jmap/api                                  JMAP requests (jmap.h)
//   POST /jmap/upload/{accountId}                   body = the blob; {accountId, blobId, type,
//        size}; needs write access; over maxSizeUpload is 413. Audit: Create (item: the blob).
//   GET  /jmap/download/{accountId}/{blobId}/{name}?type=T  the blob, as an attachment named
//        {name}; needs read access. Audit: MailItemsAccessed/Bind listing every email holding
//        the blob.
//   GET  /jmap/eventsource?types=T&closeafter=C&ping=P   push (push.h): a text/event-stream of
//        StateChange events for the accounts the token may read; Last-Event-ID catches up.
//        400 for bad parameters, 503 beyond PushHub::kMaxStreams. Audit: MailboxLogin with
//        resource jmap:eventsource.
//
// Authentication: the token is checked by a token::Verifier (with its cache) on the shared
// TrustStore, with policy issuers = options.issuers and audiences = {options.audience}. A
// missing, malformed or rejected token is 401 with
// `WWW-Authenticate: Bearer realm="keyward-mail", error="invalid_token"` and an audit record
// TokenRejected carrying the reason code (e.g. key_issuer_mismatch), what the token asserted
// (kid, alg, iss, tid and its claims, in `detail`), the client IP and the user agent. Who may
// reach which account is Processor::Authorize (jmap.h). Errors outside /jmap/api are
// ErrorResponse JSON: 401 invalid_token, 403 forbidden, 404 not_found, 413 request_too_large,
// 429 rate_limited (Retry-After), 503 audit_unavailable.
//
// History: the change log is pruned (Store::Prune) at most once an hour, from the API handler.
//
// Thread safety: handlers run concurrently on the server's I/O threads; every public method is
// thread-safe. The service must outlive any server using its router.
#pragma once

#include <atomic>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "audit/audit_log.h"
#include "core/clock.h"
#include "core/status.h"
#include "http/router.h"
#include "mail/jmap.h"
#include "mail/push.h"
#include "mail/store.h"
#include "token/trust_store.h"
#include "token/verifier.h"

namespace kw::mail {

struct MailServiceOptions {
  std::string data_dir;  // required; mail.db is created here (0600)
  // Public base URL, e.g. "https://mail.example" (no trailing slash). May be empty: SetBaseUrl.
  std::string base_url;
  std::shared_ptr<token::TrustStore> trust_store;  // required
  std::vector<std::string> issuers;                // required, e.g. "BASE/{tenantid}/v2.0"
  std::string audience;                            // required
  audit::AuditWriter* audit = nullptr;             // required; must outlive the service
  const Clock* clock = Clock::System();            // must outlive the service
  JmapLimits limits;
  // Per-mailbox (account) request rate: a token bucket; 0 disables it.
  double rate_per_second = 100;
  double rate_burst = 400;
  // A user token with no account yet gets one on its first session fetch. The account's
  // address is preferred_username when it contains '@', else "<username>@<tenant id>".
  bool auto_provision = true;
  token::VerifiedTokenCache::Options token_cache;
  // Replaces the token check (default: a token::Verifier with the policy above). Only the
  // campaign simulator sets it, to run the mail service behind a reproduction of the 2023 flaw
  // (src/sim/legacy_verifier.h); `keyward serve` has no way to set it.
  std::function<token::VerifyResult(std::string_view token)> verify_override;
};

class MailService {
 public:
  // Opens DATA_DIR/mail.db. Errors: InvalidArgument for missing options; store errors.
  static Result<std::unique_ptr<MailService>> Open(MailServiceOptions options);
  ~MailService();

  // Sets the base URL once (FailedPrecondition if already set). Until then every route is 503.
  Status SetBaseUrl(std::string base_url);

  Result<http::Router> BuildRouter();
  // Adds the same routes to an existing router (e.g. the identity service's, to serve both on
  // one port). AlreadyExists if one of them is taken.
  Status AddRoutes(http::Router* router);

  Store& store() { return *store_; }
  Processor& processor() { return *processor_; }
  PushHub& push() { return *push_; }
  const token::Verifier& verifier() const { return *verifier_; }

 private:
  explicit MailService(MailServiceOptions options);

  struct Caller {
    Principal who;
    audit::AuditRecord base;
  };
  // The caller of `req`, or the 401 to send (after recording TokenRejected).
  std::variant<http::Response, Caller> Authenticate(const http::Request& req, std::string_view resource);
  std::string base_url() const;

  http::Response Session(const http::Request& req);
  http::Response Api(const http::Request& req);
  http::Response Upload(const http::Request& req);
  http::Response Download(const http::Request& req);
  http::Response EventSource(const http::Request& req);

  MailServiceOptions options_;
  std::unique_ptr<Store> store_;
  std::unique_ptr<RateLimiter> limiter_;
  std::unique_ptr<Processor> processor_;
  std::unique_ptr<token::Verifier> verifier_;
  mutable std::mutex mu_;
  std::string base_url_;
  std::atomic<int64_t> last_prune_ms_{0};
  std::unique_ptr<PushHub> push_;  // last: stopped before the store it listens to
};

}  // namespace kw::mail
