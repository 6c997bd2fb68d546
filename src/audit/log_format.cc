// On-disk format of an audit log directory (written here and by audit_log.cc; read by the
// SegmentReader below, VerifyLog and QueryLog).
//
//   <dir>/LOCK                  flock(LOCK_EX) held by the one AuditLog appending (empty file)
//   <dir>/audit-00000001.jsonl  segments, numbered 1, 2, 3, ... without gaps (at least 8 digits),
//                               created 0600; a new segment starts when the next group of
//                               records would make the current one exceed segment_bytes
//   <dir>/anchor                where the retained log starts, written (atomically) by retention:
//                               {"first_segment":5,"first_seq":90001,"prev_hash":"<hex>",
//                                "time_ms":...}; absent: segment 1, seq 1, prev_hash ""
//   <dir>/checkpoint            the newest durable record, rewritten atomically every
//                               checkpoint_interval_ms and at close:
//                               {"seq":123,"hash":"<hex>","time_ms":...}
//
// A segment is a sequence of records, one per line: a UTF-8 JSON object terminated by "\n"
// (JSON escapes control characters, so a record never contains a raw newline):
//
//   {"seq":7,"prev_hash":"<64 hex, or empty for seq 1>"[,"batch_last":9],"time_ms":1686877323456,
//    "time":"2023-06-16T01:02:03.456Z","tenant_id":"...","operation":"MailItemsAccessed",
//    ...,"result":"Succeeded",...,"detail":{...},"hash":"<64 hex>"}
//
// Members come in this fixed order: seq, prev_hash, batch_last (only in multi-record batches:
// the seq of the batch's last record), time_ms, time (derived from time_ms), tenant_id,
// operation, access_type, user_id, user_upn, mailbox_owner, mailbox_id, items (array of
// {"id","internet_message_id","folder_path"}), client_app_id, resource, client_ip, user_agent,
// session_id, token_id, token_kid, token_issuer, token_tenant_id, token_issued_at, result,
// reason, detail (a JSON object, minified), hash. seq, prev_hash, time_ms, time, tenant_id,
// operation and result are always written; other members only when non-empty / non-zero.
//
// Every line ends with exactly the 75 bytes `,"hash":"<64 lower-case hex>"}` and the newline.
// hash = SHA-256 of all the line's bytes before those 75 (from `{"seq":` to the end of the last
// field), so it covers seq and prev_hash: each record's prev_hash is its predecessor's hash (the
// chain), and the first retained record's prev_hash is the anchor's. A record can be checked
// with standard tools: `head -c -76 <line> | sha256sum`.
//
// Crash safety: a group of records is written with one write(2) and fdatasync'ed before any of
// them is acknowledged. A crash can leave only an incomplete or damaged suffix of the newest
// segment, made of records nobody was told were stored; Open cuts it off (and cuts back to the
// start of a batch whose last record is missing, so a batch is all or nothing).

#include "audit/log_format.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <charconv>
#include <cstring>

#include <fmt/format.h>
#include <openssl/evp.h>
#include <simdjson.h>

#include "core/json.h"
#include "crypto/crypto.h"

