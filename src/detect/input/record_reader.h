// Readers of exported logs for detection: one JSON object per event, in batches.
//
// A RecordReader opens one file (plain or gzip-compressed, detected by its magic bytes), works out
// its format (LogFormat::kAuto looks at the extension and the first record), and hands out the
// file's events as RecordBatches. Each Record is one JSON object, normalised so that the same
// Sigma rules run whatever the export: a Sentinel OfficeActivity row or a Search-UnifiedAuditLog
// CSV row becomes the unified-audit-log AuditData object; an Entra sign-in exported by Azure
// Monitor or Graph gets Sentinel SigninLogs column names; the formats are described in
// docs/log-formats.md and at the top of the file that parses each.
//
// Threads: a RecordReader is used by one thread (the producer). A RecordBatch, once filled, is
// immutable and owns everything its Records point to (text, file name), so it can be moved to a
// worker thread and read from several threads at once; it stays valid after the reader is gone.
//
// Memory: bounded whatever the input size. The reader never loads a whole file; it keeps one
// input window (up to 1 MiB, growing to max_record_bytes for one long record) and each batch
// holds at most about batch_bytes of records, plus the window its unchanged records were read
// into (handed over, not copied). A record over max_record_bytes is skipped and
// counted as bad.
//
// Bad input is never fatal: a malformed line, bad CSV quoting, a truncated file or gzip stream,
// an oversize record or a record of the wrong shape is counted in bad_records() with its file,
// line and a reason, and reading goes on with the next record. NextBatch returns an error only
// when the file cannot be read at all (I/O error).
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "core/status.h"

namespace kw::detect {

enum class LogFormat {
  kAuto,                    // decide from the extension and the first record
  kJsonLines,               // one JSON object per line, emitted as is
  kJsonArray,               // a JSON array (or concatenated objects) of objects, emitted as is
  kUalCsv,                  // Search-UnifiedAuditLog / Purview CSV export: the AuditData column
  kUalJson,                 // UAL AuditData objects, bare or wrapped in {"AuditData": ...}
  kSentinelOfficeActivity,  // Microsoft Sentinel OfficeActivity rows, normalised to AuditData
  kEntraSignIn,             // Entra ID sign-ins and audits, Azure activity (Azure Monitor, Graph)
  kEvtxJson,                // evtx_dump JSON (-o json / -o jsonl)
  kKeywardAudit,            // Keyward's own hash-chained audit log (JSON lines)
};

// Stable flag name of a format: "auto", "jsonl", "json-array", "ual-csv", "ual-json",
// "sentinel-officeactivity", "entra", "evtx-json", "keyward-audit".
std::string_view LogFormatName(LogFormat format);
// Parses a --format value (the names above, case-insensitive, plus a few aliases: "json",
// "ndjson", "csv", "ual", "sentinel", "signin", "evtx", "keyward"). InvalidArgument lists the
// accepted names.
Result<LogFormat> ParseLogFormat(std::string_view name);

// Where a record comes from, in Sigma logsource terms. Empty fields mean "unknown": the engine
// then applies only rules whose logsource leaves them open. The views point to static strings.
struct LogSourceHint {
  std::string_view product;
  std::string_view service;
  std::string_view category;
};

// One event. The views point into the RecordBatch that produced the record and live as long as it.
struct Record {
  // One JSON object (no surrounding whitespace). Guarantee for zero-copy parsing: at least
  // kRecordPadding (== simdjson::SIMDJSON_PADDING) readable bytes follow json.end() inside the
  // batch's buffer, so `parser.parse(json.data(), json.size(), /*realloc_if_needed=*/false)` and
  // `simdjson::padded_string_view(json.data(), json.size(), json.size() + kRecordPadding)` are
  // valid. The bytes after the record are the next record's text, not spaces: ondemand users who
  // need a trailing sentinel must copy.
  std::string_view json;
  std::string_view file;  // the path as given to Open (or the name given to OpenBuffer)
  // 1-based line where the record starts for line-based and CSV input (the CSV header is line 1);
  // 1-based element index for JSON arrays and concatenated JSON values.
  uint64_t line = 0;
  LogSourceHint source;
};

// Bytes guaranteed readable after every Record::json (simdjson::SIMDJSON_PADDING).
inline constexpr size_t kRecordPadding = 64;

// A run of records that own their storage. Movable, not copyable.
class RecordBatch {
 public:
  RecordBatch();
  ~RecordBatch();
  RecordBatch(RecordBatch&&) noexcept;
  RecordBatch& operator=(RecordBatch&&) noexcept;
  RecordBatch(const RecordBatch&) = delete;
  RecordBatch& operator=(const RecordBatch&) = delete;

