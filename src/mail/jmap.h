// Processor: the JMAP API (RFC 8620 core, RFC 8621 mail) over the Store, independent of HTTP so
// that it can be unit-tested and fuzzed. The HTTP service (service.h) authenticates the caller,
// builds a Principal and the token facts of the audit record, and hands the request body here.
//
// Request handling (RFC 8620 §3):
//   * the body is parsed strictly (duplicate members, bad UTF-8, depth > 64 refused): a failure
//     is the request-level problem `urn:ietf:params:jmap:error:notJSON` (400, RFC 7807 JSON);
//     a body that is JSON but not a Request (using/methodCalls/createdIds shapes) is `notRequest`;
//     a capability in `using` this server does not know is `unknownCapability`; over
//     maxSizeRequest or maxCallsInRequest is `limit` with the limit's name (400);
//     over maxConcurrentRequests for one user is `limit` (429); an account over its rate is 429
//     with Retry-After (service); an audit record that cannot be written is 503 and the whole
//     response is withheld.
//   * method calls run in order; result references ("#name": {resultOf, name, path}, JSON
//     Pointer with "*") are resolved against earlier responses; creation ids ("#cid") resolve
//     through createdIds, which is returned.
//   * method-level errors use the RFC names: unknownMethod, invalidArguments,
//     invalidResultReference, accountNotFound, accountReadOnly, forbidden, requestTooLarge,
//     stateMismatch, cannotCalculateChanges, anchorNotFound, unsupportedFilter, unsupportedSort,
//     tooManyChanges, serverFail.
//
// Methods: Core/echo; Mailbox/get|changes|query|set; Email/get|changes|query|queryChanges|set|
// import; Thread/get|changes; Identity/get; EmailSubmission/set (delivery to Keyward accounts of
// any tenant of this server, onSuccessUpdateEmail/onSuccessDestroyEmail); SearchSnippet/get.
//
// Access (who reaches which account) — decided once, in Authorize():
//   * an account is visible only to tokens of its own tenant (tid); ids of other tenants'
//     accounts are accountNotFound, exactly as ids that do not exist;
//   * a user token (sub != azp) reaches the one account its user owns, with full rights;
//   * an app-only token (client_credentials: sub == azp) reaches every account of its tenant,
//     reading with scope Mail.Read or Mail.ReadWrite, changing with Mail.ReadWrite, sending
//     (EmailSubmission/set) with Mail.Send; a missing scope is `forbidden`.
//
// Audit: every method call that touches an account yields audit records through the
// AuditWriter (see docs/jmap.md for the table): MailItemsAccessed with access type Bind (email
// content or headers, SearchSnippet) or Sync (queries, listings, /changes, Mailbox/get,
// Thread/get, Identity/get), listing every item with its Message-ID and folder path; Create,
// Update, Delete (one record per kind present in a /set call) and Send. Writes append their record inside the
// database transaction, so a change whose record cannot be written is rolled back. Failed calls
// (accountNotFound, forbidden, ...) are recorded with result "Failed" and the error type.
//
// Thread safety: Process() may run on many threads at once.
#pragma once

#include <atomic>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "audit/audit_log.h"
#include "core/clock.h"
#include "core/status.h"
#include "mail/json_value.h"
#include "mail/store.h"

namespace kw::mail {

inline constexpr std::string_view kCapCore = "urn:ietf:params:jmap:core";
inline constexpr std::string_view kCapMail = "urn:ietf:params:jmap:mail";
inline constexpr std::string_view kCapSubmission = "urn:ietf:params:jmap:submission";

struct JmapLimits {
  int64_t max_size_upload = 50'000'000;
  int64_t max_concurrent_upload = 4;
  int64_t max_size_request = 10'000'000;
  int64_t max_concurrent_requests = 8;  // per user (tenant + sub)
  int64_t max_calls_in_request = 32;
  int64_t max_objects_in_get = 500;
  int64_t max_objects_in_set = 500;
  int64_t max_body_value_bytes = 1'000'000;  // hard cap on maxBodyValueBytes
};

// The authenticated caller, decided by the service from a verified token.
struct Principal {
  std::string tenant_id;      // the token's tid
  std::string user_id;        // sub
  std::string user_name;      // preferred_username when present
  std::string client_app_id;  // azp
  bool app_only = false;      // sub == azp (client_credentials)
  bool scope_read = false;    // Mail.Read or Mail.ReadWrite
  bool scope_write = false;   // Mail.ReadWrite
  bool scope_send = false;    // Mail.Send
};

enum class Access { kRead, kWrite, kSend };

// Token-bucket rate limit per account ("per mailbox"). Thread-safe.
class RateLimiter {
 public:
  // rate_per_second <= 0 disables the limiter.
  RateLimiter(double rate_per_second, double burst, const Clock* clock);
  // True if a request may proceed; otherwise *retry_after_seconds is set (>= 1).
  bool Allow(std::string_view key, int64_t* retry_after_seconds);

 private:
  struct Bucket {
    double tokens;
    int64_t last_ms;
  };
  double rate_, burst_;
  const Clock* clock_;
  std::mutex mu_;
  std::unordered_map<std::string, Bucket> buckets_;
};

struct JmapResponse {
  int status = 200;
  std::string content_type = "application/json";
  std::string body;
  int64_t retry_after = 0;  // seconds, for 429
};

class Processor {
 public:
  // `store` and `audit` must outlive the processor; `rate_limiter` may be null.
  Processor(Store* store, audit::AuditWriter* audit, JmapLimits limits, const Clock* clock,
            RateLimiter* rate_limiter = nullptr);

  // Runs one JMAP API request. `audit_base` carries the token and client facts (user, app,
  // IP, user agent, session, jti, kid, issuer, tid, iat) copied into every record.
  JmapResponse Process(const Principal& who, const audit::AuditRecord& audit_base,
                       std::string_view body);

  // The account if `who` may reach it for `access`. Errors: NotFound (accountNotFound: absent
  // or of another tenant, or another user's), PermissionDenied (forbidden: a scope is missing).
  Result<Account> Authorize(const Principal& who, std::string_view account_id, Access access);
  // The accounts `who` can see (its own for a user token; its tenant's for app-only tokens
  // with a Mail.* scope).
  Result<std::vector<Account>> AccountsFor(const Principal& who);

  // The session state string for `who` (RFC 8620 §2): changes when its account list changes.
  std::string SessionState(const Principal& who);

  // Appends `record` (time and tenant filled in). Errors: Unavailable when the writer fails.
  Status Audit(audit::AuditRecord record);

  const JmapLimits& limits() const { return limits_; }
  Store* store() const { return store_; }

  // A request-level problem-details body (RFC 7807) for `type` (e.g. "notJSON").
  static JmapResponse Problem(int status, std::string_view type, std::string_view detail,
                              std::string_view limit = {});

 private:
  struct Call;
  struct Ctx;
  void Dispatch(Ctx& ctx, Call& call);

  Store* store_;
  audit::AuditWriter* audit_;
  JmapLimits limits_;
  const Clock* clock_;
  RateLimiter* rate_limiter_;
  std::mutex inflight_mu_;
  std::unordered_map<std::string, int64_t> inflight_;
  // Accounts never change once created: cached by id. Session states are cached per user against
  // the store's accounts_generation().
  std::mutex cache_mu_;
  std::unordered_map<std::string, Account> account_cache_;
  std::unordered_map<std::string, std::pair<uint64_t, std::string>> session_state_cache_;
};

}  // namespace kw::mail
