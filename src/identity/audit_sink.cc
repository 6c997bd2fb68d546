#include "identity/audit_sink.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <ctime>

#include <fmt/format.h>

#include "core/json.h"
#include "core/log.h"

namespace kw::identity {

std::string_view AuditEventTypeName(AuditEventType t) {
  switch (t) {
    case AuditEventType::kKeyGenerated: return "key_generated";
    case AuditEventType::kKeyPublished: return "key_published";
    case AuditEventType::kKeyActivated: return "key_activated";
    case AuditEventType::kKeyRetiring: return "key_retiring";
    case AuditEventType::kKeyRetired: return "key_retired";
    case AuditEventType::kKeyRevoked: return "key_revoked";
    case AuditEventType::kKeyUnsealed: return "key_unsealed";
    case AuditEventType::kKeyAgeWarning: return "key_age_warning";
    case AuditEventType::kKeyFirstUsed: return "key_first_used";
    case AuditEventType::kTokenIssued: return "token_issued";
    case AuditEventType::kTokenRefused: return "token_refused";
    case AuditEventType::kTokenRevoked: return "token_revoked";
    case AuditEventType::kSignInFailed: return "sign_in_failed";
  }
  return "unknown";
}

std::string FormatUtc(int64_t unix_seconds) {
  std::time_t t = static_cast<std::time_t>(unix_seconds);
  std::tm tm{};
  if (!gmtime_r(&t, &tm)) return std::to_string(unix_seconds);
  return fmt::format("{:04}-{:02}-{:02}T{:02}:{:02}:{:02}Z", tm.tm_year + 1900, tm.tm_mon + 1,
                     tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec);
}

std::string AuditEvent::ToJson() const {
  json::Writer w;
  w.BeginObject()
      .Key("time").String(FormatUtc(time))
      .Key("unix_time").Int(time)
      .Key("type").String(AuditEventTypeName(type))
      .Key("issuer").String(issuer)
      .Key("issuer_kind").String(token::IssuerKindName(issuer_kind))
      .Key("tenant").String(tenant_id)
      .Key("kid").String(kid)
      .Key("detail").String(detail);
  for (const auto& [key, value] : {std::pair<std::string_view, const std::string*>{"token_id", &token_id},
                                   {"client_id", &client_id},
                                   {"subject", &subject},
                                   {"username", &username},
                                   {"client_ip", &client_ip},
                                   {"user_agent", &user_agent}}) {
    if (!value->empty()) w.Key(key).String(*value);
  }
  w.EndObject();
  return w.Take();
}

// ---- MemoryAuditSink ----

void MemoryAuditSink::Record(const AuditEvent& event) {
  std::lock_guard lock(mu_);
  events_.push_back(event);
}

std::vector<AuditEvent> MemoryAuditSink::events() const {
  std::lock_guard lock(mu_);
  return events_;
}

size_t MemoryAuditSink::Count(AuditEventType type, std::string_view kid) const {
  std::lock_guard lock(mu_);
  size_t n = 0;
  for (const auto& e : events_) {
    if (e.type == type && (kid.empty() || e.kid == kid)) ++n;
  }
  return n;
}

void MemoryAuditSink::Clear() {
  std::lock_guard lock(mu_);
  events_.clear();
}

// ---- FileAuditSink ----

Result<std::unique_ptr<FileAuditSink>> FileAuditSink::Open(const std::string& path,
                                                           bool fsync_each) {
  int fd = ::open(path.c_str(), O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0600);
  if (fd < 0) {
    return UnavailableError(
        fmt::format("cannot open audit file {}: {}", path, std::strerror(errno)));
  }
  return std::unique_ptr<FileAuditSink>(new FileAuditSink(fd, path, fsync_each));
}

FileAuditSink::~FileAuditSink() {
  if (fd_ >= 0) ::close(fd_);
}

void FileAuditSink::Record(const AuditEvent& event) {
  std::string line = event.ToJson();
  line.push_back('\n');
  std::lock_guard lock(mu_);
  // One write per line: O_APPEND makes each write land whole at the end of the file. A short
  // write (disk full) is retried for the rest so that the line is never left torn on purpose.
  size_t off = 0;
  while (off < line.size()) {
    ssize_t n = ::write(fd_, line.data() + off, line.size() - off);
    if (n < 0) {
      if (errno == EINTR) continue;
      ++failures_;
      Log(LogLevel::kError, "audit file {}: cannot write {} event for key '{}': {}", path_,
          AuditEventTypeName(event.type), event.kid, std::strerror(errno));
      return;
    }
    off += static_cast<size_t>(n);
  }
  if (fsync_each_ && ::fsync(fd_) != 0) {
    ++failures_;
    Log(LogLevel::kError, "audit file {}: fsync failed: {}", path_, std::strerror(errno));
  }
}

uint64_t FileAuditSink::failures() const {
  std::lock_guard lock(mu_);
  return failures_;
}

}  // namespace kw::identity
