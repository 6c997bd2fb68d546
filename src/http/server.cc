#include "http/server.h"

#include <arpa/inet.h>
#include <fmt/format.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>
#include <signal.h>
#include <time.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <array>
#include <atomic>
#include <boost/asio/dispatch.hpp>
#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/signal_set.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/strand.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <condition_variable>
#include <exception>
#include <limits>
#include <mutex>
#include <optional>
#include <random>
#include <thread>
#include <unordered_map>
#include <utility>
#include <vector>

#include "core/log.h"
#include "http/form.h"
#include "http/message.h"
#include "http/stream.h"

namespace kw::http {
namespace {

namespace beast = boost::beast;
namespace bhttp = boost::beast::http;
namespace net = boost::asio;
using tcp = net::ip::tcp;
using SteadyClock = std::chrono::steady_clock;
using boost::system::error_code;

// After a response that closes the connection, the server half-closes and discards what the
// client still sends for a moment: closing a socket with unread data makes the kernel send a RST,
// which can destroy the response in flight (the client would see "connection reset" instead of
// the 413 it should read).
constexpr std::chrono::milliseconds kMaxLinger{1000};
constexpr size_t kMaxLingerBytes = 1 << 20;
// Beyond max_connections, up to this many connections at a time get a 503; others are closed.
constexpr size_t kMaxRejecting = 64;
constexpr size_t kIdleReadBytes = 4096;
constexpr size_t kMaxLoggedPathBytes = 256;
constexpr std::chrono::milliseconds kAcceptRetryDelay{50};

std::string_view ToStd(beast::string_view s) { return {s.data(), s.size()}; }

uint64_t SplitMix64(uint64_t x) {
  x += 0x9e3779b97f4a7c15ULL;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
  return x ^ (x >> 31);
}

uint64_t RandomSeed() {
  uint64_t seed = static_cast<uint64_t>(SteadyClock::now().time_since_epoch().count());
  try {
    std::random_device rd;
    seed ^= (static_cast<uint64_t>(rd()) << 32) | rd();
  } catch (const std::exception&) {
    // No entropy source: ids stay unique (a counter under a bijection), only less unpredictable.
  }
  return seed;
}


std::string FormatEndpoint(const tcp::endpoint& ep) {
  if (ep.address().is_v6()) return fmt::format("[{}]:{}", ep.address().to_string(), ep.port());
  return fmt::format("{}:{}", ep.address().to_string(), ep.port());
}

bool IsToken(std::string_view s) {
  if (s.empty()) return false;
  for (char c : s) {
    bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              std::string_view("!#$%&'*+-.^_`|~").find(c) != std::string_view::npos;
    if (!ok) return false;
  }
  return true;
}

bool IsSafeFieldValue(std::string_view s) {
  return s.find_first_of(std::string_view("\r\n\0", 3)) == std::string_view::npos;
}

bool EqualsIgnoreCase(std::string_view a, std::string_view b) {
  return !CaseInsensitiveLess()(a, b) && !CaseInsensitiveLess()(b, a);
}

std::string_view Trim(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t')) s.remove_suffix(1);
  return s;
}

// Fields the server writes itself; a handler's values for them are ignored.
bool IsServerOwnedField(std::string_view name) {
  for (std::string_view owned : {"Content-Length", "Transfer-Encoding", "Connection", "Keep-Alive",
                                 "Upgrade", "Date", "X-Request-Id"}) {
    if (EqualsIgnoreCase(name, owned)) return true;
  }
  return false;
}

// Why a handler's response cannot be sent as it is, or "".
std::string CheckResponse(const Response& r) {
  if (r.status < 200 || r.status > 599) return fmt::format("status {} out of range", r.status);
  if (!IsSafeFieldValue(r.content_type)) return "Content-Type contains CR, LF or NUL";
  for (const auto& [name, value] : r.headers) {
    if (!IsToken(name))
      return fmt::format("header name '{}' is not a token", PrintableForMessage(name));
    if (!IsSafeFieldValue(value)) {
      return fmt::format("header '{}' contains CR, LF or NUL", PrintableForMessage(name));
    }
  }
  return {};
}

const boost::system::error_category& BeastHttpCategory() {
  return bhttp::make_error_code(bhttp::error::bad_method).category();
}

class Session;

// State shared by the server and its connections; connections hold it by shared_ptr so that
// whichever is destroyed last (a connection abandoned in the io_context queue, or the server)
// never sees it gone.
struct Shared {
  Shared(ServerOptions o, Router r) : options(std::move(o)), router(std::move(r)) {}

  std::string NextRequestId() {
    uint64_t n = request_counter.fetch_add(1, std::memory_order_relaxed);
    return fmt::format("{:016x}", SplitMix64(request_id_seed + n));
  }

