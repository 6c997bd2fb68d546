// Framing: cutting a byte stream into raw records (lines, JSON values, CSV rows), with bounded
// memory. Private to kw_detect_input; the grammar each framer accepts is at the top of framer.cc.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>

namespace kw::detect::internal {

// The reader's input window: bytes [begin, end) of data are unconsumed. At least kWindowPadding
// readable bytes follow data[end] (simdjson padding for records framed in place).
struct Window {
  static constexpr size_t kWindowPadding = 64;
  std::unique_ptr<char[]> data;
  size_t cap = 0;  // usable bytes (the allocation is cap + kWindowPadding)
  size_t begin = 0;
  size_t end = 0;
  bool eof = false;  // no more bytes will come after end
  std::string_view view() const { return {data.get() + begin, end - begin}; }
};

enum class FrameStatus { kRecord, kBad, kNeedMore, kEnd };

struct Frame {
  std::string_view text;  // kRecord: the raw record, followed by readable padding
  uint64_t line = 0;      // Record::line semantics
  std::string reason;     // kBad
};

class Framer {
 public:
  virtual ~Framer() = default;
  // Consumes from w->begin. kNeedMore asks the caller for more bytes (w->eof is false); views in
  // earlier frames stay valid until the caller refills the window.
  virtual FrameStatus Next(Window* w, Frame* f) = 0;
};

std::unique_ptr<Framer> NewLineFramer(size_t max_record_bytes);
// JSON arrays, concatenated JSON values, {"records":[…]} / {"@odata.context":…,"value":[…]}
// wrappers, and evtx_dump's "Record N" separator lines.
std::unique_ptr<Framer> NewJsonStreamFramer(size_t max_record_bytes);
// RFC 4180 CSV with a header naming an AuditData column; each record is that column's text.
std::unique_ptr<Framer> NewCsvFramer(size_t max_record_bytes);

// True if `line` (no newline) holds exactly one complete JSON object or array, used to tell JSON
// lines from pretty-printed or wrapped JSON.
bool IsCompleteJsonValue(std::string_view line);

}  // namespace kw::detect::internal
