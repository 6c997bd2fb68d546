#include "sim/http_client.h"

// GCC 12 warns, wrongly, about a boost::optional inside Beast's parser (see server_test.cc).
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"

#include <boost/asio/connect.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>

namespace kw::sim {

namespace net = boost::asio;
namespace beast = boost::beast;
namespace bhttp = boost::beast::http;

struct HttpClient::Conn {
  net::io_context ioc;
  net::ip::tcp::socket socket{ioc};
  beast::flat_buffer buffer;
};

HttpClient::HttpClient(uint16_t port) : port_(port) {}
HttpClient::~HttpClient() = default;

Result<HttpReply> HttpClient::Send(std::string_view method, std::string_view target,
                                   std::string_view body, const HeaderList& headers) {
  ++requests_;
  auto r = Once(method, target, body, headers);
  if (r.ok()) return r;
  conn_.reset();  // the server closed a kept-alive connection: one fresh attempt
  return Once(method, target, body, headers);
}

Result<HttpReply> HttpClient::Once(std::string_view method, std::string_view target,
                                   std::string_view body, const HeaderList& headers) {
  boost::system::error_code ec;
  if (!conn_) {
    auto c = std::make_unique<Conn>();
    c->socket.connect({net::ip::make_address("127.0.0.1"), port_}, ec);
    if (ec) return UnavailableError("connect: " + ec.message());
    c->socket.set_option(net::ip::tcp::no_delay(true), ec);
    conn_ = std::move(c);
  }
  bhttp::request<bhttp::string_body> req;
  req.method_string(beast::string_view(method.data(), method.size()));
  req.target(beast::string_view(target.data(), target.size()));
  req.version(11);
  req.set(bhttp::field::host, "127.0.0.1");
  for (const auto& [k, v] : headers) req.set(k, v);
  if (!body.empty() || method == "POST") {
    req.body() = std::string(body);
    req.prepare_payload();
  }
  bhttp::write(conn_->socket, req, ec);
  if (ec) return UnavailableError("write: " + ec.message());
  bhttp::response_parser<bhttp::string_body> parser;
  parser.body_limit(64u << 20);
  bhttp::read(conn_->socket, conn_->buffer, parser, ec);
  if (ec) return UnavailableError("read: " + ec.message());
  auto& res = parser.get();
  HttpReply out;
  out.status = static_cast<int>(res.result_int());
  out.body = std::move(res.body());
  if (auto it = res.find(bhttp::field::location); it != res.end()) out.location = std::string(it->value());
  if (auto it = res.find(bhttp::field::content_type); it != res.end()) out.content_type = std::string(it->value());
  if (!res.keep_alive()) conn_.reset();
  return out;
}

std::string FormEncode(std::string_view s) {
  static constexpr char kHex[] = "0123456789ABCDEF";
  std::string out;
  for (unsigned char c : s) {
    if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' ||
        c == '.' || c == '_' || c == '~') {
      out += static_cast<char>(c);
    } else if (c == ' ') {
      out += '+';
    } else {
      out += '%';
      out += kHex[c >> 4];
      out += kHex[c & 15];
    }
  }
  return out;
}

}  // namespace kw::sim
