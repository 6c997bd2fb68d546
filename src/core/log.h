// Logging. The library never writes to a terminal by itself: log lines go to the sink installed by
// the program (the CLI installs a stderr sink). Without a sink, lines are dropped. Thread-safe.
#pragma once

#include <functional>
#include <string_view>

#include <fmt/format.h>

namespace kw {

enum class LogLevel { kDebug = 0, kInfo, kWarning, kError };

std::string_view LogLevelName(LogLevel level);

using LogSink = std::function<void(LogLevel, std::string_view line)>;

// Installs the process-wide sink (nullptr to drop everything) and the minimum level written.
void SetLogSink(LogSink sink, LogLevel min_level = LogLevel::kInfo);
// A sink writing "LEVEL message" lines to stderr, one write per line.
LogSink StderrLogSink();

bool LogEnabled(LogLevel level);
void LogLine(LogLevel level, std::string_view line);

template <typename... Args>
void Log(LogLevel level, fmt::format_string<Args...> f, Args&&... args) {
  if (!LogEnabled(level)) return;
  LogLine(level, fmt::format(f, std::forward<Args>(args)...));
}

}  // namespace kw
