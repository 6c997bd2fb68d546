// A blocking HTTP/1.1 client with one keep-alive connection, for the simulator's traffic (one
// per worker thread). Reconnects once when the server closed the connection.
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "core/status.h"

namespace kw::sim {

struct HttpReply {
  int status = 0;
  std::string body;
  std::string location;      // the Location header, if any
  std::string content_type;
};

using HeaderList = std::vector<std::pair<std::string, std::string>>;

class HttpClient {
 public:
  explicit HttpClient(uint16_t port);
  ~HttpClient();
  HttpClient(const HttpClient&) = delete;
  HttpClient& operator=(const HttpClient&) = delete;

  // Unavailable when the server cannot be reached (twice).
  Result<HttpReply> Send(std::string_view method, std::string_view target, std::string_view body,
                         const HeaderList& headers);

  uint64_t requests() const { return requests_.load(std::memory_order_relaxed); }

 private:
  struct Conn;
  Result<HttpReply> Once(std::string_view method, std::string_view target, std::string_view body,
                         const HeaderList& headers);
  uint16_t port_;
  std::unique_ptr<Conn> conn_;
  std::atomic<uint64_t> requests_{0};
};

// application/x-www-form-urlencoded encoding of one value.
std::string FormEncode(std::string_view s);

}  // namespace kw::sim
