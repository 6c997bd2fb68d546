// The alert webhook client: one HTTP/1.1 POST per alert over Boost.Beast. The operations are
// asynchronous on a private io_context run to completion by the caller, because Beast's
// tcp_stream deadlines (expires_after) only bound asynchronous operations: the caller sees a
// synchronous call that never takes longer than timeout_ms.
#include <boost/asio/connect.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>

#include <fmt/format.h>

#include "detect/analytics/live.h"

namespace kw::detect::analytics {

namespace beast = boost::beast;
namespace http = beast::http;
namespace asio = boost::asio;

Result<WebhookUrl> ParseWebhookUrl(const std::string& url) {
  constexpr std::string_view kScheme = "http://";
  if (url.rfind(kScheme, 0) != 0) {
    return InvalidArgumentError("webhook URL '" + url + "' must start with http://");
  }
  std::string rest = url.substr(kScheme.size());
  size_t slash = rest.find('/');
  std::string authority = rest.substr(0, slash);
  WebhookUrl out;
  out.target = slash == std::string::npos ? "/" : rest.substr(slash);
  if (authority.find('@') != std::string::npos) {
    return InvalidArgumentError("webhook URL '" + url + "' must not carry credentials");
  }
  if (!authority.empty() && authority.front() == '[') {
    size_t close = authority.find(']');
    if (close == std::string::npos) return InvalidArgumentError("webhook URL '" + url + "': bad [host]");
    out.host = authority.substr(1, close - 1);
    if (close + 1 < authority.size()) {
      if (authority[close + 1] != ':') return InvalidArgumentError("webhook URL '" + url + "': bad port");
      out.port = authority.substr(close + 2);
    }
  } else {
    size_t colon = authority.find(':');
    out.host = authority.substr(0, colon);
    if (colon != std::string::npos) out.port = authority.substr(colon + 1);
  }
  if (out.port.empty()) out.port = "80";
  if (out.port.size() > 5 || out.port.find_first_not_of("0123456789") != std::string::npos ||
      std::stoi(out.port) == 0 || std::stoi(out.port) > 65535) {
    return InvalidArgumentError("webhook URL '" + url + "': port must be 1..65535");
  }
  boost::system::error_code ec;
  auto addr = asio::ip::make_address(out.host, ec);
  bool loopback = out.host == "localhost" || (!ec && addr.is_loopback());
  if (!loopback) {
    return InvalidArgumentError("webhook URL '" + url +
                                "': the host must be loopback (127.0.0.0/8, ::1 or localhost); "
                                "forward to other hosts with a local relay");
  }
  return out;
}

Status PostAlert(const WebhookUrl& url, const std::string& alert_id, const std::string& body,
                 int timeout_ms) {
  asio::io_context ioc;
  asio::ip::tcp::resolver resolver(ioc);
  beast::tcp_stream stream(ioc);
  beast::flat_buffer buffer;
  http::request<http::string_body> req{http::verb::post, url.target, 11};
  req.set(http::field::host, url.host + ":" + url.port);
  req.set(http::field::user_agent, "keyward-detect");
  req.set(http::field::content_type, "application/json");
  req.set("X-Keyward-Alert-Id", alert_id);
  req.body() = body;
  req.prepare_payload();
  http::response<http::string_body> res;
  boost::system::error_code result = asio::error::would_block;
  std::string stage = "resolve";

  boost::system::error_code rec;
  auto endpoints = resolver.resolve(url.host, url.port, rec);
  if (rec) return UnavailableError(fmt::format("webhook: resolve {}: {}", url.host, rec.message()));
  stream.expires_after(std::chrono::milliseconds(timeout_ms));
  stage = "connect";
  stream.async_connect(endpoints, [&](boost::system::error_code ec, const auto&) {
    if (ec) {
      result = ec;
      return;
    }
    stage = "send";
    http::async_write(stream, req, [&](boost::system::error_code ec2, size_t) {
      if (ec2) {
        result = ec2;
        return;
      }
      stage = "response";
      http::async_read(stream, buffer, res, [&](boost::system::error_code ec3, size_t) {
        result = ec3;
      });
    });
  });
  ioc.run();
  boost::system::error_code ignored;
  stream.socket().shutdown(asio::ip::tcp::socket::shutdown_both, ignored);
  if (result) {
    return UnavailableError(fmt::format("webhook: {} {}:{}{}: {}", stage, url.host, url.port,
                                        url.target, result.message()));
  }
  unsigned status = res.result_int();
  if (status < 200 || status > 299) {
    return FailedPreconditionError(fmt::format("webhook: {}:{}{} answered {}", url.host, url.port,
                                               url.target, status));
  }
  return Status::Ok();
}

}  // namespace kw::detect::analytics
