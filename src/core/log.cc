#include "core/log.h"

#include <unistd.h>

#include <atomic>
#include <memory>
#include <mutex>
#include <string>

namespace kw {
namespace {

std::mutex g_mu;
std::shared_ptr<LogSink> g_sink;  // guarded by g_mu
std::atomic<int> g_min_level{static_cast<int>(LogLevel::kInfo)};
std::atomic<bool> g_has_sink{false};

}  // namespace

std::string_view LogLevelName(LogLevel level) {
  switch (level) {
    case LogLevel::kDebug: return "DEBUG";
    case LogLevel::kInfo: return "INFO";
    case LogLevel::kWarning: return "WARN";
    case LogLevel::kError: return "ERROR";
  }
  return "?";
}

void SetLogSink(LogSink sink, LogLevel min_level) {
  std::lock_guard<std::mutex> lock(g_mu);
  g_has_sink.store(static_cast<bool>(sink));
  g_sink = sink ? std::make_shared<LogSink>(std::move(sink)) : nullptr;
  g_min_level.store(static_cast<int>(min_level));
}

LogSink StderrLogSink() {
  return [](LogLevel level, std::string_view line) {
    std::string out(LogLevelName(level));
    out += ' ';
    out += line;
    out += '\n';
    // One write(2) per line keeps lines from different threads whole.
    ssize_t n = ::write(2, out.data(), out.size());
    (void)n;
  };
}

bool LogEnabled(LogLevel level) {
  return g_has_sink.load(std::memory_order_relaxed) &&
         static_cast<int>(level) >= g_min_level.load(std::memory_order_relaxed);
}

void LogLine(LogLevel level, std::string_view line) {
  std::shared_ptr<LogSink> sink;
  {
    std::lock_guard<std::mutex> lock(g_mu);
    sink = g_sink;
  }
  if (sink) (*sink)(level, line);
}

}  // namespace kw
