// Helpers shared by the identity tests: a scratch directory and raw file writing.
#pragma once

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <stdexcept>
#include <string>
#include <string_view>

#include "core/test_util.h"
#include "core/file.h"

namespace kw::identity::testing {

using kw::test::TempDir;

// Writes `data` to `path` with exactly `mode` (umask does not apply).
inline void WriteWithMode(const std::string& path, std::string_view data, unsigned mode) {
  ::unlink(path.c_str());
  int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  if (fd < 0) throw std::runtime_error("open " + path);
  if (::write(fd, data.data(), data.size()) != static_cast<ssize_t>(data.size())) {
    ::close(fd);
    throw std::runtime_error("write " + path);
  }
  ::fchmod(fd, mode);
  ::close(fd);
}

// The whole file, or "" if it does not exist.
inline std::string ReadAllOrEmpty(const std::string& path) {
  auto r = ReadFile(path);
  return r.ok() ? *r : std::string();
}

}  // namespace kw::identity::testing
