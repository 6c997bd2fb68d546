// AuditLogSink: the identity service's key and token events, in the tamper-evident audit log
// (audit/audit_log.h) beside the mail service's access records, so that one log (and the
// detection engine reading it) sees the token issuance behind every mail access and every key's
// whole life.
//
// Mapping: operation = the event type in PascalCase (KeyGenerated, KeyRevoked, TokenIssued,
// TokenRefused, TokenRevoked, SignInFailed, ...); tenant, token_kid = kid, token_issuer = issuer,
// token_id = jti, client_app_id, user_id = subject, user_upn = username, client_ip, user_agent;
// resource "identity"; result "Failed" for refusals and failed sign-ins, else "Succeeded";
// detail = {"detail": sentence, "issuer_kind": ...}. The event's second is the record's time.
//
// Record cannot fail (AuditSink's contract); an append that fails is logged at error level and
// counted (failures()).
#pragma once

#include <atomic>
#include <memory>
#include <string>

#include "audit/audit_log.h"
#include "identity/audit_sink.h"

namespace kw::identity {

// "KeyGenerated", "TokenIssued", ... (stable: rules match on them).
std::string AuditOperationName(AuditEventType t);

// The audit record of an identity event (see the mapping above).
audit::AuditRecord ToAuditRecord(const AuditEvent& event);

class AuditLogSink final : public AuditSink {
 public:
  explicit AuditLogSink(std::shared_ptr<audit::AuditWriter> writer) : writer_(std::move(writer)) {}
  void Record(const AuditEvent& event) override;
  uint64_t failures() const { return failures_.load(); }

 private:
  std::shared_ptr<audit::AuditWriter> writer_;
  std::atomic<uint64_t> failures_{0};
};

}  // namespace kw::identity
