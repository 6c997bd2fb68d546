// Per-format record normalisation and first-record format detection. Private to kw_detect_input;
// the formats are described at the top of normalize.cc and in docs/log-formats.md.
#pragma once

#include <simdjson.h>

#include <cstdint>
#include <string>
#include <string_view>

#include "detect/input/record_reader.h"

namespace kw::detect::internal {

// Index into a static table of LogSourceHints (see SourceHintAt).
enum SourceIndex : uint16_t {
  kSrcNone = 0,
  kSrcM365Audit,
  kSrcAzureSignIn,
  kSrcAzureAudit,
  kSrcAzureActivity,
  kSrcAzureRisk,
  kSrcKeywardAudit,
  kSrcWindows,  // windows with no known service; kSrcWindows + k for the channels table
};
const LogSourceHint& SourceHintAt(uint16_t index);

// Receives normalised records. `json` must be copied before Add returns.
class RecordSink {
 public:
  virtual ~RecordSink() = default;
  virtual void Add(std::string_view json, uint16_t source) = 0;
};

// Normalises one raw record. REQUIRES: `text` is followed by simdjson::SIMDJSON_PADDING readable
// bytes. Emits zero or more records (a {"records":[...]} line gives several) and returns an empty
// string, or returns the reason the record is bad (then nothing was emitted).
class Normalizer {
 public:
  Normalizer(LogFormat format, bool validate_json);
  std::string Normalize(std::string_view text, RecordSink* out);

 private:
  std::string Passthrough(std::string_view text, uint16_t source, RecordSink* out);
  std::string Ual(std::string_view text, RecordSink* out);
  std::string Sentinel(simdjson::dom::element e, RecordSink* out);
  std::string Azure(simdjson::dom::element e, RecordSink* out);
  std::string Evtx(std::string_view text, simdjson::dom::element e, RecordSink* out);
  std::string ParseObject(std::string_view text, simdjson::dom::element* e);

  enum class UalWrapped { kUnknown, kNo, kYes };

  LogFormat format_;
  bool validate_;
  UalWrapped ual_wrapped_ = UalWrapped::kUnknown;
  simdjson::dom::parser parser_;
  simdjson::dom::parser inner_parser_;  // for JSON held in strings (Sentinel, wrapped UAL)
  std::string scratch_;
  std::string scratch2_;
};

// The format of a file whose first record is `first`: one of the record formats, or kJsonLines
// for a generic object. `first` may be a {"records":[...]} / {"value":[...]} wrapper.
LogFormat ClassifyFirstRecord(simdjson::dom::element first);

// Appends e as compact JSON.
void AppendJson(simdjson::dom::element e, std::string* out);

}  // namespace kw::detect::internal
