// IdentityService: the identity service's HTTP surface (OpenID Connect discovery, JWKS and the
// OAuth 2.0 token, introspection and revocation endpoints), over the directory and key rings.
//
// Start here to run an identity provider:
//
//   kw::identity::IdentityServiceOptions options;
//   options.data_dir = "/var/lib/keyward";
//   KW_ASSIGN_OR_RETURN(auto service, kw::identity::IdentityService::Open(options));
//   KW_ASSIGN_OR_RETURN(auto router, service->BuildRouter());
//   kw::http::Server server(server_options, std::move(router));
//   KW_RETURN_IF_ERROR(server.Start());
//   KW_RETURN_IF_ERROR(service->SetBaseUrl("http://127.0.0.1:" + std::to_string(server.port())));
//
// The base URL may be given in the options instead; SetBaseUrl exists because with port 0 the
// URL is only known once the server has bound. Until a base URL is set every route answers 503.
//
// Data directory (created 0700 if missing):
//   keyward.db             the Directory (tenants, users, apps) and the revoked_tokens table
//   keys.db                the SqliteKeyStore (sealed signing keys)
//   master.key             the MasterKey; created 0600 on first start. A file readable by group
//                          or others, or malformed, makes Open fail with MasterKey::Load's error.
//   identity-audit.jsonl   the FileAuditSink (key life cycle and token events)
//   admin.token            the bearer token of the admin API (32 random bytes, base64url),
//                          created 0600 on first start; refused if readable by group or others
//   base-url               the base URL in use, written when it is set (for `keyward keys rotate`)
//   serve.lock             flock(2)-held while a service has the directory open: a second
//                          service (or `keyward keys rotate`) on the same directory is refused,
//                          since two processes would rotate the same rings independently
//
// Issuers and rings: the consumer issuer is IssuerUrl(base, kConsumerTenantId) (consumer kind);
// every enterprise tenant has its own issuer IssuerUrl(base, TENANT) and its own KeyRing, opened
// on first use. Every ring is attached to one shared TrustStore (trust_store()), so a key
// revoked in a ring is refused by introspection (and by every Verifier on that store) at once.
// Rings advance on a background thread every tick_interval_seconds and on Tick().
//
// Revocation across processes: a key revoked by another process (`keyward keys revoke` on the
// same data directory) is applied to this service's rings, and so to its TrustStore, within
// key_refresh_interval_ms: the background thread polls SQLite's data_version (a counter that
// moves only when another connection commits) and reloads the rings' records when it moved.
//
// Routes (TENANT is a tenant id; an unknown tenant is a 404 not_found JSON error):
//   GET  /TENANT/v2.0/.well-known/openid-configuration  OpenID Connect discovery document
//        (authorization, token, JWKS, introspection and revocation endpoints; response type
//        "code" only; PKCE S256 only; RFC 9207 "iss" in authorization responses).
//   GET|POST /TENANT/v2.0/authorize  the authorization endpoint (RFC 6749 §4.1, OpenID Connect
//        Core §3.1.2) with a minimal server-rendered login form. Required: response_type=code,
//        client_id (an app of TENANT), redirect_uri (exactly one of the app's), code_challenge
//        (S256, RFC 7636) with code_challenge_method=S256. Optional: scope (the app's scopes
//        plus openid, profile, email, offline_access), state, nonce, resource (one of the app's
//        audiences). A bad client_id or redirect_uri is an HTML error page (never a redirect to
//        an unverified URI); every other error redirects with error, error_description, state
//        and iss. The form posts username and password back to the same URL; a wrong password
//        re-renders the form (and is a sign_in_failed audit event); success redirects (303) with
//        code, state and iss. Codes live 60 s and are single-use (grants.h).
//   GET  /TENANT/v2.0/keys        the tenant's ring's JWKS (each key with kid, alg, use, issuer)
//   POST /TENANT/v2.0/token       RFC 6749 token endpoint: grant_type client_credentials,
//        authorization_code (with code_verifier; returns a refresh token and, for scope openid,
//        an ID token), refresh_token (rotating: each use returns a new refresh token; a reused
//        one revokes its whole family and the access tokens it issued), and password when
//        enable_password_grant. Client authentication by HTTP Basic or client_secret_post (never
//        both); public clients send only client_id and may use authorization_code and
//        refresh_token only. The app must be registered in TENANT. Optional
//        `scope` (a subset of the app's scopes; default all of them) and `resource` or
//        `audience` (one of the app's audiences; default its first). Access token claims: iss,
//        sub (client id, or the user id for password), aud, exp, iat, nbf, jti, tid, azp, scp.
//        Errors (RFC 6749 §5.2): invalid_request 400 (malformed or repeated parameters, missing
//        grant_type, two client authentication methods), invalid_client 401 (with
//        WWW-Authenticate: Basic unless the client authenticated in the body), unauthorized_client 400 (app without audiences), invalid_grant
//        400 (wrong user credentials), unsupported_grant_type 400, invalid_scope 400,
//        invalid_target 400 (RFC 8707: an audience the app may not request).
//   POST /TENANT/v2.0/introspect  RFC 7662, client authentication required. A token is active
//        iff a Verifier on the shared TrustStore accepts it with issuers = every issuer of this
//        service ("BASE/{tenantid}/v2.0", which also covers the consumer issuer) and audiences =
//        the requesting client's audiences (a client introspects the tokens meant for it; a
//        client without audiences sees every token inactive), its tid is TENANT and its jti is
//        not revoked. Otherwise {"active":false}.
//   POST /TENANT/v2.0/revoke      RFC 7009, client authentication required. 200 for every
//        well-formed request; a token that verifies as for introspection and was issued to the
//        requesting client (azp) has its jti revoked (in memory and in SQLite, so it survives a
//        restart). A valid token of another client is refused with 400 unauthorized_client
//        (RFC 7009 §2.1); an invalid or unknown token is not an error. A refresh token of the
//        client revokes its family (and the family's access tokens).
//   Admin API (Authorization: Bearer <admin.token>; 401 otherwise; JSON):
//   GET  /admin/keys                               every key record (never key material)
//   POST /admin/tenants/TENANT/keys/rotate         form: reason, immediate=true|false
//   POST /admin/keys/KID/revoke                    form: reason
// Every token issued, refused and revoked, and every failed password sign-in, is an audit event
// (audit_sink.h). Secrets, passwords, tokens and hashes never reach a response, a log line or an
// audit event.
//
// Thread safety: handlers run on the server's I/O threads concurrently; every public method is
// thread-safe. The service must outlive any server using its router.
#pragma once