  const ServerOptions options;
  const Router router;
  const uint64_t request_id_seed = RandomSeed();
  std::atomic<uint64_t> request_counter{0};
  std::atomic<bool> stopping{false};  // written under mu

  std::mutex mu;
  std::condition_variable drained;  // notified when `open` drops to zero
  std::unordered_map<uint64_t, std::weak_ptr<Session>> sessions;  // guarded by mu
  size_t open = 0;               // guarded by mu: Session objects alive
  size_t rejecting = 0;          // guarded by mu: of which being refused with a 503
  uint64_t next_session_id = 1;  // guarded by mu

  std::vector<std::shared_ptr<Session>> Snapshot() {
    std::vector<std::shared_ptr<Session>> out;
    std::lock_guard<std::mutex> lock(mu);
    for (auto& [id, weak] : sessions) {
      if (auto s = weak.lock()) out.push_back(std::move(s));
    }
    return out;
  }
};

// One connection. Every member function runs on the connection's strand (the socket's executor),
// so no member needs a lock. The object lives as long as an operation holds a shared_ptr to it;
// the socket closes when it dies.
class Session : public std::enable_shared_from_this<Session> {
 public:
  Session(std::shared_ptr<Shared> shared, tcp::socket socket, uint64_t id, bool rejected)
      : shared_(std::move(shared)),
        options_(shared_->options),
        id_(id),
        rejected_(rejected),
        stream_(std::move(socket)) {
    error_code ec;
    // Responses are written whole; Nagle would only hold back the next pipelined one until the
    // client's delayed ACK (40 ms).
    stream_.socket().set_option(tcp::no_delay(true), ec);
    tcp::endpoint ep = stream_.socket().remote_endpoint(ec);
    remote_ = ec ? std::string("unknown") : FormatEndpoint(ep);
  }

  ~Session() {
    if (stream_body_) stream_body_->Close();
    std::lock_guard<std::mutex> lock(shared_->mu);
    shared_->sessions.erase(id_);
    --shared_->open;
    if (rejected_) --shared_->rejecting;
    if (shared_->open == 0) shared_->drained.notify_all();
  }

  net::any_io_executor executor() { return stream_.get_executor(); }

  void Start() {
    read_deadline_ = SteadyClock::now() + options_.read_timeout;
    if (rejected_) {
      request_id_ = shared_->NextRequestId();
      request_start_ = SteadyClock::now();
      Response r = ErrorResponse(503, "temporarily_unavailable",
                                 "the server has too many connections; retry later");
      r.SetHeader("Retry-After", "1");
      Send(std::move(r), /*keep_alive=*/false, /*head=*/false);
      return;
    }
    ReadRequest();
  }

  // Server stopping: an idle connection closes now, a busy one after its response.
  void Shutdown() {
    stopping_ = true;
    if (phase_ == Phase::kIdle) CloseNow();
    // A stream sends what is queued, then its end (PumpStream).
    if (phase_ == Phase::kStreaming) stream_body_->Finish();
  }

  void ForceClose() {
    if (phase_ != Phase::kClosed) CloseNow();
  }

 private:
  enum class Phase { kIdle, kReading, kWriting, kStreaming, kClosing, kClosed };

  template <typename F>
  auto Bind(F f) {
    return beast::bind_front_handler(f, shared_from_this());
  }

  void ReadRequest() {
    parser_.emplace();
    parser_->header_limit(static_cast<uint32_t>(
        std::min<size_t>(options_.max_header_bytes, std::numeric_limits<uint32_t>::max())));
    parser_->body_limit(static_cast<uint64_t>(options_.max_body_bytes));
    request_id_ = shared_->NextRequestId();
    log_method_ = "-";
    log_path_ = "-";
    version_ = 11;
    if (buffer_.size() > 0) {  // a pipelined request is already here
      BeginRead();
      return;
    }
    if (stopping_ || shared_->stopping.load()) {
      CloseNow();
      return;
    }
    phase_ = Phase::kIdle;
    buffer_.shrink_to_fit();  // idle keep-alive connections should not pin a large buffer
    if (first_request_) {
      stream_.expires_at(read_deadline_);
    } else {
      stream_.expires_after(options_.idle_timeout);
    }
    stream_.async_read_some(buffer_.prepare(kIdleReadBytes), Bind(&Session::OnIdleRead));
  }

  void OnIdleRead(error_code ec, size_t n) {
    if (ec) {
      if (ec == beast::error::timeout && first_request_) LogReadTimeout();
      CloseNow();
      return;
    }
    buffer_.commit(n);
    BeginRead();
  }

  void BeginRead() {
    phase_ = Phase::kReading;
    request_start_ = SteadyClock::now();
    if (!first_request_) read_deadline_ = request_start_ + options_.read_timeout;
    stream_.expires_at(read_deadline_);
    bhttp::async_read_header(stream_, buffer_, *parser_, Bind(&Session::OnHeader));
  }

