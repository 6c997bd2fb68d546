// Audit events of the identity service's key management and token endpoints, and where they go.
//
// Every change in a signing key's life (generated, published, activated, retiring, retired,
// revoked), every unsealing of a private key, the first signature made with a key and every
// key-age warning is one AuditEvent. The 2023 review asked for exactly this: key-related logs,
// by default, for the key's whole life. Events name keys by kid only; they never carry key
// material (private or sealed). `detail` is a sentence built by Keyward; the only caller text
// in it is an operator's revocation reason.
//
// JSON line format written by FileAuditSink (one object per line, members in this order):
//   {"time":"2023-11-14T22:13:20Z","unix_time":1700000000,"type":"key_activated",
//    "issuer":"https://...","issuer_kind":"enterprise","tenant":"...","kid":"...","detail":"...",
//    then token_id, client_id, subject, username, client_ip, user_agent when not empty}
#pragma once

#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <vector>

#include "core/status.h"
#include "token/trust_store.h"

namespace kw::identity {

enum class AuditEventType {
  kKeyGenerated,   // a key pair was created and sealed
  kKeyPublished,   // the public key entered the JWKS and the trust store
  kKeyActivated,   // the key became the one that signs
  kKeyRetiring,    // the key stopped signing; it verifies until its last token expires
  kKeyRetired,     // the key verifies nothing any more and left the JWKS
  kKeyRevoked,     // the key was revoked; every verifier in the process refuses it at once
  kKeyUnsealed,    // a private key was decrypted from the store into memory
  kKeyAgeWarning,  // a key still in the JWKS passed the age-warning threshold
  kKeyFirstUsed,   // the first signature with the key
  // Token events of the identity service (service.h). `kid` is the signing key (issued) or
  // empty; `detail` names the client, grant, jti, audience and scopes, or the refusal's error
  // code and reason. Never a secret, password, token or hash.
  kTokenIssued,    // an access token was issued
  kTokenRefused,   // a token request was refused (bad client, bad grant, bad parameters)
  kTokenRevoked,   // a token's jti was revoked (RFC 7009)
  kSignInFailed,   // a user's credentials did not verify (password grant)
};

// "key_generated", "key_published", ... (stable: the audit log and alerts match on them).
std::string_view AuditEventTypeName(AuditEventType t);

struct AuditEvent {
  int64_t time = 0;  // Unix seconds
  AuditEventType type = AuditEventType::kKeyGenerated;
  std::string issuer;
  token::IssuerKind issuer_kind = token::IssuerKind::kEnterprise;
  std::string tenant_id;
  std::string kid;
  std::string detail;
  // Token and request facts, when the event comes from an HTTP request (empty otherwise). The
  // audit log and the detectors join on them: a mail access whose token id was never issued is
  // a forgery's signature.
  std::string token_id;    // jti of the token issued or revoked
  std::string client_id;   // the client application
  std::string subject;     // the token's sub (user id, or client id for app-only tokens)
  std::string username;    // the user's name, when a user signed in or tried to
  std::string client_ip;   // the peer address, without the port
  std::string user_agent;

  // The JSON object described above, without a newline.
  std::string ToJson() const;
};

// Receives audit events. Implementations must be thread-safe; Record must not block for long
// (it runs while a key ring holds its lock) and must not call back into the key ring.
class AuditSink {
 public:
  virtual ~AuditSink() = default;
  virtual void Record(const AuditEvent& event) = 0;
};

// Keeps every event in memory; for tests and the simulator. Thread-safe.
class MemoryAuditSink final : public AuditSink {
 public:
  void Record(const AuditEvent& event) override;
  std::vector<AuditEvent> events() const;
  // Number of events of `type` (for `kid` only, when non-empty).
  size_t Count(AuditEventType type, std::string_view kid = "") const;
  void Clear();

 private:
  mutable std::mutex mu_;
  std::vector<AuditEvent> events_;
};

// Appends JSON lines to a file (created with mode 0600 if missing), one write(2) per event on
// an O_APPEND descriptor, so lines from concurrent writers never interleave. With `fsync_each`,
// each event is fsync'ed before Record returns. A failed write is logged (kw::Log, error level)
// and counted; Record itself cannot fail. Thread-safe.
class FileAuditSink final : public AuditSink {
 public:
  static Result<std::unique_ptr<FileAuditSink>> Open(const std::string& path,
                                                     bool fsync_each = false);
  ~FileAuditSink() override;
  FileAuditSink(const FileAuditSink&) = delete;
  FileAuditSink& operator=(const FileAuditSink&) = delete;

  void Record(const AuditEvent& event) override;
  uint64_t failures() const;
  const std::string& path() const { return path_; }

 private:
  FileAuditSink(int fd, std::string path, bool fsync_each)
      : fd_(fd), path_(std::move(path)), fsync_each_(fsync_each) {}
  mutable std::mutex mu_;
  int fd_;
  std::string path_;
  bool fsync_each_;
  uint64_t failures_ = 0;
};

// "YYYY-MM-DDTHH:MM:SSZ" for Unix seconds.
std::string FormatUtc(int64_t unix_seconds);

}  // namespace kw::identity
