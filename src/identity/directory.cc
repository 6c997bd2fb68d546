#include "identity/directory.h"

#include <openssl/crypto.h>
#include <sodium.h>

#include <fmt/format.h>

#include "core/base64url.h"
#include "core/json.h"
#include "crypto/crypto.h"

namespace kw::identity {
namespace {

constexpr std::string_view kSchema = R"sql(
CREATE TABLE IF NOT EXISTS tenants (
  id TEXT PRIMARY KEY, name TEXT NOT NULL, consumer INTEGER NOT NULL DEFAULT 0,
  created INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS users (
  id TEXT PRIMARY KEY, tenant_id TEXT NOT NULL REFERENCES tenants(id),
  username TEXT NOT NULL, display_name TEXT NOT NULL, password_hash TEXT NOT NULL,
  disabled INTEGER NOT NULL DEFAULT 0, created INTEGER NOT NULL,
  UNIQUE (tenant_id, username));
CREATE TABLE IF NOT EXISTS apps (
  client_id TEXT PRIMARY KEY, tenant_id TEXT NOT NULL REFERENCES tenants(id),
  name TEXT NOT NULL, confidential INTEGER NOT NULL, secret_sha256 BLOB,
  redirect_uris TEXT NOT NULL, audiences TEXT NOT NULL, scopes TEXT NOT NULL,
  created INTEGER NOT NULL);
)sql";

std::string ToJsonArray(const std::vector<std::string>& v) {
  json::Writer w;
  w.BeginArray();
  for (const auto& s : v) w.String(s);
  w.EndArray();
  return w.Take();
}

std::vector<std::string> FromJsonArray(const std::string& text) {
  std::vector<std::string> out;
  json::StrictParser p;
  auto e = p.Parse(text);
  if (!e.ok() || !e->is_array()) return out;
  json::Array a = e->get_array().value_unsafe();
  for (auto item : a) {
    if (item.is_string()) out.emplace_back(item.get_string().value_unsafe());
  }
  return out;
}

User UserFromRow(const sqlite::Statement& s) {
  return User{s.Text(0), s.Text(1), s.Text(2), s.Text(3), s.Int(4) != 0, s.Int(5)};
}

ClientApp AppFromRow(const sqlite::Statement& s) {
  ClientApp a;
  a.client_id = s.Text(0);
  a.tenant_id = s.Text(1);
  a.name = s.Text(2);
  a.confidential = s.Int(3) != 0;
  a.redirect_uris = FromJsonArray(s.Text(4));
  a.audiences = FromJsonArray(s.Text(5));
  a.scopes = FromJsonArray(s.Text(6));
  a.created = s.Int(7);
  return a;
}

constexpr std::string_view kUserColumns = "id, tenant_id, username, display_name, disabled, created";
constexpr std::string_view kAppColumns =
    "client_id, tenant_id, name, confidential, redirect_uris, audiences, scopes, created";

}  // namespace

std::string IssuerUrl(std::string_view base, std::string_view tenant_id) {
  while (!base.empty() && base.back() == '/') base.remove_suffix(1);
  return fmt::format("{}/{}/v2.0", base, tenant_id);
}

std::string NewGuid() {
  std::string b = crypto::RandomBytes(16);
  b[6] = static_cast<char>((b[6] & 0x0f) | 0x40);
  b[8] = static_cast<char>((b[8] & 0x3f) | 0x80);
  std::string h = HexEncode(b);
  return fmt::format("{}-{}-{}-{}-{}", h.substr(0, 8), h.substr(8, 4), h.substr(12, 4),
                     h.substr(16, 4), h.substr(20));
}

PasswordCost PasswordCost::Interactive() {
  return {crypto_pwhash_OPSLIMIT_INTERACTIVE, crypto_pwhash_MEMLIMIT_INTERACTIVE};
}
PasswordCost PasswordCost::Minimum() {
  return {crypto_pwhash_OPSLIMIT_MIN, crypto_pwhash_MEMLIMIT_MIN};
}

Result<std::unique_ptr<Directory>> Directory::Open(std::shared_ptr<sqlite::Db> db,
                                                   const Clock* clock, PasswordCost cost) {
  if (sodium_init() < 0) return InternalError("libsodium failed to initialize");
  std::unique_ptr<Directory> d(new Directory(std::move(db), clock, cost));
  KW_RETURN_IF_ERROR(d->Init());
  return d;
}

Status Directory::Init() {
  KW_RETURN_IF_ERROR(db_->Exec(kSchema));
  auto existing = GetTenant(kConsumerTenantId);
  if (!existing.ok()) {
    KW_ASSIGN_OR_RETURN(auto ins, db_->Prepare(
        "INSERT INTO tenants (id, name, consumer, created) VALUES (?, 'Personal accounts', 1, ?)"));
    KW_RETURN_IF_ERROR(ins.Bind(1, kConsumerTenantId).Bind(2, clock_->NowSeconds()).Run());
  }
  char hash[crypto_pwhash_STRBYTES];
  std::string junk = crypto::RandomBytes(16);
  if (crypto_pwhash_str(hash, junk.data(), junk.size(), cost_.ops, cost_.mem_bytes) != 0) {
    return ResourceExhaustedError("password hashing ran out of memory");
  }
  dummy_hash_ = hash;
  return Status::Ok();
}

Result<Tenant> Directory::CreateTenant(std::string_view name, std::string_view id) {
  if (name.empty()) return InvalidArgumentError("tenant name must not be empty");
  Tenant t{id.empty() ? NewGuid() : std::string(id), std::string(name), false, clock_->NowSeconds()};
  if (t.id.find('/') != std::string::npos || t.id.size() > 64) {
    return InvalidArgumentError("tenant id must be at most 64 characters and contain no '/'");
  }
  KW_ASSIGN_OR_RETURN(auto ins, db_->Prepare("INSERT INTO tenants (id, name, consumer, created) VALUES (?, ?, 0, ?)"));
  Status s = ins.Bind(1, t.id).Bind(2, t.name).Bind(3, t.created).Run();
  if (s.code() == StatusCode::kAlreadyExists) return AlreadyExistsError(fmt::format("tenant '{}' already exists", t.id));
  KW_RETURN_IF_ERROR(s);
  return t;
}

Result<Tenant> Directory::GetTenant(std::string_view id) {
  KW_ASSIGN_OR_RETURN(auto q, db_->Prepare("SELECT id, name, consumer, created FROM tenants WHERE id = ?"));
  q.Bind(1, id);
  KW_ASSIGN_OR_RETURN(bool row, q.Step());
  if (!row) return NotFoundError(fmt::format("no tenant '{}'", id));
  return Tenant{q.Text(0), q.Text(1), q.Int(2) != 0, q.Int(3)};
}

Result<std::vector<Tenant>> Directory::ListTenants() {
  KW_ASSIGN_OR_RETURN(auto q, db_->Prepare("SELECT id, name, consumer, created FROM tenants ORDER BY created, id"));
  std::vector<Tenant> out;
  while (true) {
    KW_ASSIGN_OR_RETURN(bool row, q.Step());
    if (!row) break;
    out.push_back(Tenant{q.Text(0), q.Text(1), q.Int(2) != 0, q.Int(3)});
  }
  return out;
}

Result<User> Directory::CreateUser(std::string_view tenant_id, std::string_view username,
                                   std::string_view password, std::string_view display_name) {
  if (username.empty() || username.size() > 256) {
    return InvalidArgumentError("username must be 1 to 256 characters");
  }
  if (password.size() < 8) return InvalidArgumentError("password must be at least 8 characters");
  KW_RETURN_IF_ERROR(GetTenant(tenant_id).status());
  char hash[crypto_pwhash_STRBYTES];
  if (crypto_pwhash_str(hash, password.data(), password.size(), cost_.ops, cost_.mem_bytes) != 0) {
    return ResourceExhaustedError("password hashing ran out of memory");
  }
  User u{NewGuid(), std::string(tenant_id), std::string(username),
         std::string(display_name.empty() ? username : display_name), false, clock_->NowSeconds()};
  KW_ASSIGN_OR_RETURN(auto ins, db_->Prepare(
      "INSERT INTO users (id, tenant_id, username, display_name, password_hash, disabled, created) "
      "VALUES (?, ?, ?, ?, ?, 0, ?)"));
  Status s = ins.Bind(1, u.id).Bind(2, u.tenant_id).Bind(3, u.username).Bind(4, u.display_name)
                 .Bind(5, std::string_view(hash)).Bind(6, u.created).Run();
  sodium_memzero(hash, sizeof hash);
  if (s.code() == StatusCode::kAlreadyExists) {
    return AlreadyExistsError(fmt::format("user '{}' already exists in tenant '{}'", username, tenant_id));
  }
  KW_RETURN_IF_ERROR(s);
  return u;
}

Result<User> Directory::Authenticate(std::string_view tenant_id, std::string_view username,
                                     std::string_view password) {
  KW_ASSIGN_OR_RETURN(auto q, db_->Prepare(fmt::format(
      "SELECT {}, password_hash FROM users WHERE tenant_id = ? AND username = ?", kUserColumns)));
  q.Bind(1, tenant_id).Bind(2, username);
  KW_ASSIGN_OR_RETURN(bool row, q.Step());
  std::string hash = row ? q.Text(6) : dummy_hash_;
  // Hash even for unknown users so that timing does not reveal which usernames exist.
  bool match = crypto_pwhash_str_verify(hash.c_str(), password.data(), password.size()) == 0;
  if (!row || !match || q.Int(4) != 0) {
    return UnauthenticatedError("invalid username or password");
  }
  return UserFromRow(q);
}

Result<std::vector<User>> Directory::ListUsers(std::string_view tenant_id) {
  KW_ASSIGN_OR_RETURN(auto q, db_->Prepare(fmt::format(
      "SELECT {} FROM users WHERE tenant_id = ? ORDER BY username", kUserColumns)));
  q.Bind(1, tenant_id);
  std::vector<User> out;
  while (true) {
    KW_ASSIGN_OR_RETURN(bool row, q.Step());
    if (!row) break;
    out.push_back(UserFromRow(q));
  }
  return out;
}

Status Directory::SetUserDisabled(std::string_view tenant_id, std::string_view username, bool disabled) {
  KW_ASSIGN_OR_RETURN(auto q, db_->Prepare("UPDATE users SET disabled = ? WHERE tenant_id = ? AND username = ?"));
  KW_RETURN_IF_ERROR(q.Bind(1, int64_t{disabled}).Bind(2, tenant_id).Bind(3, username).Run());
  if (db_->Changes() == 0) return NotFoundError(fmt::format("no user '{}' in tenant '{}'", username, tenant_id));
  return Status::Ok();
}

Result<Directory::CreatedApp> Directory::CreateApp(ClientApp app) {
  if (app.name.empty()) return InvalidArgumentError("application name must not be empty");
  KW_RETURN_IF_ERROR(GetTenant(app.tenant_id).status());
  for (const auto& uri : app.redirect_uris) {
    // Exact-match redirect URIs only; http only for loopback (RFC 8252 §7.3).
    bool https = uri.starts_with("https://");
    bool loopback = uri.starts_with("http://127.0.0.1") || uri.starts_with("http://localhost") ||
                    uri.starts_with("http://[::1]");
    if ((!https && !loopback) || uri.find('#') != std::string::npos) {
      return InvalidArgumentError(fmt::format(
          "redirect URI '{}' must be https (or http on loopback) and have no fragment", uri));
    }
  }
  if (app.client_id.empty()) app.client_id = NewGuid();
  app.created = clock_->NowSeconds();
  CreatedApp out;
  std::string digest;
  if (app.confidential) {
    out.client_secret = Base64UrlEncode(crypto::RandomBytes(32));
    digest = crypto::Sha256(out.client_secret);
  }
  KW_ASSIGN_OR_RETURN(auto ins, db_->Prepare(
      "INSERT INTO apps (client_id, tenant_id, name, confidential, secret_sha256, redirect_uris, "
      "audiences, scopes, created) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"));
  ins.Bind(1, app.client_id).Bind(2, app.tenant_id).Bind(3, app.name).Bind(4, int64_t{app.confidential});
  if (app.confidential) {
    ins.BindBlob(5, digest);
  } else {
    ins.BindNull(5);
  }
  Status s = ins.Bind(6, ToJsonArray(app.redirect_uris)).Bind(7, ToJsonArray(app.audiences))
                 .Bind(8, ToJsonArray(app.scopes)).Bind(9, app.created).Run();
  if (s.code() == StatusCode::kAlreadyExists) {
    return AlreadyExistsError(fmt::format("client id '{}' already exists", app.client_id));
  }
  KW_RETURN_IF_ERROR(s);
  out.app = std::move(app);
  return out;
}

Result<ClientApp> Directory::GetApp(std::string_view client_id) {
  KW_ASSIGN_OR_RETURN(auto q, db_->Prepare(fmt::format("SELECT {} FROM apps WHERE client_id = ?", kAppColumns)));
  q.Bind(1, client_id);
  KW_ASSIGN_OR_RETURN(bool row, q.Step());
  if (!row) return NotFoundError(fmt::format("no application '{}'", client_id));
  return AppFromRow(q);
}

Result<ClientApp> Directory::AuthenticateClient(std::string_view client_id, std::string_view secret) {
  KW_ASSIGN_OR_RETURN(auto q, db_->Prepare(fmt::format(
      "SELECT {}, secret_sha256 FROM apps WHERE client_id = ?", kAppColumns)));
  q.Bind(1, client_id);
  KW_ASSIGN_OR_RETURN(bool row, q.Step());
  std::string given = crypto::Sha256(secret);
  std::string stored = row ? q.Blob(8) : std::string(32, '\0');
  bool match = stored.size() == given.size() &&
               CRYPTO_memcmp(stored.data(), given.data(), given.size()) == 0;
  if (!row || q.Int(3) == 0 || !match) return UnauthenticatedError("invalid client");
  return AppFromRow(q);
}

Result<std::vector<ClientApp>> Directory::ListApps(std::string_view tenant_id) {
  KW_ASSIGN_OR_RETURN(auto q, db_->Prepare(fmt::format(
      "SELECT {} FROM apps WHERE tenant_id = ? ORDER BY name, client_id", kAppColumns)));
  q.Bind(1, tenant_id);
  std::vector<ClientApp> out;
  while (true) {
    KW_ASSIGN_OR_RETURN(bool row, q.Step());
    if (!row) break;
    out.push_back(AppFromRow(q));
  }
  return out;
}

}  // namespace kw::identity