  void OnHeader(error_code ec, size_t) {
    if (ec) {
      OnReadError(ec);
      return;
    }
    NoteRequestLine();
    if (std::optional<Response> error = CheckHeader()) {
      Send(std::move(*error), /*keep_alive=*/false, /*head=*/false);
      return;
    }
    if (parser_->is_done()) {
      Dispatch();
      return;
    }
    // CheckHeader let only "Expect: 100-continue" through; HTTP/1.0 clients never get a 1xx.
    if (parser_->get().count(bhttp::field::expect) != 0 && version_ >= 11) {
      continue_ = {};
      continue_.version(11);
      continue_.result(bhttp::status::continue_);
      stream_.expires_after(options_.write_timeout);
      bhttp::async_write(stream_, continue_, Bind(&Session::OnContinueWritten));
      return;
    }
    ReadBody();
  }

  void OnContinueWritten(error_code ec, size_t) {
    if (ec) {
      CloseNow();
      return;
    }
    ReadBody();
  }

  void ReadBody() {
    stream_.expires_at(read_deadline_);
    bhttp::async_read(stream_, buffer_, *parser_, Bind(&Session::OnBody));
  }

  void OnBody(error_code ec, size_t) {
    if (ec) {
      OnReadError(ec);
      return;
    }
    Dispatch();
  }

  void OnReadError(error_code ec) {
    if (ec == bhttp::error::header_limit) {
      Send(ErrorResponse(
               431, "request_header_too_large",
               fmt::format("the request header exceeds {} bytes", options_.max_header_bytes)),
           false, false);
    } else if (ec == bhttp::error::body_limit) {
      Send(ErrorResponse(413, "request_too_large",
                         fmt::format("the request body exceeds {} bytes", options_.max_body_bytes)),
           false, false);
    } else if (ec == beast::error::timeout) {
      LogReadTimeout();
      CloseNow();
    } else if (ec == bhttp::error::end_of_stream || ec == bhttp::error::partial_message) {
      CloseNow();  // the client went away
    } else if (&ec.category() == &BeastHttpCategory()) {
      Send(ErrorResponse(400, "invalid_request", "malformed HTTP request"), false, false);
    } else {
      CloseNow();  // a socket error or our own close()
    }
  }

  void NoteRequestLine() {
    const auto& req = parser_->get();
    version_ = req.version();
    log_method_ = PrintableForMessage(ToStd(req.method_string()), 32);
    std::string_view target = ToStd(req.target());
    log_path_ = PrintableForMessage(target.substr(0, target.find('?')), kMaxLoggedPathBytes);
  }

  // The checks Beast's parser leaves to the server (see server.h for the list), or nullopt.
  std::optional<Response> CheckHeader() const {
    const auto& req = parser_->get();
    auto bad = [](std::string_view why) { return ErrorResponse(400, "invalid_request", why); };
    std::string_view target = ToStd(req.target());
    if (target.size() > options_.max_target_bytes) {
      return ErrorResponse(
          414, "uri_too_long",
          fmt::format("the request target exceeds {} bytes", options_.max_target_bytes));
    }
    if (target.empty() || target.front() != '/') {
      return bad("the request target must be a path starting with '/'");
    }
    for (char c : target) {
      if (c < 0x21 || c > 0x7E || c == '#')
        return bad("the request target has an invalid character");
    }
    size_t hosts = req.count(bhttp::field::host);
    if (hosts > 1 || (req.version() >= 11 && hosts == 0)) {
      return bad("a request needs exactly one Host header");
    }
    // Beast ignores a Transfer-Encoding that does not end in "chunked" and reads no body, where a
    // proxy in front might read one: refusing every other coding closes that smuggling gap.
    if (size_t te = req.count(bhttp::field::transfer_encoding); te != 0) {
      if (te != 1 || req.version() < 11 ||
          !EqualsIgnoreCase(Trim(ToStd(req[bhttp::field::transfer_encoding])), "chunked")) {
        return bad("only \"Transfer-Encoding: chunked\" is supported, in HTTP/1.1");
      }
    }
    if (size_t expect = req.count(bhttp::field::expect); expect != 0) {
      if (expect != 1 ||
          !EqualsIgnoreCase(Trim(ToStd(req[bhttp::field::expect])), "100-continue")) {
        return ErrorResponse(417, "expectation_failed",
                             "only \"Expect: 100-continue\" is supported");
      }
    }
    return std::nullopt;
  }