#include <condition_variable>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <thread>
#include <unordered_map>
#include <variant>

#include "core/clock.h"
#include "core/sqlite.h"
#include "core/status.h"
#include "http/router.h"
#include "identity/audit_sink.h"
#include "identity/directory.h"
#include "identity/grants.h"
#include "identity/key_ring.h"
#include "identity/key_store.h"
#include "identity/master_key.h"
#include "token/token_cache.h"
#include "token/trust_store.h"

namespace kw::identity {

struct IdentityServiceOptions {
  // "http://127.0.0.1:8080" (no trailing slash needed). May be empty: see SetBaseUrl.
  std::string base_url;
  std::string data_dir;  // required
  KeyRingPolicy ring_policy;
  // Lifetime of access tokens; 1..3600 and at most ring_policy.max_token_lifetime_seconds.
  int64_t access_token_lifetime_seconds = 3600;
  bool enable_password_grant = false;
  PasswordCost password_cost = PasswordCost::Interactive();
  // Period of the background Tick of all rings, in real seconds; 0: no thread (call Tick()).
  int64_t tick_interval_seconds = 60;
  // How often the background thread looks for revocations made by other processes (see the
  // file comment). Only used when tick_interval_seconds > 0.
  int64_t key_refresh_interval_ms = 1000;
  bool enable_admin_api = true;
  // Where key and token events go. Null: a FileAuditSink on DATA_DIR/identity-audit.jsonl.
  // `keyward serve` passes an AuditLogSink (audit_log_sink.h) on the shared audit log.
  std::shared_ptr<AuditSink> audit_sink;
  const Clock* clock = Clock::System();  // must outlive the service
};

class IdentityService {
 public:
  // Opens or creates everything under options.data_dir (see the file comment) and opens the
  // consumer ring when a base URL is given. Errors: InvalidArgument for bad options; the
  // MasterKey::Load error (PermissionDenied "... chmod 600 it", InvalidArgument) for an unsafe
  // or malformed master key; Unavailable for an unusable data directory; store and ring errors.
  static Result<std::unique_ptr<IdentityService>> Open(IdentityServiceOptions options);

  ~IdentityService();
  IdentityService(const IdentityService&) = delete;
  IdentityService& operator=(const IdentityService&) = delete;

  // Sets the base URL once (FailedPrecondition if already set; InvalidArgument if empty) and
  // opens the consumer ring.
  Status SetBaseUrl(std::string base_url);

