// keyward tenant|user|app: administration of the identity directory on the embedded store.
#include <sys/stat.h>
#include <unistd.h>

#include <cctype>
#include <cerrno>
#include <cstdlib>
#include <cstring>

#include <iostream>
#include <memory>
#include <string>
#include <vector>

#include <fmt/format.h>

#include "cli/commands.h"
#include "core/file.h"
#include "core/json.h"
#include "identity/directory.h"
#include "identity/key_store.h"
#include "identity/service.h"

namespace kw::cli {
namespace {

struct DataDirOption {
  std::string dir;
};

std::string DefaultDataDir() {
  const char* env = std::getenv("KEYWARD_DATA_DIR");
  return env && *env ? env : "keyward-data";
}

Result<std::unique_ptr<identity::Directory>> OpenDirectory(const std::string& data_dir) {
  if (::mkdir(data_dir.c_str(), 0700) != 0 && errno != EEXIST) {
    return UnavailableError(fmt::format("cannot create data directory {}: {}", data_dir, std::strerror(errno)));
  }
  KW_ASSIGN_OR_RETURN(auto db, sqlite::Db::Open(data_dir + "/keyward.db"));
  return identity::Directory::Open(std::shared_ptr<sqlite::Db>(std::move(db)));
}

int Report(const Status& s) {
  std::cerr << "keyward: " << s.message() << "\n";
  return s.code() == StatusCode::kNotFound || s.code() == StatusCode::kAlreadyExists ||
                 s.code() == StatusCode::kInvalidArgument
             ? kExitRejected
             : kExitUsage;
}

// Reads a password from stdin (first line), so that it never shows in a process listing.
Result<std::string> ReadPassword() {
  if (isatty(0)) std::cerr << "password: ";
  std::string line;
  if (!std::getline(std::cin, line)) return InvalidArgumentError("no password on stdin");
  if (!line.empty() && line.back() == '\r') line.pop_back();
  return line;
}

void PrintStrings(json::Writer& w, std::string_view key, const std::vector<std::string>& v) {
  w.Key(key).BeginArray();
  for (const auto& s : v) w.String(s);
  w.EndArray();
}


// `keyward keys list`: one line per key, or the admin API's JSON.
int RunKeysList(const std::string& dir, bool as_json) {
  auto store = identity::SqliteKeyStore::OpenFile(dir + "/keys.db");
  if (!store.ok()) return Report(store.status());
  auto keys = (*store)->LoadAll();
  if (!keys.ok()) return Report(keys.status());
  const int64_t now = Clock::System()->NowSeconds();
  if (as_json) {
    std::cout << identity::KeyRecordsJson(*keys, now) << "\n";
    return kExitOk;
  }
  std::cout << fmt::format("{:<24} {:<10} {:<6} {:>5} {:<20} {}\n", "KID", "STATE", "ALG",
                           "DAYS", "NOT AFTER", "ISSUER");
  for (const auto& k : *keys) {
    std::cout << fmt::format("{:<24} {:<10} {:<6} {:>5} {:<20} {}\n", k.kid,
                             identity::SigningKeyStateName(k.state),
                             crypto::AlgorithmName(k.alg), (now - k.created) / 86400,
                             identity::FormatUtc(k.not_after), k.issuer.issuer);
  }
  return kExitOk;
}

// `keyward keys revoke`: straight into the key store; a running service applies it within its
// key refresh interval.
int RunKeysRevoke(const std::string& dir, const std::string& kid, const std::string& reason) {
  auto store = identity::SqliteKeyStore::OpenFile(dir + "/keys.db");
  if (!store.ok()) return Report(store.status());
  auto audit = identity::FileAuditSink::Open(dir + "/identity-audit.jsonl");
  if (!audit.ok()) return Report(audit.status());
  auto rec = identity::RevokeStoredKey(**store, kid, reason, Clock::System()->NowSeconds(),
                                       audit->get());
  if (!rec.ok()) return Report(rec.status());
  std::cout << fmt::format("revoked {} of {} ({})\n", rec->kid, rec->issuer.Describe(),
                           rec->revoked_reason);
  return kExitOk;
}

// `keyward keys rotate`: opens the service on the data directory (refused while `keyward
// serve` holds it: the admin API is the way then) and rotates one ring.
int RunKeysRotate(const std::string& dir, const std::string& tenant, bool immediate,
                  const std::string& reason) {
  identity::IdentityServiceOptions o;
  o.data_dir = dir;
  o.tick_interval_seconds = 0;
  auto base = ReadFile(dir + "/base-url", 4096);
  if (!base.ok()) {
    std::cerr << "keyward: " << dir << "/base-url is missing: start `keyward serve` once on this "
              << "data directory so that its issuer URLs are known\n";
    return kExitUsage;
  }
  while (!base->empty() && std::isspace(static_cast<unsigned char>(base->back()))) base->pop_back();
  o.base_url = *base;
  auto service = identity::IdentityService::Open(o);
  if (!service.ok()) return Report(service.status());
  auto ring = (*service)->Ring(tenant.empty() ? identity::kConsumerTenantId : tenant);
  if (!ring.ok()) return Report(ring.status());
  auto kid = (*ring)->Rotate(immediate, reason);
  if (!kid.ok()) return Report(kid.status());
  std::cout << fmt::format("{} of {} {}\n", *kid, (*ring)->issuer().Describe(),
                           immediate ? "signs from now on" : "is published and signs after the "
                                                              "pre-publication period");
  return kExitOk;
}
}  // namespace

void RegisterAdminCommands(CLI::App& app, int* exit_code) {
  auto data = std::make_shared<DataDirOption>();
  data->dir = DefaultDataDir();
  auto add_data_dir = [data](CLI::App* cmd) {
    cmd->add_option("--data-dir", data->dir, "Data directory (default $KEYWARD_DATA_DIR or ./keyward-data)");
  };

  // ---- tenant ----
  auto* tenant = app.add_subcommand("tenant", "Manage tenants (one enterprise issuer each)");
  tenant->require_subcommand(1);
  struct TenantCreate { std::string name, id; };
  auto tc = std::make_shared<TenantCreate>();
  auto* tcreate = tenant->add_subcommand("create", "Create a tenant; prints its id");
  tcreate->add_option("--name", tc->name, "Display name")->required();
  tcreate->add_option("--id", tc->id, "Tenant id (default: a new GUID)");
  add_data_dir(tcreate);
  tcreate->callback([=] {
    auto dir = OpenDirectory(data->dir);
    if (!dir.ok()) { *exit_code = Report(dir.status()); return; }
    auto t = (*dir)->CreateTenant(tc->name, tc->id);
    if (!t.ok()) { *exit_code = Report(t.status()); return; }
    std::cout << t->id << "\n";
  });
  auto* tlist = tenant->add_subcommand("list", "List tenants as JSON lines");
  add_data_dir(tlist);
  tlist->callback([=] {
    auto dir = OpenDirectory(data->dir);
    if (!dir.ok()) { *exit_code = Report(dir.status()); return; }
    auto ts = (*dir)->ListTenants();
    if (!ts.ok()) { *exit_code = Report(ts.status()); return; }
    for (const auto& t : *ts) {
      json::Writer w;
      w.BeginObject().Key("id").String(t.id).Key("name").String(t.name)
          .Key("kind").String(t.consumer ? "consumer" : "enterprise").Key("created").Int(t.created).EndObject();
      std::cout << w.str() << "\n";
    }
  });

  // ---- user ----
  auto* user = app.add_subcommand("user", "Manage users of a tenant");
  user->require_subcommand(1);
  struct UserCreate { std::string tenant, username, display; };
  auto uc = std::make_shared<UserCreate>();
  auto* ucreate = user->add_subcommand("create", "Create a user; the password is read from stdin");
  ucreate->add_option("--tenant", uc->tenant, "Tenant id")->required();
  ucreate->add_option("--username", uc->username, "User name, unique in the tenant")->required();
  ucreate->add_option("--display-name", uc->display, "Display name");
  add_data_dir(ucreate);
  ucreate->callback([=] {
    auto pw = ReadPassword();
    if (!pw.ok()) { *exit_code = Report(pw.status()); return; }
    auto dir = OpenDirectory(data->dir);
    if (!dir.ok()) { *exit_code = Report(dir.status()); return; }
    auto u = (*dir)->CreateUser(uc->tenant, uc->username, *pw, uc->display);
    if (!u.ok()) { *exit_code = Report(u.status()); return; }
    std::cout << u->id << "\n";
  });
  auto ul_tenant = std::make_shared<std::string>();
  auto* ulist = user->add_subcommand("list", "List a tenant's users as JSON lines");
  ulist->add_option("--tenant", *ul_tenant, "Tenant id")->required();
  add_data_dir(ulist);
  ulist->callback([=] {
    auto dir = OpenDirectory(data->dir);
    if (!dir.ok()) { *exit_code = Report(dir.status()); return; }
    auto us = (*dir)->ListUsers(*ul_tenant);
    if (!us.ok()) { *exit_code = Report(us.status()); return; }
    for (const auto& u : *us) {
      json::Writer w;
      w.BeginObject().Key("id").String(u.id).Key("username").String(u.username)
          .Key("display_name").String(u.display_name).Key("disabled").Bool(u.disabled).EndObject();
      std::cout << w.str() << "\n";
    }
  });

  // ---- app ----
  auto* appcmd = app.add_subcommand("app", "Manage registered client applications");
  appcmd->require_subcommand(1);
  auto ac = std::make_shared<identity::ClientApp>();
  auto public_client = std::make_shared<bool>(false);
  auto* acreate = appcmd->add_subcommand(
      "create", "Register an application; prints its client id and (once) its secret as JSON");
  acreate->add_option("--tenant", ac->tenant_id, "Tenant id")->required();
  acreate->add_option("--name", ac->name, "Display name")->required();
  acreate->add_option("--redirect-uri", ac->redirect_uris, "Redirect URI (repeatable)")->allow_extra_args(false);
  acreate->add_option("--audience", ac->audiences, "Audience it may request (repeatable)")->allow_extra_args(false);
  acreate->add_option("--scope", ac->scopes, "Scope it may request (repeatable)")->allow_extra_args(false);
  acreate->add_flag("--public", *public_client, "A public client (no secret; PKCE only)");
  add_data_dir(acreate);
  acreate->callback([=] {
    auto dir = OpenDirectory(data->dir);
    if (!dir.ok()) { *exit_code = Report(dir.status()); return; }
    identity::ClientApp a = *ac;
    a.confidential = !*public_client;
    auto created = (*dir)->CreateApp(a);
    if (!created.ok()) { *exit_code = Report(created.status()); return; }
    json::Writer w;
    w.BeginObject().Key("client_id").String(created->app.client_id);
    if (!created->client_secret.empty()) w.Key("client_secret").String(created->client_secret);
    w.EndObject();
    std::cout << w.str() << "\n";
    if (!created->client_secret.empty()) std::cerr << "store the secret now: it is not kept and cannot be shown again\n";
  });
  auto al_tenant = std::make_shared<std::string>();
  auto* alist = appcmd->add_subcommand("list", "List a tenant's applications as JSON lines");
  alist->add_option("--tenant", *al_tenant, "Tenant id")->required();
  add_data_dir(alist);
  alist->callback([=] {
    auto dir = OpenDirectory(data->dir);
    if (!dir.ok()) { *exit_code = Report(dir.status()); return; }
    auto as = (*dir)->ListApps(*al_tenant);
    if (!as.ok()) { *exit_code = Report(as.status()); return; }
    for (const auto& a : *as) {
      json::Writer w;
      w.BeginObject().Key("client_id").String(a.client_id).Key("name").String(a.name)
          .Key("confidential").Bool(a.confidential);
      PrintStrings(w, "redirect_uris", a.redirect_uris);
      PrintStrings(w, "audiences", a.audiences);
      PrintStrings(w, "scopes", a.scopes);
      w.EndObject();
      std::cout << w.str() << "\n";
    }
  });

  // ---- keys list|rotate|revoke (the key store of a data directory) ----
  // `keys` itself (and `keys generate`) is registered by RegisterKeysCommands.
  {
    CLI::App* keys = app.get_subcommand("keys");
    auto* klist = keys->add_subcommand("list", "List the signing keys of every issuer");
    add_data_dir(klist);
    auto as_json = std::make_shared<bool>(false);
    klist->add_flag("--json", *as_json, "Print JSON (as the admin API's GET /admin/keys)");
    klist->callback([=] { *exit_code = RunKeysList(data->dir, *as_json); });

    struct Revoke { std::string kid, reason; };
    auto kr = std::make_shared<Revoke>();
    auto* krevoke = keys->add_subcommand(
        "revoke", "Revoke a signing key at once (a running service applies it within its key "
                  "refresh interval, 1 s by default)");
    add_data_dir(krevoke);
    krevoke->add_option("--kid", kr->kid, "Key id")->required();
    krevoke->add_option("--reason", kr->reason, "Why (recorded in the audit log)")->required();
    krevoke->callback([=] { *exit_code = RunKeysRevoke(data->dir, kr->kid, kr->reason); });

    struct Rotate { std::string tenant, reason; bool now = false; };
    auto ro = std::make_shared<Rotate>();
    auto* krotate = keys->add_subcommand(
        "rotate", "Rotate an issuer's signing key (not while `keyward serve` runs on the data "
                  "directory: use its admin API, POST /admin/tenants/TENANT/keys/rotate)");
    add_data_dir(krotate);
    krotate->add_option("--tenant", ro->tenant, "Tenant id (default: the consumer issuer)");
    krotate->add_option("--reason", ro->reason, "Why (recorded in the audit log)")->required();
    krotate->add_flag("--now", ro->now,
                      "Sign with the new key at once, without pre-publication (suspected "
                      "compromise); the old key verifies its tokens until they expire");
    krotate->callback([=] { *exit_code = RunKeysRotate(data->dir, ro->tenant, ro->now, ro->reason); });
  }
}

}  // namespace kw::cli