  void Dispatch() {
    auto& breq = parser_->get();
    Request req;
    req.method = std::string(ToStd(breq.method_string()));
    req.target = std::string(ToStd(breq.target()));
    size_t q = req.target.find('?');
    req.path = req.target.substr(0, q);
    for (const auto& field : breq) {
      req.headers.emplace(std::string(ToStd(field.name_string())),
                          std::string(ToStd(field.value())));
    }
    req.body = std::move(breq.body());
    req.remote_address = remote_;
    if (!options_.trusted_proxies.empty()) ApplyForwardedFor(&req);
    req.request_id = request_id_;
    bool keep_alive = breq.keep_alive();

    Response response;
    auto query = ParseQuery(q == std::string::npos ? std::string_view()
                                                   : std::string_view(req.target).substr(q + 1));
    if (!query.ok()) {
      response = ErrorResponse(400, "invalid_request", query.status().message());
    } else {
      req.query = std::move(*query);
      response = shared_->router.Dispatch(&req);
    }
    // Read after the handler: a response finished during Stop() tells the client to go away.
    keep_alive = keep_alive && !stopping_ && !shared_->stopping.load();
    Send(std::move(response), keep_alive, req.method == "HEAD");
  }

  // The head every response carries, whatever its body.
  template <typename Message>
  void FillHead(const Response& r, Message* m) const {
    m->version(version_ == 10 ? 10 : 11);
    m->result(static_cast<unsigned>(r.status));
    for (const auto& [name, value] : r.headers) {
      if (!IsServerOwnedField(name)) m->insert(name, value);
    }
    if (!r.content_type.empty()) m->set(bhttp::field::content_type, r.content_type);
    m->set("X-Request-Id", request_id_);
    if (m->find("X-Content-Type-Options") == m->end()) {
      m->set("X-Content-Type-Options", "nosniff");
    }
    if (r.status >= 400 && m->find(bhttp::field::cache_control) == m->end()) {
      m->set(bhttp::field::cache_control, "no-store");
    }
    m->set(bhttp::field::date, FormatDateRfc5322(options_.clock->NowSeconds(), "GMT"));
  }

  // X-Forwarded-For from a trusted proxy: the last address is the one the proxy saw.
  void ApplyForwardedFor(Request* req) const {
    std::string peer = req->ClientIp();
    if (std::find(options_.trusted_proxies.begin(), options_.trusted_proxies.end(), peer) ==
        options_.trusted_proxies.end()) {
      return;
    }
    auto xff = req->Header("X-Forwarded-For");
    if (!xff) return;
    std::string_view list = *xff;
    size_t comma = list.rfind(',');
    std::string_view last = Trim(comma == std::string_view::npos ? list : list.substr(comma + 1));
    error_code ec;
    auto addr = net::ip::make_address(std::string(last), ec);
    if (ec) return;  // not an address: keep the peer
    req->remote_address = addr.is_v6() ? fmt::format("[{}]:0", addr.to_string())
                                       : fmt::format("{}:0", addr.to_string());
  }

  void Send(Response r, bool keep_alive, bool head) {
    if (std::string problem = CheckResponse(r); !problem.empty()) {
      Log(LogLevel::kError, "http response refused: {} (method={} path={} id={})", problem,
          log_method_, log_path_, request_id_);
      r = ErrorResponse(500, "server_error", "internal server error");
    }
    if (r.stream) {
      if (r.status == 200 && !head) {
        SendStream(std::move(r));
        return;
      }
      r.stream->Close();
      r.stream.reset();
    }
    response_ = {};
    FillHead(r, &response_);
    log_bytes_ = 0;
    if (r.status != 204 && r.status != 304) {
      response_.content_length(r.body.size());
      if (!head) {
        log_bytes_ = r.body.size();
        response_.body() = std::move(r.body);
      }
    }
    response_.keep_alive(keep_alive);
    log_status_ = r.status;
    close_after_write_ = !keep_alive;
    phase_ = Phase::kWriting;
    stream_.expires_after(options_.write_timeout);
    bhttp::async_write(stream_, response_, Bind(&Session::OnWrite));
  }

  void OnWrite(error_code ec, size_t) {
    LogAccess(ec);
    response_ = {};
    if (ec) {
      CloseNow();
      return;
    }
    first_request_ = false;
    if (close_after_write_) {
      LingeringClose();
      return;
    }
    if (stopping_ || shared_->stopping.load()) {
      // The response promised keep-alive; with nothing more received this is an idle
      // connection, closed at once as Shutdown() would have.
      if (buffer_.size() == 0) {
        CloseNow();
      } else {
        LingeringClose();
      }
      return;
    }
    ReadRequest();
  }

  void LingeringClose() {
    phase_ = Phase::kClosing;
    error_code ec;
    stream_.socket().shutdown(tcp::socket::shutdown_send, ec);
    if (ec) {
      CloseNow();
      return;
    }
    drained_ = 0;
    stream_.expires_after(std::min<std::chrono::milliseconds>(kMaxLinger, options_.read_timeout));
    Drain();
  }

  void Drain() { stream_.async_read_some(net::buffer(drain_buffer_), Bind(&Session::OnDrain)); }

