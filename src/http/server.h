// Server: the HTTP/1.1 server every Keyward service runs behind (Boost.Beast over Asio).
//
// Start here. A service builds a Router (router.h), passes it with ServerOptions to a Server,
// calls Start(), and later Stop() — or, in a program, StopOnSignals() and Wait():
//
//   kw::http::Router router;
//   KW_RETURN_IF_ERROR(router.Add("POST", "/{tenant}/v2.0/token", TokenHandler));
//   kw::http::Server server(options, std::move(router));
//   KW_RETURN_IF_ERROR(server.Start());
//   KW_RETURN_IF_ERROR(server.StopOnSignals());
//   server.Wait();  // returns once SIGTERM/SIGINT arrived and the graceful stop completed
//
// What the server guarantees:
//   * Threads: one io_context run by `threads` threads; each connection is served on its own
//     strand, so one connection's requests are handled one at a time, in order. Handlers run on
//     the I/O threads: a handler that blocks holds a thread (keep them short; long work belongs
//     on a pool of its own).
//   * Limits, answered with ErrorResponse JSON bodies and the connection closed:
//       header (request line + fields) over max_header_bytes  -> 431 request_header_too_large
//       request-target over max_target_bytes                   -> 414 uri_too_long
//       body over max_body_bytes (Content-Length or chunked)   -> 413 request_too_large
//       more than max_connections connections open            -> 503 temporarily_unavailable
//       malformed HTTP (garbage, a version other than HTTP/1.0 and HTTP/1.1, bad chunk encoding,
//       Content-Length together with Transfer-Encoding, a Transfer-Encoding other than
//       "chunked", no or several Host fields in HTTP/1.1, a target not in origin form "/...", a
//       malformed query string)                                -> 400 invalid_request
//       an Expect other than 100-continue                      -> 417 expectation_failed
//     A bad request never affects other connections.
//   * Timeouts: a client has read_timeout from its first byte (from connecting, for the first
//     request) to deliver a whole request, headers and body; a slow client (slowloris) is
//     disconnected without a response. Writing a response may take write_timeout. A keep-alive
//     connection may sit idle between requests for idle_timeout.
//   * Keep-alive as HTTP/1.1 defines it (HTTP/1.0 with "Connection: keep-alive"); pipelined
//     requests are answered in order. "Expect: 100-continue" is honoured.
//   * Streamed bodies (Response::stream, stream.h; Server-Sent Events): the head goes out at once
//     (chunked in HTTP/1.1), then what the producer writes, as it writes it; the connection
//     closes when the stream ends. While streaming there is no read or idle deadline (each write
//     still has write_timeout); the client leaving, a failed write, a slow consumer over the
//     stream's buffer or Stop() closes the stream and tells the producer (StreamBody::OnClose).
//     The access line is written when the stream ends, with the bytes streamed.
//   * Built-in GET /healthz -> 200 {"status":"ok"}, unless the router already has one.
//   * Every response carries X-Request-Id (a fresh id per request, 16 hex digits, also in the
//     request's request_id) and X-Content-Type-Options: nosniff; 4xx/5xx carry Cache-Control:
//     no-store. Handlers' exceptions become 500s (router.h); no exception leaves the server.
//   * Access log: one kw::Log Info line per response:
//       http method=GET path=/healthz status=200 bytes=15 us=84 remote=127.0.0.1:40522 id=...
//     `path` without the query string (it may carry codes and tokens), `bytes` the body bytes
//     sent, `us` from the request's first byte to the response's last. Bodies and header values
//     (Authorization, cookies) are never logged. A connection dropped for a read timeout logs
//     "http read timeout ...".
//
// Thread safety: port(), RequestStop() and active_connections() may be called from any thread,
// handlers included. Start(), StopOnSignals(), Wait() and Stop() must not be called from a handler
// (Stop() and Wait() join the I/O threads); Stop() and Wait() may race with each other safely.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "core/clock.h"
#include "core/status.h"
#include "http/router.h"

namespace kw::http {

struct ServerOptions {
  std::string address = "127.0.0.1";  // an IPv4 or IPv6 literal; "0.0.0.0" or "::" for all
  uint16_t port = 0;                  // 0: an ephemeral port, see Server::port()
  int threads = 0;                    // I/O threads; 0: one per core

  size_t max_header_bytes = 16 * 1024;
  size_t max_body_bytes = 1024 * 1024;
  size_t max_target_bytes = 8 * 1024;
  size_t max_connections = 1024;

  std::chrono::milliseconds read_timeout{10'000};
  std::chrono::milliseconds write_timeout{10'000};
  std::chrono::milliseconds idle_timeout{60'000};
  // How long Stop() lets in-flight requests finish before closing their connections.
  std::chrono::milliseconds shutdown_timeout{10'000};

  // Peers (IP literals, e.g. a reverse proxy on loopback) whose X-Forwarded-For is believed: for
  // a request from one of them, Request::remote_address becomes "<last X-Forwarded-For
  // address>:0" (the address the proxy saw), so ClientIp() and audit records name the real
  // client. From any other peer the header is ignored. Empty (default): never believed.
  std::vector<std::string> trusted_proxies;

  // For the Date header. Must outlive the server.
  const Clock* clock = Clock::System();
};

class Server {
 public:
  // The router is copied in; GET /healthz is added to the copy unless it has that route.
  Server(ServerOptions options, Router router);
  // Stops the server (Stop()) if it is running.
  ~Server();
  Server(const Server&) = delete;
  Server& operator=(const Server&) = delete;

  // Binds, listens and starts the I/O threads. Errors: InvalidArgument for bad options or an
  // address that is not an IP literal or not local; Unavailable if the address is in use;
  // PermissionDenied for a privileged port; FailedPrecondition if called twice. On error nothing
  // is left running and the server cannot be started again.
  Status Start();

  // The bound port (the ephemeral one when options.port was 0). REQUIRES: Start() succeeded.
  uint16_t port() const;

  // Makes SIGTERM and SIGINT request a graceful stop (RequestStop()) through Asio's signal_set,
  // until Stop(). The program must call Wait() for the stop to happen. FailedPrecondition unless
  // running; Internal if the handlers cannot be installed.
  Status StopOnSignals();

  // Asks for a graceful stop without blocking; Wait() performs it. Safe from handlers.
  void RequestStop();

  // Blocks until RequestStop() (or a signal, see StopOnSignals()) and then stops the server as
  // Stop() does; or until another thread's Stop() has completed. Returns at once if the server is
  // not running.
  void Wait();

  // Graceful stop, blocking: stops accepting, closes idle keep-alive connections, lets requests
  // in flight (being read, handled or written) finish and answers them with "Connection: close",
  // then after shutdown_timeout closes whatever is left and joins the I/O threads. A handler
  // still running at that point is waited for: it cannot be interrupted. Idempotent.
  void Stop();

  // Connections currently open (including those being refused with 503).
  size_t active_connections() const;

 private:
  class Impl;
  std::unique_ptr<Impl> impl_;
};

// A port that was free a moment ago on `address` (an IP literal): bound with port 0, then
// released. For programs that must know their URL before the server starts (issuers are fixed
// at start); another process may take it in between, which Start() then reports.
Result<uint16_t> PickFreePort(const std::string& address);

}  // namespace kw::http
