// LmtpServer: delivery from a mail transfer agent (RFC 2033 LMTP) into the mail store.
//
// A real MTA (Postfix `lmtp:inet:127.0.0.1:2424`, Exim's lmtp transport, or any LMTP client)
// hands each message over once, with its recipients; the server answers DATA with one reply
// per accepted recipient, so a message can be delivered to some mailboxes and deferred or
// refused for others.
//
//   kw::mail::LmtpOptions o;
//   o.port = 2424;
//   KW_ASSIGN_OR_RETURN(auto lmtp, kw::mail::LmtpServer::Start(o, &mail->store()));
//   ... lmtp->Stop();   // or let it go out of scope
//
// Protocol (RFC 2033, with RFC 5321 syntax): LHLO (HELO and EHLO are refused: LMTP is not
// SMTP), MAIL FROM:<addr> [SIZE=n] [BODY=7BIT|8BITMIME], RCPT TO:<addr> (a mailbox's delivery
// address, case-insensitive; an unknown one is 550 5.1.1), DATA (dot-stuffed, ended by
// "<CRLF>.<CRLF>"), RSET, NOOP, VRFY (252), QUIT. Extensions: PIPELINING,
// ENHANCEDSTATUSCODES, 8BITMIME, SIZE. After DATA, for each accepted recipient in order:
//   250 2.0.0 <addr> delivered as <email id>
//   552 5.3.4 the message exceeds SIZE          (message over max_message_bytes)
//   554 5.6.0 the message cannot be parsed      (Store::Deliver refused it)
//   451 4.3.0 temporary failure                 (the store failed: the MTA retries later)
// The message is stored with "Return-Path:" and "Received:" trace fields prepended. All
// recipients of one message are delivered in one transaction (Store::DeliverBatch).
//
// Limits: command lines over 512 bytes and text lines over 1000 bytes (RFC 5321 §4.5.3.1) are
// answered 500 5.5.2 (a text line: the message is refused with 552 after its end); at most
// max_recipients per message (452 4.5.3 beyond); at most max_sessions connections (421 beyond);
// an idle client is dropped after idle_timeout with 421 4.4.2.
//
// Security: LMTP has no authentication. Listen on loopback (the default) or a socket only the
// MTA can reach; anything that connects can deliver mail to any mailbox.
//
// Thread safety: one thread per connection plus one accepting; Stop() may be called from any
// thread but a session's.
#pragma once

#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <list>
#include <memory>
#include <mutex>
#include <string>
#include <thread>

#include "core/clock.h"
#include "core/status.h"
#include "mail/store.h"

namespace kw::mail {

struct LmtpOptions {
  std::string address = "127.0.0.1";  // an IPv4 or IPv6 literal
  uint16_t port = 0;                  // 0: ephemeral, see port()
  std::string hostname = "keyward";   // in the greeting, LHLO reply and Received field
  size_t max_message_bytes = 50 << 20;
  size_t max_recipients = 100;
  size_t max_sessions = 64;
  std::chrono::milliseconds idle_timeout{300'000};
  const Clock* clock = Clock::System();  // for Received; must outlive the server
};

class LmtpServer {
 public:
  // Binds, listens and starts accepting. InvalidArgument for a bad address or options,
  // Unavailable if the port is taken.
  static Result<std::unique_ptr<LmtpServer>> Start(LmtpOptions options, Store* store);
  ~LmtpServer();
  LmtpServer(const LmtpServer&) = delete;
  LmtpServer& operator=(const LmtpServer&) = delete;

  uint16_t port() const { return port_; }
  // Stops accepting, tells open sessions "421 4.3.2 shutting down" (a message still being
  // received is dropped unacknowledged, for the MTA to retry; one being stored is finished
  // first) and joins every thread. Idempotent.
  void Stop();

  // Messages delivered (one per recipient) since Start.
  uint64_t delivered() const { return delivered_.load(); }

 private:
  LmtpServer(LmtpOptions options, Store* store);
  void AcceptLoop();
  void Serve(int fd, std::string peer);

  struct Session {
    int fd = -1;
    std::thread thread;
    std::atomic<bool> done{false};
  };

  const LmtpOptions options_;
  Store* const store_;
  int listen_fd_ = -1;
  int stop_pipe_[2] = {-1, -1};  // readable once Stop() began: wakes every poll
  uint16_t port_ = 0;
  std::atomic<bool> stopping_{false};
  std::atomic<uint64_t> delivered_{0};
  std::thread acceptor_;
  std::mutex mu_;
  std::list<std::unique_ptr<Session>> sessions_;  // guarded by mu_
};

}  // namespace kw::mail