  // The routes above, bound to this service.
  Result<http::Router> BuildRouter();

  // Advances every open ring and forgets expired revoked jtis. Returns the first error.
  Status Tick();

  // Applies revocations made by other processes to every open ring (KeyRing::RefreshFromStore)
  // if the key database changed since the last call. Returns the kids newly revoked.
  Result<std::vector<std::string>> RefreshKeysFromStore();

  // The ring of `tenant_id` (the consumer ring for kConsumerTenantId), opened on first use and
  // valid as long as the service. NotFound for an unknown tenant; FailedPrecondition before a
  // base URL is set.
  Result<KeyRing*> Ring(std::string_view tenant_id);

  Directory& directory() { return *directory_; }
  const std::shared_ptr<token::TrustStore>& trust_store() const { return trust_store_; }
  // The issuer of `tenant_id` ("" before a base URL is set).
  std::string IssuerFor(std::string_view tenant_id) const;

 private:
  explicit IdentityService(IdentityServiceOptions options);

  std::string base_url() const;
  http::Response Discovery(const http::Request& req);
  http::Response Keys(const http::Request& req);
  http::Response Token(const http::Request& req);
  http::Response Introspect(const http::Request& req);
  http::Response Revoke(const http::Request& req);
  http::Response Authorize(const http::Request& req);
  http::Response AdminListKeys(const http::Request& req);
  http::Response AdminRotate(const http::Request& req);
  http::Response AdminRevoke(const http::Request& req);
  bool AdminAuthorized(const http::Request& req) const;

  // What a grant hands to the common issuing code of the token endpoint.
  struct Issue {
    std::string grant;
    std::string subject;
    std::string username;
    std::vector<std::string> scopes;
    std::string audience;
    std::string nonce;
    int64_t auth_time = 0;
    bool id_token = false;
    std::string family_id;      // refresh family, when the grant has one
    std::string refresh_token;  // returned to the client when not empty
  };
  http::Response IssueTokens(KeyRing& ring, const std::string& tenant, const ClientApp& app,
                             const std::string& client_label, const Issue& issue,
                             const std::string& request_id);
  // Revokes the given access tokens (a family revoked by code replay or refresh reuse).
  void RevokeJtis(const std::vector<std::string>& jtis, std::string_view tenant,
                  std::string_view why);

  // The front shared by the introspection and revocation endpoints: the tenant exists, the
  // service has its base URL, the form parses, the client authenticates for that tenant, and a
  // "token" parameter is present. Otherwise the error response to send; `action` names the
  // endpoint in the audit event of a refused client.
  struct ClientTokenRequest {
    std::string tenant;
    ClientApp app;
    std::string token;
  };
  std::variant<http::Response, ClientTokenRequest> ReadClientTokenRequest(
      const http::Request& req, std::string_view action);

  // Verifies `token` as introspection does (see the file comment) for `client` at `tenant_id`;
  // a reason sentence in *why when it is not active.
  std::shared_ptr<const token::VerifiedToken> VerifyForClient(std::string_view token,
                                                              const ClientApp& client,
                                                              std::string_view tenant_id,
                                                              std::string* why);
  bool IsRevoked(std::string_view jti) const;
  Status RecordRevoked(const std::string& jti, int64_t exp);
  // Records an event; `e` may carry token and request facts (AuditEvent). The peer address and
  // user agent of the request being handled are added.
  void Audit(AuditEventType type, std::string_view tenant_id, std::string_view kid,
             std::string detail, AuditEvent e = {});
  void TickLoop();

  IdentityServiceOptions options_;
  std::shared_ptr<const MasterKey> master_;
  std::unique_ptr<Directory> directory_;
  std::shared_ptr<sqlite::Db> revocation_db_;
  std::shared_ptr<SqliteKeyStore> key_store_;
  std::unique_ptr<GrantStore> grants_;
  std::string admin_token_sha256_;  // empty: admin API disabled
  int lock_fd_ = -1;
  int64_t key_data_version_ = -1;
  std::shared_ptr<AuditSink> audit_;
  std::shared_ptr<token::TrustStore> trust_store_;

  mutable std::mutex mu_;  // guards base_url_, rings_, revoked_
  std::string base_url_;
  std::map<std::string, std::unique_ptr<KeyRing>, std::less<>> rings_;
  std::unordered_map<std::string, int64_t> revoked_;  // jti -> exp

  std::mutex tick_mu_;
  std::condition_variable tick_cv_;
  bool stopping_ = false;
  std::thread ticker_;
};

}  // namespace kw::identity