  void OnDrain(error_code ec, size_t n) {
    drained_ += n;
    if (ec || drained_ > kMaxLingerBytes) {
      CloseNow();
      return;
    }
    Drain();
  }

  // ---- streamed bodies (stream.h) ----

  void SendStream(Response r) {
    stream_body_ = std::move(r.stream);
    stream_head_ = {};
    FillHead(r, &stream_head_);
    if (version_ != 10) stream_head_.chunked(true);  // HTTP/1.0: the close ends the body
    stream_head_.keep_alive(false);
    stream_chunked_ = version_ != 10;
    log_status_ = r.status;
    log_bytes_ = 0;
    phase_ = Phase::kStreaming;
    stream_serializer_.emplace(stream_head_);
    stream_.expires_after(options_.write_timeout);
    bhttp::async_write_header(stream_, *stream_serializer_, Bind(&Session::OnStreamHead));
  }

  void OnStreamHead(error_code ec, size_t) {
    if (ec) {
      EndStream(ec);
      return;
    }
    // The client sends nothing more on this connection; a read that completes means it left
    // (or misbehaves). It runs without a deadline, beside the writes.
    stream_.expires_never();
    stream_.async_read_some(net::buffer(drain_buffer_), Bind(&Session::OnStreamPeerRead));
    PumpStream();
  }

  void OnStreamPeerRead(error_code ec, size_t n) {
    if (phase_ != Phase::kStreaming && phase_ != Phase::kClosing) return;
    drained_ += n;
    if (ec || drained_ > kMaxLingerBytes) {
      if (phase_ == Phase::kStreaming) LogAccess(error_code());
      stream_body_->Close();
      CloseNow();
      return;
    }
    stream_.async_read_some(net::buffer(drain_buffer_), Bind(&Session::OnStreamPeerRead));
  }

  void PumpStream() {
    if (phase_ != Phase::kStreaming || stream_writing_) return;
    std::string data;
    std::weak_ptr<Session> weak = weak_from_this();
    auto take = stream_body_->TakeOrWait(&data, [weak] {
      if (auto self = weak.lock()) net::post(self->executor(), [self] { self->PumpStream(); });
    });
    if (take == StreamBody::Take::kWait) return;
    if (take == StreamBody::Take::kEnd) {
      stream_ending_ = true;
      stream_out_ = stream_chunked_ ? "0\r\n\r\n" : "";
    } else if (stream_chunked_) {
      stream_out_ = fmt::format("{:x}\r\n", data.size());
      stream_out_ += data;
      stream_out_ += "\r\n";
    } else {
      stream_out_ = std::move(data);
    }
    log_bytes_ += data.size();
    if (stream_out_.empty()) {
      EndStream(error_code());
      return;
    }
    stream_writing_ = true;
    stream_.expires_after(options_.write_timeout);
    net::async_write(stream_, net::buffer(stream_out_), Bind(&Session::OnStreamWrite));
  }

  void OnStreamWrite(error_code ec, size_t) {
    stream_writing_ = false;
    if (ec || stream_ending_) {
      EndStream(ec);
      return;
    }
    stream_.expires_never();
    PumpStream();
  }

  // The body ended (or a write failed): log, release the producer, and close. The peer read
  // still pending ends the lingering close when the client closes its side.
  void EndStream(error_code ec) {
    if (phase_ != Phase::kStreaming) return;
    LogAccess(ec);
    stream_body_->Close();
    if (ec) {
      CloseNow();
      return;
    }
    phase_ = Phase::kClosing;
    error_code ignored;
    stream_.socket().shutdown(tcp::socket::shutdown_send, ignored);
    linger_timer_.expires_after(std::min<std::chrono::milliseconds>(kMaxLinger, options_.read_timeout));
    linger_timer_.async_wait([self = shared_from_this()](error_code) {
      if (self->phase_ != Phase::kClosed) self->CloseNow();
    });
  }

  void CloseNow() {
    phase_ = Phase::kClosed;
    if (stream_body_) stream_body_->Close();
    linger_timer_.cancel();
    stream_.close();  // cancels pending operations; their handlers see an error and end
  }

  void LogAccess(error_code ec) {
    auto us =
        std::chrono::duration_cast<std::chrono::microseconds>(SteadyClock::now() - request_start_)
            .count();
    if (ec) {
      Log(LogLevel::kInfo,
          "http method={} path={} status={} bytes=0 us={} remote={} id={} error=write_failed",
          log_method_, log_path_, log_status_, us, remote_, request_id_);
    } else {
      Log(LogLevel::kInfo, "http method={} path={} status={} bytes={} us={} remote={} id={}",
          log_method_, log_path_, log_status_, log_bytes_, us, remote_, request_id_);
    }
  }

