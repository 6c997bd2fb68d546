// Directory: the tenancy model behind the identity service. Tenants, their users and their
// registered client applications, on the embedded SQLite store.
//
// Issuers: one consumer issuer for personal accounts (the fixed tenant kConsumerTenantId) and
// one enterprise issuer per tenant, https://HOST/TENANT_ID/v2.0 (see IssuerUrl).
//
// Secrets: user passwords are hashed with Argon2id (libsodium crypto_pwhash_str, cost
// configurable; tests and the simulator use the minimum). Client secrets are 32 random bytes
// generated here, so a single SHA-256 is as strong as any slow hash and keeps the token endpoint
// fast; they are compared in constant time. Neither a password, a secret nor a hash ever appears
// in an error message or a log line.
//
// Thread safety: all methods are thread-safe (one serialized SQLite connection).
#pragma once

#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "core/clock.h"
#include "core/sqlite.h"
#include "core/status.h"

namespace kw::identity {

// The personal-accounts tenant (the value Microsoft uses for MSA accounts, kept for realism).
inline constexpr std::string_view kConsumerTenantId = "9188040d-6c67-4c5b-b112-36a304b66dad";

// "https://HOST/TENANT/v2.0" for `base` = "https://HOST".
std::string IssuerUrl(std::string_view base, std::string_view tenant_id);

struct Tenant {
  std::string id;
  std::string name;
  bool consumer = false;
  int64_t created = 0;
};

struct User {
  std::string id;
  std::string tenant_id;
  std::string username;
  std::string display_name;
  bool disabled = false;
  int64_t created = 0;
};

struct ClientApp {
  std::string client_id;
  std::string tenant_id;  // the tenant that registered it
  std::string name;
  bool confidential = true;  // has a secret; public clients (SPA, mobile) use PKCE only
  std::vector<std::string> redirect_uris;
  std::vector<std::string> audiences;
  std::vector<std::string> scopes;
  int64_t created = 0;
};

struct PasswordCost {
  unsigned long long ops;
  size_t mem_bytes;
  static PasswordCost Interactive();  // libsodium's interactive limits (~64 MiB, 2 passes)
  static PasswordCost Minimum();      // for tests and simulations only
};

class Directory {
 public:
  // Opens the directory tables in `db` (created if missing) and ensures the consumer tenant.
  static Result<std::unique_ptr<Directory>> Open(std::shared_ptr<sqlite::Db> db,
                                                 const Clock* clock = Clock::System(),
                                                 PasswordCost cost = PasswordCost::Interactive());

  // Creates a tenant; a random GUID id when `id` is empty. AlreadyExists for a taken id.
  Result<Tenant> CreateTenant(std::string_view name, std::string_view id = "");
  Result<Tenant> GetTenant(std::string_view id);
  Result<std::vector<Tenant>> ListTenants();

  // Usernames are unique within a tenant. InvalidArgument for an empty username or a password
  // shorter than 8 characters.
  Result<User> CreateUser(std::string_view tenant_id, std::string_view username,
                          std::string_view password, std::string_view display_name = "");
  // Unauthenticated ("invalid username or password") for an unknown user, a wrong password or a
  // disabled account alike, after the same hashing work, so the answer reveals nothing.
  Result<User> Authenticate(std::string_view tenant_id, std::string_view username,
                            std::string_view password);
  Result<std::vector<User>> ListUsers(std::string_view tenant_id);
  Status SetUserDisabled(std::string_view tenant_id, std::string_view username, bool disabled);

  struct CreatedApp {
    ClientApp app;
    std::string client_secret;  // empty for public clients; shown once, never stored
  };
  Result<CreatedApp> CreateApp(ClientApp app);
  Result<ClientApp> GetApp(std::string_view client_id);
  // Unauthenticated ("invalid client") for an unknown client, a public client or a wrong secret.
  Result<ClientApp> AuthenticateClient(std::string_view client_id, std::string_view secret);
  Result<std::vector<ClientApp>> ListApps(std::string_view tenant_id);

 private:
  Directory(std::shared_ptr<sqlite::Db> db, const Clock* clock, PasswordCost cost)
      : db_(std::move(db)), clock_(clock), cost_(cost) {}
  Status Init();

  std::shared_ptr<sqlite::Db> db_;
  const Clock* clock_;
  PasswordCost cost_;
  std::string dummy_hash_;  // hashed once; verified against for unknown users
};

// A random RFC 4122 version-4 GUID, lower case.
std::string NewGuid();

}  // namespace kw::identity
