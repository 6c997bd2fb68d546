// ToUalJson: an AuditRecord as Microsoft 365 unified-audit-log AuditData, and
// MemoryAuditWriter.
//
// Mapping decisions (docs/audit-log.md has the table):
//  - RecordType / Workload: MailItemsAccessed -> 50 (ExchangeItemAggregated) / Exchange;
//    identity events (operation starting with Token, SignIn, Key or key_/token_/sign_in, or a
//    resource starting with "identity:") -> 15 (AzureActiveDirectoryStsLogon) /
//    AzureActiveDirectory; every other operation -> 2 (ExchangeItem) / Exchange.
//  - Id: a GUID derived from SHA-256("keyward-audit\0" tenant "\0" seq), version nibble 8
//    (RFC 9562 custom), so the same record always exports with the same Id.
//  - UserId is the UPN when known, else the user id, else the client application (app-only);
//    UserKey the user id (or the app id); UserType 0 (Regular) for a user, 5 (Application) for
//    app-only access.
//  - LogonType 0 (owner) when the actor is the mailbox owner or there is no mailbox, 2
//    (delegate) when another user, 0 for app-only access (Exchange records application access
//    as owner logons too); ExternalAccess false.
//  - Folders: items grouped by folder path in first-seen order; a folder's Id is hex of the first
//    16 bytes of SHA-256(mailbox_id "\0" path); FolderItems carry InternetMessageId and Id
//    (Keyward's item id).
//  - OperationProperties only for MailItemsAccessed: MailAccessType and IsThrottled "False"
//    (Keyward never throttles audit records).

#include <algorithm>
#include <mutex>

#include <fmt/format.h>

#include "audit/audit_log.h"
#include "audit/log_format.h"
#include "core/ascii.h"
#include "core/clock.h"
#include "core/json.h"
#include "crypto/crypto.h"