  void LogReadTimeout() {
    Log(LogLevel::kInfo, "http read timeout remote={} id={} buffered={}", remote_, request_id_,
        buffer_.size());
  }

  const std::shared_ptr<Shared> shared_;
  const ServerOptions& options_;
  const uint64_t id_;
  const bool rejected_;
  beast::tcp_stream stream_;
  beast::flat_buffer buffer_;
  std::optional<bhttp::request_parser<bhttp::string_body>> parser_;
  bhttp::response<bhttp::string_body> response_;
  bhttp::response<bhttp::empty_body> continue_;
  std::shared_ptr<StreamBody> stream_body_;
  bhttp::response<bhttp::empty_body> stream_head_;
  std::optional<bhttp::response_serializer<bhttp::empty_body>> stream_serializer_;
  std::string stream_out_;
  bool stream_chunked_ = true;
  bool stream_writing_ = false;
  bool stream_ending_ = false;
  net::steady_timer linger_timer_{stream_.get_executor()};
  std::array<char, 4096> drain_buffer_;
  size_t drained_ = 0;
  std::string remote_;
  Phase phase_ = Phase::kIdle;
  bool first_request_ = true;
  bool stopping_ = false;
  bool close_after_write_ = false;
  unsigned version_ = 11;
  SteadyClock::time_point request_start_;
  SteadyClock::time_point read_deadline_;
  std::string request_id_;
  std::string log_method_ = "-";
  std::string log_path_ = "-";
  int log_status_ = 0;
  size_t log_bytes_ = 0;
};

int ThreadCount(const ServerOptions& o) {
  if (o.threads > 0) return o.threads;
  return std::max(1, static_cast<int>(std::thread::hardware_concurrency()));
}

Response Healthz(const Request&) { return JsonResponse(200, R"({"status":"ok"})"); }

Status ValidateOptions(const ServerOptions& o) {
  if (o.threads < 0) return InvalidArgumentError("threads must be >= 0");
  if (o.max_header_bytes == 0 || o.max_header_bytes > std::numeric_limits<uint32_t>::max()) {
    return InvalidArgumentError("max_header_bytes must be in [1, 2^32)");
  }
  if (o.max_target_bytes == 0) return InvalidArgumentError("max_target_bytes must be > 0");
  if (o.max_connections == 0) return InvalidArgumentError("max_connections must be > 0");
  using std::chrono::milliseconds;
  for (milliseconds t : {o.read_timeout, o.write_timeout, o.idle_timeout, o.shutdown_timeout}) {
    if (t <= milliseconds::zero()) return InvalidArgumentError("timeouts must be positive");
  }
  if (o.clock == nullptr) return InvalidArgumentError("clock must not be null");
  return Status::Ok();
}

}  // namespace

class Server::Impl {
 public:
  Impl(ServerOptions options, Router router)
      : shared_(std::make_shared<Shared>(std::move(options), std::move(router))),
        ioc_(ThreadCount(shared_->options)),
        strand_(net::make_strand(ioc_)),
        acceptor_(strand_),
        signals_(strand_),
        retry_timer_(strand_) {}

  ~Impl() { Stop(); }

  Status Start() {
    std::lock_guard<std::mutex> stop_lock(stop_mu_);
    if (state_ != State::kNew) return FailedPreconditionError("the server was already started");
    state_ = State::kStopped;  // unless everything below succeeds
    const ServerOptions& o = shared_->options;
    KW_RETURN_IF_ERROR(ValidateOptions(o));
    error_code ec;
    net::ip::address address = net::ip::make_address(o.address, ec);
    if (ec) {
      return InvalidArgumentError(
          fmt::format("listen address '{}' is not an IP address", PrintableForMessage(o.address)));
    }
    tcp::endpoint endpoint(address, o.port);
    std::string where = FormatEndpoint(endpoint);
    auto fail = [&](std::string_view what, error_code e) {
      error_code ignored;
      acceptor_.close(ignored);
      std::string msg = fmt::format("cannot {} {}: {}", what, where, e.message());
      if (e == net::error::address_in_use) return UnavailableError(msg);
      if (e == net::error::access_denied) return PermissionDeniedError(msg);
      if (e == boost::system::errc::address_not_available) return InvalidArgumentError(msg);
      return InternalError(msg);
    };
    if (acceptor_.open(endpoint.protocol(), ec); ec) return fail("open a socket for", ec);
    if (acceptor_.set_option(net::socket_base::reuse_address(true), ec); ec) {
      return fail("set SO_REUSEADDR on", ec);
    }
    if (acceptor_.bind(endpoint, ec); ec) return fail("bind", ec);
    if (acceptor_.listen(net::socket_base::max_listen_connections, ec); ec) {
      return fail("listen on", ec);
    }
    tcp::endpoint bound = acceptor_.local_endpoint(ec);
    if (ec) return fail("read the bound port of", ec);
    port_.store(bound.port());

    work_.emplace(ioc_.get_executor());
    int n = ThreadCount(o);
    try {
      for (int i = 0; i < n; ++i) threads_.emplace_back([this] { RunThread(); });
    } catch (const std::system_error& e) {
      work_.reset();
      ioc_.stop();
      for (auto& t : threads_) t.join();
      threads_.clear();
      error_code ignored;
      acceptor_.close(ignored);
      return ResourceExhaustedError(fmt::format("cannot start I/O threads: {}", e.what()));
    }
    net::post(strand_, [this] { Accept(); });
    state_ = State::kRunning;
    {
      std::lock_guard<std::mutex> lock(wait_mu_);
      running_ = true;
    }
    Log(LogLevel::kInfo, "http server listening on {} with {} threads", FormatEndpoint(bound), n);
    return Status::Ok();
  }

