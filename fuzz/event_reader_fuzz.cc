// libFuzzer target: arbitrary bytes through every log reader of kw_detect_input.
//
// Every input is read from memory (RecordReader::OpenBuffer) once per LogFormat, with a tiny
// batch size and a small record limit so that refills, window growth, oversize records and
// batch boundaries are reached with short inputs. Inputs that start with the gzip magic go
// through the decompressor (and its truncation and trailing-garbage paths). The first byte of the
// input also picks a file name extension, so that kAuto's extension rules (.csv, .evtx, .gz) are
// reached too.
//
// Invariants (a violation aborts, which libFuzzer reports as a crash with the input saved):
//  - Open either succeeds or refuses with InvalidArgument: for kAuto an unrecognised format,
//    for any format UTF-16 text; a memory source never fails otherwise, and NextBatch never
//    returns an error.
//  - kAuto resolves to a concrete format.
//  - With validate_json, every record is one JSON object that simdjson parses in place, without
//    copying, using the padding the reader promises (kRecordPadding readable bytes after it).
//  - Without it, every record still starts with '{' and ends with '}'.
//  - Record::line never decreases within a file and is at least 1; records name the file.
//  - The bad-record list holds at most max_bad_records_kept entries, each with a reason, and
//    never more than the count.

#include <simdjson.h>

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <string_view>

#include "detect/input/record_reader.h"

namespace kw::fuzz {
namespace {

#define KW_FUZZ_CHECK(cond)                                                             \
  do {                                                                                  \
    if (!(cond)) {                                                                      \
      std::fprintf(stderr, "%s:%d: invariant failed: %s\n", __FILE__, __LINE__, #cond); \
      std::abort();                                                                     \
    }                                                                                   \
  } while (0)

using detect::LogFormat;

constexpr LogFormat kFormats[] = {
    LogFormat::kAuto,        LogFormat::kJsonLines, LogFormat::kJsonArray,
    LogFormat::kUalCsv,      LogFormat::kUalJson,   LogFormat::kSentinelOfficeActivity,
    LogFormat::kEntraSignIn, LogFormat::kEvtxJson,  LogFormat::kKeywardAudit,
};

constexpr const char* kNames[] = {"in.jsonl", "in.json", "in.csv", "in.evtx", "in.json.gz", "in"};

void ReadOne(std::string_view input, LogFormat format, bool validate, const char* name) {
  detect::ReaderOptions options;
  options.batch_bytes = 256;
  options.max_record_bytes = 4096;
  options.max_bad_records_kept = 4;
  options.validate_json = validate;
  auto opened = detect::RecordReader::OpenBuffer(input, name, format, options);
  if (!opened.ok()) {
    bool utf16 = input.size() >= 2 && ((input[0] == '\xFF' && input[1] == '\xFE') ||
                                       (input[0] == '\xFE' && input[1] == '\xFF'));
    KW_FUZZ_CHECK(format == LogFormat::kAuto || utf16);
    KW_FUZZ_CHECK(opened.status().code() == StatusCode::kInvalidArgument);
    KW_FUZZ_CHECK(!opened.status().message().empty());
    return;
  }
  detect::RecordReader& reader = **opened;
  KW_FUZZ_CHECK(reader.format() != LogFormat::kAuto);
  if (format != LogFormat::kAuto && format != LogFormat::kJsonLines &&
      format != LogFormat::kJsonArray) {
    KW_FUZZ_CHECK(reader.format() == format);
  }
  static simdjson::dom::parser* parser = new simdjson::dom::parser();
  detect::RecordBatch batch;
  uint64_t last_line = 0;
  for (int guard = 0;; ++guard) {
    KW_FUZZ_CHECK(guard < 1'000'000);
    Result<bool> more = reader.NextBatch(&batch);
    KW_FUZZ_CHECK(more.ok());
    if (!*more) {
      KW_FUZZ_CHECK(batch.empty());
      break;
    }
    KW_FUZZ_CHECK(!batch.empty());
    for (size_t i = 0; i < batch.size(); ++i) {
      detect::Record r = batch[i];
      KW_FUZZ_CHECK(r.json.size() >= 2);
      KW_FUZZ_CHECK(r.json.front() == '{' && r.json.back() == '}');
      KW_FUZZ_CHECK(r.file == name);
      KW_FUZZ_CHECK(r.line >= 1 && r.line >= last_line);
      last_line = r.line;
      if (validate) {
        simdjson::dom::element e;
        auto err = parser->parse(r.json.data(), r.json.size(), /*realloc_if_needed=*/false).get(e);
        if (err) {
          std::fprintf(stderr, "record does not parse (%s): %.*s\n", simdjson::error_message(err),
                       static_cast<int>(r.json.size()), r.json.data());
        }
        KW_FUZZ_CHECK(!err);
        KW_FUZZ_CHECK(e.is_object());
      }
    }
  }
  const detect::BadRecordStats& bad = reader.bad_records();
  KW_FUZZ_CHECK(bad.first.size() <= 4);
  KW_FUZZ_CHECK(bad.first.size() <= bad.count);
  for (const detect::BadRecord& b : bad.first) {
    KW_FUZZ_CHECK(!b.reason.empty());
    KW_FUZZ_CHECK(b.file == name);
  }
  KW_FUZZ_CHECK(reader.bytes_read() <= reader.total_bytes());
}

}  // namespace
}  // namespace kw::fuzz

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace kw::fuzz;
  std::string_view input(reinterpret_cast<const char*>(data), size);
  const char* name = kNames[size == 0 ? 0 : data[size - 1] % std::size(kNames)];
  for (LogFormat f : kFormats) {
    ReadOne(input, f, /*validate=*/true, name);
  }
  ReadOne(input, LogFormat::kAuto, /*validate=*/false, name);
  return 0;
}