namespace kw::audit {
namespace {

bool StartsWith(std::string_view s, std::string_view p) { return s.substr(0, p.size()) == p; }

bool IsIdentityEvent(const AuditRecord& r) {
  const std::string& op = r.operation;
  return StartsWith(op, "Token") || StartsWith(op, "SignIn") || StartsWith(op, "Key") ||
         StartsWith(op, "token_") || StartsWith(op, "sign_in") || StartsWith(op, "key_") ||
         StartsWith(r.resource, "identity:");
}

std::string Hex(std::string_view raw) {
  static constexpr char kHex[] = "0123456789abcdef";
  std::string out;
  for (unsigned char c : raw) {
    out.push_back(kHex[c >> 4]);
    out.push_back(kHex[c & 15]);
  }
  return out;
}

std::string RecordGuid(const AuditRecord& r) {
  std::string input = "keyward-audit";
  input.push_back('\0');
  input += r.tenant_id;
  input.push_back('\0');
  input += std::to_string(r.seq);
  std::string h = crypto::Sha256(input).substr(0, 16);
  h[6] = static_cast<char>((static_cast<unsigned char>(h[6]) & 0x0f) | 0x80);
  h[8] = static_cast<char>((static_cast<unsigned char>(h[8]) & 0x3f) | 0x80);
  std::string x = Hex(h);
  return fmt::format("{}-{}-{}-{}-{}", x.substr(0, 8), x.substr(8, 4), x.substr(12, 4),
                     x.substr(16, 4), x.substr(20, 12));
}

}  // namespace

std::string ToUalJson(const AuditRecord& r) {
  const bool mail_items = r.operation == "MailItemsAccessed";
  const bool identity = !mail_items && IsIdentityEvent(r);
  const bool app_only = r.user_id.empty() && r.user_upn.empty();
  const std::string& user_name = !r.user_upn.empty()  ? r.user_upn
                                 : !r.user_id.empty() ? r.user_id
                                                      : r.client_app_id;
  json::Writer w;
  w.BeginObject();
  w.Key("CreationTime").String(internal::FormatUalTime(r.time_ms));
  w.Key("Id").String(RecordGuid(r));
  w.Key("Operation").String(r.operation);
  w.Key("OrganizationId").String(r.tenant_id);
  w.Key("RecordType").Int(mail_items ? 50 : identity ? 15 : 2);
  w.Key("ResultStatus").String(r.result);
  w.Key("UserId").String(user_name);
  w.Key("UserKey").String(!r.user_id.empty() ? r.user_id : user_name);
  w.Key("UserType").Int(app_only ? 5 : 0);
  w.Key("Version").Int(1);
  w.Key("Workload").String(identity ? "AzureActiveDirectory" : "Exchange");
  w.Key("ClientIPAddress").String(r.client_ip);
  w.Key("ClientInfoString").String(r.user_agent);
  w.Key("AppId").String(r.client_app_id);
  w.Key("ClientAppId").String(r.client_app_id);
  w.Key("ExternalAccess").Bool(false);
  int logon_type = 0;
  if (!app_only && !r.mailbox_owner.empty() && !AsciiEqualsIgnoreCase(r.mailbox_owner, r.user_upn) &&
      r.mailbox_owner != r.user_id) {
    logon_type = 2;
  }
  w.Key("LogonType").Int(logon_type);
  w.Key("InternalLogonType").Int(logon_type);
  w.Key("MailboxGuid").String(r.mailbox_id);
  w.Key("MailboxOwnerUPN").String(r.mailbox_owner);
  w.Key("SessionId").String(r.session_id);
  w.Key("OperationCount").Uint(r.items.empty() ? 1 : r.items.size());
  if (mail_items) {
    w.Key("OperationProperties").BeginArray();
    w.BeginObject().Key("Name").String("MailAccessType").Key("Value").String(r.access_type).EndObject();
    w.BeginObject().Key("Name").String("IsThrottled").Key("Value").String("False").EndObject();
    w.EndArray();
  }
  if (!r.items.empty()) {
    std::vector<std::string_view> paths;
    for (const AuditItem& it : r.items) {
      if (std::find(paths.begin(), paths.end(), it.folder_path) == paths.end()) {
        paths.push_back(it.folder_path);
      }
    }
    w.Key("Folders").BeginArray();
    for (std::string_view path : paths) {
      std::string id_input = r.mailbox_id;
      id_input.push_back('\0');
      id_input.append(path);
      w.BeginObject();
      w.Key("Id").String(Hex(crypto::Sha256(id_input).substr(0, 16)));
      w.Key("Path").String(path);
      w.Key("FolderItems").BeginArray();
      for (const AuditItem& it : r.items) {
        if (it.folder_path != path) continue;
        w.BeginObject().Key("Id").String(it.id).Key("InternetMessageId").String(
            it.internet_message_id);
        w.EndObject();
      }
      w.EndArray().EndObject();
    }
    w.EndArray();
  }
  if (!r.token_id.empty() || r.token_issued_at != 0) {
    w.Key("AppAccessContext").BeginObject();
    w.Key("ClientAppId").String(r.client_app_id);
    w.Key("IssuedAtTime").String(internal::FormatUalTime(r.token_issued_at * 1000));
    w.Key("UniqueTokenId").String(r.token_id);
    w.EndObject();
  }
  w.Key("TokenTenantId").String(r.token_tenant_id);
  w.Key("Keyward").BeginObject();
  w.Key("Seq").Uint(r.seq);
  w.Key("Hash").String(r.hash);
  w.Key("PrevHash").String(r.prev_hash);
  w.Key("TimeMs").Int(r.time_ms);
  w.Key("TokenKid").String(r.token_kid);
  w.Key("TokenIssuer").String(r.token_issuer);
  w.Key("Resource").String(r.resource);
  w.Key("Reason").String(r.reason);
  w.Key("UserUpn").String(r.user_upn);
  if (!r.detail.empty()) {
    json::StrictParser parser(internal::kMaxRecordBytes, 32);
    auto e = parser.Parse(r.detail);
    if (e.ok() && e->is_object()) {
      w.Key("Detail").Raw(json::Minify(*e));
    } else {
      w.Key("DetailText").String(r.detail);
    }
  }
  w.EndObject();
  w.EndObject();
  return w.Take();
}

// ---- MemoryAuditWriter ----

struct MemoryAuditWriter::State {
  std::mutex mu;
  std::vector<AuditRecord> records;
  std::string last_hash;
};

std::shared_ptr<MemoryAuditWriter::State> MemoryAuditWriter::MakeState() {
  return std::make_shared<State>();
}

Result<uint64_t> MemoryAuditWriter::Append(AuditRecord record) {
  if (record.time_ms == 0) record.time_ms = Clock::System()->NowMillis();
  std::string detail;
  KW_ASSIGN_OR_RETURN(std::string body, internal::EncodeBody(record, &detail));
  record.detail = std::move(detail);
  std::lock_guard l(state_->mu);
  record.seq = state_->records.size() + 1;
  record.prev_hash = state_->last_hash;
  std::string line;
  record.hash = internal::AppendLine(record.seq, record.prev_hash, 0, body, &line);
  state_->last_hash = record.hash;
  state_->records.push_back(std::move(record));
  return state_->records.back().seq;
}

std::vector<AuditRecord> MemoryAuditWriter::records() const {
  std::lock_guard l(state_->mu);
  return state_->records;
}

void MemoryAuditWriter::Clear() {
  std::lock_guard l(state_->mu);
  state_->records.clear();
  state_->last_hash.clear();
}

}  // namespace kw::audit