  uint16_t port() const { return port_.load(); }

  Status StopOnSignals() {
    std::lock_guard<std::mutex> stop_lock(stop_mu_);
    if (state_ != State::kRunning) return FailedPreconditionError("the server is not running");
    if (signals_installed_) return Status::Ok();
    error_code ec;
    signals_.add(SIGTERM, ec);
    if (!ec) signals_.add(SIGINT, ec);
    if (ec) {
      error_code ignored;
      signals_.clear(ignored);
      return InternalError(fmt::format("cannot install SIGTERM/SIGINT handlers: {}", ec.message()));
    }
    signals_installed_ = true;
    net::post(strand_, [this] {
      signals_.async_wait([this](error_code e, int signal_number) {
        if (e) return;
        Log(LogLevel::kInfo, "http server: signal {} received, stopping", signal_number);
        RequestStop();
      });
    });
    return Status::Ok();
  }

  void RequestStop() {
    std::lock_guard<std::mutex> lock(wait_mu_);
    stop_requested_ = true;
    wait_cv_.notify_all();
  }

  void Wait() {
    std::unique_lock<std::mutex> lock(wait_mu_);
    wait_cv_.wait(lock, [this] { return stop_requested_ || !running_; });
    if (!running_) return;
    lock.unlock();
    Stop();
  }

  void Stop() {
    std::lock_guard<std::mutex> stop_lock(stop_mu_);
    if (state_ != State::kRunning) {
      state_ = State::kStopped;
      return;
    }
    const auto grace = shared_->options.shutdown_timeout;
    std::vector<std::shared_ptr<Session>> sessions;
    {
      std::lock_guard<std::mutex> lock(shared_->mu);
      shared_->stopping.store(true);
    }
    sessions = shared_->Snapshot();
    net::post(strand_, [this] {
      error_code ignored;
      acceptor_.close(ignored);
      signals_.cancel(ignored);
      retry_timer_.cancel();
    });
    for (auto& s : sessions) net::post(s->executor(), [s] { s->Shutdown(); });
    sessions.clear();  // our references would keep the sessions, and `open`, alive

    if (!WaitForDrain(grace)) {
      sessions = shared_->Snapshot();
      Log(LogLevel::kWarning,
          "http server: {} connections still busy after the {} ms shutdown deadline; closing them",
          sessions.size(), grace.count());
      for (auto& s : sessions) net::post(s->executor(), [s] { s->ForceClose(); });
      sessions.clear();
      // A handler still running finishes first (it cannot be interrupted); its write then fails.
      if (!WaitForDrain(grace)) {
        Log(LogLevel::kWarning, "http server: connections still open; abandoning them");
      }
    }
    work_.reset();
    ioc_.stop();
    for (auto& t : threads_) t.join();
    threads_.clear();
    error_code ignored;
    acceptor_.close(ignored);
    signals_.clear(ignored);
    state_ = State::kStopped;
    Log(LogLevel::kInfo, "http server on port {} stopped", port_.load());
    {
      std::lock_guard<std::mutex> lock(wait_mu_);
      running_ = false;
    }
    wait_cv_.notify_all();
  }

  size_t active_connections() const {
    std::lock_guard<std::mutex> lock(shared_->mu);
    return shared_->open;
  }

 private:
  enum class State { kNew, kRunning, kStopped };

  bool WaitForDrain(std::chrono::milliseconds timeout) {
    std::unique_lock<std::mutex> lock(shared_->mu);
    return shared_->drained.wait_for(lock, timeout, [this] { return shared_->open == 0; });
  }

  void RunThread() {
    // Asio lets run() resume after a handler threw; no exception may leave the server.
    while (true) {
      try {
        ioc_.run();
        return;
      } catch (const std::exception& e) {
        Log(LogLevel::kError, "http server: exception escaped an I/O handler: {}", e.what());
      } catch (...) {
        Log(LogLevel::kError, "http server: unknown exception escaped an I/O handler");
      }
    }
  }

