// Byte sources under a RecordReader: a file, a memory buffer, and gzip decompression over
// either. Private to kw_detect_input.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>

#include "core/status.h"

namespace kw::detect::internal {

class ByteSource {
 public:
  virtual ~ByteSource() = default;
  // Reads up to n bytes into buf; 0 means the end. Errors only for I/O failures.
  virtual Result<size_t> Read(char* buf, size_t n) = 0;
  // Raw bytes consumed (compressed bytes for gzip) and the raw size (0 if unknown).
  virtual uint64_t bytes_consumed() const = 0;
  virtual uint64_t total_bytes() const = 0;
  // After Read returned 0: why the data ended early (truncated or corrupt gzip), or empty.
  virtual std::string damage() const { return {}; }
};

// NotFound / PermissionDenied / InvalidArgument (a directory) name the path.
Result<std::unique_ptr<ByteSource>> OpenFileSource(const std::string& path);
// `data` must outlive the source.
std::unique_ptr<ByteSource> MemorySource(std::string_view data);
// Wraps `raw` so that it yields `prefix` (bytes already read from raw) first.
std::unique_ptr<ByteSource> PrefixSource(std::string prefix, std::unique_ptr<ByteSource> raw);
// Decompresses gzip (several concatenated members allowed). Damage (truncation, bad data,
// trailing garbage) ends the stream and is described by damage().
std::unique_ptr<ByteSource> GzipSource(std::unique_ptr<ByteSource> raw);

inline bool HasGzipMagic(std::string_view head) {
  return head.size() >= 2 && static_cast<unsigned char>(head[0]) == 0x1f &&
         static_cast<unsigned char>(head[1]) == 0x8b;
}

}  // namespace kw::detect::internal
