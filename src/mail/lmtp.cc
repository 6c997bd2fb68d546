#include "mail/lmtp.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <fmt/format.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <optional>
#include <utility>
#include <vector>

#include "core/ascii.h"
#include "core/log.h"

namespace kw::mail {
namespace {

constexpr size_t kMaxCommandLine = 512;   // RFC 5321 §4.5.3.1.4, CRLF included
constexpr size_t kMaxTextLine = 1000;     // §4.5.3.1.6
constexpr size_t kMaxPath = 256;          // §4.5.3.1.3


bool StartsWithNoCase(std::string_view s, std::string_view prefix) {
  return s.size() >= prefix.size() && AsciiUpperCopy(s.substr(0, prefix.size())) == prefix;
}


// Parses "FROM:<path> params" / "TO:<path> params" after the verb; nullopt on bad syntax.
// `params` receives the rest (ESMTP parameters).
std::optional<std::string> ParsePath(std::string_view arg, std::string_view keyword,
                                     std::string* params) {
  if (!StartsWithNoCase(arg, keyword)) return std::nullopt;
  arg.remove_prefix(keyword.size());
  while (!arg.empty() && arg.front() == ' ') arg.remove_prefix(1);  // lenient: "FROM: <a>"
  if (arg.empty() || arg.front() != '<') return std::nullopt;
  size_t close = arg.find('>');
  if (close == std::string_view::npos || close - 1 > kMaxPath) return std::nullopt;
  std::string_view path = arg.substr(1, close - 1);
  if (path.find_first_of(" <\t") != std::string_view::npos) return std::nullopt;
  std::string_view rest = arg.substr(close + 1);
  while (!rest.empty() && rest.front() == ' ') rest.remove_prefix(1);
  *params = std::string(rest);
  // A source route ("@a,@b:user@host") is accepted and ignored (RFC 5321 §4.1.2).
  if (size_t colon = path.find(':'); !path.empty() && path.front() == '@' && colon != std::string_view::npos) {
    path.remove_prefix(colon + 1);
  }
  return std::string(path);
}

// Reads CRLF- (or LF-) terminated lines from a socket, waking for the stop pipe and deadlines.
class LineReader {
 public:
  enum class Got { kLine, kTooLong, kClosed, kTimeout, kStop };

  LineReader(int fd, int stop_fd, std::chrono::milliseconds timeout)
      : fd_(fd), stop_fd_(stop_fd), timeout_(timeout) {}

  // `max` counts the line with its CRLF. A longer line is consumed whole and reported kTooLong.
  // kStop also interrupts a line or a message in progress: what was not acknowledged is the
  // client's to retry.
  Got ReadLine(std::string* line, size_t max) {
    bool too_long = false;
    line->clear();
    while (true) {
      size_t nl = buf_.find('\n', scan_);
      if (nl != std::string::npos) {
        size_t len = nl + 1;
        if (!too_long && len <= max) {
          line->assign(buf_, 0, nl);
          if (!line->empty() && line->back() == '\r') line->pop_back();
        } else {
          too_long = true;
        }
        buf_.erase(0, len);
        scan_ = 0;
        return too_long ? Got::kTooLong : Got::kLine;
      }
      if (buf_.size() > max) {  // drop what is over, remember the line is too long
        too_long = true;
        buf_.clear();
      }
      scan_ = buf_.size();
      Got g = Fill();
      if (g != Got::kLine) return g;
    }
  }

 private:
  Got Fill() {
    pollfd p[2] = {{fd_, POLLIN, 0}, {stop_fd_, POLLIN, 0}};
    int r = ::poll(p, 2, static_cast<int>(timeout_.count()));
    if (r == 0) return Got::kTimeout;
    if (r < 0) return errno == EINTR ? Got::kLine : Got::kClosed;
    if (p[1].revents & POLLIN) return Got::kStop;
    char tmp[16384];
    ssize_t n = ::recv(fd_, tmp, sizeof(tmp), 0);
    if (n <= 0) return Got::kClosed;
    buf_.append(tmp, static_cast<size_t>(n));
    return Got::kLine;
  }