  void Accept() {
    acceptor_.async_accept(net::make_strand(ioc_),
                           beast::bind_front_handler(&Impl::OnAccept, this));
  }

  void OnAccept(error_code ec, tcp::socket socket) {
    if (ec) {
      if (ec == net::error::operation_aborted || !acceptor_.is_open()) return;
      // Out of descriptors or memory: back off rather than spin on the same error.
      Log(LogLevel::kWarning, "http server: accept failed: {}", ec.message());
      retry_timer_.expires_after(kAcceptRetryDelay);
      retry_timer_.async_wait([this](error_code e) {
        if (!e && acceptor_.is_open()) Accept();
      });
      return;
    }
    std::shared_ptr<Session> session;  // destroyed after the lock below is released
    {
      std::lock_guard<std::mutex> lock(shared_->mu);
      if (shared_->stopping.load()) return;  // the socket closes as it goes out of scope
      bool reject = shared_->open - shared_->rejecting >= shared_->options.max_connections;
      if (!reject || shared_->rejecting < kMaxRejecting) {
        uint64_t id = shared_->next_session_id++;
        session = std::make_shared<Session>(shared_, std::move(socket), id, reject);
        ++shared_->open;  // from here on, ~Session() undoes these
        if (reject) ++shared_->rejecting;
        shared_->sessions.emplace(id, session);
      }
    }
    if (session) net::dispatch(session->executor(), [session] { session->Start(); });
    Accept();
  }

  std::shared_ptr<Shared> shared_;
  net::io_context ioc_;
  net::strand<net::io_context::executor_type> strand_;  // acceptor_, signals_, retry_timer_
  tcp::acceptor acceptor_;
  net::signal_set signals_;
  net::steady_timer retry_timer_;
  std::optional<net::executor_work_guard<net::io_context::executor_type>> work_;
  std::vector<std::thread> threads_;
  std::atomic<uint16_t> port_{0};

  std::mutex stop_mu_;              // serializes Start, StopOnSignals and Stop
  State state_ = State::kNew;       // guarded by stop_mu_
  bool signals_installed_ = false;  // guarded by stop_mu_

  std::mutex wait_mu_;
  std::condition_variable wait_cv_;
  bool stop_requested_ = false;  // guarded by wait_mu_
  bool running_ = false;         // guarded by wait_mu_
};

Server::Server(ServerOptions options, Router router) {
  // A service may define its own /healthz; AlreadyExists then leaves it in place.
  router.Add("GET", "/healthz", Healthz).IgnoreError();
  impl_ = std::make_unique<Impl>(std::move(options), std::move(router));
}

Server::~Server() = default;

Status Server::Start() { return impl_->Start(); }
uint16_t Server::port() const { return impl_->port(); }
Status Server::StopOnSignals() { return impl_->StopOnSignals(); }
void Server::RequestStop() { impl_->RequestStop(); }
void Server::Wait() { impl_->Wait(); }
void Server::Stop() { impl_->Stop(); }
size_t Server::active_connections() const { return impl_->active_connections(); }

// A port that was free a moment ago on `address` (bound with port 0, then released).
Result<uint16_t> PickFreePort(const std::string& address) {
  const bool v6 = address.find(':') != std::string::npos;
  int fd = ::socket(v6 ? AF_INET6 : AF_INET, SOCK_STREAM, 0);
  if (fd < 0) return UnavailableError("cannot create a socket to pick a port");
  sockaddr_storage ss{};
  socklen_t len = 0;
  if (v6) {
    auto* a = reinterpret_cast<sockaddr_in6*>(&ss);
    a->sin6_family = AF_INET6;
    if (::inet_pton(AF_INET6, address.c_str(), &a->sin6_addr) != 1) {
      ::close(fd);
      return InvalidArgumentError(fmt::format("'{}' is not an IP literal", address));
    }
    len = sizeof(*a);
  } else {
    auto* a = reinterpret_cast<sockaddr_in*>(&ss);
    a->sin_family = AF_INET;
    if (::inet_pton(AF_INET, address.c_str(), &a->sin_addr) != 1) {
      ::close(fd);
      return InvalidArgumentError(fmt::format("'{}' is not an IP literal", address));
    }
    len = sizeof(*a);
  }
  if (::bind(fd, reinterpret_cast<sockaddr*>(&ss), len) != 0 ||
      ::getsockname(fd, reinterpret_cast<sockaddr*>(&ss), &len) != 0) {
    ::close(fd);
    return UnavailableError(fmt::format("cannot bind {}: {}", address, std::strerror(errno)));
  }
  uint16_t port = ntohs(v6 ? reinterpret_cast<sockaddr_in6*>(&ss)->sin6_port
                           : reinterpret_cast<sockaddr_in*>(&ss)->sin_port);
  ::close(fd);
  return port;
}

}  // namespace kw::http
