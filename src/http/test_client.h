// A minimal blocking HTTP/1.1 client for tests that start a real http::Server on port 0
// (header-only; never included by library code).
#pragma once

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstdint>
#include <string>
#include <string_view>

#include <fmt/format.h>

namespace kw::test {

struct HttpResult {
  int status = 0;       // 0: no connection or no parseable answer
  std::string headers;  // the raw header block
  std::string body;
};

// One request to 127.0.0.1:`port` on a fresh connection ("Connection: close"), read to EOF.
// A POST gets a Content-Length; `extra_headers` are whole "Name: value\r\n" lines.
inline HttpResult SendHttp(uint16_t port, std::string_view method, std::string_view target,
                           std::string_view body = {}, std::string_view extra_headers = {}) {
  HttpResult out;
  int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(port);
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) {
    ::close(fd);
    return out;
  }
  std::string req = fmt::format("{} {} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n",
                                method, target);
  if (method == "POST") req += fmt::format("Content-Length: {}\r\n", body.size());
  req += extra_headers;
  req += "\r\n";
  req += body;
  ::send(fd, req.data(), req.size(), MSG_NOSIGNAL);
  std::string raw;
  char buf[8192];
  ssize_t n;
  while ((n = ::recv(fd, buf, sizeof(buf), 0)) > 0) raw.append(buf, static_cast<size_t>(n));
  ::close(fd);
  size_t split = raw.find("\r\n\r\n");
  if (raw.size() < 12 || split == std::string::npos) return out;
  out.status = std::stoi(raw.substr(9, 3));
  out.headers = raw.substr(0, split);
  out.body = raw.substr(split + 4);
  return out;
}

}  // namespace kw::test