  int fd_;
  int stop_fd_;
  std::chrono::milliseconds timeout_;
  std::string buf_;
  size_t scan_ = 0;  // buf_ before this offset has no '\n'
};

bool SendAll(int fd, std::string_view data) {
  while (!data.empty()) {
    ssize_t n = ::send(fd, data.data(), data.size(), MSG_NOSIGNAL);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return false;
    data.remove_prefix(static_cast<size_t>(n));
  }
  return true;
}

std::string PeerAddress(int fd) {
  sockaddr_storage ss{};
  socklen_t len = sizeof(ss);
  if (::getpeername(fd, reinterpret_cast<sockaddr*>(&ss), &len) != 0) return "unknown";
  char host[INET6_ADDRSTRLEN] = {0};
  if (ss.ss_family == AF_INET6) {
    ::inet_ntop(AF_INET6, &reinterpret_cast<sockaddr_in6*>(&ss)->sin6_addr, host, sizeof(host));
  } else {
    ::inet_ntop(AF_INET, &reinterpret_cast<sockaddr_in*>(&ss)->sin_addr, host, sizeof(host));
  }
  return host;
}

}  // namespace

LmtpServer::LmtpServer(LmtpOptions options, Store* store)
    : options_(std::move(options)), store_(store) {}

Result<std::unique_ptr<LmtpServer>> LmtpServer::Start(LmtpOptions options, Store* store) {
  if (store == nullptr) return InvalidArgumentError("lmtp: a store is required");
  if (options.max_message_bytes == 0 || options.max_recipients == 0 || options.max_sessions == 0 ||
      options.idle_timeout.count() <= 0 || options.clock == nullptr) {
    return InvalidArgumentError("lmtp: limits and timeouts must be positive");
  }
  if (options.hostname.empty() || options.hostname.find_first_of(" \r\n") != std::string::npos) {
    return InvalidArgumentError("lmtp: hostname must be one word");
  }
  std::unique_ptr<LmtpServer> s(new LmtpServer(std::move(options), store));
  sockaddr_storage ss{};
  socklen_t len = 0;
  in6_addr a6{};
  in_addr a4{};
  int family;
  if (::inet_pton(AF_INET, s->options_.address.c_str(), &a4) == 1) {
    auto* sin = reinterpret_cast<sockaddr_in*>(&ss);
    sin->sin_family = AF_INET;
    sin->sin_port = htons(s->options_.port);
    sin->sin_addr = a4;
    len = sizeof(sockaddr_in);
    family = AF_INET;
  } else if (::inet_pton(AF_INET6, s->options_.address.c_str(), &a6) == 1) {
    auto* sin6 = reinterpret_cast<sockaddr_in6*>(&ss);
    sin6->sin6_family = AF_INET6;
    sin6->sin6_port = htons(s->options_.port);
    sin6->sin6_addr = a6;
    len = sizeof(sockaddr_in6);
    family = AF_INET6;
  } else {
    return InvalidArgumentError(fmt::format("lmtp: '{}' is not an IP address", s->options_.address));
  }
  s->listen_fd_ = ::socket(family, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (s->listen_fd_ < 0) return UnavailableError(fmt::format("lmtp: socket: {}", std::strerror(errno)));
  int one = 1;
  ::setsockopt(s->listen_fd_, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
  if (::bind(s->listen_fd_, reinterpret_cast<sockaddr*>(&ss), len) != 0) {
    int e = errno;
    if (e == EACCES) return PermissionDeniedError(fmt::format("lmtp: port {} needs privileges", s->options_.port));
    return UnavailableError(fmt::format("lmtp: cannot bind {}:{}: {}", s->options_.address,
                                        s->options_.port, std::strerror(e)));
  }
  if (::listen(s->listen_fd_, 64) != 0) {
    return UnavailableError(fmt::format("lmtp: listen: {}", std::strerror(errno)));
  }
  sockaddr_storage bound{};
  socklen_t blen = sizeof(bound);
  ::getsockname(s->listen_fd_, reinterpret_cast<sockaddr*>(&bound), &blen);
  s->port_ = ntohs(family == AF_INET ? reinterpret_cast<sockaddr_in*>(&bound)->sin_port
                                     : reinterpret_cast<sockaddr_in6*>(&bound)->sin6_port);
  if (::pipe2(s->stop_pipe_, O_CLOEXEC) != 0) {
    return UnavailableError(fmt::format("lmtp: pipe: {}", std::strerror(errno)));
  }
  s->acceptor_ = std::thread([p = s.get()] { p->AcceptLoop(); });
  Log(LogLevel::kInfo, "lmtp listening on {}:{}", s->options_.address, s->port_);
  return s;
}

LmtpServer::~LmtpServer() {
  Stop();
  if (listen_fd_ >= 0) ::close(listen_fd_);
  for (int fd : stop_pipe_) {
    if (fd >= 0) ::close(fd);
  }
}

void LmtpServer::Stop() {
  if (stopping_.exchange(true)) {
    if (acceptor_.joinable()) acceptor_.join();
    return;
  }
  if (stop_pipe_[1] >= 0) {
    char c = 1;
    [[maybe_unused]] ssize_t n = ::write(stop_pipe_[1], &c, 1);
  }
  if (acceptor_.joinable()) acceptor_.join();
  std::list<std::unique_ptr<Session>> sessions;
  {
    std::lock_guard lock(mu_);
    sessions.swap(sessions_);
  }
  for (auto& s : sessions) {
    if (s->thread.joinable()) s->thread.join();
  }
}

void LmtpServer::AcceptLoop() {
  while (!stopping_.load()) {
    pollfd p[2] = {{listen_fd_, POLLIN, 0}, {stop_pipe_[0], POLLIN, 0}};
    int r = ::poll(p, 2, 1000);
    {
      std::lock_guard lock(mu_);  // reap finished sessions
      for (auto it = sessions_.begin(); it != sessions_.end();) {
        if ((*it)->done.load()) {
          (*it)->thread.join();
          it = sessions_.erase(it);
        } else {
          ++it;
        }
      }
    }
    if (r <= 0 || (p[1].revents & POLLIN)) continue;
    int fd = ::accept4(listen_fd_, nullptr, nullptr, SOCK_CLOEXEC);
    if (fd < 0) continue;
    int one = 1;
    ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    std::lock_guard lock(mu_);
    if (sessions_.size() >= options_.max_sessions) {
      SendAll(fd, "421 4.3.2 too many connections, try again later\r\n");
      ::close(fd);
      continue;
    }
    auto session = std::make_unique<Session>();
    Session* raw = session.get();
    raw->fd = fd;
    std::string peer = PeerAddress(fd);
    sessions_.push_back(std::move(session));
    raw->thread = std::thread([this, raw, peer] {
      Serve(raw->fd, peer);
      ::close(raw->fd);
      raw->done.store(true);
    });
  }
}

void LmtpServer::Serve(int fd, std::string peer) {
  const std::string& host = options_.hostname;
  LineReader reader(fd, stop_pipe_[0], options_.idle_timeout);
  auto reply = [fd](std::string_view text) { return SendAll(fd, text); };
  if (!reply(fmt::format("220 {} LMTP Keyward ready\r\n", host))) return;

  struct Recipient {
    std::string address;
    std::string account_id;
  };
  std::string lhlo_domain;
  std::optional<std::string> from;
  std::vector<Recipient> rcpts;
  auto reset = [&] {
    from.reset();
    rcpts.clear();
  };

  std::string line;
  while (true) {
    LineReader::Got got = reader.ReadLine(&line, kMaxCommandLine);
    if (got == LineReader::Got::kStop) {
      reply("421 4.3.2 shutting down\r\n");
      return;
    }
    if (got == LineReader::Got::kTimeout) {
      reply("421 4.4.2 idle timeout\r\n");
      return;
    }
    if (got == LineReader::Got::kClosed) return;
    if (got == LineReader::Got::kTooLong) {
      if (!reply("500 5.5.2 line too long\r\n")) return;
      continue;
    }
    std::string_view cmd(line);
    size_t sp = cmd.find(' ');
    std::string verb = AsciiUpperCopy(cmd.substr(0, sp));
    std::string_view arg = sp == std::string_view::npos ? std::string_view() : cmd.substr(sp + 1);

    if (verb == "LHLO") {
      if (arg.empty()) {
        if (!reply("501 5.5.4 LHLO needs a domain\r\n")) return;
        continue;
      }
      lhlo_domain = std::string(arg.substr(0, std::min<size_t>(arg.size(), 255)));
      reset();
      if (!reply(fmt::format("250-{}\r\n250-PIPELINING\r\n250-ENHANCEDSTATUSCODES\r\n250-8BITMIME\r\n"
                             "250 SIZE {}\r\n",
                             host, options_.max_message_bytes))) {
        return;
      }
    } else if (verb == "HELO" || verb == "EHLO") {
      if (!reply("500 5.5.1 this is LMTP: use LHLO\r\n")) return;
    } else if (verb == "MAIL") {
      std::string params;
      std::optional<std::string> path;
      if (lhlo_domain.empty()) {
        if (!reply("503 5.5.1 send LHLO first\r\n")) return;
        continue;
      }
      if (from) {
        if (!reply("503 5.5.1 MAIL already given\r\n")) return;
        continue;
      }
      path = ParsePath(arg, "FROM:", &params);
      if (!path) {
        if (!reply("501 5.5.4 syntax: MAIL FROM:<address>\r\n")) return;
        continue;
      }
      bool too_big = false;
      bool bad_param = false;
      std::string_view ps(params);
      while (!ps.empty()) {
        size_t end = ps.find(' ');
        std::string p = AsciiUpperCopy(ps.substr(0, end));
        if (p.rfind("SIZE=", 0) == 0) {
          const char* digits = p.c_str() + 5;
          char* stop = nullptr;
          errno = 0;
          unsigned long long v = std::strtoull(digits, &stop, 10);
          if (*digits == '\0' || *stop != '\0' || errno != 0) bad_param = true;
          else if (v > options_.max_message_bytes) too_big = true;
        } else if (p != "BODY=7BIT" && p != "BODY=8BITMIME") {
          bad_param = true;
        }
        if (end == std::string_view::npos) break;
        ps.remove_prefix(end + 1);
        while (!ps.empty() && ps.front() == ' ') ps.remove_prefix(1);
      }
      if (bad_param) {
        if (!reply("555 5.5.4 unsupported MAIL parameter\r\n")) return;
      } else if (too_big) {
        if (!reply(fmt::format("552 5.3.4 messages are limited to {} bytes\r\n", options_.max_message_bytes))) return;
      } else {
        from = std::move(*path);
        if (!reply("250 2.1.0 OK\r\n")) return;
      }
    } else if (verb == "RCPT") {
      std::string params;
      if (!from) {
        if (!reply("503 5.5.1 send MAIL first\r\n")) return;
        continue;
      }
      auto path = ParsePath(arg, "TO:", &params);
      if (!path || path->empty() || !params.empty()) {
        if (!reply("501 5.5.4 syntax: RCPT TO:<address>\r\n")) return;
        continue;
      }
      if (rcpts.size() >= options_.max_recipients) {
        if (!reply("452 4.5.3 too many recipients\r\n")) return;
        continue;
      }
      std::string account_id;
      Status s = store_->Read([&](Txn& t) -> Status {
        KW_ASSIGN_OR_RETURN(Account a, t.FindAccountByEmail(AsciiLowerCopy(*path)));
        account_id = a.id;
        return Status::Ok();
      });
      if (s.code() == StatusCode::kNotFound) {
        if (!reply(fmt::format("550 5.1.1 <{}>: no such mailbox\r\n", *path))) return;
      } else if (!s.ok()) {
        Log(LogLevel::kWarning, "lmtp: recipient lookup failed: {}", s.ToString());
        if (!reply("451 4.3.0 temporary failure, try again later\r\n")) return;
      } else {
        rcpts.push_back({*path, account_id});
        if (!reply("250 2.1.5 OK\r\n")) return;
      }
    } else if (verb == "DATA") {
      if (!arg.empty()) {
        if (!reply("501 5.5.4 DATA takes no argument\r\n")) return;
        continue;
      }
      if (!from) {
        if (!reply("503 5.5.1 send MAIL first\r\n")) return;
        continue;
      }
      if (rcpts.empty()) {
        if (!reply("503 5.5.1 no valid recipients\r\n")) return;
        continue;
      }
      if (!reply("354 2.0.0 send the message, end with <CRLF>.<CRLF>\r\n")) return;
      std::string message = fmt::format(
          "Return-Path: <{}>\r\nReceived: from {} ([{}])\r\n\tby {} with LMTP; {}\r\n", *from,
          lhlo_domain, peer, host, FormatDateRfc5322(options_.clock->NowSeconds(), "+0000"));
      bool oversize = false;
      bool long_line = false;
      while (true) {
        got = reader.ReadLine(&line, kMaxTextLine);
        if (got == LineReader::Got::kTooLong) {
          long_line = true;
          continue;
        }
        if (got != LineReader::Got::kLine) {
          // The client left or stalled mid-message, or the server is stopping: nothing is
          // delivered and nothing acknowledged, so the MTA retries.
          if (got == LineReader::Got::kTimeout) reply("421 4.4.2 timeout during DATA\r\n");
          if (got == LineReader::Got::kStop) reply("421 4.3.2 shutting down\r\n");
          return;
        }
        if (line == ".") break;
        std::string_view text(line);
        if (!text.empty() && text.front() == '.') text.remove_prefix(1);  // dot-stuffing
        if (oversize || message.size() + text.size() + 2 > options_.max_message_bytes) {
          oversize = true;
          continue;
        }
        message.append(text);
        message.append("\r\n");
      }
      std::string replies;
      if (oversize || long_line) {
        for (const auto& r : rcpts) {
          replies += oversize ? fmt::format("552 5.3.4 <{}>: the message exceeds {} bytes\r\n", r.address,
                                            options_.max_message_bytes)
                              : fmt::format("554 5.6.0 <{}>: a line exceeds {} bytes\r\n", r.address, kMaxTextLine);
        }
      } else {
        std::vector<Store::Delivery> batch;
        batch.reserve(rcpts.size());
        for (const auto& r : rcpts) batch.push_back({r.account_id, message});
        auto results = store_->DeliverBatch(batch);
        for (size_t i = 0; i < rcpts.size(); ++i) {
          const std::string& addr = rcpts[i].address;
          if (!results.ok()) {
            replies += fmt::format("451 4.3.0 <{}>: temporary failure, try again later\r\n", addr);
            continue;
          }
          const Result<ImportResult>& one = (*results)[i];
          if (one.ok()) {
            replies += fmt::format("250 2.0.0 <{}> delivered as {}\r\n", addr, one->id);
            delivered_.fetch_add(1);
          } else if (one.status().code() == StatusCode::kInvalidArgument) {
            replies += fmt::format("554 5.6.0 <{}>: the message cannot be parsed\r\n", addr);
          } else {
            replies += fmt::format("451 4.3.0 <{}>: temporary failure, try again later\r\n", addr);
          }
        }
        if (!results.ok()) {
          Log(LogLevel::kWarning, "lmtp: delivery failed: {}", results.status().ToString());
        }
      }
      Log(LogLevel::kInfo, "lmtp: message from {} for {} recipient(s), {} bytes, peer {}",
          from->empty() ? "<>" : "<sender>", rcpts.size(), message.size(), peer);
      reset();
      if (!reply(replies)) return;
    } else if (verb == "RSET") {
      reset();
      if (!reply("250 2.0.0 OK\r\n")) return;
    } else if (verb == "NOOP") {
      if (!reply("250 2.0.0 OK\r\n")) return;
    } else if (verb == "VRFY") {
      if (!reply("252 2.5.0 cannot verify, send the message\r\n")) return;
    } else if (verb == "QUIT") {
      reply(fmt::format("221 2.0.0 {} closing\r\n", host));
      return;
    } else {
      if (!reply("500 5.5.2 unrecognized command\r\n")) return;
    }
  }
}

}  // namespace kw::mail