namespace kw::audit {

bool operator==(const AuditItem& a, const AuditItem& b) {
  return a.id == b.id && a.internet_message_id == b.internet_message_id &&
         a.folder_path == b.folder_path;
}

bool operator==(const AuditRecord& a, const AuditRecord& b) {
  return a.seq == b.seq && a.prev_hash == b.prev_hash && a.hash == b.hash &&
         a.time_ms == b.time_ms && a.tenant_id == b.tenant_id && a.operation == b.operation &&
         a.access_type == b.access_type && a.user_id == b.user_id && a.user_upn == b.user_upn &&
         a.mailbox_owner == b.mailbox_owner && a.mailbox_id == b.mailbox_id &&
         a.items == b.items && a.client_app_id == b.client_app_id && a.resource == b.resource &&
         a.client_ip == b.client_ip && a.user_agent == b.user_agent &&
         a.session_id == b.session_id && a.token_id == b.token_id &&
         a.token_kid == b.token_kid && a.token_issuer == b.token_issuer &&
         a.token_tenant_id == b.token_tenant_id && a.token_issued_at == b.token_issued_at &&
         a.result == b.result && a.reason == b.reason && a.detail == b.detail;
}

namespace internal {
namespace {

constexpr int64_t kMaxTimeMs = 253'402'300'799'999;  // 9999-12-31T23:59:59.999Z
constexpr int64_t kMaxUnixSeconds = kMaxTimeMs / 1000;

// Days since 1970-01-01 to civil date (H. Hinnant's algorithm).
void CivilFromDays(int64_t z, int* y, unsigned* m, unsigned* d) {
  z += 719468;
  const int64_t era = (z >= 0 ? z : z - 146096) / 146097;
  const unsigned doe = static_cast<unsigned>(z - era * 146097);
  const unsigned yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
  const int64_t yy = static_cast<int64_t>(yoe) + era * 400;
  const unsigned doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
  const unsigned mp = (5 * doy + 2) / 153;
  *d = doy - (153 * mp + 2) / 5 + 1;
  *m = mp < 10 ? mp + 3 : mp - 9;
  *y = static_cast<int>(yy + (*m <= 2));
}

// Writes the `width` low decimal digits of v (zero-padded) at p.
void PutDigits(char* p, unsigned v, int width) {
  for (int i = width - 1; i >= 0; --i) {
    p[i] = static_cast<char>('0' + v % 10);
    v /= 10;
  }
}

void AppendTime(int64_t ms, bool with_millis, std::string* out) {
  int64_t secs = ms >= 0 ? ms / 1000 : (ms - 999) / 1000;
  int64_t days = secs >= 0 ? secs / 86400 : (secs - 86399) / 86400;
  unsigned sod = static_cast<unsigned>(secs - days * 86400);
  int y;
  unsigned m, d;
  CivilFromDays(days, &y, &m, &d);
  if (y < 0 || y > 9999) {  // outside what records allow; keep the general formatting
    fmt::format_to(std::back_inserter(*out), "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}", y, m, d,
                   sod / 3600, sod / 60 % 60, sod % 60);
    if (with_millis) fmt::format_to(std::back_inserter(*out), ".{:03}Z", ms - secs * 1000);
    return;
  }
  // "YYYY-MM-DDTHH:MM:SS.mmmZ"
  char b[24] = {0, 0, 0, 0, '-', 0, 0, '-', 0, 0, 'T', 0, 0, ':', 0, 0, ':', 0, 0, '.', 0, 0, 0, 'Z'};
  PutDigits(b, static_cast<unsigned>(y), 4);
  PutDigits(b + 5, m, 2);
  PutDigits(b + 8, d, 2);
  PutDigits(b + 11, sod / 3600, 2);
  PutDigits(b + 14, sod / 60 % 60, 2);
  PutDigits(b + 17, sod % 60, 2);
  if (!with_millis) {
    out->append(b, 19);
    return;
  }
  PutDigits(b + 20, static_cast<unsigned>(ms - secs * 1000), 3);
  out->append(b, sizeof b);
}

template <typename Int>
void AppendInt(std::string* out, Int v) {
  char b[24];
  auto [end, ec] = std::to_chars(b, b + sizeof b, v);
  out->append(b, static_cast<size_t>(end - b));
}

bool IsOperationChar(char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' ||
         c == '_' || c == ':' || c == '-' || c == '/';
}

Status CheckString(std::string_view field, std::string_view v, bool check_utf8) {
  if (v.size() > kMaxStringBytes) {
    return InvalidArgumentError(
        fmt::format("audit record field '{}' is {} bytes, more than {}", field, v.size(),
                    kMaxStringBytes));
  }
  if (check_utf8 && !simdjson::validate_utf8(v.data(), v.size())) {
    return InvalidArgumentError(fmt::format("audit record field '{}' is not valid UTF-8", field));
  }
  return Status::Ok();
}

json::StrictParser& DetailParser() {
  thread_local json::StrictParser parser(kMaxRecordBytes, 32);
  return parser;
}

json::StrictParser& LineParser() {
  // Depth: the record, items, an item; detail adds at most 32 (checked when appended).
  thread_local json::StrictParser parser(kMaxRecordBytes + 1024, 40);
  return parser;
}

Status CanonicalDetail(std::string_view detail, std::string* out) {
  out->clear();
  if (detail.empty()) return Status::Ok();
  auto e = DetailParser().Parse(detail);
  if (!e.ok()) return e.status().WithContext("audit record field 'detail'");
  if (!e->is_object()) {
    return InvalidArgumentError("audit record field 'detail' must be a JSON object");
  }
  *out = json::Minify(*e);
  return Status::Ok();
}

// True when one of the 8 bytes of `v` is below 0x20, '"' or '\\' (the bytes JSON escapes).
// Word-at-a-time tests (exact as predicates): a byte below n when (x - n*0x01..) & ~x has its
// high bit set; a byte equal to c when x ^ c*0x01.. has a zero byte.
inline bool NeedsEscape8(uint64_t v) {
  constexpr uint64_t kOnes = 0x0101010101010101ull, kHigh = 0x8080808080808080ull;
  uint64_t below = (v - kOnes * 0x20) & ~v;
  uint64_t q = v ^ (kOnes * '"');
  uint64_t bs = v ^ (kOnes * '\\');
  return ((below | ((q - kOnes) & ~q) | ((bs - kOnes) & ~bs)) & kHigh) != 0;
}

// json::AppendQuoted's escaping. Strings in records rarely need an escape, so the scan skips
// eight bytes at a time and unescaped runs are appended in bulk (a byte loop with push_back was
// most of the cost of encoding a record).
void Quote(std::string* out, std::string_view s) {
  static constexpr char kHex[] = "0123456789abcdef";
  out->push_back('"');
  const char* p = s.data();
  const size_t n = s.size();
  size_t run = 0, i = 0;
  while (i < n) {
    if (i + 8 <= n) {
      uint64_t v;
      std::memcpy(&v, p + i, 8);
      if (!NeedsEscape8(v)) {
        i += 8;
        continue;
      }
    }
    size_t stop = std::min(n, i + 8);
    for (; i < stop; ++i) {
      unsigned char c = static_cast<unsigned char>(p[i]);
      if (c >= 0x20 && c != '"' && c != '\\') continue;
      out->append(p + run, i - run);
      run = i + 1;
      switch (c) {
        case '"': out->append("\\\"", 2); break;
        case '\\': out->append("\\\\", 2); break;
        case '\n': out->append("\\n", 2); break;
        case '\r': out->append("\\r", 2); break;
        case '\t': out->append("\\t", 2); break;
        case '\b': out->append("\\b", 2); break;
        case '\f': out->append("\\f", 2); break;
        default: {
          char u[6] = {'\\', 'u', '0', '0', kHex[c >> 4], kHex[c & 15]};
          out->append(u, 6);
        }
      }
    }
  }
  out->append(p + run, n - run);
  out->push_back('"');
}

// `key` is the member's whole prefix, `,"name":`.
void Str(std::string* out, std::string_view key, std::string_view v, bool always = false) {
  if (v.empty() && !always) return;
  out->append(key);
  Quote(out, v);
}

void Num(std::string* out, std::string_view key, int64_t v) {
  if (v == 0) return;
  out->append(key);
  AppendInt(out, v);
}

// Every check but UTF-8 validity unless `check_utf8` (EncodeBodyTo checks the encoded body as a
// whole, which is cheaper, and comes back here only to name the field that failed).
Status ValidateFields(const AuditRecord& r, bool check_utf8) {
  if (r.operation.empty()) return InvalidArgumentError("audit record field 'operation' is empty");
  if (r.operation.size() > 128) {
    return InvalidArgumentError("audit record field 'operation' is longer than 128 bytes");
  }
  for (char c : r.operation) {
    if (!IsOperationChar(c)) {
      return InvalidArgumentError(fmt::format(
          "audit record field 'operation' has a character outside [A-Za-z0-9._:/-] ('{}')",
          static_cast<unsigned>(static_cast<unsigned char>(c))));
    }
  }
  if (!r.access_type.empty() && r.access_type != "Bind" && r.access_type != "Sync") {
    return InvalidArgumentError("audit record field 'access_type' must be \"Bind\", \"Sync\" or empty");
  }
  if (!r.result.empty() && r.result != "Succeeded" && r.result != "Failed" &&
      r.result != "PartiallySucceeded") {
    return InvalidArgumentError(
        "audit record field 'result' must be \"Succeeded\", \"PartiallySucceeded\", \"Failed\" or "
        "empty");
  }
  if (r.time_ms < 0 || r.time_ms > kMaxTimeMs) {
    return InvalidArgumentError(fmt::format(
        "audit record field 'time_ms' ({}) is outside the years 1970..9999", r.time_ms));
  }
  if (r.token_issued_at < 0 || r.token_issued_at > kMaxUnixSeconds) {
    return InvalidArgumentError(fmt::format(
        "audit record field 'token_issued_at' ({}) is outside the years 1970..9999",
        r.token_issued_at));
  }
  if (r.items.size() > kMaxItems) {
    return InvalidArgumentError(fmt::format("audit record has {} items, more than {}",
                                            r.items.size(), kMaxItems));
  }
  struct F {
    std::string_view name;
    const std::string* v;
  };
  const F fields[] = {{"tenant_id", &r.tenant_id},
                      {"user_id", &r.user_id},
                      {"user_upn", &r.user_upn},
                      {"mailbox_owner", &r.mailbox_owner},
                      {"mailbox_id", &r.mailbox_id},
                      {"client_app_id", &r.client_app_id},
                      {"resource", &r.resource},
                      {"client_ip", &r.client_ip},
                      {"user_agent", &r.user_agent},
                      {"session_id", &r.session_id},
                      {"token_id", &r.token_id},
                      {"token_kid", &r.token_kid},
                      {"token_issuer", &r.token_issuer},
                      {"token_tenant_id", &r.token_tenant_id},
                      {"reason", &r.reason}};
  for (const F& f : fields) KW_RETURN_IF_ERROR(CheckString(f.name, *f.v, check_utf8));
  for (size_t i = 0; i < r.items.size(); ++i) {
    const AuditItem& it = r.items[i];
    for (auto [name, v] : {std::pair<const char*, const std::string*>{"id", &it.id},
                           {"internet_message_id", &it.internet_message_id},
                           {"folder_path", &it.folder_path}}) {
      Status s = CheckString(name, *v, check_utf8);
      if (!s.ok()) return s.WithContext(fmt::format("items[{}]", i));
    }
  }
  return Status::Ok();
}

void WriteFields(const AuditRecord& r, std::string_view detail, std::string* out) {
  out->append(",\"time_ms\":");
  AppendInt(out, r.time_ms);
  out->append(",\"time\":\"");
  AppendTime(r.time_ms, true, out);
  out->push_back('"');
  Str(out, ",\"tenant_id\":", r.tenant_id, true);
  Str(out, ",\"operation\":", r.operation, true);
  Str(out, ",\"access_type\":", r.access_type);
  Str(out, ",\"user_id\":", r.user_id);
  Str(out, ",\"user_upn\":", r.user_upn);
  Str(out, ",\"mailbox_owner\":", r.mailbox_owner);
  Str(out, ",\"mailbox_id\":", r.mailbox_id);
  if (!r.items.empty()) {
    out->append(",\"items\":[");
    for (size_t i = 0; i < r.items.size(); ++i) {
      if (i) out->push_back(',');
      out->append("{\"id\":");
      Quote(out, r.items[i].id);
      out->append(",\"internet_message_id\":");
      Quote(out, r.items[i].internet_message_id);
      out->append(",\"folder_path\":");
      Quote(out, r.items[i].folder_path);
      out->push_back('}');
    }
    out->push_back(']');
  }
  Str(out, ",\"client_app_id\":", r.client_app_id);
  Str(out, ",\"resource\":", r.resource);
  Str(out, ",\"client_ip\":", r.client_ip);
  Str(out, ",\"user_agent\":", r.user_agent);
  Str(out, ",\"session_id\":", r.session_id);
  Str(out, ",\"token_id\":", r.token_id);
  Str(out, ",\"token_kid\":", r.token_kid);
  Str(out, ",\"token_issuer\":", r.token_issuer);
  Str(out, ",\"token_tenant_id\":", r.token_tenant_id);
  Num(out, ",\"token_issued_at\":", r.token_issued_at);
  Str(out, ",\"result\":", r.result, true);
  Str(out, ",\"reason\":", r.reason);
  if (!detail.empty()) out->append(",\"detail\":").append(detail);
}

bool IsLowerHex64(std::string_view s) {
  if (s.size() != 64) return false;
  for (char c : s) {
    if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'))) return false;
  }
  return true;
}

// Parses a record object; batch_last receives the batch member when present.
Result<AuditRecord> RecordFromElement(json::Element root, uint64_t* batch_last,
                                      bool* detail_as_text) {
  json::Object o;
  if (root.get_object().get(o) != simdjson::SUCCESS) {
    return InvalidArgumentError("an audit record must be a JSON object");
  }
  AuditRecord r;
  bool have_seq = false, have_time = false, have_op = false;
  std::string_view time_text;
  bool have_time_text = false;
  for (auto field : o) {
    std::string_view k = field.key;
    json::Element v = field.value;
    auto str = [&](std::string* dst) -> Status {
      std::string_view s;
      if (v.get_string().get(s) != simdjson::SUCCESS) {
        return InvalidArgumentError(fmt::format("member '{}' must be a string", k));
      }
      dst->assign(s);
      return Status::Ok();
    };
    auto u64 = [&](uint64_t* dst) -> Status {
      if (v.get_uint64().get(*dst) != simdjson::SUCCESS) {
        return InvalidArgumentError(fmt::format("member '{}' must be a non-negative integer", k));
      }
      return Status::Ok();
    };
    auto i64 = [&](int64_t* dst) -> Status {
      if (v.get_int64().get(*dst) != simdjson::SUCCESS) {
        return InvalidArgumentError(fmt::format("member '{}' must be an integer", k));
      }
      return Status::Ok();
    };
    if (k == "seq") {
      KW_RETURN_IF_ERROR(u64(&r.seq));
      have_seq = true;
    } else if (k == "prev_hash") {
      KW_RETURN_IF_ERROR(str(&r.prev_hash));
    } else if (k == "hash") {
      KW_RETURN_IF_ERROR(str(&r.hash));
    } else if (k == "batch_last") {
      uint64_t b = 0;
      KW_RETURN_IF_ERROR(u64(&b));
      if (batch_last) *batch_last = b;
    } else if (k == "time_ms") {
      KW_RETURN_IF_ERROR(i64(&r.time_ms));
      have_time = true;
    } else if (k == "time") {
      if (v.get_string().get(time_text) != simdjson::SUCCESS) {
        return InvalidArgumentError("member 'time' must be a string");
      }
      have_time_text = true;
    } else if (k == "tenant_id") {
      KW_RETURN_IF_ERROR(str(&r.tenant_id));
    } else if (k == "operation") {
      KW_RETURN_IF_ERROR(str(&r.operation));
      have_op = true;
    } else if (k == "access_type") {
      KW_RETURN_IF_ERROR(str(&r.access_type));
    } else if (k == "user_id") {
      KW_RETURN_IF_ERROR(str(&r.user_id));
    } else if (k == "user_upn") {
      KW_RETURN_IF_ERROR(str(&r.user_upn));
    } else if (k == "mailbox_owner") {
      KW_RETURN_IF_ERROR(str(&r.mailbox_owner));
    } else if (k == "mailbox_id") {
      KW_RETURN_IF_ERROR(str(&r.mailbox_id));
    } else if (k == "items") {
      json::Array a;
      if (v.get_array().get(a) != simdjson::SUCCESS) {
        return InvalidArgumentError("member 'items' must be an array");
      }
      size_t i = 0;
      for (json::Element e : a) {
        json::Object io;
        if (e.get_object().get(io) != simdjson::SUCCESS) {
          return InvalidArgumentError(fmt::format("items[{}] must be an object", i));
        }
        AuditItem item;
        for (auto f : io) {
          std::string* dst = f.key == "id"                    ? &item.id
                             : f.key == "internet_message_id" ? &item.internet_message_id
                             : f.key == "folder_path"         ? &item.folder_path
                                                              : nullptr;
          if (!dst) {
            return InvalidArgumentError(
                fmt::format("items[{}]: member '{}' is not a field of an audit item", i, f.key));
          }
          std::string_view s;
          if (f.value.get_string().get(s) != simdjson::SUCCESS) {
            return InvalidArgumentError(
                fmt::format("items[{}]: member '{}' must be a string", i, f.key));
          }
          dst->assign(s);
        }
        r.items.push_back(std::move(item));
        ++i;
      }
    } else if (k == "client_app_id") {
      KW_RETURN_IF_ERROR(str(&r.client_app_id));
    } else if (k == "resource") {
      KW_RETURN_IF_ERROR(str(&r.resource));
    } else if (k == "client_ip") {
      KW_RETURN_IF_ERROR(str(&r.client_ip));
    } else if (k == "user_agent") {
      KW_RETURN_IF_ERROR(str(&r.user_agent));
    } else if (k == "session_id") {
      KW_RETURN_IF_ERROR(str(&r.session_id));
    } else if (k == "token_id") {
      KW_RETURN_IF_ERROR(str(&r.token_id));
    } else if (k == "token_kid") {
      KW_RETURN_IF_ERROR(str(&r.token_kid));
    } else if (k == "token_issuer") {
      KW_RETURN_IF_ERROR(str(&r.token_issuer));
    } else if (k == "token_tenant_id") {
      KW_RETURN_IF_ERROR(str(&r.token_tenant_id));
    } else if (k == "token_issued_at") {
      KW_RETURN_IF_ERROR(i64(&r.token_issued_at));
    } else if (k == "result") {
      KW_RETURN_IF_ERROR(str(&r.result));
    } else if (k == "reason") {
      KW_RETURN_IF_ERROR(str(&r.reason));
    } else if (k == "detail") {
      if (!v.is_object()) return InvalidArgumentError("member 'detail' must be an object");
      r.detail = json::Minify(v);
    } else if (k == "detail_text" && detail_as_text) {
      KW_RETURN_IF_ERROR(str(&r.detail));
      *detail_as_text = true;
    } else {
      return InvalidArgumentError(fmt::format("member '{}' is not a field of an audit record", k));
    }
  }
  if (!have_seq) return InvalidArgumentError("member 'seq' is missing");
  if (!have_time) return InvalidArgumentError("member 'time_ms' is missing");
  if (!have_op) return InvalidArgumentError("member 'operation' is missing");
  if (r.time_ms < 0 || r.time_ms > kMaxTimeMs) {
    return InvalidArgumentError("member 'time_ms' is outside the years 1970..9999");
  }
  if (have_time_text) {
    std::string expect;
    AppendTime(r.time_ms, true, &expect);
    if (expect != time_text) {
      return InvalidArgumentError(
          fmt::format("member 'time' ({}) does not match 'time_ms' ({})", time_text, expect));
    }
  }
  return r;
}

}  // namespace

std::string SegmentName(uint64_t index) {
  return fmt::format("{}{:08}{}", kSegmentPrefix, index, kSegmentSuffix);
}

std::optional<uint64_t> ParseSegmentName(std::string_view name) {
  if (name.size() < kSegmentPrefix.size() + kSegmentSuffix.size() + 8 ||
      name.substr(0, kSegmentPrefix.size()) != kSegmentPrefix ||
      name.substr(name.size() - kSegmentSuffix.size()) != kSegmentSuffix) {
    return std::nullopt;
  }
  std::string_view digits = name.substr(kSegmentPrefix.size(),
                                        name.size() - kSegmentPrefix.size() - kSegmentSuffix.size());
  if (digits.size() > 19) return std::nullopt;
  uint64_t v = 0;
  for (char c : digits) {
    if (c < '0' || c > '9') return std::nullopt;
    v = v * 10 + static_cast<uint64_t>(c - '0');
  }
  if (v == 0 || SegmentName(v) != name) return std::nullopt;
  return v;
}

namespace {

// SHA-256 with a pre-fetched implementation and one reused context per thread: EVP_Digest would
// fetch, allocate and free a context for every record.
struct Sha256Ctx {
  EVP_MD* md = EVP_MD_fetch(nullptr, "SHA256", nullptr);
  EVP_MD_CTX* ctx = EVP_MD_CTX_new();
  ~Sha256Ctx() {
    EVP_MD_CTX_free(ctx);
    EVP_MD_free(md);
  }
};

}  // namespace

void Sha256HexTo(std::string_view data, char* out) {
  static constexpr char kHex[] = "0123456789abcdef";
  thread_local Sha256Ctx sha;
  unsigned char raw[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  if (sha.md == nullptr || sha.ctx == nullptr ||
      EVP_DigestInit_ex2(sha.ctx, sha.md, nullptr) != 1 ||
      EVP_DigestUpdate(sha.ctx, data.data(), data.size()) != 1 ||
      EVP_DigestFinal_ex(sha.ctx, raw, &len) != 1 || len != 32) {
    // Only a broken OpenSSL installation gets here; fall back to the crypto module's one-shot.
    std::string r = crypto::Sha256(data);
    std::memset(raw, 0, 32);
    std::memcpy(raw, r.data(), std::min<size_t>(r.size(), 32));
  }
  for (size_t i = 0; i < 32; ++i) {
    out[2 * i] = kHex[raw[i] >> 4];
    out[2 * i + 1] = kHex[raw[i] & 15];
  }
}

std::string Sha256Hex(std::string_view data) {
  std::string out(64, '0');
  Sha256HexTo(data, out.data());
  return out;
}

std::string FormatIsoMillis(int64_t ms) {
  std::string out;
  AppendTime(ms, true, &out);
  return out;
}

std::string FormatUalTime(int64_t ms) {
  std::string out;
  AppendTime(ms, false, &out);
  return out;
}

Status EncodeBodyTo(const AuditRecord& r, std::string* out, std::string* canonical_detail) {
  KW_RETURN_IF_ERROR(ValidateFields(r, /*check_utf8=*/false));
  std::string detail_buf;
  std::string* detail = canonical_detail ? canonical_detail : &detail_buf;
  KW_RETURN_IF_ERROR(CanonicalDetail(r.detail, detail));
  const size_t start = out->size();
  WriteFields(r, *detail, out);
  std::string_view body = std::string_view(*out).substr(start);
  Status s;
  if (body.size() + 200 > kMaxRecordBytes) {
    s = InvalidArgumentError(fmt::format("audit record of {} bytes exceeds the limit of {} bytes",
                                         body.size() + 200, kMaxRecordBytes));
  } else if (!simdjson::validate_utf8(body.data(), body.size())) {
    // Escaping keeps invalid UTF-8 as it was, so the body is valid exactly when every field is.
    s = ValidateFields(r, /*check_utf8=*/true);
    if (s.ok()) s = InvalidArgumentError("audit record is not valid UTF-8");
  }
  if (!s.ok()) out->resize(start);
  return s;
}

Result<std::string> EncodeBody(const AuditRecord& r, std::string* canonical_detail) {
  std::string out;
  out.reserve(512 + r.detail.size() + r.items.size() * 96);
  KW_RETURN_IF_ERROR(EncodeBodyTo(r, &out, canonical_detail));
  return out;
}

size_t AppendLineTo(uint64_t seq, std::string_view prev_hash, uint64_t batch_last,
                    std::string_view body, std::string* out) {
  const size_t start = out->size();
  out->append("{\"seq\":");
  AppendInt(out, seq);
  out->append(",\"prev_hash\":\"").append(prev_hash).push_back('"');
  if (batch_last != 0) {
    out->append(",\"batch_last\":");
    AppendInt(out, batch_last);
  }
  out->append(body);
  const size_t hashed_end = out->size();
  out->append(",\"hash\":\"0000000000000000000000000000000000000000000000000000000000000000\"}\n");
  char* hash = out->data() + hashed_end + 9;
  Sha256HexTo(std::string_view(out->data() + start, hashed_end - start), hash);
  return hashed_end + 9;
}

std::string AppendLine(uint64_t seq, std::string_view prev_hash, uint64_t batch_last,
                       std::string_view body, std::string* out) {
  size_t at = AppendLineTo(seq, prev_hash, batch_last, body, out);
  return out->substr(at, 64);
}

Result<ParsedLine> ParseLine(std::string_view line) {
  if (line.size() > kMaxRecordBytes) {
    return InvalidArgumentError(fmt::format("line of {} bytes is longer than a record may be",
                                            line.size()));
  }
  if (line.size() < kHashSuffixBytes + 2 ||
      line.substr(line.size() - kHashSuffixBytes, 9) != ",\"hash\":\"" ||
      line.substr(line.size() - 2) != "\"}" ||
      !IsLowerHex64(line.substr(line.size() - 66, 64))) {
    return InvalidArgumentError("line does not end with ,\"hash\":\"<64 hex>\"}");
  }
  ParsedLine p;
  auto e = LineParser().Parse(line);
  if (!e.ok()) return e.status();
  auto rec = RecordFromElement(*e, &p.batch_last, nullptr);
  if (!rec.ok()) return rec.status();
  p.record = std::move(rec).value();
  std::string_view stored = line.substr(line.size() - 66, 64);
  p.computed_hash = Sha256Hex(line.substr(0, line.size() - kHashSuffixBytes));
  p.hash_ok = p.record.hash == stored && p.computed_hash == stored;
  return p;
}

std::optional<uint64_t> PeekSeq(std::string_view line) {
  constexpr std::string_view kStart = "{\"seq\":";
  if (line.substr(0, kStart.size()) != kStart) return std::nullopt;
  uint64_t v = 0;
  const char* b = line.data() + kStart.size();
  auto [p, ec] = std::from_chars(b, line.data() + line.size(), v);
  if (ec != std::errc() || p == b) return std::nullopt;
  return v;
}

std::string EncodeAnchor(const Anchor& a) {
  json::Writer w;
  w.BeginObject()
      .Key("first_segment").Uint(a.first_segment)
      .Key("first_seq").Uint(a.first_seq)
      .Key("prev_hash").String(a.prev_hash)
      .Key("time_ms").Int(a.time_ms)
      .EndObject();
  return w.Take() + "\n";
}

Result<Anchor> DecodeAnchor(std::string_view text) {
  json::StrictParser parser(4096, 4);
  KW_ASSIGN_OR_RETURN(json::Element e, parser.Parse(text));
  json::Object o;
  if (e.get_object().get(o) != simdjson::SUCCESS) return InvalidArgumentError("anchor: not an object");
  Anchor a;
  KW_ASSIGN_OR_RETURN(int64_t seg, json::GetInt64(o, "first_segment"));
  KW_ASSIGN_OR_RETURN(int64_t seq, json::GetInt64(o, "first_seq"));
  KW_ASSIGN_OR_RETURN(std::string_view prev, json::GetString(o, "prev_hash"));
  KW_ASSIGN_OR_RETURN(a.time_ms, json::GetInt64(o, "time_ms"));
  if (seg < 1 || seq < 1) return InvalidArgumentError("anchor: first_segment and first_seq must be >= 1");
  if (!(prev.empty() && seq == 1) && !IsLowerHex64(prev)) {
    return InvalidArgumentError("anchor: prev_hash must be 64 lower-case hex digits");
  }
  a.first_segment = static_cast<uint64_t>(seg);
  a.first_seq = static_cast<uint64_t>(seq);
  a.prev_hash = std::string(prev);
  return a;
}

std::string EncodeCheckpoint(const Checkpoint& c) {
  json::Writer w;
  w.BeginObject()
      .Key("seq").Uint(c.seq)
      .Key("hash").String(c.hash)
      .Key("time_ms").Int(c.time_ms)
      .EndObject();
  return w.Take() + "\n";
}

Result<Checkpoint> DecodeCheckpoint(std::string_view text) {
  json::StrictParser parser(4096, 4);
  KW_ASSIGN_OR_RETURN(json::Element e, parser.Parse(text));
  json::Object o;
  if (e.get_object().get(o) != simdjson::SUCCESS) {
    return InvalidArgumentError("checkpoint: not an object");
  }
  Checkpoint c;
  KW_ASSIGN_OR_RETURN(int64_t seq, json::GetInt64(o, "seq"));
  KW_ASSIGN_OR_RETURN(std::string_view hash, json::GetString(o, "hash"));
  KW_ASSIGN_OR_RETURN(c.time_ms, json::GetInt64(o, "time_ms"));
  if (seq < 0) return InvalidArgumentError("checkpoint: seq must be >= 0");
  if (!(seq == 0 && hash.empty()) && !IsLowerHex64(hash)) {
    return InvalidArgumentError("checkpoint: hash must be 64 lower-case hex digits");
  }
  c.seq = static_cast<uint64_t>(seq);
  c.hash = std::string(hash);
  return c;
}

SegmentReader::~SegmentReader() {
  if (fd_ >= 0) ::close(fd_);
}

Status SegmentReader::Open(const std::string& path, uint64_t start_offset) {
  if (fd_ >= 0) ::close(fd_);
  buf_.clear();
  pos_ = 0;
  skipping_ = false;
  path_ = path;
  fd_ = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd_ < 0) {
    int e = errno;
    auto msg = fmt::format("cannot open {}: {}", path, std::strerror(e));
    return e == ENOENT ? NotFoundError(msg) : UnavailableError(msg);
  }
  if (start_offset > 0 && ::lseek(fd_, static_cast<off_t>(start_offset), SEEK_SET) < 0) {
    return UnavailableError(fmt::format("cannot seek in {}: {}", path, std::strerror(errno)));
  }
  file_offset_ = start_offset;
  return Status::Ok();
}

Result<bool> SegmentReader::Next(Line* line) {
  constexpr size_t kChunk = 256u << 10;
  if (fd_ < 0) return FailedPreconditionError("SegmentReader is not open");
  while (true) {
    size_t nl = buf_.find('\n', pos_);
    if (skipping_) {
      if (nl != std::string::npos) {
        pos_ = nl + 1;
        skipping_ = false;
        *line = Line{std::string_view(), skip_start_, true};
        return true;
      }
      pos_ = buf_.size();
    } else if (nl != std::string::npos) {
      line->offset = file_offset_ - (buf_.size() - pos_);
      line->text = std::string_view(buf_).substr(pos_, nl - pos_);
      line->oversize = line->text.size() > kMaxRecordBytes;
      if (line->oversize) line->text = std::string_view();
      pos_ = nl + 1;
      return true;
    } else if (buf_.size() - pos_ > kMaxRecordBytes) {
      skipping_ = true;
      skip_start_ = file_offset_ - (buf_.size() - pos_);
      pos_ = buf_.size();
    }
    if (pos_ > 0) {
      buf_.erase(0, pos_);
      pos_ = 0;
    }
    size_t old = buf_.size();
    buf_.resize(old + kChunk);
    ssize_t n;
    do {
      n = ::read(fd_, buf_.data() + old, kChunk);
    } while (n < 0 && errno == EINTR);
    if (n < 0) {
      buf_.resize(old);
      return UnavailableError(fmt::format("cannot read {}: {}", path_, std::strerror(errno)));
    }
    buf_.resize(old + static_cast<size_t>(n));
    file_offset_ += static_cast<uint64_t>(n);
    if (n == 0) return false;
  }
}

}  // namespace internal

// ---- public record helpers ----

Status ValidateRecord(const AuditRecord& record) {
  return internal::EncodeBody(record).status();
}

std::string ToJson(const AuditRecord& record) {
  std::string out = "{\"seq\":";
  internal::AppendInt(&out, record.seq);
  out.append(",\"prev_hash\":");
  internal::Quote(&out, record.prev_hash);
  std::string detail;
  bool detail_ok = internal::CanonicalDetail(record.detail, &detail).ok();
  internal::WriteFields(record, detail_ok ? std::string_view(detail) : std::string_view(), &out);
  if (!detail_ok) internal::Str(&out, ",\"detail_text\":", record.detail);
  out.append(",\"hash\":");
  internal::Quote(&out, record.hash);
  out.push_back('}');
  return out;
}

Result<AuditRecord> FromJson(std::string_view json) {
  auto e = internal::LineParser().Parse(json);
  if (!e.ok()) return e.status().WithContext("audit record");
  bool as_text = false;
  uint64_t batch_last = 0;
  auto r = internal::RecordFromElement(*e, &batch_last, &as_text);
  if (!r.ok()) return r.status().WithContext("audit record");
  return r;
}

}  // namespace kw::audit
