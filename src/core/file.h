// Small file helpers with Status errors that name the path.
#pragma once

#include <string>
#include <string_view>

#include "core/status.h"

namespace kw {

// Reads a whole file (at most max_bytes) into a string.
Result<std::string> ReadFile(const std::string& path, size_t max_bytes = 64u << 20);

// Writes `data` to `path` atomically (temporary file in the same directory, fsync, rename) with
// the given permission bits, so a crash leaves either the old file or the new one, never a half.
Status WriteFileAtomic(const std::string& path, std::string_view data, unsigned mode = 0644);

}  // namespace kw
