// Helpers shared by the audit tests: a scratch directory, record generators, raw file access.
#pragma once

#include <fcntl.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <random>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

#include "core/test_util.h"
#include "audit/audit_log.h"
#include "audit/log_format.h"
#include "core/file.h"

namespace kw::audit::testing {

// The scratch directory, with the log directory AuditLog creates inside it.
class TempDir : public kw::test::TempDir {
 public:
  std::string LogDir() const { return File("log"); }
};

inline AuditLogOptions TestOptions(const std::string& dir, const Clock* clock = nullptr) {
  AuditLogOptions o;
  o.dir = dir;
  o.fsync = false;  // tests that are about durability say fsync = true
  o.checkpoint_interval_ms = 0;
  if (clock) o.clock = clock;
  return o;
}

// A MailItemsAccessed Bind record as the mail service writes it.
inline AuditRecord MailRead(int i, int64_t time_ms = 1'686'877'323'000) {
  AuditRecord r;
  r.time_ms = time_ms;
  r.tenant_id = "contoso";
  r.operation = "MailItemsAccessed";
  r.access_type = "Bind";
  r.user_id = "u-" + std::to_string(i % 7);
  r.user_upn = "user" + std::to_string(i % 7) + "@contoso.example";
  r.mailbox_owner = r.user_upn;
  r.mailbox_id = "mbx-" + std::to_string(i % 7);
  r.items = {{"e" + std::to_string(i), "<m" + std::to_string(i) + "@contoso.example>", "\\Inbox"}};
  r.client_app_id = "app-outlook";
  r.resource = "jmap:Email/get";
  r.client_ip = "203.0.113.7";
  r.user_agent = "Client=REST;Client=RESTSystem;;";
  r.session_id = "s-1";
  r.token_id = "jti-" + std::to_string(i);
  r.token_kid = "kid-1";
  r.token_issuer = "https://login.keyward.example/contoso/v2.0";
  r.token_tenant_id = "contoso";
  r.token_issued_at = 1'686'877'000;
  r.result = "Succeeded";
  r.detail = R"({"n":)" + std::to_string(i) + "}";
  return r;
}

inline std::string RandomString(std::mt19937_64& rng, size_t max_len) {
  static const std::vector<std::string> kPieces = {
      "a", "Z", "0", "-", " ", "\"", "\\", "\n", "\t", "\x01", "é", "漢", "😀", "<", "@", "/", "{", "}"};
  size_t n = rng() % (max_len + 1);
  std::string s;
  for (size_t i = 0; i < n; ++i) s += kPieces[rng() % kPieces.size()];
  return s;
}

// A record with random content in every field (valid for Append).
inline AuditRecord RandomRecord(std::mt19937_64& rng) {
  static const std::vector<std::string> kOps = {"MailItemsAccessed", "Send", "Update", "Delete",
                                                "MailboxLogin", "TokenRejected", "TokenIssued"};
  AuditRecord r;
  r.time_ms = 1'600'000'000'000 + static_cast<int64_t>(rng() % 200'000'000'000ull);
  r.tenant_id = RandomString(rng, 8);
  r.operation = kOps[rng() % kOps.size()];
  r.access_type = r.operation == "MailItemsAccessed" ? (rng() % 2 ? "Bind" : "Sync") : "";
  r.user_id = RandomString(rng, 10);
  r.user_upn = RandomString(rng, 12);
  r.mailbox_owner = RandomString(rng, 12);
  r.mailbox_id = RandomString(rng, 6);
  size_t items = rng() % 4;
  for (size_t i = 0; i < items; ++i) {
    r.items.push_back({RandomString(rng, 6), RandomString(rng, 12), RandomString(rng, 6)});
  }
  r.client_app_id = RandomString(rng, 8);
  r.resource = RandomString(rng, 8);
  r.client_ip = RandomString(rng, 8);
  r.user_agent = RandomString(rng, 30);
  r.session_id = RandomString(rng, 5);
  r.token_id = RandomString(rng, 5);
  r.token_kid = RandomString(rng, 5);
  r.token_issuer = RandomString(rng, 10);
  r.token_tenant_id = RandomString(rng, 5);
  r.token_issued_at = static_cast<int64_t>(rng() % 2'000'000'000);
  r.result = rng() % 2 ? "Succeeded" : "Failed";
  r.reason = RandomString(rng, 6);
  if (rng() % 2) r.detail = R"({"k":"v","n":[1,2,{"x":null}],"b":true})";
  return r;
}

// Every record of the log, in order (QueryLog without filters).
inline std::vector<AuditRecord> ReadAll(const std::string& dir) {
  std::vector<AuditRecord> out;
  Status s = QueryLog(dir, AuditQuery{}, [&](const AuditRecord& r) {
    out.push_back(r);
    return true;
  });
  if (!s.ok()) throw std::runtime_error(s.ToString());
  return out;
}

inline std::string ReadAllOrEmpty(const std::string& path) {
  auto r = ReadFile(path, 1u << 30);
  return r.ok() ? *r : std::string();
}

inline void WriteRaw(const std::string& path, std::string_view data) {
  int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  if (fd < 0) throw std::runtime_error("open " + path);
  if (::write(fd, data.data(), data.size()) != static_cast<ssize_t>(data.size())) {
    ::close(fd);
    throw std::runtime_error("write " + path);
  }
  ::close(fd);
}

inline void AppendRaw(const std::string& path, std::string_view data) {
  WriteRaw(path, ReadAllOrEmpty(path) + std::string(data));
}

// Byte offsets of the lines of a file.
inline std::vector<uint64_t> LineOffsets(const std::string& content) {
  std::vector<uint64_t> out;
  size_t pos = 0;
  while (pos < content.size()) {
    out.push_back(pos);
    size_t nl = content.find('\n', pos);
    if (nl == std::string::npos) break;
    pos = nl + 1;
  }
  return out;
}

inline std::string SegPath(const std::string& dir, uint64_t index) {
  return dir + "/" + internal::SegmentName(index);
}

}  // namespace kw::audit::testing
