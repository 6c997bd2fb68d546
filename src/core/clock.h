// Time as Keyward sees it. Every component that compares against "now" takes a Clock so that
// tests (and the simulator) can inject their own; nothing calls the system clock directly.
#pragma once

#include <atomic>
#include <cstdint>
#include <string>
#include <string_view>

namespace kw {

// Thread-safe source of wall-clock time in milliseconds since the Unix epoch (UTC).
class Clock {
 public:
  virtual ~Clock() = default;
  virtual int64_t NowMillis() const = 0;
  int64_t NowSeconds() const { return NowMillis() / 1000; }

  // The process-wide real clock. Never null; lives for the whole program.
  static const Clock* System();
};

// A clock that only moves when told to. Thread-safe.
class FakeClock final : public Clock {
 public:
  explicit FakeClock(int64_t now_millis = 1'700'000'000'000) : now_(now_millis) {}
  int64_t NowMillis() const override { return now_.load(std::memory_order_relaxed); }
  void SetMillis(int64_t v) { now_.store(v, std::memory_order_relaxed); }
  void AdvanceMillis(int64_t d) { now_.fetch_add(d, std::memory_order_relaxed); }
  void AdvanceSeconds(int64_t d) { AdvanceMillis(d * 1000); }

 private:
  std::atomic<int64_t> now_;
};

// "Mon, 30 Nov 2026 21:04:20 " followed by `zone`, in UTC, without the locale-dependent
// strftime: HTTP's IMF-fixdate with zone "GMT" (RFC 9110 §5.6.7), a mail Date or Received
// field with zone "+0000" (RFC 5322 §3.3). Empty for a time gmtime cannot represent.
std::string FormatDateRfc5322(int64_t unix_seconds, std::string_view zone);

}  // namespace kw