  size_t size() const { return entries_.size(); }
  bool empty() const { return entries_.empty(); }
  // REQUIRES: i < size().
  Record operator[](size_t i) const;
  // Sum of the records' JSON sizes.
  uint64_t payload_bytes() const { return payload_bytes_; }

  // Drops the records but keeps the buffer for reuse. Called by NextBatch.
  void Clear();

 private:
  friend class BatchBuilder;
  struct Entry {
    uint64_t offset;  // in window_ when in_window, else in buf_
    uint64_t line;
    uint32_t length;
    uint16_t source;  // index into the static table of source hints
    bool in_window;
  };
  std::shared_ptr<const std::string> file_;
  // The reader's read window the batch's unchanged records were framed in, handed over whole
  // (records used in place, not copied); at least kRecordPadding readable bytes follow each.
  std::unique_ptr<char[]> window_;
  size_t window_cap_ = 0;
  std::unique_ptr<char[]> buf_;  // copied records, then at least kRecordPadding zero bytes
  size_t cap_ = 0;               // allocated bytes of buf_
  size_t used_ = 0;              // bytes of records in buf_
  std::vector<Entry> entries_;
  uint64_t payload_bytes_ = 0;
};

struct ReaderOptions {
  // Largest size of one batch's records: a batch ends after the record that reaches it, or
  // earlier when the input window its records were read into is full.
  size_t batch_bytes = 4u << 20;
  // A record longer than this (after decompression, before normalisation) is a bad record.
  // Clamped to [64 B, 1 GiB].
  size_t max_record_bytes = 16u << 20;
  // How many bad records are kept with their reason (all are counted).
  size_t max_bad_records_kept = 100;
  // Records emitted as is (JSON lines, arrays, UAL JSON bare objects, Keyward audit, CSV
  // AuditData) get only a structural check by default: the text starts with '{' and ends with
  // '}'. With validate_json they are fully parsed (simdjson) and a malformed one is a bad record.
  // Normalised formats (Sentinel, Entra, wrapped UAL, evtx with an object EventID) are always
  // parsed.
  bool validate_json = false;
};

struct BadRecord {
  std::string file;
  uint64_t line = 0;  // same meaning as Record::line; 0 when the damage is not in one record
  std::string reason;
};

struct BadRecordStats {
  uint64_t count = 0;
  std::vector<BadRecord> first;  // the first ReaderOptions::max_bad_records_kept
};

class RecordReader {
 public:
  // Opens `path`. NotFound / PermissionDenied when it cannot be opened; InvalidArgument when
  // format is kAuto and the content is recognisably none of the formats (e.g. binary data, a
  // binary .evtx), or the text is UTF-16. An empty file is fine (no records). Damage found
  // later (gzip included) is reported through bad_records(), not here.
  static Result<std::unique_ptr<RecordReader>> Open(const std::string& path,
                                                    LogFormat format = LogFormat::kAuto,
                                                    ReaderOptions options = {});
  // Reads from memory (tests, fuzzing). `name` plays the role of the path (its extension is used
  // by kAuto). The bytes are copied only as they are read: `data` must outlive the reader.
  static Result<std::unique_ptr<RecordReader>> OpenBuffer(std::string_view data, std::string name,
                                                          LogFormat format = LogFormat::kAuto,
                                                          ReaderOptions options = {});
  ~RecordReader();

  // Replaces *out's records with the next ones. Returns false (and an empty batch) at the end of
  // the file; an empty batch is never returned with true. Errors only for I/O failures.
  Result<bool> NextBatch(RecordBatch* out);

  // The format in use (kAuto resolved).
  LogFormat format() const;
  // Bytes consumed from the file (compressed bytes for gzip) and the file's size, for progress.
  uint64_t bytes_read() const;
  uint64_t total_bytes() const;
  // Records delivered so far.
  uint64_t records_read() const;
  const BadRecordStats& bad_records() const;

  class Impl;

 private:
  explicit RecordReader(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

// Expands command-line inputs into files: a regular file stays as is; a directory is walked
// recursively (hidden entries, those whose name starts with '.', are skipped); an argument with
// '*', '?' or '[' is a glob (its matches expanded the same way). Each argument's files are sorted;
// a file named twice is kept once, at its first place. NotFound names a missing path or a glob
// matching nothing; an empty result is InvalidArgument.
Result<std::vector<std::string>> ExpandInputs(const std::vector<std::string>& args);

}  // namespace kw::detect
