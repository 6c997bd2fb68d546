#include "mail/jmap.h"

#include <algorithm>
#include <cmath>
#include <set>
#include <unordered_set>

#include <fmt/format.h>

#include "core/ascii.h"
#include "core/base64url.h"
#include "crypto/crypto.h"
#include "mail/mime.h"

namespace kw::mail {

// ---------------------------------------------------------------- rate limiter

RateLimiter::RateLimiter(double rate_per_second, double burst, const Clock* clock)
    : rate_(rate_per_second), burst_(std::max(burst, 1.0)), clock_(clock) {}

bool RateLimiter::Allow(std::string_view key, int64_t* retry_after_seconds) {
  if (rate_ <= 0) return true;
  int64_t now = clock_->NowMillis();
  std::lock_guard lock(mu_);
  if (buckets_.size() > 100'000) buckets_.clear();  // bounded memory; a reset only forgives
  auto [it, inserted] = buckets_.try_emplace(std::string(key), Bucket{burst_, now});
  Bucket& b = it->second;
  if (!inserted) {
    b.tokens = std::min(burst_, b.tokens + static_cast<double>(now - b.last_ms) / 1000.0 * rate_);
    b.last_ms = now;
  }
  if (b.tokens >= 1.0) {
    b.tokens -= 1.0;
    return true;
  }
  *retry_after_seconds = std::max<int64_t>(1, static_cast<int64_t>(std::ceil((1.0 - b.tokens) / rate_)));
  return false;
}

// ---------------------------------------------------------------- helpers

namespace {

// A method-level error travels as a Status whose message is "<type>\x1f<description>".
constexpr char kSep = '\x1f';
Status MethodError(std::string_view type, std::string_view description = {}) {
  return Status(StatusCode::kInvalidArgument, fmt::format("{}{}{}", type, kSep, description));
}
// An audit failure aborts the whole request.
Status AuditFailure(const Status& s) {
  return Status(StatusCode::kUnavailable, fmt::format("audit{}{}", kSep, s.message()));
}

Value SetError(std::string_view type, std::string_view description = {}) {
  Value e = Value::MakeObject();
  e.Add("type", std::string(type));
  if (!description.empty()) e.Add("description", std::string(description));
  return e;
}

Value Obj() { return Value::MakeObject(); }
Value Arr() { return Value::MakeArray(); }

Value StrArray(const std::vector<std::string>& v) {
  Value a = Arr();
  for (const auto& s : v) a.Push(s);
  return a;
}

Result<std::string> ArgString(const Value& args, std::string_view key, bool required) {
  const Value* v = args.Find(key);
  if (!v || v->is_null()) {
    if (required) return MethodError("invalidArguments", fmt::format("'{}' is required", key));
    return std::string();
  }
  if (!v->is_string()) return MethodError("invalidArguments", fmt::format("'{}' must be a string", key));
  return v->as_string();
}

Result<std::optional<int64_t>> ArgInt(const Value& args, std::string_view key, bool unsigned_only) {
  const Value* v = args.Find(key);
  if (!v || v->is_null()) return std::optional<int64_t>();
  if (!v->is_int() || (unsigned_only && v->as_int() < 0) ||
      std::llabs(v->as_int()) > 9007199254740991LL) {
    return MethodError("invalidArguments",
                       fmt::format("'{}' must be an {}", key, unsigned_only ? "UnsignedInt" : "Int"));
  }
  return std::optional<int64_t>(v->as_int());
}

Result<bool> ArgBool(const Value& args, std::string_view key, bool fallback) {
  const Value* v = args.Find(key);
  if (!v || v->is_null()) return fallback;
  if (!v->is_bool()) return MethodError("invalidArguments", fmt::format("'{}' must be a boolean", key));
  return v->as_bool();
}

std::string AngleId(const std::string& message_id) {
  return message_id.empty() ? std::string() : "<" + message_id + ">";
}


std::string Base64Mime(std::string_view bytes) {
  std::string b = Base64UrlEncode(bytes);
  for (char& c : b) {
    if (c == '-') c = '+';
    if (c == '_') c = '/';
  }
  while (b.size() % 4) b.push_back('=');
  std::string out;
  for (size_t i = 0; i < b.size(); i += 76) {
    out += b.substr(i, 76);
    out += "\r\n";
  }
  return out;
}

const std::vector<std::string>& DefaultEmailProperties() {
  static const std::vector<std::string> k = {
      "id", "blobId", "threadId", "mailboxIds", "keywords", "size", "receivedAt", "messageId",
      "inReplyTo", "references", "sender", "from", "to", "cc", "bcc", "replyTo", "subject",
      "sentAt", "hasAttachment", "preview", "bodyValues", "textBody", "htmlBody", "attachments"};
  return k;
}
const std::set<std::string>& SummaryProperties() {
  static const std::set<std::string> k = {
      "blobId", "threadId", "size", "receivedAt", "messageId", "inReplyTo", "references", "sender",
      "from", "to", "cc", "bcc", "replyTo", "subject", "sentAt", "hasAttachment", "preview"};
  return k;
}
const std::set<std::string>& BodyProperties() {
  static const std::set<std::string> k = {"bodyStructure", "textBody", "htmlBody", "attachments",
                                          "bodyValues"};
  return k;
}
const std::vector<std::string>& DefaultBodyPartProperties() {
  static const std::vector<std::string> k = {"partId", "blobId", "size", "name", "type",
                                             "charset", "disposition", "cid", "language", "location"};
  return k;
}
const std::set<std::string>& KnownBodyPartProperties() {
  static const std::set<std::string> k = {"partId", "blobId", "size", "headers", "name", "type",
                                          "charset", "disposition", "cid", "language", "location",
                                          "subParts"};
  return k;
}

Value FilterPart(const Value& part, const std::vector<std::string>& props, bool recurse) {
  Value out = Obj();
  for (const auto& p : props) {
    if (p == "subParts") {
      if (!recurse) continue;
      const Value* subs = part.Find("subParts");
      if (!subs) continue;
      Value a = Arr();
      for (const auto& s : subs->as_array()) a.Push(FilterPart(s, props, true));
      out.Add("subParts", std::move(a));
      continue;
    }
    const Value* v = part.Find(p);
    out.Add(p, v ? *v : Value());
  }
  return out;
}

// Header form of a "header:Name[:asForm][:all]" property; InvalidArgument if malformed.
struct HeaderProp {
  std::string name, form = "asRaw";
  bool all = false;
};
Result<HeaderProp> ParseHeaderProp(std::string_view prop) {
  HeaderProp h;
  std::vector<std::string> parts;
  size_t start = 0;
  while (true) {
    size_t p = prop.find(':', start);
    parts.emplace_back(prop.substr(start, p == std::string_view::npos ? std::string_view::npos : p - start));
    if (p == std::string_view::npos) break;
    start = p + 1;
  }
  if (parts.size() < 2 || parts.size() > 4 || parts[1].empty()) {
    return InvalidArgumentError("bad header property");
  }
  h.name = parts[1];
  for (size_t i = 2; i < parts.size(); ++i) {
    if (parts[i] == "all" && i == parts.size() - 1) {
      h.all = true;
    } else if (i == 2 && (parts[i] == "asRaw" || parts[i] == "asText" || parts[i] == "asAddresses" ||
                          parts[i] == "asMessageIds" || parts[i] == "asDate" || parts[i] == "asURLs")) {
      h.form = parts[i];
    } else {
      return InvalidArgumentError("bad header form");
    }
  }
  return h;
}

Value HeaderForm(const std::string& raw, const std::string& form) {
  if (form == "asRaw") return raw;
  if (form == "asText") return DecodeHeaderText(raw);
  if (form == "asAddresses") return ParseAddressList(raw);
  if (form == "asMessageIds") return ParseMessageIds(raw);
  if (form == "asDate") {
    int64_t t;
    return ParseDate(raw, &t) ? Value(FormatUtcDate(t)) : Value();
  }
  // asURLs
  Value out = Arr();
  size_t pos = 0;
  while ((pos = raw.find('<', pos)) != std::string::npos) {
    size_t end = raw.find('>', pos);
    if (end == std::string::npos) break;
    out.Push(raw.substr(pos + 1, end - pos - 1));
    pos = end + 1;
  }
  return out.as_array().empty() ? Value() : out;
}

// The raw RFC 5322 bytes without Bcc fields, for delivery to recipients.
std::string StripBcc(std::string_view raw) {
  size_t end = raw.find("\r\n\r\n");
  size_t sep = 4;
  if (end == std::string_view::npos) {
    end = raw.find("\n\n");
    sep = 2;
  }
  if (end == std::string_view::npos) return std::string(raw);
  std::string_view head = raw.substr(0, end + sep / 2);
  std::string out;
  bool skipping = false;
  size_t i = 0;
  while (i < head.size()) {
    size_t nl = head.find('\n', i);
    std::string_view line = head.substr(i, nl == std::string_view::npos ? std::string_view::npos : nl - i + 1);
    bool continuation = !line.empty() && (line[0] == ' ' || line[0] == '\t');
    if (!continuation) skipping = line.size() >= 4 && AsciiLowerCopy(line.substr(0, 4)) == "bcc:";
    if (!skipping) out.append(line);
    if (nl == std::string_view::npos) break;
    i = nl + 1;
  }
  out.append(raw.substr(end + sep / 2));
  return out;
}

}  // namespace

// ---------------------------------------------------------------- processor

struct Processor::Call {
  std::string name;
  Value args;
  std::string id;
};

struct Processor::Ctx {
  const Principal& who;
  const audit::AuditRecord& base;
  std::set<std::string, std::less<>> using_caps;
  std::map<std::string, std::string> created_ids;
  Value::Array responses;
  Status fatal;  // audit failure: withhold everything
};

Processor::Processor(Store* store, audit::AuditWriter* audit, JmapLimits limits,
                     const Clock* clock, RateLimiter* rate_limiter)
    : store_(store), audit_(audit), limits_(limits), clock_(clock), rate_limiter_(rate_limiter) {}

JmapResponse Processor::Problem(int status, std::string_view type, std::string_view detail,
                                std::string_view limit) {
  Value p = Obj();
  p.Add("type", fmt::format("urn:ietf:params:jmap:error:{}", type));
  p.Add("status", status);
  p.Add("detail", std::string(detail));
  if (!limit.empty()) p.Add("limit", std::string(limit));
  JmapResponse r;
  r.status = status;
  r.content_type = "application/problem+json";
  r.body = p.Serialize();
  return r;
}

Status Processor::Audit(audit::AuditRecord record) {
  if (!audit_) return UnavailableError("no audit writer");
  if (record.time_ms == 0) record.time_ms = clock_->NowMillis();
  auto r = audit_->Append(std::move(record));
  if (!r.ok()) return UnavailableError("audit append failed: " + r.status().message());
  return Status::Ok();
}

Result<Account> Processor::Authorize(const Principal& who, std::string_view account_id,
                                     Access access) {
  Account account;
  bool cached = false;
  {
    std::lock_guard lock(cache_mu_);
    auto it = account_cache_.find(std::string(account_id));
    if (it != account_cache_.end()) {
      account = it->second;
      cached = true;
    }
  }
  if (!cached) {
    Status s = store_->Read([&](Txn& t) -> Status {
      KW_ASSIGN_OR_RETURN(account, t.GetAccount(account_id));
      return Status::Ok();
    });
    if (!s.ok()) {
      if (s.code() == StatusCode::kNotFound) return NotFoundError("accountNotFound");
      return s;
    }
    std::lock_guard lock(cache_mu_);
    if (account_cache_.size() > 100'000) account_cache_.clear();
    account_cache_.emplace(account.id, account);
  }
  // Another tenant's account does not exist for this caller: no hint that the id is real.
  if (who.tenant_id.empty() || account.tenant_id != who.tenant_id) {
    return NotFoundError("accountNotFound");
  }
  if (!who.app_only) {
    if (account.owner_user_id != who.user_id) return NotFoundError("accountNotFound");
    return account;
  }
  if (!who.scope_read && !who.scope_write && !who.scope_send) {
    return NotFoundError("accountNotFound");
  }
  bool ok = access == Access::kRead ? (who.scope_read || who.scope_write)
            : access == Access::kWrite ? who.scope_write
                                       : who.scope_send;
  if (!ok) {
    return PermissionDeniedError(fmt::format(
        "the application's token lacks the scope for this ({})",
        access == Access::kRead ? "Mail.Read" : access == Access::kWrite ? "Mail.ReadWrite" : "Mail.Send"));
  }
  return account;
}

std::string Processor::SessionState(const Principal& who) {
  std::string key = fmt::format("{}\x1f{}\x1f{}{}{}{}", who.tenant_id, who.user_id, who.app_only,
                                who.scope_read, who.scope_write, who.scope_send);
  uint64_t generation = store_->accounts_generation();
  {
    std::lock_guard lock(cache_mu_);
    auto it = session_state_cache_.find(key);
    if (it != session_state_cache_.end() && it->second.first == generation) return it->second.second;
  }
  auto accounts = AccountsFor(who);
  std::string src;
  if (accounts.ok()) {
    for (const auto& a : *accounts) src += a.id + ",";
  }
  std::string state = HexEncode(crypto::Sha256(src)).substr(0, 16);
  if (accounts.ok()) {
    std::lock_guard lock(cache_mu_);
    if (session_state_cache_.size() > 100'000) session_state_cache_.clear();
    session_state_cache_[key] = {generation, state};
  }
  return state;
}

Result<std::vector<Account>> Processor::AccountsFor(const Principal& who) {
  std::vector<Account> out;
  if (who.tenant_id.empty()) return out;
  Status s = store_->Read([&](Txn& t) -> Status {
    if (!who.app_only) {
      auto a = t.FindAccountByOwner(who.tenant_id, who.user_id);
      if (a.ok()) out.push_back(*a);
      return Status::Ok();
    }
    if (!who.scope_read && !who.scope_write && !who.scope_send) return Status::Ok();
    KW_ASSIGN_OR_RETURN(out, t.ListAccounts(who.tenant_id));
    return Status::Ok();
  });
  if (!s.ok()) return s;
  return out;
}

namespace {

// Per-method machinery shared by the handlers.
struct MethodEnv {
  Processor* p;
  Store* store;
  const Principal& who;
  const audit::AuditRecord& base;
  std::map<std::string, std::string>& created_ids;
  const JmapLimits& limits;
  std::string method;

  audit::AuditRecord Record(const Account* account, std::string_view operation,
                            std::string_view access_type) const {
    audit::AuditRecord r = base;
    r.operation = std::string(operation);
    r.access_type = std::string(access_type);
    r.resource = "jmap:" + method;
    r.result = "Succeeded";
    if (account) {
      r.tenant_id = account->tenant_id;
      r.mailbox_owner = account->name;
      r.mailbox_id = account->id;
    }
    return r;
  }

  // Resolves "#creationId" through createdIds.
  Result<std::string> Resolve(const std::string& id) const {
    if (!id.empty() && id[0] == '#') {
      auto it = created_ids.find(id.substr(1));
      if (it == created_ids.end()) {
        return MethodError("invalidArguments", fmt::format("unknown creation id '{}'", id));
      }
      return it->second;
    }
    return id;
  }

  Result<std::optional<std::vector<std::string>>> Ids(const Value& args, std::string_view key) const {
    const Value* v = args.Find(key);
    if (!v || v->is_null()) return std::optional<std::vector<std::string>>();
    if (!v->is_array()) return MethodError("invalidArguments", fmt::format("'{}' must be an array of ids", key));
    std::vector<std::string> out;
    for (const auto& e : v->as_array()) {
      if (!e.is_string()) return MethodError("invalidArguments", fmt::format("'{}' must be an array of ids", key));
      KW_ASSIGN_OR_RETURN(auto id, Resolve(e.as_string()));
      out.push_back(std::move(id));
    }
    return std::optional<std::vector<std::string>>(std::move(out));
  }

  // Authorizes accountId for `access`. A refusal is recorded (Failed, with the error type) and
  // returned as the method error.
  Result<Account> Authorized(const Value& args, Access access, std::string_view operation,
                           std::string_view access_type) {
    KW_ASSIGN_OR_RETURN(std::string id, ArgString(args, "accountId", true));
    auto a = p->Authorize(who, id, access);
    if (a.ok()) return a;
    std::string type = a.status().code() == StatusCode::kNotFound ? "accountNotFound"
                       : a.status().code() == StatusCode::kPermissionDenied ? "forbidden"
                                                                             : "serverFail";
    audit::AuditRecord r = Record(nullptr, operation, access_type);
    r.mailbox_id = id;
    // The tenant whose data was asked for, when the account exists: a cross-tenant attempt
    // shows up in the victim tenant's log with the caller's token tenant beside it.
    Account target;
    if (store->Read([&](Txn& t) -> Status {
          KW_ASSIGN_OR_RETURN(target, t.GetAccount(id));
          return Status::Ok();
        }).ok()) {
      r.tenant_id = target.tenant_id;
      r.mailbox_owner = target.name;
    } else {
      r.tenant_id = who.tenant_id;
    }
    r.result = "Failed";
    r.reason = type;
    Status s = p->Audit(std::move(r));
    if (!s.ok()) return AuditFailure(s);
    return MethodError(type, a.status().code() == StatusCode::kPermissionDenied ? a.status().message() : "");
  }

  Status Emit(audit::AuditRecord r) const {
    Status s = p->Audit(std::move(r));
    return s.ok() ? s : AuditFailure(s);
  }

  // Records a failed call on an authorized account.
  Status EmitFailure(const Account& account, std::string_view operation, std::string_view access_type,
                     const Status& error) const {
    if (error.code() == StatusCode::kUnavailable) return error;
    audit::AuditRecord r = Record(&account, operation, access_type);
    r.result = "Failed";
    std::string_view msg = error.message();
    r.reason = std::string(msg.substr(0, msg.find(kSep)));
    Status s = Emit(std::move(r));
    return s.ok() ? error : s;
  }
};

void AddItems(audit::AuditRecord* r, const std::vector<EmailRef>& refs,
              const std::map<std::string, std::string>& paths) {
  for (const auto& e : refs) {
    auto it = paths.find(e.mailbox_id);
    r->items.push_back(audit::AuditItem{e.id, AngleId(e.message_id),
                                        it == paths.end() ? std::string() : it->second});
  }
}

// Maps a store error of a query to the JMAP method error its message names.
Status QueryError(const Status& s) {
  if (s.code() != StatusCode::kInvalidArgument) return s;
  const std::string& m = s.message();
  for (std::string_view type : {"unsupportedFilter", "unsupportedSort", "invalidArguments"}) {
    if (m.rfind(type, 0) == 0) {
      std::string_view rest = std::string_view(m).substr(type.size());
      if (!rest.empty() && rest[0] == ':') rest.remove_prefix(1);
      while (!rest.empty() && rest[0] == ' ') rest.remove_prefix(1);
      return MethodError(type, rest);
    }
  }
  return MethodError("invalidArguments", m);
}

Status ChangesError(const Status& s) {
  if (s.code() == StatusCode::kFailedPrecondition &&
      s.message().rfind(kCannotCalculateChanges, 0) == 0) {
    return MethodError("cannotCalculateChanges", s.message().substr(kCannotCalculateChanges.size() + 2));
  }
  return s;
}

// ---------------------------------------------------------------- /changes (Mailbox, Email, Thread)

Result<Value> DoChanges(MethodEnv& env, const Value& args, std::string_view type) {
  KW_ASSIGN_OR_RETURN(Account account, env.Authorized(args, Access::kRead, "MailItemsAccessed", "Sync"));
  auto body = [&]() -> Result<Value> {
    KW_ASSIGN_OR_RETURN(std::string since, ArgString(args, "sinceState", true));
    KW_ASSIGN_OR_RETURN(auto max, ArgInt(args, "maxChanges", true));
    if (max && *max == 0) return MethodError("invalidArguments", "'maxChanges' must be positive");
    size_t max_changes = max ? static_cast<size_t>(std::min<int64_t>(*max, 10'000)) : 10'000;
    Value out = Obj();
    Status s = env.store->Read([&](Txn& t) -> Status {
      auto cs = t.Changes(account.id, type, since, max_changes);
      if (!cs.ok()) return ChangesError(cs.status());
      audit::AuditRecord r = env.Record(&account, "MailItemsAccessed", "Sync");
      std::vector<std::string> all = cs->created;
      all.insert(all.end(), cs->updated.begin(), cs->updated.end());
      if (type == "Email") {
        KW_ASSIGN_OR_RETURN(auto refs, t.EmailRefs(account.id, all));
        KW_ASSIGN_OR_RETURN(auto paths, t.MailboxPaths(account.id));
        AddItems(&r, refs, paths);
      } else if (type == "Mailbox") {
        KW_ASSIGN_OR_RETURN(auto paths, t.MailboxPaths(account.id));
        for (const auto& id : all) r.items.push_back(audit::AuditItem{id, "", paths[id]});
      } else {
        for (const auto& id : all) r.items.push_back(audit::AuditItem{id, "", ""});
      }
      for (const auto& id : cs->destroyed) r.items.push_back(audit::AuditItem{id, "", ""});
      KW_RETURN_IF_ERROR(env.Emit(std::move(r)));
      out.Add("accountId", account.id);
      out.Add("oldState", cs->old_state);
      out.Add("newState", cs->new_state);
      out.Add("hasMoreChanges", cs->has_more);
      out.Add("created", StrArray(cs->created));
      out.Add("updated", StrArray(cs->updated));
      out.Add("destroyed", StrArray(cs->destroyed));
      if (type == "Mailbox") {
        out.Add("updatedProperties",
                cs->only_counts && !cs->updated.empty()
                    ? StrArray({"totalEmails", "unreadEmails", "totalThreads", "unreadThreads"})
                    : Value());
      }
      return Status::Ok();
    });
    if (!s.ok()) return s;
    return out;
  };
  auto r = body();
  if (!r.ok()) return env.EmitFailure(account, "MailItemsAccessed", "Sync", r.status());
  return r;
}

// ---------------------------------------------------------------- Mailbox

Value MailboxJson(const Mailbox& m, const Principal& who) {
  Value v = Obj();
  v.Add("id", m.id);
  v.Add("name", m.name);
  v.Add("parentId", m.parent_id.empty() ? Value() : Value(m.parent_id));
  v.Add("role", m.role.empty() ? Value() : Value(m.role));
  v.Add("sortOrder", m.sort_order);
  v.Add("totalEmails", m.total_emails);
  v.Add("unreadEmails", m.unread_emails);
  v.Add("totalThreads", m.total_threads);
  v.Add("unreadThreads", m.unread_threads);
  bool read = !who.app_only || who.scope_read || who.scope_write;
  bool write = !who.app_only || who.scope_write;
  Value rights = Obj();
  rights.Add("mayReadItems", read);
  rights.Add("mayAddItems", write);
  rights.Add("mayRemoveItems", write);
  rights.Add("maySetSeen", write);
  rights.Add("maySetKeywords", write);
  rights.Add("mayCreateChild", write);
  rights.Add("mayRename", write);
  rights.Add("mayDelete", write);
  rights.Add("maySubmit", !who.app_only || who.scope_send);
  v.Add("myRights", std::move(rights));
  v.Add("isSubscribed", m.subscribed);
  return v;
}

Result<std::vector<std::string>> Properties(const Value& args, const std::set<std::string>& known,
                                            const std::vector<std::string>& fallback,
                                            bool allow_header = false) {
  const Value* v = args.Find("properties");
  if (!v || v->is_null()) return fallback;
  if (!v->is_array()) return MethodError("invalidArguments", "'properties' must be an array");
  std::vector<std::string> out;
  for (const auto& p : v->as_array()) {
    if (!p.is_string()) return MethodError("invalidArguments", "'properties' must be strings");
    const std::string& s = p.as_string();
    if (allow_header && s.rfind("header:", 0) == 0) {
      if (!ParseHeaderProp(s).ok()) {
        return MethodError("invalidArguments", fmt::format("bad header property '{}'", s));
      }
    } else if (!known.count(s)) {
      return MethodError("invalidArguments", fmt::format("unknown property '{}'", s));
    }
    out.push_back(s);
  }
  // "id" is always returned.
  if (std::find(out.begin(), out.end(), "id") == out.end()) out.insert(out.begin(), "id");
  return out;
}

Result<Value> MailboxGet(MethodEnv& env, const Value& args) {
  KW_ASSIGN_OR_RETURN(Account account, env.Authorized(args, Access::kRead, "MailItemsAccessed", "Sync"));
  auto body = [&]() -> Result<Value> {
    static const std::set<std::string> known = {
        "id", "name", "parentId", "role", "sortOrder", "totalEmails", "unreadEmails",
        "totalThreads", "unreadThreads", "myRights", "isSubscribed"};
    KW_ASSIGN_OR_RETURN(auto ids, env.Ids(args, "ids"));
    if (ids && static_cast<int64_t>(ids->size()) > env.limits.max_objects_in_get) {
      return MethodError("requestTooLarge", "more ids than maxObjectsInGet");
    }
    KW_ASSIGN_OR_RETURN(auto props, Properties(args, known, {known.begin(), known.end()}));
    Value out = Obj();
    Status s = env.store->Read([&](Txn& t) -> Status {
      KW_ASSIGN_OR_RETURN(auto boxes, t.ListMailboxes(account.id, true));
      KW_ASSIGN_OR_RETURN(auto paths, t.MailboxPaths(account.id));
      KW_ASSIGN_OR_RETURN(std::string state, t.State(account.id, "Mailbox"));
      Value list = Arr();
      Value not_found = Arr();
      audit::AuditRecord r = env.Record(&account, "MailItemsAccessed", "Sync");
      auto emit = [&](const Mailbox& m) {
        Value full = MailboxJson(m, env.who);
        Value v = Obj();
        for (const auto& p : props) v.Add(p, *full.Find(p));
        list.Push(std::move(v));
        r.items.push_back(audit::AuditItem{m.id, "", paths[m.id]});
      };
      if (!ids) {
        for (const auto& m : boxes) emit(m);
      } else {
        for (const auto& id : *ids) {
          auto it = std::find_if(boxes.begin(), boxes.end(), [&](const Mailbox& m) { return m.id == id; });
          if (it == boxes.end()) not_found.Push(id);
          else emit(*it);
        }
      }
      KW_RETURN_IF_ERROR(env.Emit(std::move(r)));
      out.Add("accountId", account.id);
      out.Add("state", state);
      out.Add("list", std::move(list));
      out.Add("notFound", std::move(not_found));
      return Status::Ok();
    });
    if (!s.ok()) return s;
    return out;
  };
  auto r = body();
  if (!r.ok()) return env.EmitFailure(account, "MailItemsAccessed", "Sync", r.status());
  return r;
}

Result<Value> MailboxQuery(MethodEnv& env, const Value& args) {
  KW_ASSIGN_OR_RETURN(Account account, env.Authorized(args, Access::kRead, "MailItemsAccessed", "Sync"));
  auto body = [&]() -> Result<Value> {
    const Value* filter = args.Find("filter");
    const Value* sort = args.Find("sort");
    KW_ASSIGN_OR_RETURN(auto position, ArgInt(args, "position", false));
    KW_ASSIGN_OR_RETURN(auto limit, ArgInt(args, "limit", true));
    KW_ASSIGN_OR_RETURN(bool total, ArgBool(args, "calculateTotal", false));
    if (filter && !filter->is_null()) {
      if (!filter->is_object()) return MethodError("invalidArguments", "'filter' must be an object");
      for (const auto& [k, v] : filter->as_object()) {
        if (k != "parentId" && k != "name" && k != "role" && k != "hasAnyRole" && k != "isSubscribed") {
          return MethodError("unsupportedFilter", fmt::format("condition '{}'", k));
        }
      }
    }
    Value out = Obj();
    Status s = env.store->Read([&](Txn& t) -> Status {
      KW_ASSIGN_OR_RETURN(auto boxes, t.ListMailboxes(account.id, false));
      KW_ASSIGN_OR_RETURN(auto paths, t.MailboxPaths(account.id));
      KW_ASSIGN_OR_RETURN(std::string state, t.State(account.id, "Mailbox"));
      std::vector<Mailbox> hits;
      for (const auto& m : boxes) {
        bool ok = true;
        if (filter && filter->is_object()) {
          for (const auto& [k, v] : filter->as_object()) {
            if (k == "parentId") ok &= v.is_null() ? m.parent_id.empty() : (v.is_string() && v.as_string() == m.parent_id);
            else if (k == "name") ok &= v.is_string() && AsciiLowerCopy(m.name).find(AsciiLowerCopy(v.as_string())) != std::string::npos;
            else if (k == "role") ok &= v.is_null() ? m.role.empty() : (v.is_string() && v.as_string() == m.role);
            else if (k == "hasAnyRole") ok &= v.is_bool() && v.as_bool() == !m.role.empty();
            else if (k == "isSubscribed") ok &= v.is_bool() && v.as_bool() == m.subscribed;
          }
        }
        if (ok) hits.push_back(m);
      }
      if (sort && sort->is_array()) {
        for (auto it = sort->as_array().rbegin(); it != sort->as_array().rend(); ++it) {
          const Value* prop = it->Find("property");
          const Value* asc_v = it->Find("isAscending");
          bool asc = !asc_v || !asc_v->is_bool() || asc_v->as_bool();
          if (!prop || !prop->is_string()) return MethodError("invalidArguments", "comparator needs 'property'");
          if (prop->as_string() == "name") {
            std::stable_sort(hits.begin(), hits.end(), [&](const Mailbox& a, const Mailbox& b) {
              return asc ? AsciiLowerCopy(a.name) < AsciiLowerCopy(b.name) : AsciiLowerCopy(b.name) < AsciiLowerCopy(a.name);
            });
          } else if (prop->as_string() == "sortOrder") {
            std::stable_sort(hits.begin(), hits.end(), [&](const Mailbox& a, const Mailbox& b) {
              return asc ? a.sort_order < b.sort_order : b.sort_order < a.sort_order;
            });
          } else {
            return MethodError("unsupportedSort", fmt::format("property '{}'", prop->as_string()));
          }
        }
      } else if (sort && !sort->is_null()) {
        return MethodError("invalidArguments", "'sort' must be an array");
      }
      int64_t n = static_cast<int64_t>(hits.size());
      int64_t start = position.value_or(0);
      if (start < 0) start = std::max<int64_t>(0, n + start);
      int64_t count = limit ? *limit : n;
      Value ids = Arr();
      audit::AuditRecord r = env.Record(&account, "MailItemsAccessed", "Sync");
      for (int64_t i = start; i < n && i < start + count; ++i) {
        ids.Push(hits[i].id);
        r.items.push_back(audit::AuditItem{hits[i].id, "", paths[hits[i].id]});
      }
      KW_RETURN_IF_ERROR(env.Emit(std::move(r)));
      out.Add("accountId", account.id);
      out.Add("queryState", state);
      out.Add("canCalculateChanges", false);
      out.Add("position", std::min(start, n));
      out.Add("ids", std::move(ids));
      if (total) out.Add("total", n);
      return Status::Ok();
    });
    if (!s.ok()) return s;
    return out;
  };
  auto r = body();
  if (!r.ok()) return env.EmitFailure(account, "MailItemsAccessed", "Sync", r.status());
  return r;
}

const std::set<std::string>& KnownRoles() {
  static const std::set<std::string> k = {"inbox", "drafts", "sent", "trash", "junk", "archive",
                                          "all", "flagged", "important", "subscribed", "snoozed",
                                          "scheduled", "memos"};
  return k;
}

Status CheckState(Txn& t, const Account& account, std::string_view type, const Value& args,
                  std::string* old_state) {
  KW_ASSIGN_OR_RETURN(*old_state, t.State(account.id, type));
  const Value* if_in = args.Find("ifInState");
  if (if_in && !if_in->is_null()) {
    if (!if_in->is_string()) return MethodError("invalidArguments", "'ifInState' must be a string");
    if (if_in->as_string() != *old_state) return MethodError("stateMismatch");
  }
  return Status::Ok();
}

int64_t SetCount(const Value& args) {
  int64_t n = 0;
  for (const char* k : {"create", "update"}) {
    if (const Value* v = args.Find(k); v && v->is_object()) n += static_cast<int64_t>(v->as_object().size());
  }
  if (const Value* v = args.Find("destroy"); v && v->is_array()) n += static_cast<int64_t>(v->as_array().size());
  return n;
}

Status CheckSetShape(const Value& args, const JmapLimits& limits) {
  for (const char* k : {"create", "update"}) {
    if (const Value* v = args.Find(k); v && !v->is_null() && !v->is_object()) {
      return MethodError("invalidArguments", fmt::format("'{}' must be an object", k));
    }
  }
  if (const Value* v = args.Find("destroy"); v && !v->is_null() && !v->is_array()) {
    return MethodError("invalidArguments", "'destroy' must be an array");
  }
  if (SetCount(args) > limits.max_objects_in_set) {
    return MethodError("requestTooLarge", "more objects than maxObjectsInSet");
  }
  return Status::Ok();
}

Result<Value> MailboxSet(MethodEnv& env, const Value& args) {
  KW_ASSIGN_OR_RETURN(Account account, env.Authorized(args, Access::kWrite, "Update", ""));
  auto body = [&]() -> Result<Value> {
    KW_RETURN_IF_ERROR(CheckSetShape(args, env.limits));
    KW_ASSIGN_OR_RETURN(bool remove_emails, ArgBool(args, "onDestroyRemoveEmails", false));
    Value out = Obj();
    Status s = env.store->Write([&](Txn& t) -> Status {
      std::string old_state;
      KW_RETURN_IF_ERROR(CheckState(t, account, "Mailbox", args, &old_state));
      Value created = Obj(), not_created = Obj(), updated = Obj(), not_updated = Obj();
      Value destroyed = Arr(), not_destroyed = Obj();
      std::vector<std::string> created_ids, updated_ids, destroyed_ids;
      KW_ASSIGN_OR_RETURN(auto paths_before, t.MailboxPaths(account.id));

      auto apply = [&](Mailbox* m, const Value& props, bool creating) -> Value {
        for (const auto& [k, v] : props.as_object()) {
          if (k == "name") {
            if (!v.is_string() || v.as_string().empty() || v.as_string().size() > 255) {
              return SetError("invalidProperties", "name must be a non-empty string");
            }
            m->name = SanitizeUtf8(v.as_string());
          } else if (k == "parentId") {
            if (v.is_null()) {
              m->parent_id.clear();
            } else if (v.is_string()) {
              auto id = env.Resolve(v.as_string());
              if (!id.ok()) return SetError("invalidProperties", "unknown parentId");
              if (*id == m->id) return SetError("invalidProperties", "a mailbox cannot be its own parent");
              m->parent_id = *id;
            } else {
              return SetError("invalidProperties", "parentId must be an id or null");
            }
          } else if (k == "role") {
            if (!creating) {
              if ((v.is_null() && m->role.empty()) || (v.is_string() && v.as_string() == m->role)) continue;
              return SetError("invalidProperties", "role cannot be changed");
            }
            if (v.is_null()) continue;
            if (!v.is_string() || !KnownRoles().count(v.as_string())) {
              return SetError("invalidProperties", "unknown role");
            }
            m->role = v.as_string();
          } else if (k == "sortOrder") {
            if (!v.is_int() || v.as_int() < 0) return SetError("invalidProperties", "sortOrder must be an UnsignedInt");
            m->sort_order = v.as_int();
          } else if (k == "isSubscribed") {
            if (!v.is_bool()) return SetError("invalidProperties", "isSubscribed must be a boolean");
            m->subscribed = v.as_bool();
          } else if (k == "id" || k == "totalEmails" || k == "unreadEmails" || k == "totalThreads" ||
                     k == "unreadThreads" || k == "myRights") {
            return SetError("invalidProperties", fmt::format("'{}' is server-set", k));
          } else {
            return SetError("invalidProperties", fmt::format("unknown property '{}'", k));
          }
        }
        return Value();
      };

      KW_ASSIGN_OR_RETURN(auto boxes, t.ListMailboxes(account.id, false));
      auto exists = [&](const std::string& id) {
        return std::any_of(boxes.begin(), boxes.end(), [&](const Mailbox& b) { return b.id == id; });
      };
      if (const Value* create = args.Find("create"); create && create->is_object()) {
        for (const auto& [cid, props] : create->as_object()) {
          if (!props.is_object()) {
            not_created.Add(cid, SetError("invalidProperties", "not an object"));
            continue;
          }
          Mailbox m;
          Value err = apply(&m, props, true);
          if (err.is_null() && m.name.empty()) err = SetError("invalidProperties", "name is required");
          if (err.is_null() && !m.parent_id.empty() && !exists(m.parent_id)) {
            err = SetError("invalidProperties", "parentId does not exist");
          }
          if (err.is_null() && !m.role.empty() &&
              std::any_of(boxes.begin(), boxes.end(), [&](const Mailbox& b) { return b.role == m.role; })) {
            err = SetError("invalidProperties", "another mailbox has that role");
          }
          if (err.is_null() && std::any_of(boxes.begin(), boxes.end(), [&](const Mailbox& b) {
                return b.parent_id == m.parent_id && b.name == m.name;
              })) {
            err = SetError("alreadyExists", "a sibling has that name");
          }
          if (!err.is_null()) {
            not_created.Add(cid, std::move(err));
            continue;
          }
          KW_ASSIGN_OR_RETURN(std::string id, t.CreateMailbox(account.id, m));
          m.id = id;
          boxes.push_back(m);
          env.created_ids[cid] = id;
          created_ids.push_back(id);
          Value c = Obj();
          c.Add("id", id);
          c.Add("totalEmails", 0);
          c.Add("unreadEmails", 0);
          c.Add("totalThreads", 0);
          c.Add("unreadThreads", 0);
          c.Add("myRights", *MailboxJson(m, env.who).Find("myRights"));
          created.Add(cid, std::move(c));
        }
      }
      if (const Value* update = args.Find("update"); update && update->is_object()) {
        for (const auto& [raw_id, props] : update->as_object()) {
          auto rid = env.Resolve(raw_id);
          std::string id = rid.ok() ? *rid : raw_id;
          auto it = std::find_if(boxes.begin(), boxes.end(), [&](const Mailbox& b) { return b.id == id; });
          if (it == boxes.end()) {
            not_updated.Add(raw_id, SetError("notFound"));
            continue;
          }
          if (!props.is_object()) {
            not_updated.Add(raw_id, SetError("invalidProperties", "not an object"));
            continue;
          }
          Mailbox m = *it;
          Value err = apply(&m, props, false);
          if (err.is_null() && !m.parent_id.empty()) {
            // No cycles: walk up from the new parent.
            std::string cur = m.parent_id;
            for (int depth = 0; !cur.empty() && depth < 64; ++depth) {
              if (cur == m.id) {
                err = SetError("invalidProperties", "parentId would create a cycle");
                break;
              }
              auto p = std::find_if(boxes.begin(), boxes.end(), [&](const Mailbox& b) { return b.id == cur; });
              if (p == boxes.end()) {
                err = SetError("invalidProperties", "parentId does not exist");
                break;
              }
              cur = p->parent_id;
            }
          }
          if (!err.is_null()) {
            not_updated.Add(raw_id, std::move(err));
            continue;
          }
          KW_RETURN_IF_ERROR(t.UpdateMailbox(account.id, m));
          *it = m;
          updated_ids.push_back(id);
          updated.Add(id, Value());
        }
      }
      if (const Value* destroy = args.Find("destroy"); destroy && destroy->is_array()) {
        for (const auto& v : destroy->as_array()) {
          if (!v.is_string()) return MethodError("invalidArguments", "'destroy' must be ids");
          auto rid = env.Resolve(v.as_string());
          std::string id = rid.ok() ? *rid : v.as_string();
          KW_RETURN_IF_ERROR(t.Savepoint());
          Status d = t.DestroyMailbox(account.id, id, remove_emails);
          if (d.ok()) {
            KW_RETURN_IF_ERROR(t.Release());
            destroyed.Push(id);
            destroyed_ids.push_back(id);
            boxes.erase(std::remove_if(boxes.begin(), boxes.end(), [&](const Mailbox& b) { return b.id == id; }),
                        boxes.end());
            continue;
          }
          KW_RETURN_IF_ERROR(t.RollbackToSavepoint());
          if (d.code() == StatusCode::kNotFound) not_destroyed.Add(id, SetError("notFound"));
          else if (d.code() == StatusCode::kFailedPrecondition) not_destroyed.Add(id, SetError(d.message()));
          else return d;
        }
      }
      KW_ASSIGN_OR_RETURN(std::string new_state, t.State(account.id, "Mailbox"));
      KW_ASSIGN_OR_RETURN(auto paths, t.MailboxPaths(account.id));
      // The records go in before COMMIT: a change that cannot be recorded is rolled back.
      auto record = [&](std::string_view op, const std::vector<std::string>& ids,
                        const std::map<std::string, std::string>& p) -> Status {
        if (ids.empty()) return Status::Ok();
        audit::AuditRecord r = env.Record(&account, op, "");
        for (const auto& id : ids) {
          auto it = p.find(id);
          r.items.push_back(audit::AuditItem{id, "", it == p.end() ? "" : it->second});
        }
        return env.Emit(std::move(r));
      };
      KW_RETURN_IF_ERROR(record("Create", created_ids, paths));
      KW_RETURN_IF_ERROR(record("Update", updated_ids, paths));
      KW_RETURN_IF_ERROR(record("Delete", destroyed_ids, paths_before));
      if (created_ids.empty() && updated_ids.empty() && destroyed_ids.empty()) {
        audit::AuditRecord r = env.Record(&account, "Update", "");
        r.result = "Failed";
        r.reason = "nothingChanged";
        KW_RETURN_IF_ERROR(env.Emit(std::move(r)));
      }
      out.Add("accountId", account.id);
      out.Add("oldState", old_state);
      out.Add("newState", new_state);
      out.Add("created", created.as_object().empty() ? Value() : std::move(created));
      out.Add("updated", updated.as_object().empty() ? Value() : std::move(updated));
      out.Add("destroyed", destroyed.as_array().empty() ? Value() : std::move(destroyed));
      out.Add("notCreated", not_created.as_object().empty() ? Value() : std::move(not_created));
      out.Add("notUpdated", not_updated.as_object().empty() ? Value() : std::move(not_updated));
      out.Add("notDestroyed", not_destroyed.as_object().empty() ? Value() : std::move(not_destroyed));
      return Status::Ok();
    });
    if (!s.ok()) return s;
    return out;
  };
  auto r = body();
  if (!r.ok()) return env.EmitFailure(account, "Update", "", r.status());
  return r;
}

// ---------------------------------------------------------------- Email/get

Result<Value> EmailGet(MethodEnv& env, const Value& args) {
  KW_ASSIGN_OR_RETURN(Account account, env.Authorized(args, Access::kRead, "MailItemsAccessed", "Bind"));
  auto body = [&]() -> Result<Value> {
    static const std::set<std::string> known = [] {
      std::set<std::string> k(DefaultEmailProperties().begin(), DefaultEmailProperties().end());
      k.insert("headers");
      k.insert("bodyStructure");
      return k;
    }();
    KW_ASSIGN_OR_RETURN(auto ids, env.Ids(args, "ids"));
    KW_ASSIGN_OR_RETURN(auto props, Properties(args, known, DefaultEmailProperties(), true));
    std::vector<std::string> part_props = DefaultBodyPartProperties();
    if (const Value* bp = args.Find("bodyProperties"); bp && !bp->is_null()) {
      if (!bp->is_array()) return MethodError("invalidArguments", "'bodyProperties' must be an array");
      part_props.clear();
      for (const auto& p : bp->as_array()) {
        if (!p.is_string() || !KnownBodyPartProperties().count(p.as_string())) {
          return MethodError("invalidArguments", "unknown body part property");
        }
        part_props.push_back(p.as_string());
      }
    }
    std::vector<std::string> structure_props = part_props;
    if (!args.Find("bodyProperties") || args.Find("bodyProperties")->is_null()) {
      structure_props.push_back("subParts");
    }
    KW_ASSIGN_OR_RETURN(bool fetch_text, ArgBool(args, "fetchTextBodyValues", false));
    KW_ASSIGN_OR_RETURN(bool fetch_html, ArgBool(args, "fetchHTMLBodyValues", false));
    KW_ASSIGN_OR_RETURN(bool fetch_all, ArgBool(args, "fetchAllBodyValues", false));
    KW_ASSIGN_OR_RETURN(auto max_bytes_arg, ArgInt(args, "maxBodyValueBytes", true));
    int64_t max_bytes = max_bytes_arg && *max_bytes_arg > 0 ? std::min(*max_bytes_arg, env.limits.max_body_value_bytes)
                                                            : env.limits.max_body_value_bytes;
    bool want_headers = false, want_body = false;
    for (const auto& p : props) {
      if (p == "headers" || p.rfind("header:", 0) == 0) want_headers = true;
      if (BodyProperties().count(p)) want_body = true;
    }
    Value out = Obj();
    Status s = env.store->Read([&](Txn& t) -> Status {
      std::vector<std::string> wanted;
      if (ids) {
        wanted = *ids;
      } else {
        KW_ASSIGN_OR_RETURN(auto all, t.QueryEmails(account.id, Value(), Value(), false));
        for (auto& r : all) wanted.push_back(r.id);
      }
      if (static_cast<int64_t>(wanted.size()) > env.limits.max_objects_in_get) {
        return MethodError("requestTooLarge", "more ids than maxObjectsInGet");
      }
      KW_ASSIGN_OR_RETURN(auto rows, t.GetEmails(account.id, wanted, want_headers, want_body));
      KW_ASSIGN_OR_RETURN(auto paths, t.MailboxPaths(account.id));
      KW_ASSIGN_OR_RETURN(std::string state, t.State(account.id, "Email"));
      Value list = Arr(), not_found = Arr();
      audit::AuditRecord r = env.Record(&account, "MailItemsAccessed", "Bind");
      for (size_t i = 0; i < rows.size(); ++i) {
        if (!rows[i]) {
          not_found.Push(wanted[i]);
          continue;
        }
        const EmailRow& row = *rows[i];
        KW_ASSIGN_OR_RETURN(Value summary, ParseJson(row.summary_json));
        Value headers, bodyv;
        if (want_headers) {
          KW_ASSIGN_OR_RETURN(headers, ParseJson(row.headers_json));
        }
        if (want_body) {
          KW_ASSIGN_OR_RETURN(bodyv, ParseJson(row.body_json));
        }
        Value e = Obj();
        for (const auto& p : props) {
          if (p == "id") {
            e.Add("id", row.id);
          } else if (p == "mailboxIds") {
            Value m = Obj();
            for (const auto& id : row.mailbox_ids) m.Add(id, true);
            e.Add(p, std::move(m));
          } else if (p == "keywords") {
            Value k = Obj();
            for (const auto& kw : row.keywords) k.Add(kw, true);
            e.Add(p, std::move(k));
          } else if (SummaryProperties().count(p)) {
            const Value* v = summary.Find(p);
            e.Add(p, v ? *v : Value());
          } else if (p == "headers") {
            e.Add(p, headers);
          } else if (p == "bodyStructure") {
            e.Add(p, FilterPart(*bodyv.Find("bodyStructure"), structure_props, true));
          } else if (p == "textBody" || p == "htmlBody" || p == "attachments") {
            Value a = Arr();
            for (const auto& part : bodyv.Find(p)->as_array()) a.Push(FilterPart(part, part_props, false));
            e.Add(p, std::move(a));
          } else if (p == "bodyValues") {
            Value bv = Obj();
            const Value& values = *bodyv.Find("bodyValues");
            auto add_from = [&](const char* list) {
              for (const auto& part : bodyv.Find(list)->as_array()) {
                const Value* pid = part.Find("partId");
                if (!pid || !pid->is_string() || bv.Find(pid->as_string())) continue;
                const Value* text = values.Find(pid->as_string());
                if (!text) continue;
                std::string value = text->as_string();
                bool truncated = false;
                if (static_cast<int64_t>(value.size()) > max_bytes) {
                  size_t cut = static_cast<size_t>(max_bytes);
                  while (cut > 0 && (static_cast<unsigned char>(value[cut]) & 0xC0) == 0x80) --cut;
                  value.resize(cut);
                  truncated = true;
                }
                Value o = Obj();
                o.Add("value", std::move(value));
                o.Add("isEncodingProblem", false);
                o.Add("isTruncated", truncated);
                bv.Add(pid->as_string(), std::move(o));
              }
            };
            if (fetch_text || fetch_all) add_from("textBody");
            if (fetch_html || fetch_all) add_from("htmlBody");
            if (fetch_all) {
              // Every text/* leaf, including those in attachments.
              for (const auto& [pid, text] : values.as_object()) {
                if (bv.Find(pid)) continue;
                Value o = Obj();
                std::string value = text.as_string();
                bool truncated = false;
                if (static_cast<int64_t>(value.size()) > max_bytes) {
                  size_t cut = static_cast<size_t>(max_bytes);
                  while (cut > 0 && (static_cast<unsigned char>(value[cut]) & 0xC0) == 0x80) --cut;
                  value.resize(cut);
                  truncated = true;
                }
                o.Add("value", std::move(value));
                o.Add("isEncodingProblem", false);
                o.Add("isTruncated", truncated);
                bv.Add(pid, std::move(o));
              }
            }
            e.Add(p, std::move(bv));
          } else if (p.rfind("header:", 0) == 0) {
            auto hp = ParseHeaderProp(p).value();
            Value all = Arr();
            for (const auto& h : headers.as_array()) {
              if (AsciiLowerCopy(h.Find("name")->as_string()) == AsciiLowerCopy(hp.name)) {
                all.Push(HeaderForm(h.Find("value")->as_string(), hp.form));
              }
            }
            if (hp.all) e.Add(p, std::move(all));
            else e.Add(p, all.as_array().empty() ? Value() : all.as_array().back());
          }
        }
        list.Push(std::move(e));
        std::string first_box = row.mailbox_ids.empty() ? "" : row.mailbox_ids.front();
        r.items.push_back(audit::AuditItem{row.id, AngleId(row.message_id), paths[first_box]});
      }
      KW_RETURN_IF_ERROR(env.Emit(std::move(r)));
      out.Add("accountId", account.id);
      out.Add("state", state);
      out.Add("list", std::move(list));
      out.Add("notFound", std::move(not_found));
      return Status::Ok();
    });
    if (!s.ok()) return s;
    return out;
  };
  auto r = body();
  if (!r.ok()) return env.EmitFailure(account, "MailItemsAccessed", "Bind", r.status());
  return r;
}

// ---------------------------------------------------------------- Email/query, queryChanges

constexpr int64_t kMaxQueryLimit = 1000;

Result<Value> EmailQuery(MethodEnv& env, const Value& args) {
  KW_ASSIGN_OR_RETURN(Account account, env.Authorized(args, Access::kRead, "MailItemsAccessed", "Sync"));
  auto body = [&]() -> Result<Value> {
    const Value* filter = args.Find("filter");
    const Value* sort = args.Find("sort");
    KW_ASSIGN_OR_RETURN(auto position, ArgInt(args, "position", false));
    KW_ASSIGN_OR_RETURN(std::string anchor, ArgString(args, "anchor", false));
    KW_ASSIGN_OR_RETURN(auto anchor_offset, ArgInt(args, "anchorOffset", false));
    KW_ASSIGN_OR_RETURN(auto limit, ArgInt(args, "limit", true));
    KW_ASSIGN_OR_RETURN(bool calc_total, ArgBool(args, "calculateTotal", false));
    KW_ASSIGN_OR_RETURN(bool collapse, ArgBool(args, "collapseThreads", false));
    Value out = Obj();
    Status s = env.store->Read([&](Txn& t) -> Status {
      auto refs = t.QueryEmails(account.id, filter ? *filter : Value(), sort ? *sort : Value(), collapse);
      if (!refs.ok()) return QueryError(refs.status());
      KW_ASSIGN_OR_RETURN(auto paths, t.MailboxPaths(account.id));
      KW_ASSIGN_OR_RETURN(std::string state, t.State(account.id, "Email"));
      int64_t n = static_cast<int64_t>(refs->size());
      int64_t start = 0;
      if (!anchor.empty()) {
        auto it = std::find_if(refs->begin(), refs->end(), [&](const EmailRef& r) { return r.id == anchor; });
        if (it == refs->end()) return MethodError("anchorNotFound");
        start = std::max<int64_t>(0, (it - refs->begin()) + anchor_offset.value_or(0));
      } else {
        start = position.value_or(0);
        if (start < 0) start = std::max<int64_t>(0, n + start);
      }
      int64_t lim = limit ? std::min(*limit, kMaxQueryLimit) : kMaxQueryLimit;
      std::vector<EmailRef> window;
      Value ids = Arr();
      for (int64_t i = start; i < n && i < start + lim; ++i) {
        ids.Push((*refs)[i].id);
        window.push_back((*refs)[i]);
      }
      audit::AuditRecord r = env.Record(&account, "MailItemsAccessed", "Sync");
      AddItems(&r, window, paths);
      KW_RETURN_IF_ERROR(env.Emit(std::move(r)));
      out.Add("accountId", account.id);
      out.Add("queryState", state);
      out.Add("canCalculateChanges", true);
      out.Add("position", std::min(start, n));
      out.Add("ids", std::move(ids));
      if (calc_total) out.Add("total", n);
      if (!limit || *limit > kMaxQueryLimit) out.Add("limit", kMaxQueryLimit);
      return Status::Ok();
    });
    if (!s.ok()) return s;
    return out;
  };
  auto r = body();
  if (!r.ok()) return env.EmitFailure(account, "MailItemsAccessed", "Sync", r.status());
  return r;
}

// Changes since the query state are over-reported as RFC 8620 §5.6 allows: every email changed
// since is "removed" and, if it matches now, "added" at its current index.
Result<Value> EmailQueryChanges(MethodEnv& env, const Value& args) {
  KW_ASSIGN_OR_RETURN(Account account, env.Authorized(args, Access::kRead, "MailItemsAccessed", "Sync"));
  auto body = [&]() -> Result<Value> {
    const Value* filter = args.Find("filter");
    const Value* sort = args.Find("sort");
    KW_ASSIGN_OR_RETURN(std::string since, ArgString(args, "sinceQueryState", true));
    KW_ASSIGN_OR_RETURN(auto max_changes, ArgInt(args, "maxChanges", true));
    KW_ASSIGN_OR_RETURN(bool calc_total, ArgBool(args, "calculateTotal", false));
    KW_ASSIGN_OR_RETURN(bool collapse, ArgBool(args, "collapseThreads", false));
    Value out = Obj();
    Status s = env.store->Read([&](Txn& t) -> Status {
      auto cs = t.Changes(account.id, "Email", since, 1'000'000);
      if (!cs.ok()) return ChangesError(cs.status());
      std::set<std::string> changed(cs->created.begin(), cs->created.end());
      changed.insert(cs->updated.begin(), cs->updated.end());
      if (max_changes && static_cast<int64_t>(changed.size() + cs->destroyed.size()) > *max_changes) {
        return MethodError("tooManyChanges");
      }
      auto refs = t.QueryEmails(account.id, filter ? *filter : Value(), sort ? *sort : Value(), collapse);
      if (!refs.ok()) return QueryError(refs.status());
      KW_ASSIGN_OR_RETURN(auto paths, t.MailboxPaths(account.id));
      Value removed = Arr(), added = Arr();
      for (const auto& id : cs->updated) removed.Push(id);
      for (const auto& id : cs->destroyed) removed.Push(id);
      std::vector<EmailRef> added_refs;
      for (size_t i = 0; i < refs->size(); ++i) {
        if (!changed.count((*refs)[i].id)) continue;
        Value a = Obj();
        a.Add("id", (*refs)[i].id);
        a.Add("index", static_cast<int64_t>(i));
        added.Push(std::move(a));
        added_refs.push_back((*refs)[i]);
      }
      audit::AuditRecord r = env.Record(&account, "MailItemsAccessed", "Sync");
      AddItems(&r, added_refs, paths);
      KW_RETURN_IF_ERROR(env.Emit(std::move(r)));
      out.Add("accountId", account.id);
      out.Add("oldQueryState", since);
      out.Add("newQueryState", cs->new_state);
      if (calc_total) out.Add("total", static_cast<int64_t>(refs->size()));
      out.Add("removed", std::move(removed));
      out.Add("added", std::move(added));
      return Status::Ok();
    });
    if (!s.ok()) return s;
    return out;
  };
  auto r = body();
  if (!r.ok()) return env.EmitFailure(account, "MailItemsAccessed", "Sync", r.status());
  return r;
}

// ---------------------------------------------------------------- Email/set, import

// Applies an Email/set update patch to the current mailboxes and keywords.
Value ApplyEmailPatch(MethodEnv& env, const Value& patch, std::vector<std::string>* mailboxes,
                      std::vector<std::string>* keywords, bool* mailboxes_changed, bool* keywords_changed) {
  std::set<std::string> mb(mailboxes->begin(), mailboxes->end());
  std::set<std::string> kw(keywords->begin(), keywords->end());
  auto keyword_ok = [](const std::string& k) {
    if (k.empty() || k.size() > 255) return false;
    for (char c : k) {
      if (c <= 0x20 || c >= 0x7f || c == '(' || c == ')' || c == '{' || c == ']' || c == '%' ||
          c == '*' || c == '"' || c == '\\') {
        return false;
      }
    }
    return true;
  };
  for (const auto& [k, v] : patch.as_object()) {
    if (k == "mailboxIds") {
      if (!v.is_object()) return SetError("invalidProperties", "mailboxIds must be an object");
      mb.clear();
      for (const auto& [id, on] : v.as_object()) {
        if (!on.is_bool() || !on.as_bool()) return SetError("invalidProperties", "mailboxIds values must be true");
        auto r = env.Resolve(id);
        if (!r.ok()) return SetError("invalidProperties", "unknown mailbox creation id");
        mb.insert(*r);
      }
      *mailboxes_changed = true;
    } else if (k == "keywords") {
      if (!v.is_object()) return SetError("invalidProperties", "keywords must be an object");
      kw.clear();
      for (const auto& [name, on] : v.as_object()) {
        if (!on.is_bool() || !on.as_bool() || !keyword_ok(name)) {
          return SetError("invalidProperties", "bad keyword");
        }
        kw.insert(AsciiLowerCopy(name));
      }
      *keywords_changed = true;
    } else if (k.rfind("mailboxIds/", 0) == 0) {
      auto r = env.Resolve(k.substr(11));
      if (!r.ok()) return SetError("invalidProperties", "unknown mailbox creation id");
      if (v.is_bool() && v.as_bool()) mb.insert(*r);
      else if (v.is_null()) mb.erase(*r);
      else return SetError("invalidProperties", "patch value must be true or null");
      *mailboxes_changed = true;
    } else if (k.rfind("keywords/", 0) == 0) {
      std::string name = k.substr(9);
      if (!keyword_ok(name)) return SetError("invalidProperties", "bad keyword");
      if (v.is_bool() && v.as_bool()) kw.insert(AsciiLowerCopy(name));
      else if (v.is_null()) kw.erase(AsciiLowerCopy(name));
      else return SetError("invalidProperties", "patch value must be true or null");
      *keywords_changed = true;
    } else {
      return SetError("invalidProperties", fmt::format("'{}' cannot be changed", k));
    }
  }
  if (mb.empty()) return SetError("invalidProperties", "an email must be in at least one mailbox");
  *mailboxes = {mb.begin(), mb.end()};
  *keywords = {kw.begin(), kw.end()};
  return Value();
}

// Builds an RFC 5322 message from Email/set create properties (RFC 8621 §4.6).
Result<std::string> BuildMessage(MethodEnv& env, Txn& t, const Account& account, const Value& props,
                                 std::vector<std::string>* mailboxes, std::vector<std::string>* keywords,
                                 int64_t* received_at, std::string* error_desc) {
  std::string head;
  std::string text, html;
  bool has_text = false, has_html = false;
  struct Attachment {
    std::string data, type, name, disposition, cid;
  };
  std::vector<Attachment> attachments;
  const Value* body_values = props.Find("bodyValues");
  auto part_text = [&](const Value& list, std::string* out) -> bool {
    if (!list.is_array() || list.as_array().size() != 1) return false;
    const Value* pid = list.as_array()[0].Find("partId");
    if (!pid || !pid->is_string() || !body_values || !body_values->is_object()) return false;
    const Value* bv = body_values->Find(pid->as_string());
    if (!bv || !bv->is_object() || !bv->Find("value") || !bv->Find("value")->is_string()) return false;
    *out = bv->Find("value")->as_string();
    return true;
  };
  auto addresses = [&](const Value& v, std::string* out) -> bool {
    if (!v.is_array()) return false;
    std::string s;
    for (const auto& a : v.as_array()) {
      const Value* email = a.Find("email");
      const Value* name = a.Find("name");
      if (!email || !email->is_string() || email->as_string().find('@') == std::string::npos) return false;
      if (!s.empty()) s += ", ";
      s += FormatAddress(name && name->is_string() ? name->as_string() : "", email->as_string());
    }
    *out = s;
    return true;
  };
  std::string message_id;
  bool have_date = false;
  for (const auto& [k, v] : props.as_object()) {
    if (k == "mailboxIds") {
      if (!v.is_object()) { *error_desc = "mailboxIds must be an object"; return std::string(); }
      for (const auto& [id, on] : v.as_object()) {
        if (!on.is_bool() || !on.as_bool()) { *error_desc = "mailboxIds values must be true"; return std::string(); }
        auto r = env.Resolve(id);
        if (!r.ok()) { *error_desc = "unknown mailbox creation id"; return std::string(); }
        mailboxes->push_back(*r);
      }
    } else if (k == "keywords") {
      if (!v.is_object()) { *error_desc = "keywords must be an object"; return std::string(); }
      for (const auto& [name, on] : v.as_object()) keywords->push_back(name);
    } else if (k == "receivedAt") {
      if (!v.is_string() || !ParseUtcDate(v.as_string(), received_at)) { *error_desc = "bad receivedAt"; return std::string(); }
    } else if (k == "from" || k == "to" || k == "cc" || k == "bcc" || k == "replyTo" || k == "sender") {
      if (v.is_null()) continue;
      std::string s;
      if (!addresses(v, &s)) { *error_desc = fmt::format("bad {}", k); return std::string(); }
      static const std::map<std::string, std::string> names = {
          {"from", "From"}, {"to", "To"}, {"cc", "Cc"}, {"bcc", "Bcc"}, {"replyTo", "Reply-To"}, {"sender", "Sender"}};
      head += fmt::format("{}: {}\r\n", names.at(k), s);
    } else if (k == "subject") {
      if (!v.is_string()) { *error_desc = "bad subject"; return std::string(); }
      head += fmt::format("Subject: {}\r\n", EncodeHeaderText(v.as_string()));
    } else if (k == "sentAt") {
      int64_t ts;
      if (!v.is_string() || !ParseUtcDate(v.as_string(), &ts)) { *error_desc = "bad sentAt"; return std::string(); }
      std::time_t tt = static_cast<std::time_t>(ts);
      std::tm tm{};
      gmtime_r(&tt, &tm);
      char buf[64];
      std::strftime(buf, sizeof(buf), "%a, %d %b %Y %H:%M:%S +0000", &tm);
      head += fmt::format("Date: {}\r\n", buf);
      have_date = true;
    } else if (k == "messageId" || k == "inReplyTo" || k == "references") {
      if (v.is_null()) continue;
      if (!v.is_array()) { *error_desc = fmt::format("bad {}", k); return std::string(); }
      std::string s;
      for (const auto& id : v.as_array()) {
        if (!id.is_string() || id.as_string().find_first_of("<>\r\n ") != std::string::npos ||
            id.as_string().find('@') == std::string::npos) {
          *error_desc = fmt::format("bad {}", k);
          return std::string();
        }
        if (!s.empty()) s += " ";
        s += "<" + id.as_string() + ">";
      }
      if (k == "messageId") message_id = s;
      else head += fmt::format("{}: {}\r\n", k == "inReplyTo" ? "In-Reply-To" : "References", s);
    } else if (k == "textBody") {
      if (!part_text(v, &text)) { *error_desc = "textBody must be one part with a bodyValues entry"; return std::string(); }
      has_text = true;
    } else if (k == "htmlBody") {
      if (!part_text(v, &html)) { *error_desc = "htmlBody must be one part with a bodyValues entry"; return std::string(); }
      has_html = true;
    } else if (k == "bodyValues") {
    } else if (k == "attachments") {
      if (!v.is_array()) { *error_desc = "attachments must be an array"; return std::string(); }
      for (const auto& a : v.as_array()) {
        const Value* blob = a.Find("blobId");
        if (!blob || !blob->is_string()) { *error_desc = "attachment needs a blobId"; return std::string(); }
        auto data = t.GetBlob(account.id, blob->as_string());
        if (!data.ok()) { *error_desc = "blobNotFound"; return std::string(); }
        Attachment at;
        at.data = std::move(*data);
        const Value* type = a.Find("type");
        at.type = type && type->is_string() ? type->as_string() : "application/octet-stream";
        const Value* name = a.Find("name");
        at.name = name && name->is_string() ? name->as_string() : "";
        const Value* disp = a.Find("disposition");
        at.disposition = disp && disp->is_string() ? disp->as_string() : "attachment";
        const Value* cid = a.Find("cid");
        at.cid = cid && cid->is_string() ? cid->as_string() : "";
        for (std::string* s : {&at.type, &at.name, &at.disposition, &at.cid}) {
          if (s->find_first_of("\r\n\"") != std::string::npos) { *error_desc = "bad attachment field"; return std::string(); }
        }
        attachments.push_back(std::move(at));
      }
    } else if (k == "id" || k == "blobId" || k == "threadId" || k == "size" || k == "preview" ||
               k == "hasAttachment") {
      *error_desc = fmt::format("'{}' is server-set", k);
      return std::string();
    } else {
      *error_desc = fmt::format("unsupported property '{}'", k);
      return std::string();
    }
  }
  if (message_id.empty()) {
    message_id = fmt::format("<{}@keyward.invalid>", HexEncode(crypto::RandomBytes(12)));
  }
  head += fmt::format("Message-ID: {}\r\n", message_id);
  if (!have_date) {
    std::time_t tt = static_cast<std::time_t>(*received_at ? *received_at : std::time(nullptr));
    std::tm tm{};
    gmtime_r(&tt, &tm);
    char buf[64];
    std::strftime(buf, sizeof(buf), "%a, %d %b %Y %H:%M:%S +0000", &tm);
    head += fmt::format("Date: {}\r\n", buf);
  }
  head += "MIME-Version: 1.0\r\n";
  auto text_part = [](std::string_view type, std::string_view value) {
    return fmt::format("Content-Type: {}; charset=utf-8\r\nContent-Transfer-Encoding: base64\r\n\r\n{}",
                       type, Base64Mime(SanitizeUtf8(value)));
  };
  std::string boundary = HexEncode(crypto::RandomBytes(12));
  std::string main;
  if (has_text && has_html) {
    main = fmt::format("Content-Type: multipart/alternative; boundary=\"a{0}\"\r\n\r\n--a{0}\r\n{1}--a{0}\r\n{2}--a{0}--\r\n",
                       boundary, text_part("text/plain", text), text_part("text/html", html));
  } else if (has_html) {
    main = text_part("text/html", html);
  } else {
    main = text_part("text/plain", text);
  }
  if (attachments.empty()) return head + main;
  std::string out = head + fmt::format("Content-Type: multipart/mixed; boundary=\"m{}\"\r\n\r\n", boundary);
  out += fmt::format("--m{}\r\n{}", boundary, main);
  for (const auto& a : attachments) {
    out += fmt::format("--m{}\r\nContent-Type: {}{}\r\nContent-Disposition: {}{}\r\n{}Content-Transfer-Encoding: base64\r\n\r\n{}",
                       boundary, a.type, a.name.empty() ? "" : fmt::format("; name=\"{}\"", EncodeHeaderText(a.name)),
                       a.disposition, a.name.empty() ? "" : fmt::format("; filename=\"{}\"", EncodeHeaderText(a.name)),
                       a.cid.empty() ? "" : fmt::format("Content-ID: <{}>\r\n", a.cid), Base64Mime(a.data));
  }
  out += fmt::format("--m{}--\r\n", boundary);
  return out;
}

struct EmailUpdateOutcome {
  Value updated = Obj(), not_updated = Obj();
  Value destroyed = Arr(), not_destroyed = Obj();
  std::vector<EmailRef> updated_refs, destroyed_refs;
};

// Runs the update and destroy parts of Email/set (also used by onSuccessUpdateEmail).
Status ApplyEmailUpdates(MethodEnv& env, Txn& t, const Account& account, const Value* update,
                         const Value* destroy, EmailUpdateOutcome* o) {
  if (update && update->is_object()) {
    for (const auto& [raw_id, patch] : update->as_object()) {
      auto rid = env.Resolve(raw_id);
      std::string id = rid.ok() ? *rid : raw_id;
      KW_ASSIGN_OR_RETURN(auto rows, t.GetEmails(account.id, {id}, false, false));
      if (!rows[0]) {
        o->not_updated.Add(raw_id, SetError("notFound"));
        continue;
      }
      if (!patch.is_object()) {
        o->not_updated.Add(raw_id, SetError("invalidPatch", "not an object"));
        continue;
      }
      std::vector<std::string> mailboxes = rows[0]->mailbox_ids, keywords = rows[0]->keywords;
      bool mchanged = false, kchanged = false;
      Value err = ApplyEmailPatch(env, patch, &mailboxes, &keywords, &mchanged, &kchanged);
      if (!err.is_null()) {
        o->not_updated.Add(raw_id, std::move(err));
        continue;
      }
      KW_RETURN_IF_ERROR(t.Savepoint());
      Status s = t.UpdateEmail(account.id, id, mchanged ? std::optional(mailboxes) : std::nullopt,
                               kchanged ? std::optional(keywords) : std::nullopt);
      if (!s.ok()) {
        KW_RETURN_IF_ERROR(t.RollbackToSavepoint());
        if (s.code() == StatusCode::kNotFound) {
          o->not_updated.Add(raw_id, SetError("invalidProperties", s.message()));
          continue;
        }
        return s;
      }
      KW_RETURN_IF_ERROR(t.Release());
      o->updated.Add(id, Value());
      o->updated_refs.push_back(EmailRef{id, rows[0]->thread_id, rows[0]->message_id,
                                         mailboxes.empty() ? "" : mailboxes.front()});
    }
  }
  if (destroy && destroy->is_array()) {
    for (const auto& v : destroy->as_array()) {
      if (!v.is_string()) return MethodError("invalidArguments", "'destroy' must be ids");
      auto rid = env.Resolve(v.as_string());
      std::string id = rid.ok() ? *rid : v.as_string();
      KW_ASSIGN_OR_RETURN(auto refs, t.EmailRefs(account.id, {id}));
      if (refs.empty()) {
        o->not_destroyed.Add(id, SetError("notFound"));
        continue;
      }
      KW_RETURN_IF_ERROR(t.DestroyEmail(account.id, id));
      o->destroyed.Push(id);
      o->destroyed_refs.push_back(refs[0]);
    }
  }
  return Status::Ok();
}

Status RecordEmailOps(MethodEnv& env, Txn& t, const Account& account,
                      const std::vector<EmailRef>& created, const std::vector<EmailRef>& updated,
                      const std::vector<EmailRef>& destroyed,
                      const std::map<std::string, std::string>& paths_before) {
  KW_ASSIGN_OR_RETURN(auto paths, t.MailboxPaths(account.id));
  auto rec = [&](std::string_view op, const std::vector<EmailRef>& refs,
                 const std::map<std::string, std::string>& p) -> Status {
    if (refs.empty()) return Status::Ok();
    audit::AuditRecord r = env.Record(&account, op, "");
    AddItems(&r, refs, p);
    return env.Emit(std::move(r));
  };
  KW_RETURN_IF_ERROR(rec("Create", created, paths));
  KW_RETURN_IF_ERROR(rec("Update", updated, paths));
  return rec("Delete", destroyed, paths_before);
}

Value OrNull(Value v) {
  if (v.is_object() && v.as_object().empty()) return Value();
  if (v.is_array() && v.as_array().empty()) return Value();
  return v;
}

Result<Value> EmailSet(MethodEnv& env, const Value& args) {
  KW_ASSIGN_OR_RETURN(Account account, env.Authorized(args, Access::kWrite, "Update", ""));
  auto body = [&]() -> Result<Value> {
    KW_RETURN_IF_ERROR(CheckSetShape(args, env.limits));
    Value out = Obj();
    Status s = env.store->Write([&](Txn& t) -> Status {
      std::string old_state;
      KW_RETURN_IF_ERROR(CheckState(t, account, "Email", args, &old_state));
      KW_ASSIGN_OR_RETURN(auto paths_before, t.MailboxPaths(account.id));
      Value created = Obj(), not_created = Obj();
      std::vector<EmailRef> created_refs;
      if (const Value* create = args.Find("create"); create && create->is_object()) {
        for (const auto& [cid, props] : create->as_object()) {
          if (!props.is_object()) {
            not_created.Add(cid, SetError("invalidProperties", "not an object"));
            continue;
          }
          ImportRequest req;
          std::string err;
          KW_ASSIGN_OR_RETURN(req.raw, BuildMessage(env, t, account, props, &req.mailbox_ids, &req.keywords,
                                                    &req.received_at, &err));
          if (!err.empty()) {
            not_created.Add(cid, SetError(err == "blobNotFound" ? "blobNotFound" : "invalidProperties",
                                          err == "blobNotFound" ? "" : err));
            continue;
          }
          KW_RETURN_IF_ERROR(t.Savepoint());
          auto r = t.Import(account.id, req);
          if (!r.ok()) {
            KW_RETURN_IF_ERROR(t.RollbackToSavepoint());
            if (r.status().code() == StatusCode::kInternal) return r.status();
            not_created.Add(cid, SetError("invalidProperties", r.status().message()));
            continue;
          }
          KW_RETURN_IF_ERROR(t.Release());
          env.created_ids[cid] = r->id;
          Value c = Obj();
          c.Add("id", r->id);
          c.Add("blobId", r->blob_id);
          c.Add("threadId", r->thread_id);
          c.Add("size", r->size);
          created.Add(cid, std::move(c));
          created_refs.push_back(EmailRef{r->id, r->thread_id, r->message_id,
                                          *std::min_element(req.mailbox_ids.begin(), req.mailbox_ids.end())});
        }
      }
      EmailUpdateOutcome o;
      KW_RETURN_IF_ERROR(ApplyEmailUpdates(env, t, account, args.Find("update"), args.Find("destroy"), &o));
      KW_ASSIGN_OR_RETURN(std::string new_state, t.State(account.id, "Email"));
      KW_RETURN_IF_ERROR(RecordEmailOps(env, t, account, created_refs, o.updated_refs, o.destroyed_refs, paths_before));
      if (created_refs.empty() && o.updated_refs.empty() && o.destroyed_refs.empty()) {
        audit::AuditRecord r = env.Record(&account, "Update", "");
        r.result = "Failed";
        r.reason = "nothingChanged";
        KW_RETURN_IF_ERROR(env.Emit(std::move(r)));
      }
      out.Add("accountId", account.id);
      out.Add("oldState", old_state);
      out.Add("newState", new_state);
      out.Add("created", OrNull(std::move(created)));
      out.Add("updated", OrNull(std::move(o.updated)));
      out.Add("destroyed", OrNull(std::move(o.destroyed)));
      out.Add("notCreated", OrNull(std::move(not_created)));
      out.Add("notUpdated", OrNull(std::move(o.not_updated)));
      out.Add("notDestroyed", OrNull(std::move(o.not_destroyed)));
      return Status::Ok();
    });
    if (!s.ok()) return s;
    return out;
  };
  auto r = body();
  if (!r.ok()) return env.EmitFailure(account, "Update", "", r.status());
  return r;
}

Result<Value> EmailImport(MethodEnv& env, const Value& args) {
  KW_ASSIGN_OR_RETURN(Account account, env.Authorized(args, Access::kWrite, "Create", ""));
  auto body = [&]() -> Result<Value> {
    const Value* emails = args.Find("emails");
    if (!emails || !emails->is_object()) return MethodError("invalidArguments", "'emails' must be an object");
    if (static_cast<int64_t>(emails->as_object().size()) > env.limits.max_objects_in_set) {
      return MethodError("requestTooLarge", "more emails than maxObjectsInSet");
    }
    Value out = Obj();
    Status s = env.store->Write([&](Txn& t) -> Status {
      std::string old_state;
      KW_RETURN_IF_ERROR(CheckState(t, account, "Email", args, &old_state));
      Value created = Obj(), not_created = Obj();
      std::vector<EmailRef> refs;
      for (const auto& [cid, e] : emails->as_object()) {
        const Value* blob = e.Find("blobId");
        const Value* mb = e.Find("mailboxIds");
        if (!e.is_object() || !blob || !blob->is_string() || !mb || !mb->is_object()) {
          not_created.Add(cid, SetError("invalidProperties", "blobId and mailboxIds are required"));
          continue;
        }
        ImportRequest req;
        auto bid = env.Resolve(blob->as_string());
        auto data = bid.ok() ? t.GetBlob(account.id, *bid) : Result<std::string>(bid.status());
        if (!data.ok()) {
          not_created.Add(cid, SetError("blobNotFound"));
          continue;
        }
        req.raw = std::move(*data);
        Value err;
        for (const auto& [id, on] : mb->as_object()) {
          auto r = env.Resolve(id);
          if (!on.is_bool() || !on.as_bool() || !r.ok()) err = SetError("invalidProperties", "bad mailboxIds");
          else req.mailbox_ids.push_back(*r);
        }
        if (const Value* kw = e.Find("keywords"); kw && kw->is_object()) {
          for (const auto& [k, on] : kw->as_object()) req.keywords.push_back(k);
        }
        if (const Value* ra = e.Find("receivedAt"); ra && !ra->is_null()) {
          if (!ra->is_string() || !ParseUtcDate(ra->as_string(), &req.received_at)) {
            err = SetError("invalidProperties", "bad receivedAt");
          }
        }
        if (!err.is_null()) {
          not_created.Add(cid, std::move(err));
          continue;
        }
        // Import checks before it writes: a refused message leaves nothing (store.h).
        auto r = t.Import(account.id, req);
        if (!r.ok()) {
          if (r.status().code() == StatusCode::kInternal) return r.status();
          not_created.Add(cid, SetError(r.status().code() == StatusCode::kInvalidArgument &&
                                                r.status().message().find("mailbox") == std::string::npos
                                            ? "invalidEmail"
                                            : "invalidProperties",
                                        r.status().message()));
          continue;
        }
        env.created_ids[cid] = r->id;
        Value c = Obj();
        c.Add("id", r->id);
        c.Add("blobId", r->blob_id);
        c.Add("threadId", r->thread_id);
        c.Add("size", r->size);
        created.Add(cid, std::move(c));
        refs.push_back(EmailRef{r->id, r->thread_id, r->message_id,
                                *std::min_element(req.mailbox_ids.begin(), req.mailbox_ids.end())});
      }
      KW_ASSIGN_OR_RETURN(std::string new_state, t.State(account.id, "Email"));
      KW_ASSIGN_OR_RETURN(auto paths, t.MailboxPaths(account.id));
      audit::AuditRecord r = env.Record(&account, "Create", "");
      AddItems(&r, refs, paths);
      if (refs.empty()) {
        r.result = "Failed";
        r.reason = "nothingCreated";
      }
      KW_RETURN_IF_ERROR(env.Emit(std::move(r)));
      out.Add("accountId", account.id);
      out.Add("oldState", old_state);
      out.Add("newState", new_state);
      out.Add("created", OrNull(std::move(created)));
      out.Add("notCreated", OrNull(std::move(not_created)));
      return Status::Ok();
    });
    if (!s.ok()) return s;
    return out;
  };
  auto r = body();
  if (!r.ok()) return env.EmitFailure(account, "Create", "", r.status());
  return r;
}

// ---------------------------------------------------------------- Thread/get

Result<Value> ThreadGet(MethodEnv& env, const Value& args) {
  KW_ASSIGN_OR_RETURN(Account account, env.Authorized(args, Access::kRead, "MailItemsAccessed", "Sync"));
  auto body = [&]() -> Result<Value> {
    KW_ASSIGN_OR_RETURN(auto ids, env.Ids(args, "ids"));
    if (!ids) return MethodError("requestTooLarge", "Thread/get needs explicit ids");
    if (static_cast<int64_t>(ids->size()) > env.limits.max_objects_in_get) {
      return MethodError("requestTooLarge", "more ids than maxObjectsInGet");
    }
    Value out = Obj();
    Status s = env.store->Read([&](Txn& t) -> Status {
      KW_ASSIGN_OR_RETURN(std::string state, t.State(account.id, "Thread"));
      KW_ASSIGN_OR_RETURN(auto paths, t.MailboxPaths(account.id));
      Value list = Arr(), not_found = Arr();
      std::vector<std::string> all;
      for (const auto& id : *ids) {
        KW_ASSIGN_OR_RETURN(auto emails, t.ThreadEmails(account.id, id));
        if (emails.empty()) {
          not_found.Push(id);
          continue;
        }
        Value th = Obj();
        th.Add("id", id);
        th.Add("emailIds", StrArray(emails));
        list.Push(std::move(th));
        all.insert(all.end(), emails.begin(), emails.end());
      }
      KW_ASSIGN_OR_RETURN(auto refs, t.EmailRefs(account.id, all));
      audit::AuditRecord r = env.Record(&account, "MailItemsAccessed", "Sync");
      AddItems(&r, refs, paths);
      KW_RETURN_IF_ERROR(env.Emit(std::move(r)));
      out.Add("accountId", account.id);
      out.Add("state", state);
      out.Add("list", std::move(list));
      out.Add("notFound", std::move(not_found));
      return Status::Ok();
    });
    if (!s.ok()) return s;
    return out;
  };
  auto r = body();
  if (!r.ok()) return env.EmitFailure(account, "MailItemsAccessed", "Sync", r.status());
  return r;
}

// ---------------------------------------------------------------- Identity/get

Value IdentityJson(const Account& a) {
  Value v = Obj();
  v.Add("id", "I" + a.id);
  v.Add("name", a.name);
  v.Add("email", a.email);
  v.Add("replyTo", Value());
  v.Add("bcc", Value());
  v.Add("textSignature", "");
  v.Add("htmlSignature", "");
  v.Add("mayDelete", false);
  return v;
}

Result<Value> IdentityGet(MethodEnv& env, const Value& args) {
  KW_ASSIGN_OR_RETURN(Account account, env.Authorized(args, Access::kRead, "MailItemsAccessed", "Sync"));
  KW_ASSIGN_OR_RETURN(auto ids, env.Ids(args, "ids"));
  Value list = Arr(), not_found = Arr();
  std::string mine = "I" + account.id;
  if (!ids) {
    list.Push(IdentityJson(account));
  } else {
    for (const auto& id : *ids) {
      if (id == mine) list.Push(IdentityJson(account));
      else not_found.Push(id);
    }
  }
  KW_RETURN_IF_ERROR(env.Emit(env.Record(&account, "MailItemsAccessed", "Sync")));
  Value out = Obj();
  out.Add("accountId", account.id);
  out.Add("state", "1");
  out.Add("list", std::move(list));
  out.Add("notFound", std::move(not_found));
  return out;
}

// ---------------------------------------------------------------- EmailSubmission/set

struct SubmissionResult {
  Value response;
  std::optional<Value> email_set;  // the implicit Email/set response
};

Result<SubmissionResult> EmailSubmissionSet(MethodEnv& env, const Value& args) {
  KW_ASSIGN_OR_RETURN(Account account, env.Authorized(args, Access::kSend, "Send", ""));
  auto body = [&]() -> Result<SubmissionResult> {
    KW_RETURN_IF_ERROR(CheckSetShape(args, env.limits));
    const Value* on_update = args.Find("onSuccessUpdateEmail");
    const Value* on_destroy = args.Find("onSuccessDestroyEmail");
    if (on_update && !on_update->is_null() && !on_update->is_object()) {
      return MethodError("invalidArguments", "'onSuccessUpdateEmail' must be an object");
    }
    if (on_destroy && !on_destroy->is_null() && !on_destroy->is_array()) {
      return MethodError("invalidArguments", "'onSuccessDestroyEmail' must be an array");
    }
    if ((on_update && on_update->is_object()) || (on_destroy && on_destroy->is_array())) {
      // Changing the sent email needs write access as well.
      if (env.who.app_only && !env.who.scope_write) {
        return MethodError("forbidden", "onSuccessUpdateEmail needs Mail.ReadWrite");
      }
    }
    if (const Value* u = args.Find("update"); u && u->is_object() && !u->as_object().empty()) {
      return MethodError("invalidArguments", "sent submissions cannot be updated (undoStatus is final)");
    }
    SubmissionResult result;
    Status s = env.store->Write([&](Txn& t) -> Status {
      std::string old_state;
      KW_RETURN_IF_ERROR(CheckState(t, account, "EmailSubmission", args, &old_state));
      KW_ASSIGN_OR_RETURN(auto paths, t.MailboxPaths(account.id));
      Value created = Obj(), not_created = Obj();
      std::map<std::string, std::string> submission_ids;  // creation id -> submission id
      std::map<std::string, std::string> submitted_email;  // creation id -> email id
      for (const auto& [cid, props] : args.Find("create") && args.Find("create")->is_object()
                                          ? args.Find("create")->as_object()
                                          : Value::Object{}) {
        const Value* identity = props.Find("identityId");
        const Value* email_v = props.Find("emailId");
        if (!props.is_object() || !identity || !identity->is_string() || !email_v || !email_v->is_string()) {
          not_created.Add(cid, SetError("invalidProperties", "identityId and emailId are required"));
          continue;
        }
        if (identity->as_string() != "I" + account.id) {
          not_created.Add(cid, SetError("invalidProperties", "unknown identityId"));
          continue;
        }
        auto email_id = env.Resolve(email_v->as_string());
        if (!email_id.ok()) {
          not_created.Add(cid, SetError("invalidProperties", "unknown emailId"));
          continue;
        }
        KW_ASSIGN_OR_RETURN(auto rows, t.GetEmails(account.id, {*email_id}, false, false));
        if (!rows[0]) {
          not_created.Add(cid, SetError("invalidEmail", "no such email"));
          continue;
        }
        const EmailRow& row = *rows[0];
        KW_ASSIGN_OR_RETURN(Value summary, ParseJson(row.summary_json));
        // The From address must be the account's own: no sending as someone else.
        bool from_ok = false;
        if (const Value* from = summary.Find("from"); from && from->is_array()) {
          from_ok = !from->as_array().empty();
          for (const auto& a : from->as_array()) {
            const Value* e = a.Find("email");
            if (!e || !e->is_string() || AsciiLowerCopy(e->as_string()) != account.email) from_ok = false;
          }
        }
        if (!from_ok) {
          not_created.Add(cid, SetError("forbiddenFrom", "From must be the account's own address"));
          continue;
        }
        std::vector<std::string> rcpts;
        const Value* envelope = props.Find("envelope");
        if (envelope && envelope->is_object()) {
          const Value* rcpt = envelope->Find("rcptTo");
          if (!rcpt || !rcpt->is_array()) {
            not_created.Add(cid, SetError("invalidProperties", "envelope.rcptTo must be an array"));
            continue;
          }
          for (const auto& a : rcpt->as_array()) {
            const Value* e = a.Find("email");
            if (e && e->is_string()) rcpts.push_back(AsciiLowerCopy(e->as_string()));
          }
        } else {
          for (const char* k : {"to", "cc", "bcc"}) {
            const Value* list = summary.Find(k);
            if (!list || !list->is_array()) continue;
            for (const auto& a : list->as_array()) {
              const Value* e = a.Find("email");
              if (e && e->is_string()) rcpts.push_back(AsciiLowerCopy(e->as_string()));
            }
          }
        }
        std::sort(rcpts.begin(), rcpts.end());
        rcpts.erase(std::unique(rcpts.begin(), rcpts.end()), rcpts.end());
        if (rcpts.empty()) {
          not_created.Add(cid, SetError("noRecipients"));
          continue;
        }
        if (rcpts.size() > 100) {
          not_created.Add(cid, SetError("tooManyRecipients"));
          continue;
        }
        // Delivery stays on this server: every recipient must be a Keyward account.
        std::vector<Account> targets;
        Value invalid = Arr();
        for (const auto& r : rcpts) {
          auto a = t.FindAccountByEmail(r);
          if (a.ok()) targets.push_back(*a);
          else invalid.Push(r);
        }
        if (!invalid.as_array().empty()) {
          Value err = SetError("invalidRecipients", "recipients without a mailbox on this server");
          err.Add("invalidRecipients", std::move(invalid));
          not_created.Add(cid, std::move(err));
          continue;
        }
        KW_ASSIGN_OR_RETURN(std::string raw, t.GetBlob(account.id, row.blob_id));
        std::string delivered = StripBcc(raw);
        KW_RETURN_IF_ERROR(t.Savepoint());
        Status ds;
        for (const auto& target : targets) {
          auto boxes = t.ListMailboxes(target.id, false);
          if (!boxes.ok()) { ds = boxes.status(); break; }
          std::string inbox;
          for (const auto& m : *boxes) {
            if (m.role == "inbox") inbox = m.id;
          }
          if (inbox.empty()) { ds = FailedPreconditionError("recipient has no inbox"); break; }
          ImportRequest req;
          req.raw = delivered;
          req.mailbox_ids = {inbox};
          auto r = t.Import(target.id, req);
          if (!r.ok()) { ds = r.status(); break; }
        }
        if (!ds.ok()) {
          KW_RETURN_IF_ERROR(t.RollbackToSavepoint());
          if (ds.code() == StatusCode::kInternal) return ds;
          not_created.Add(cid, SetError("invalidEmail", ds.message()));
          continue;
        }
        KW_ASSIGN_OR_RETURN(std::string sub_id, t.RecordSubmission(account.id, *email_id, identity->as_string()));
        KW_RETURN_IF_ERROR(t.Release());
        env.created_ids[cid] = sub_id;
        submission_ids[cid] = sub_id;
        submitted_email[cid] = *email_id;
        Value c = Obj();
        c.Add("id", sub_id);
        c.Add("sendAt", FormatUtcDate(env.p->store()->options().clock->NowSeconds()));
        c.Add("undoStatus", "final");
        created.Add(cid, std::move(c));
        audit::AuditRecord rec = env.Record(&account, "Send", "");
        rec.items.push_back(audit::AuditItem{row.id, AngleId(row.message_id),
                                             paths[row.mailbox_ids.empty() ? "" : row.mailbox_ids.front()]});
        Value detail = Obj();
        detail.Add("submissionId", sub_id);
        detail.Add("recipients", StrArray(rcpts));
        rec.detail = detail.Serialize();
        KW_RETURN_IF_ERROR(env.Emit(std::move(rec)));
      }
      if (submission_ids.empty()) {
        audit::AuditRecord r = env.Record(&account, "Send", "");
        r.result = "Failed";
        r.reason = "nothingSent";
        KW_RETURN_IF_ERROR(env.Emit(std::move(r)));
      }
      Value not_destroyed = Obj();
      if (const Value* d = args.Find("destroy"); d && d->is_array()) {
        for (const auto& id : d->as_array()) {
          if (id.is_string()) not_destroyed.Add(id.as_string(), SetError("forbidden", "submissions are final"));
        }
      }
      KW_ASSIGN_OR_RETURN(std::string new_state, t.State(account.id, "EmailSubmission"));
      result.response = Obj();
      result.response.Add("accountId", account.id);
      result.response.Add("oldState", old_state);
      result.response.Add("newState", new_state);
      result.response.Add("created", OrNull(std::move(created)));
      result.response.Add("updated", Value());
      result.response.Add("destroyed", Value());
      result.response.Add("notCreated", OrNull(std::move(not_created)));
      result.response.Add("notUpdated", Value());
      result.response.Add("notDestroyed", OrNull(std::move(not_destroyed)));

      // onSuccess*: keys are "#<creation id>" of successful submissions (or submission ids).
      auto email_for = [&](const std::string& key) -> std::optional<std::string> {
        std::string k = key;
        if (!k.empty() && k[0] == '#') {
          auto it = submitted_email.find(k.substr(1));
          if (it == submitted_email.end()) return std::nullopt;
          return it->second;
        }
        for (const auto& [cid, sid] : submission_ids) {
          if (sid == k) return submitted_email[cid];
        }
        return std::nullopt;
      };
      Value update = Obj(), destroy = Arr();
      if (on_update && on_update->is_object()) {
        for (const auto& [k, patch] : on_update->as_object()) {
          if (auto e = email_for(k)) update.Add(*e, patch);
        }
      }
      if (on_destroy && on_destroy->is_array()) {
        for (const auto& k : on_destroy->as_array()) {
          if (!k.is_string()) continue;
          if (auto e = email_for(k.as_string())) destroy.Push(*e);
        }
      }
      if (!update.as_object().empty() || !destroy.as_array().empty()) {
        KW_ASSIGN_OR_RETURN(std::string email_old, t.State(account.id, "Email"));
        KW_ASSIGN_OR_RETURN(auto paths_before, t.MailboxPaths(account.id));
        EmailUpdateOutcome o;
        MethodEnv sub_env = env;
        sub_env.method = "Email/set";
        KW_RETURN_IF_ERROR(ApplyEmailUpdates(sub_env, t, account, &update, &destroy, &o));
        KW_RETURN_IF_ERROR(RecordEmailOps(sub_env, t, account, {}, o.updated_refs, o.destroyed_refs, paths_before));
        KW_ASSIGN_OR_RETURN(std::string email_new, t.State(account.id, "Email"));
        Value es = Obj();
        es.Add("accountId", account.id);
        es.Add("oldState", email_old);
        es.Add("newState", email_new);
        es.Add("created", Value());
        es.Add("updated", OrNull(std::move(o.updated)));
        es.Add("destroyed", OrNull(std::move(o.destroyed)));
        es.Add("notCreated", Value());
        es.Add("notUpdated", OrNull(std::move(o.not_updated)));
        es.Add("notDestroyed", OrNull(std::move(o.not_destroyed)));
        result.email_set = std::move(es);
      }
      return Status::Ok();
    });
    if (!s.ok()) return s;
    return result;
  };
  auto r = body();
  if (!r.ok()) return env.EmitFailure(account, "Send", "", r.status());
  return r;
}

// ---------------------------------------------------------------- SearchSnippet/get

Result<Value> SearchSnippetGet(MethodEnv& env, const Value& args) {
  KW_ASSIGN_OR_RETURN(Account account, env.Authorized(args, Access::kRead, "MailItemsAccessed", "Bind"));
  auto body = [&]() -> Result<Value> {
    KW_ASSIGN_OR_RETURN(auto ids, env.Ids(args, "emailIds"));
    if (!ids) return MethodError("invalidArguments", "'emailIds' is required");
    if (static_cast<int64_t>(ids->size()) > env.limits.max_objects_in_get) {
      return MethodError("requestTooLarge", "more ids than maxObjectsInGet");
    }
    const Value* filter = args.Find("filter");
    Value f = filter ? *filter : Value();
    Value out = Obj();
    Status s = env.store->Read([&](Txn& t) -> Status {
      // The filter must be one Email/query accepts.
      if (!f.is_null()) {
        auto check = t.QueryEmails(account.id, f, Value(), false);
        if (!check.ok()) return QueryError(check.status());
      }
      KW_ASSIGN_OR_RETURN(auto refs, t.EmailRefs(account.id, *ids));
      std::set<std::string> present;
      for (const auto& r : refs) present.insert(r.id);
      std::vector<std::string> found;
      Value not_found = Arr();
      for (const auto& id : *ids) {
        if (present.count(id)) found.push_back(id);
        else not_found.Push(id);
      }
      KW_ASSIGN_OR_RETURN(auto snippets, t.Snippets(account.id, f, found));
      KW_ASSIGN_OR_RETURN(auto paths, t.MailboxPaths(account.id));
      Value list = Arr();
      for (const auto& sn : snippets) {
        Value v = Obj();
        v.Add("emailId", sn.email_id);
        v.Add("subject", sn.subject ? Value(*sn.subject) : Value());
        v.Add("preview", sn.preview ? Value(*sn.preview) : Value());
        list.Push(std::move(v));
      }
      audit::AuditRecord r = env.Record(&account, "MailItemsAccessed", "Bind");
      AddItems(&r, refs, paths);
      KW_RETURN_IF_ERROR(env.Emit(std::move(r)));
      out.Add("accountId", account.id);
      out.Add("list", std::move(list));
      out.Add("notFound", OrNull(std::move(not_found)));
      return Status::Ok();
    });
    if (!s.ok()) return s;
    return out;
  };
  auto r = body();
  if (!r.ok()) return env.EmitFailure(account, "MailItemsAccessed", "Bind", r.status());
  return r;
}

// ---------------------------------------------------------------- result references

Status ResolveReferences(Value* args, const Value::Array& responses) {
  Value::Object resolved;
  for (auto& [k, v] : args->as_object()) {
    if (k.empty() || k[0] != '#') {
      resolved.emplace_back(k, std::move(v));
      continue;
    }
    std::string plain = k.substr(1);
    if (args->Find(plain)) {
      return MethodError("invalidArguments", fmt::format("both '{}' and '{}' given", plain, k));
    }
    const Value* result_of = v.Find("resultOf");
    const Value* name = v.Find("name");
    const Value* path = v.Find("path");
    if (!v.is_object() || !result_of || !result_of->is_string() || !name || !name->is_string() ||
        !path || !path->is_string() || v.as_object().size() != 3) {
      return MethodError("invalidResultReference", "a ResultReference needs resultOf, name and path");
    }
    const Value* target = nullptr;
    for (const auto& r : responses) {
      const auto& a = r.as_array();
      if (a[2].as_string() == result_of->as_string()) {
        target = &r;
        break;
      }
    }
    if (!target) return MethodError("invalidResultReference", "no earlier call with that id");
    if (target->as_array()[0].as_string() != name->as_string()) {
      return MethodError("invalidResultReference", "the referenced response has another name");
    }
    auto value = EvaluatePointer(target->as_array()[1], path->as_string());
    if (!value.ok()) return MethodError("invalidResultReference", value.status().message());
    resolved.emplace_back(std::move(plain), std::move(*value));
  }
  args->as_object() = std::move(resolved);
  return Status::Ok();
}

}  // namespace

// ---------------------------------------------------------------- dispatch

void Processor::Dispatch(Ctx& ctx, Call& call) {
  auto error = [&](std::string_view type, std::string_view description) {
    Value e = Obj();
    e.Add("type", std::string(type));
    if (!description.empty()) e.Add("description", std::string(description));
    Value r = Arr();
    r.Push("error");
    r.Push(std::move(e));
    r.Push(call.id);
    ctx.responses.push_back(std::move(r));
  };
  auto fail = [&](const Status& s) {
    if (s.code() == StatusCode::kUnavailable && s.message().rfind("audit", 0) == 0) {
      ctx.fatal = s;
      return;
    }
    const std::string& m = s.message();
    size_t sep = m.find(kSep);
    if (s.code() == StatusCode::kInvalidArgument && sep != std::string::npos) {
      error(m.substr(0, sep), m.substr(sep + 1));
    } else {
      // Internal details stay on the server.
      error("serverFail", "");
    }
  };
  Status refs = ResolveReferences(&call.args, ctx.responses);
  if (!refs.ok()) return fail(refs);

  std::string_view cap;
  const std::string& n = call.name;
  if (n == "Core/echo") cap = kCapCore;
  else if (n.rfind("Mailbox/", 0) == 0 || n.rfind("Email/", 0) == 0 || n.rfind("Thread/", 0) == 0 ||
           n.rfind("SearchSnippet/", 0) == 0) cap = kCapMail;
  else if (n.rfind("Identity/", 0) == 0 || n.rfind("EmailSubmission/", 0) == 0) cap = kCapSubmission;
  if (cap.empty() || !ctx.using_caps.count(cap)) return error("unknownMethod", "");

  MethodEnv env{this, store_, ctx.who, ctx.base, ctx.created_ids, limits_, n};
  auto respond = [&](const std::string& name, Value args) {
    Value r = Arr();
    r.Push(name);
    r.Push(std::move(args));
    r.Push(call.id);
    ctx.responses.push_back(std::move(r));
  };
  Result<Value> out = Value();
  if (n == "Core/echo") {
    return respond(n, call.args);
  } else if (n == "Mailbox/get") {
    out = MailboxGet(env, call.args);
  } else if (n == "Mailbox/changes") {
    out = DoChanges(env, call.args, "Mailbox");
  } else if (n == "Mailbox/query") {
    out = MailboxQuery(env, call.args);
  } else if (n == "Mailbox/set") {
    out = MailboxSet(env, call.args);
  } else if (n == "Email/get") {
    out = EmailGet(env, call.args);
  } else if (n == "Email/changes") {
    out = DoChanges(env, call.args, "Email");
  } else if (n == "Email/query") {
    out = EmailQuery(env, call.args);
  } else if (n == "Email/queryChanges") {
    out = EmailQueryChanges(env, call.args);
  } else if (n == "Email/set") {
    out = EmailSet(env, call.args);
  } else if (n == "Email/import") {
    out = EmailImport(env, call.args);
  } else if (n == "Thread/get") {
    out = ThreadGet(env, call.args);
  } else if (n == "Thread/changes") {
    out = DoChanges(env, call.args, "Thread");
  } else if (n == "Identity/get") {
    out = IdentityGet(env, call.args);
  } else if (n == "SearchSnippet/get") {
    out = SearchSnippetGet(env, call.args);
  } else if (n == "EmailSubmission/set") {
    auto sub = EmailSubmissionSet(env, call.args);
    if (!sub.ok()) return fail(sub.status());
    respond(n, std::move(sub->response));
    if (sub->email_set) respond("Email/set", std::move(*sub->email_set));
    return;
  } else {
    return error("unknownMethod", "");
  }
  if (!out.ok()) return fail(out.status());
  respond(n, std::move(*out));
}

JmapResponse Processor::Process(const Principal& who, const audit::AuditRecord& audit_base,
                                std::string_view body) {
  if (static_cast<int64_t>(body.size()) > limits_.max_size_request) {
    return Problem(400, "limit", "the request is larger than maxSizeRequest", "maxSizeRequest");
  }
  std::string user_key = who.tenant_id + "\x1f" + who.user_id;
  {
    std::lock_guard lock(inflight_mu_);
    if (inflight_[user_key] >= limits_.max_concurrent_requests) {
      return Problem(429, "limit", "too many concurrent requests", "maxConcurrentRequests");
    }
    ++inflight_[user_key];
  }
  struct Release {
    Processor* p;
    const std::string& key;
    ~Release() {
      std::lock_guard lock(p->inflight_mu_);
      if (--p->inflight_[key] <= 0) p->inflight_.erase(key);
    }
  } release{this, user_key};

  auto parsed = ParseJson(body, static_cast<size_t>(limits_.max_size_request));
  if (!parsed.ok()) return Problem(400, "notJSON", parsed.status().message());
  Value& req = *parsed;
  if (!req.is_object()) return Problem(400, "notRequest", "the request must be a JSON object");
  const Value* using_v = req.Find("using");
  const Value* calls_v = req.Find("methodCalls");
  const Value* created_v = req.Find("createdIds");
  if (!using_v || !using_v->is_array()) return Problem(400, "notRequest", "'using' must be an array of strings");
  if (!calls_v || !calls_v->is_array()) return Problem(400, "notRequest", "'methodCalls' must be an array");
  for (const auto& [k, v] : req.as_object()) {
    if (k != "using" && k != "methodCalls" && k != "createdIds") {
      return Problem(400, "notRequest", fmt::format("unknown member '{}'", k));
    }
  }
  Ctx ctx{who, audit_base, {}, {}, {}, Status::Ok()};
  for (const auto& u : using_v->as_array()) {
    if (!u.is_string()) return Problem(400, "notRequest", "'using' must be an array of strings");
    if (u.as_string() != kCapCore && u.as_string() != kCapMail && u.as_string() != kCapSubmission) {
      return Problem(400, "unknownCapability", fmt::format("unknown capability '{}'", u.as_string()));
    }
    ctx.using_caps.insert(u.as_string());
  }
  if (created_v) {
    if (!created_v->is_object()) return Problem(400, "notRequest", "'createdIds' must be an object");
    for (const auto& [k, v] : created_v->as_object()) {
      if (!v.is_string()) return Problem(400, "notRequest", "'createdIds' values must be ids");
      ctx.created_ids[k] = v.as_string();
    }
  }
  if (static_cast<int64_t>(calls_v->as_array().size()) > limits_.max_calls_in_request) {
    return Problem(400, "limit", "more method calls than maxCallsInRequest", "maxCallsInRequest");
  }
  std::vector<Call> calls;
  std::set<std::string> accounts;
  for (const auto& c : calls_v->as_array()) {
    if (!c.is_array() || c.as_array().size() != 3 || !c.as_array()[0].is_string() ||
        !c.as_array()[1].is_object() || !c.as_array()[2].is_string()) {
      return Problem(400, "notRequest", "each method call must be [name, arguments, id]");
    }
    calls.push_back(Call{c.as_array()[0].as_string(), c.as_array()[1], c.as_array()[2].as_string()});
    if (const Value* a = c.as_array()[1].Find("accountId"); a && a->is_string()) accounts.insert(a->as_string());
  }
  // Per-mailbox rate limit, before any work.
  if (rate_limiter_) {
    for (const auto& a : accounts) {
      int64_t retry = 0;
      if (!rate_limiter_->Allow(a, &retry)) {
        JmapResponse r = Problem(429, "limit", "the mailbox's request rate is exceeded", "rateLimit");
        r.retry_after = retry;
        return r;
      }
    }
  }
  for (auto& call : calls) {
    Dispatch(ctx, call);
    if (!ctx.fatal.ok()) {
      return Problem(503, "serverUnavailable", "the access could not be recorded in the audit log");
    }
  }
  Value resp = Obj();
  resp.Add("methodResponses", Value(std::move(ctx.responses)));
  if (created_v || !ctx.created_ids.empty()) {
    Value c = Obj();
    for (const auto& [k, v] : ctx.created_ids) c.Add(k, v);
    resp.Add("createdIds", std::move(c));
  }
  resp.Add("sessionState", SessionState(who));
  JmapResponse r;
  r.body = resp.Serialize();
  return r;
}

}  // namespace kw::mail
