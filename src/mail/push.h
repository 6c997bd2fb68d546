// PushHub: JMAP push over an event source (RFC 8620 §7.3; RFC 8621 §1.5 EmailDelivery).
//
// MailService serves GET /jmap/eventsource?types=T&closeafter=C&ping=P by authenticating the
// caller, working out which accounts the token may read, and calling Subscribe(): the returned
// StreamBody becomes the response body (text/event-stream). From then on:
//   * the store tells the hub which accounts a committed write changed (Store::SetChangeListener);
//   * one hub thread recomputes those accounts' states (Txn::PushStates) and, for each
//     subscription reaching them, writes
//         event: state
//         id: <accountId>:<modseq>[,<accountId>:<modseq>...]
//         data: {"@type":"StateChange","changed":{"<accountId>":{"Email":"42",...}}}
//     naming only the requested types whose state moved since the last event of that stream;
//     EmailDelivery moves only when an email is created;
//   * ping (seconds, clamped to [1, 3600]; 0 = none) sends `event: ping` / `data: {"interval":N}`
//     whenever that long passed since the stream's previous event;
//   * closeafter=state ends the response after the first state event;
//   * a client reconnecting with Last-Event-ID (the id above) gets, at once, the state of every
//     account that changed since that id.
// A stream ends when the client leaves, the server stops, the hub is destroyed, or (slow
// consumer) its buffer overflows (http/stream.h).
//
// Thread safety: all methods are thread-safe. The hub must outlive nothing of its streams: the
// destructor finishes every open stream.
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "core/status.h"
#include "http/stream.h"
#include "mail/store.h"

namespace kw::mail {

struct PushRequest {
  std::vector<std::string> account_ids;  // the accounts the caller may read
  std::set<std::string> types;           // empty: every type ("*")
  bool close_after_state = false;
  int ping_seconds = 0;                  // clamped; 0 disables pings
  std::string last_event_id;             // the Last-Event-ID header, if any
};

// Parses the query of an event-source request (types, closeafter, ping; all optional, defaults
// "*", "no", 0). InvalidArgument names the bad parameter.
Result<PushRequest> ParsePushQuery(const std::map<std::string, std::string, std::less<>>& query);

class PushHub {
 public:
  static constexpr int kMinPingSeconds = 1;
  static constexpr int kMaxPingSeconds = 3600;
  static constexpr size_t kMaxStreams = 4096;

  // `store` must outlive the hub. The hub registers itself as the store's change listener.
  explicit PushHub(Store* store);
  ~PushHub();
  PushHub(const PushHub&) = delete;
  PushHub& operator=(const PushHub&) = delete;

  // Opens a stream. ResourceExhausted beyond kMaxStreams; store errors.
  Result<std::shared_ptr<http::StreamBody>> Subscribe(PushRequest request);

  // Accounts whose state changed (the store's listener; callable from any thread).
  void Notify(const std::set<std::string>& account_ids);

  size_t open_streams() const;
  // The ping interval a request for `seconds` gets.
  static int ClampPing(int seconds);

 private:
  struct Sub;
  void Run();
  // Sends what moved for `sub` given fresh states; false if the stream ended.
  bool SendChanges(Sub& sub, const std::map<std::string, Txn::PushState>& fresh,
                   std::chrono::steady_clock::time_point now);

  Store* const store_;
  mutable std::mutex mu_;
  std::condition_variable cv_;
  bool stop_ = false;                                // guarded by mu_
  uint64_t next_id_ = 1;                             // guarded by mu_
  std::map<uint64_t, std::shared_ptr<Sub>> subs_;    // guarded by mu_
  std::set<std::string> dirty_;                      // guarded by mu_: accounts changed
  std::set<uint64_t> dirty_subs_;                    // guarded by mu_: catch-up on connect
  std::thread thread_;
};

}  // namespace kw::mail
