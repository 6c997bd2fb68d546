// StreamBody: a response body written over time, for Server-Sent Events (JMAP push, RFC 8620
// §7.3) and anything else that must keep a response open and feed it as things happen.
//
// A handler creates one, keeps a shared_ptr for the producer (e.g. a subscription hub) and returns
// it in Response::stream. The server sends the head at once (HTTP/1.1: Transfer-Encoding: chunked;
// HTTP/1.0: the body ends when the connection closes), then writes whatever the producer queues,
// in order, as soon as the socket takes it. The connection closes after the body ends.
//
//   auto body = std::make_shared<kw::http::StreamBody>();
//   body->OnClose([hub, id] { hub->Unsubscribe(id); });   // the client went away, or Finish()
//   hub->Subscribe(id, body);                             // later, any thread: body->Write(...)
//   kw::http::Response r;
//   r.content_type = "text/event-stream";
//   r.stream = body;
//   return r;
//
// The stream closes when the producer calls Finish(), when the client disconnects or a write
// fails, when the server stops (what is queued is still sent, within shutdown_timeout), or when
// more than max_buffered_bytes are waiting for a client that does not read (a slow consumer is
// cut off rather than allowed to pin memory). After that Write() returns false.
//
// Thread safety: every method is thread-safe. OnClose callbacks run exactly once, on whichever
// thread closes the stream, with no lock held; they must not block.
#pragma once

#include <cstddef>
#include <functional>
#include <mutex>
#include <string>
#include <vector>

namespace kw::http {

class StreamBody {
 public:
  explicit StreamBody(size_t max_buffered_bytes = 1 << 20)
      : max_buffered_bytes_(max_buffered_bytes) {}
  StreamBody(const StreamBody&) = delete;
  StreamBody& operator=(const StreamBody&) = delete;

  // ---- producer side ----

  // Queues `data` (empty data is ignored). False, with nothing queued, once the stream is closed;
  // queuing beyond max_buffered_bytes closes the stream and returns false.
  bool Write(std::string data);
  // Ends the body after what is already queued. Idempotent.
  void Finish();
  // True once Write() would return false.
  bool closed() const;
  // Runs `f` once when the stream closes (at once, on this thread, if it already has).
  void OnClose(std::function<void()> f);

  // ---- server side ----

  enum class Take { kData, kWait, kEnd };
  // kData: moves everything queued into *out. kEnd: closed and nothing left to send. kWait:
  // nothing queued yet; `wake` is kept and run once (any thread) when data or the end arrives.
  Take TakeOrWait(std::string* out, std::function<void()> wake);
  // The consumer is gone (client disconnected, write failed, server stopped): closes the stream
  // and drops what is queued. Idempotent.
  void Close();

 private:
  // Marks the stream closed and returns the callbacks to run (outside the lock).
  std::vector<std::function<void()>> CloseLocked();

  const size_t max_buffered_bytes_;
  mutable std::mutex mu_;
  std::string queued_;                            // guarded by mu_
  bool closed_ = false;                           // guarded by mu_
  std::function<void()> wake_;                    // guarded by mu_
  std::vector<std::function<void()>> on_close_;  // guarded by mu_
};

}  // namespace kw::http
