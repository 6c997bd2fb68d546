#include "identity/audit_log_sink.h"

#include <cctype>

#include "core/json.h"
#include "core/log.h"

namespace kw::identity {

std::string AuditOperationName(AuditEventType t) {
  std::string out;
  bool upper = true;
  for (char c : AuditEventTypeName(t)) {
    if (c == '_') {
      upper = true;
      continue;
    }
    out.push_back(upper ? static_cast<char>(std::toupper(static_cast<unsigned char>(c))) : c);
    upper = false;
  }
  return out;
}

audit::AuditRecord ToAuditRecord(const AuditEvent& e) {
  audit::AuditRecord r;
  r.time_ms = e.time * 1000;
  r.tenant_id = e.tenant_id;
  r.operation = AuditOperationName(e.type);
  r.user_id = e.subject;
  r.user_upn = e.username;
  r.client_app_id = e.client_id;
  r.resource = "identity";
  r.client_ip = e.client_ip;
  r.user_agent = e.user_agent;
  r.token_id = e.token_id;
  r.token_kid = e.kid;
  r.token_issuer = e.issuer;
  r.token_tenant_id = e.tenant_id;
  if (e.type == AuditEventType::kTokenIssued) r.token_issued_at = e.time;
  const bool failed =
      e.type == AuditEventType::kTokenRefused || e.type == AuditEventType::kSignInFailed;
  r.result = failed ? "Failed" : "Succeeded";
  json::Writer w;
  w.BeginObject()
      .Key("detail").String(e.detail)
      .Key("issuer_kind").String(token::IssuerKindName(e.issuer_kind))
      .EndObject();
  r.detail = w.Take();
  return r;
}

void AuditLogSink::Record(const AuditEvent& event) {
  auto appended = writer_->Append(ToAuditRecord(event));
  if (!appended.ok()) {
    failures_.fetch_add(1);
    Log(LogLevel::kError, "identity: audit log append failed for {} '{}': {}",
        AuditEventTypeName(event.type), event.kid, appended.status().message());
  }
}

}  // namespace kw::identity
