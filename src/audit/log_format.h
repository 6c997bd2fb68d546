// Internal to kw_audit: encoding and decoding of the on-disk form (described at the top of
// log_format.cc), shared by the writer (audit_log.cc), the readers (verify.cc) and the fuzz
// target. Not part of the module's contract.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "audit/audit_log.h"
#include "core/status.h"

namespace kw::audit::internal {

inline constexpr size_t kMaxRecordBytes = 1u << 20;    // one encoded line, newline excluded
inline constexpr size_t kMaxStringBytes = 64u << 10;
inline constexpr size_t kMaxItems = 100'000;
inline constexpr size_t kHashSuffixBytes = 75;         // ,"hash":"<64 hex>"}
inline constexpr std::string_view kSegmentPrefix = "audit-";
inline constexpr std::string_view kSegmentSuffix = ".jsonl";
inline constexpr std::string_view kAnchorFile = "anchor";
inline constexpr std::string_view kCheckpointFile = "checkpoint";
inline constexpr std::string_view kLockFile = "LOCK";

// "audit-00000042.jsonl" for 42 (at least 8 digits).
std::string SegmentName(uint64_t index);
// The index of a segment file name, or nullopt for any other name.
std::optional<uint64_t> ParseSegmentName(std::string_view name);

// Validates `r` (see ValidateRecord) and appends to `out` the record's fields after seq/
// prev_hash/batch_last as they appear in a line: `,"time_ms":...,...` (no braces, no hash). The
// detail is put in canonical (minified) form; `canonical_detail` receives it when not null. On
// error `out` is left as it was.
Status EncodeBodyTo(const AuditRecord& r, std::string* out,
                    std::string* canonical_detail = nullptr);
// The same into a new string.
Result<std::string> EncodeBody(const AuditRecord& r, std::string* canonical_detail = nullptr);

// Appends one complete line (with the final newline) to `out` and returns the offset in `out`
// of the record's hash (64 lower-case hex). batch_last is 0 outside multi-record batches.
size_t AppendLineTo(uint64_t seq, std::string_view prev_hash, uint64_t batch_last,
                    std::string_view body, std::string* out);
// The same, returning the hash.
std::string AppendLine(uint64_t seq, std::string_view prev_hash, uint64_t batch_last,
                       std::string_view body, std::string* out);

struct ParsedLine {
  AuditRecord record;       // seq, prev_hash and hash as written
  uint64_t batch_last = 0;  // 0 unless the record belongs to a multi-record batch
  bool hash_ok = false;     // the line's bytes match its own hash
  std::string computed_hash;  // SHA-256 of the line's bytes (== record.hash when hash_ok)
};
// Parses one line (without its newline). InvalidArgument when it is not a record line at all.
Result<ParsedLine> ParseLine(std::string_view line);

// The seq of a line without a full parse (for locating records); nullopt if it does not start
// like a record line.
std::optional<uint64_t> PeekSeq(std::string_view line);

// Segment indexes present in `dir`, ascending (NotFound if `dir` does not exist).
Result<std::vector<uint64_t>> ListSegments(const std::string& dir);

// The last complete record of a segment file; DataLoss if the file does not end with one.
Result<ParsedLine> ReadLastRecord(const std::string& path);

// Hex SHA-256 of bytes.
std::string Sha256Hex(std::string_view data);
// The same into out[0..63] (no allocation; one reused digest context per thread).
void Sha256HexTo(std::string_view data, char* out);

// "2023-06-16T01:02:03.456Z" / "2023-06-16T01:02:03" (UAL CreationTime: no fraction, no zone).
std::string FormatIsoMillis(int64_t ms);
std::string FormatUalTime(int64_t ms);

// Where the retained log starts. Absent file: segment 1, seq 1, prev_hash "".
struct Anchor {
  uint64_t first_segment = 1;
  uint64_t first_seq = 1;
  std::string prev_hash;
  int64_t time_ms = 0;  // when retention wrote it
};
std::string EncodeAnchor(const Anchor& a);
Result<Anchor> DecodeAnchor(std::string_view text);

struct Checkpoint {
  uint64_t seq = 0;
  std::string hash;
  int64_t time_ms = 0;
};
std::string EncodeCheckpoint(const Checkpoint& c);
Result<Checkpoint> DecodeCheckpoint(std::string_view text);

// Reads `path` line by line with bounded memory (lines longer than kMaxRecordBytes are returned
// as oversize, without their bytes). After the end of the file, Next may be called again and
// returns lines that a concurrent writer has completed since.
class SegmentReader {
 public:
  struct Line {
    std::string_view text;  // without the newline; valid until the next call
    uint64_t offset = 0;    // of the line's first byte
    bool oversize = false;
  };
  ~SegmentReader();
  SegmentReader() = default;
  SegmentReader(const SegmentReader&) = delete;
  SegmentReader& operator=(const SegmentReader&) = delete;

  // NotFound if the file does not exist, Unavailable for other errors.
  Status Open(const std::string& path, uint64_t start_offset = 0);
  // True with a complete line; false at the end of the complete lines. Errors on read failure.
  Result<bool> Next(Line* line);
  // Bytes read after the last complete line (an incomplete tail, so far).
  uint64_t pending_bytes() const { return buf_.size() - pos_; }
  // Offset just after the last complete line returned.
  uint64_t end_offset() const { return file_offset_ - (buf_.size() - pos_); }

 private:
  int fd_ = -1;
  std::string path_;
  std::string buf_;
  size_t pos_ = 0;
  uint64_t file_offset_ = 0;  // of the byte after buf_'s end
  bool skipping_ = false;     // inside an oversize line
  uint64_t skip_start_ = 0;
};

}  // namespace kw::audit::internal
