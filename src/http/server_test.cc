// End-to-end tests: a real Server on an ephemeral port, driven by a raw-socket client whose
// responses are parsed by Beast's own parser (so what is checked is what any HTTP client sees).
#include "http/server.h"

// GCC 12 with -fsanitize=address warns, wrongly, that a boost::optional inside Beast's response
// parser (basic_parser::content_length_unchecked) may be used uninitialized.
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"

#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <boost/beast/http.hpp>
#include <chrono>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "core/log.h"
#include "http/form.h"
#include "http/stream.h"

namespace kw::http {
namespace {

namespace beast = boost::beast;
namespace bhttp = boost::beast::http;
using HttpResponse = bhttp::response<bhttp::string_body>;
using std::chrono::milliseconds;
using SteadyClock = std::chrono::steady_clock;

std::string Field(const HttpResponse& r, std::string_view name) {
  auto it = r.find(beast::string_view(name.data(), name.size()));
  if (it == r.end()) return {};
  return std::string(it->value().data(), it->value().size());
}

// A blocking TCP client with deadlines, for talking HTTP/1.1 byte by byte.
class Client {
 public:
  explicit Client(uint16_t port) {
    fd_ = ::socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_port = htons(port);
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    connected_ = ::connect(fd_, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0;
    int one = 1;
    ::setsockopt(fd_, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
  }
  ~Client() { Close(); }
  void Close() {
    if (fd_ >= 0) ::close(fd_);
    fd_ = -1;
  }
  Client(const Client&) = delete;
  Client& operator=(const Client&) = delete;

  bool connected() const { return connected_; }

  bool Send(std::string_view data) {
    while (!data.empty()) {
      ssize_t n = ::send(fd_, data.data(), data.size(), MSG_NOSIGNAL);
      if (n <= 0) return false;
      data.remove_prefix(static_cast<size_t>(n));
    }
    return true;
  }

  // Reads one response; nullopt on a timeout, a parse error or the connection closing first.
  std::optional<HttpResponse> Read(bool head_request = false,
                                   milliseconds timeout = milliseconds(5000)) {
    bhttp::response_parser<bhttp::string_body> parser;
    parser.eager(true);
    parser.body_limit(16 << 20);
    if (head_request) parser.skip(true);
    auto deadline = SteadyClock::now() + timeout;
    while (!parser.is_done()) {
      if (!buf_.empty()) {
        beast::error_code ec;
        size_t n = parser.put(boost::asio::buffer(buf_), ec);
        buf_.erase(0, n);
        if (ec && ec != bhttp::error::need_more) return std::nullopt;
        if (n > 0 && !ec) continue;
      }
      int got = Recv(deadline);
      if (got < 0) return std::nullopt;
      if (got == 0) {
        beast::error_code ec;
        parser.put_eof(ec);
        if (ec || !parser.is_done()) return std::nullopt;
      }
    }
    return parser.release();
  }

  // Waits until what has arrived (and not yet parsed by Read) contains `needle`; keeps it.
  bool WaitFor(std::string_view needle, milliseconds timeout = milliseconds(3000)) {
    auto deadline = SteadyClock::now() + timeout;
    while (buf_.find(needle) == std::string::npos) {
      if (Recv(deadline) <= 0) return buf_.find(needle) != std::string::npos;
    }
    return true;
  }
  const std::string& received() const { return buf_; }

  // True if the peer closes (EOF or reset) within `timeout`; data received meanwhile is dropped.
  bool WaitClosed(milliseconds timeout = milliseconds(3000)) {
    auto deadline = SteadyClock::now() + timeout;
    buf_.clear();
    while (true) {
      int got = Recv(deadline);
      if (got == 0 || got == -2) return true;
      if (got == -1) return false;
      buf_.clear();
    }
  }

 private:
  // Appends what arrives to buf_: bytes read, 0 on EOF, -1 on timeout, -2 on a socket error.
  int Recv(SteadyClock::time_point deadline) {
    auto left = std::chrono::duration_cast<milliseconds>(deadline - SteadyClock::now()).count();
    if (left <= 0) return -1;
    pollfd p{fd_, POLLIN, 0};
    int r = ::poll(&p, 1, static_cast<int>(left));
    if (r == 0) return -1;
    if (r < 0) return -2;
    char tmp[16384];
    ssize_t n = ::recv(fd_, tmp, sizeof(tmp), 0);
    if (n < 0) return -2;
    buf_.append(tmp, static_cast<size_t>(n));
    return static_cast<int>(n);
  }

  int fd_ = -1;
  bool connected_ = false;
  std::string buf_;
};

std::string Http(std::string_view method, std::string_view target, std::string_view body = {},
                 std::string_view extra_headers = {}) {
  std::string out = std::string(method) + " " + std::string(target) + " HTTP/1.1\r\nHost: test\r\n";
  out += extra_headers;
  if (!body.empty() || method == "POST")
    out += "Content-Length: " + std::to_string(body.size()) + "\r\n";
  out += "\r\n";
  out += body;
  return out;
}

void ExpectJsonError(const HttpResponse& r, int status, std::string_view code) {
  EXPECT_EQ(r.result_int(), static_cast<unsigned>(status)) << r.body();
  EXPECT_EQ(Field(r, "Content-Type"), "application/json");
  EXPECT_EQ(Field(r, "Cache-Control"), "no-store");
  EXPECT_EQ(r.body().rfind("{\"error\":\"" + std::string(code) + "\",\"error_description\":\"", 0),
            0u)
      << r.body();
}

class LogCapture {
 public:
  LogCapture() {
    SetLogSink(
        [this](LogLevel, std::string_view line) {
          std::lock_guard<std::mutex> lock(mu_);
          lines_.emplace_back(line);
        },
        LogLevel::kInfo);
  }
  ~LogCapture() { SetLogSink(nullptr); }
  std::vector<std::string> Lines() {
    std::lock_guard<std::mutex> lock(mu_);
    return lines_;
  }
  std::vector<std::string> Matching(std::string_view needle) {
    std::vector<std::string> out;
    for (auto& l : Lines()) {
      if (l.find(needle) != std::string::npos) out.push_back(l);
    }
    return out;
  }

 private:
  std::mutex mu_;
  std::vector<std::string> lines_;
};

class ServerTest : public ::testing::Test {
 protected:
  static ServerOptions TestOptions() {
    ServerOptions o;
    o.threads = 2;
    o.read_timeout = milliseconds(2000);
    o.shutdown_timeout = milliseconds(3000);
    return o;
  }

  Router MakeRouter() {
    Router r;
    auto add = [&](std::string_view method, std::string_view pattern, Handler h) {
      Status s = r.Add(method, pattern, std::move(h));
      EXPECT_TRUE(s.ok()) << s.ToString();
    };
    add("POST", "/{tenant}/v2.0/token", [](const Request& req) {
      auto form = ParseFormRequest(req);
      if (!form.ok()) return ErrorResponse(400, "invalid_request", form.status().message());
      std::string grant = form->count("grant_type") ? form->at("grant_type") : "";
      return JsonResponse(200, "{\"tenant\":\"" + std::string(req.PathParam("tenant")) +
                                   "\",\"grant_type\":\"" + grant + "\"}");
    });
    add("POST", "/common/v2.0/token",
        [](const Request&) { return JsonResponse(200, "{\"common\":true}"); });
    auto echo = [](const Request& req) {
      Response r;
      r.content_type = "text/plain";
      std::string x(req.QueryParam("x").value_or("-"));
      r.body = req.method + " " + req.path + " x=" + x + " body=" + req.body;
      return r;
    };
    add("GET", "/echo", echo);
    add("POST", "/echo", echo);
    add("GET", "/boom",
        [](const Request&) -> Response { throw std::runtime_error("secret-exception-text"); });
    add("GET", "/bad-header", [](const Request&) {
      Response r;
      r.headers.emplace("X-Injected", "a\r\nSet-Cookie: evil=1");
      return r;
    });
    add("GET", "/ip", [](const Request& req) {
      Response r;
      r.body = req.ClientIp();
      return r;
    });
    add("GET", "/events", [this](const Request&) {
      auto body = std::make_shared<StreamBody>(stream_limit_);
      body->OnClose([this] { stream_closed_.store(true); });
      {
        std::lock_guard lock(stream_mu_);
        stream_ = body;
      }
      body->Write("event: hello\n\n");
      Response r;
      r.content_type = "text/event-stream";
      r.SetHeader("Cache-Control", "no-cache");
      r.stream = body;
      return r;
    });
    add("GET", "/slow", [this](const Request&) {
      slow_started_.store(true);
      std::this_thread::sleep_for(milliseconds(500));
      slow_finished_.store(true);
      Response r;
      r.body = "slow done";
      return r;
    });
    return r;
  }

  void StartServer(ServerOptions options = TestOptions()) {
    server_ = std::make_unique<Server>(options, MakeRouter());
    Status s = server_->Start();
    ASSERT_TRUE(s.ok()) << s.ToString();
    ASSERT_NE(server_->port(), 0);
  }

  void SetUp() override { log_ = std::make_unique<LogCapture>(); }
  void TearDown() override {
    server_.reset();
    log_.reset();
  }

  uint16_t port() const { return server_->port(); }

  std::optional<HttpResponse> RoundTrip(Client& c, const std::string& request) {
    EXPECT_TRUE(c.Send(request));
    return c.Read();
  }

  std::unique_ptr<LogCapture> log_;
  std::unique_ptr<Server> server_;
  std::atomic<bool> slow_started_{false};
  std::atomic<bool> slow_finished_{false};

  std::shared_ptr<StreamBody> Stream() {
    for (int i = 0; i < 300; ++i) {
      {
        std::lock_guard lock(stream_mu_);
        if (stream_) return stream_;
      }
      std::this_thread::sleep_for(milliseconds(10));
    }
    return nullptr;
  }
  bool WaitStreamClosed() {
    for (int i = 0; i < 300 && !stream_closed_.load(); ++i)
      std::this_thread::sleep_for(milliseconds(10));
    return stream_closed_.load();
  }
  std::mutex stream_mu_;
  std::shared_ptr<StreamBody> stream_;  // guarded by stream_mu_
  std::atomic<bool> stream_closed_{false};
  size_t stream_limit_ = 1 << 20;
};

TEST_F(ServerTest, ForwardedForIsBelievedFromTrustedProxiesOnly) {
  {
    StartServer();  // no trusted proxy: the header is ignored
    Client c(port());
    auto r = RoundTrip(c, Http("GET", "/ip", "", "X-Forwarded-For: 203.0.113.9\r\n"));
    ASSERT_TRUE(r);
    EXPECT_EQ(r->body(), "127.0.0.1");
  }
  server_.reset();
  ServerOptions o = TestOptions();
  o.trusted_proxies = {"127.0.0.1"};
  StartServer(o);
  Client c(port());
  auto r = RoundTrip(c, Http("GET", "/ip", "", "X-Forwarded-For: 198.51.100.1, 203.0.113.9\r\n"));
  ASSERT_TRUE(r);
  EXPECT_EQ(r->body(), "203.0.113.9");  // the address the proxy saw
  r = RoundTrip(c, Http("GET", "/ip", "", "X-Forwarded-For: 2001:db8::7\r\n"));
  ASSERT_TRUE(r);
  EXPECT_EQ(r->body(), "2001:db8::7");
  r = RoundTrip(c, Http("GET", "/ip", "", "X-Forwarded-For: not-an-ip\r\n"));
  ASSERT_TRUE(r);
  EXPECT_EQ(r->body(), "127.0.0.1");
}

TEST_F(ServerTest, StreamedBodyIsChunkedAndEndsWhenTheProducerFinishes) {
  StartServer();
  Client c(port());
  ASSERT_TRUE(c.Send(Http("GET", "/events")));
  // The head and the first event arrive without the body being complete.
  ASSERT_TRUE(c.WaitFor("event: hello\n\n"));
  EXPECT_NE(c.received().find("Transfer-Encoding: chunked"), std::string::npos) << c.received();
  EXPECT_NE(c.received().find("Content-Type: text/event-stream"), std::string::npos);
  auto body = Stream();
  ASSERT_TRUE(body);
  // Events written later, from another thread, arrive as they are written.
  std::thread producer([body] {
    for (int i = 0; i < 3; ++i) {
      EXPECT_TRUE(body->Write("event: n\ndata: " + std::to_string(i) + "\n\n"));
      std::this_thread::sleep_for(milliseconds(20));
    }
  });
  ASSERT_TRUE(c.WaitFor("data: 2\n\n"));
  producer.join();
  EXPECT_FALSE(stream_closed_.load());
  body->Finish();
  EXPECT_FALSE(body->Write("too late"));
  auto r = c.Read();
  ASSERT_TRUE(r);
  EXPECT_EQ(r->result_int(), 200u);
  EXPECT_EQ(r->body(),
            "event: hello\n\nevent: n\ndata: 0\n\nevent: n\ndata: 1\n\nevent: n\ndata: 2\n\n");
  EXPECT_FALSE(r->keep_alive());
  EXPECT_TRUE(c.WaitClosed());
  EXPECT_TRUE(stream_closed_.load());
  EXPECT_EQ(log_->Matching("path=/events status=200").size(), 1u);
}

TEST_F(ServerTest, StreamClosesWhenTheClientLeaves) {
  StartServer();
  {
    Client c(port());
    ASSERT_TRUE(c.Send(Http("GET", "/events")));
    ASSERT_TRUE(c.WaitFor("event: hello"));
  }
  EXPECT_TRUE(WaitStreamClosed());
  auto body = Stream();
  ASSERT_TRUE(body);
  EXPECT_FALSE(body->Write("anyone?"));
  for (int i = 0; i < 200 && server_->active_connections() != 0; ++i)
    std::this_thread::sleep_for(milliseconds(10));
  EXPECT_EQ(server_->active_connections(), 0u);
}

TEST_F(ServerTest, StopEndsOpenStreams) {
  StartServer();
  Client c(port());
  ASSERT_TRUE(c.Send(Http("GET", "/events")));
  ASSERT_TRUE(c.WaitFor("event: hello"));
  auto start = SteadyClock::now();
  std::thread stopper([&] { server_->Stop(); });
  auto r = c.Read();  // the terminating chunk arrives: a complete response
  ASSERT_TRUE(r);
  EXPECT_EQ(r->body(), "event: hello\n\n");
  c.Close();
  stopper.join();
  EXPECT_LT(SteadyClock::now() - start, milliseconds(2000));
  EXPECT_TRUE(stream_closed_.load());
}

TEST_F(ServerTest, SlowStreamConsumerIsCutOff) {
  stream_limit_ = 64 * 1024;
  StartServer();
  Client c(port());
  ASSERT_TRUE(c.Send(Http("GET", "/events")));
  ASSERT_TRUE(c.WaitFor("event: hello"));
  auto body = Stream();
  ASSERT_TRUE(body);
  // The client reads nothing more: socket buffers fill, then the stream's own limit trips.
  std::string chunk(8192, 'x');
  bool refused = false;
  for (int i = 0; i < 100000 && !refused; ++i) refused = !body->Write(chunk);
  EXPECT_TRUE(refused);
  EXPECT_TRUE(WaitStreamClosed());
  EXPECT_TRUE(c.WaitClosed());
}

TEST_F(ServerTest, HeadOfAStreamedRouteSendsTheHeadOnly) {
  StartServer();
  Client c(port());
  ASSERT_TRUE(c.Send(Http("HEAD", "/events")));
  auto r = c.Read(/*head_request=*/true);
  ASSERT_TRUE(r);
  EXPECT_EQ(r->result_int(), 200u);
  EXPECT_TRUE(WaitStreamClosed());
  // The connection stays usable.
  auto again = RoundTrip(c, Http("GET", "/healthz"));
  ASSERT_TRUE(again);
  EXPECT_EQ(again->result_int(), 200u);
}

TEST_F(ServerTest, Healthz) {
  StartServer();
  Client c(port());
  ASSERT_TRUE(c.connected());
  auto r = RoundTrip(c, Http("GET", "/healthz"));
  ASSERT_TRUE(r);
  EXPECT_EQ(r->result_int(), 200u);
  EXPECT_EQ(r->body(), R"({"status":"ok"})");
  EXPECT_EQ(Field(*r, "Content-Type"), "application/json");
  EXPECT_EQ(Field(*r, "X-Content-Type-Options"), "nosniff");
  EXPECT_EQ(Field(*r, "X-Request-Id").size(), 16u);
  EXPECT_EQ(Field(*r, "Date").size(), 29u) << Field(*r, "Date");  // "Sun, 06 Nov 1994 08:49:37 GMT"
  EXPECT_TRUE(r->keep_alive());

  // HEAD: same headers, no body, and the connection stays in sync.
  ASSERT_TRUE(c.Send(Http("HEAD", "/healthz")));
  auto head = c.Read(/*head_request=*/true);
  ASSERT_TRUE(head);
  EXPECT_EQ(head->result_int(), 200u);
  EXPECT_EQ(Field(*head, "Content-Length"), "15");
  auto again = RoundTrip(c, Http("GET", "/healthz"));
  ASSERT_TRUE(again);
  EXPECT_EQ(again->body(), R"({"status":"ok"})");
}

TEST_F(ServerTest, RoutesWithParamsQueryAndForm) {
  StartServer();
  Client c(port());
  auto r = RoundTrip(c, Http("POST", "/t1/v2.0/token", "grant_type=client_credentials",
                             "Content-Type: application/x-www-form-urlencoded\r\n"));
  ASSERT_TRUE(r);
  EXPECT_EQ(r->result_int(), 200u) << r->body();
  EXPECT_EQ(r->body(), R"({"tenant":"t1","grant_type":"client_credentials"})");

  r = RoundTrip(c, Http("POST", "/common/v2.0/token", "a=1",
                        "Content-Type: application/x-www-form-urlencoded\r\n"));
  ASSERT_TRUE(r);
  EXPECT_EQ(r->body(), R"({"common":true})");

  // A form the handler refuses: the parser's message names the parameter.
  r = RoundTrip(c, Http("POST", "/t1/v2.0/token", "grant_type=a&grant_type=b",
                        "Content-Type: application/x-www-form-urlencoded\r\n"));
  ASSERT_TRUE(r);
  ExpectJsonError(*r, 400, "invalid_request");
  EXPECT_NE(r->body().find("duplicate parameter 'grant_type'"), std::string::npos) << r->body();

  r = RoundTrip(c, Http("GET", "/echo?x=a%2Bb+c"));
  ASSERT_TRUE(r);
  EXPECT_EQ(r->body(), "GET /echo x=a+b c body=");

  // A malformed query string is refused before any handler; the connection stays usable.
  r = RoundTrip(c, Http("GET", "/echo?x=1&x=2"));
  ASSERT_TRUE(r);
  ExpectJsonError(*r, 400, "invalid_request");
  EXPECT_NE(r->body().find("query: duplicate parameter 'x'"), std::string::npos) << r->body();
  EXPECT_TRUE(r->keep_alive());
  r = RoundTrip(c, Http("GET", "/echo?x=%zz"));
  ASSERT_TRUE(r);
  ExpectJsonError(*r, 400, "invalid_request");
  r = RoundTrip(c, Http("POST", "/echo", "hello"));
  ASSERT_TRUE(r);
  EXPECT_EQ(r->body(), "POST /echo x=- body=hello");
}

TEST_F(ServerTest, NotFoundAndMethodNotAllowedAreJson) {
  StartServer();
  Client c(port());
  auto r = RoundTrip(c, Http("GET", "/nope"));
  ASSERT_TRUE(r);
  ExpectJsonError(*r, 404, "not_found");
  EXPECT_TRUE(r->keep_alive());

  r = RoundTrip(c, Http("DELETE", "/echo"));
  ASSERT_TRUE(r);
  ExpectJsonError(*r, 405, "method_not_allowed");
  EXPECT_EQ(Field(*r, "Allow"), "GET, HEAD, POST");

  r = RoundTrip(c, Http("GET", "/a%2Fb/v2.0/token"));
  ASSERT_TRUE(r);
  ExpectJsonError(*r, 400, "invalid_request");
}

TEST_F(ServerTest, OversizedBodyGets413) {
  StartServer();
  {
    // Refused from the Content-Length alone, before the body arrives.
    Client c(port());
    std::string req = "POST /echo HTTP/1.1\r\nHost: test\r\nContent-Length: 2097152\r\n\r\n";
    req += std::string(64 * 1024, 'x');
    ASSERT_TRUE(c.Send(req));
    auto r = c.Read();
    ASSERT_TRUE(r);
    ExpectJsonError(*r, 413, "request_too_large");
    EXPECT_FALSE(r->keep_alive());
    EXPECT_TRUE(c.WaitClosed());
  }
  {
    // Exactly at the limit is fine.
    Client c(port());
    auto r = RoundTrip(c, Http("POST", "/echo", std::string(1024 * 1024, 'y')));
    ASSERT_TRUE(r);
    EXPECT_EQ(r->result_int(), 200u);
    EXPECT_EQ(r->body().size(), std::string("POST /echo x=- body=").size() + 1024 * 1024);
  }
}

TEST_F(ServerTest, OversizedChunkedBodyGets413) {
  ServerOptions o = TestOptions();
  o.max_body_bytes = 1000;
  StartServer(o);
  Client c(port());
  std::string chunk(600, 'z');
  std::string req =
      "POST /echo HTTP/1.1\r\nHost: test\r\nTransfer-Encoding: chunked\r\n\r\n"
      "258\r\n" +
      chunk + "\r\n258\r\n" + chunk + "\r\n0\r\n\r\n";
  ASSERT_TRUE(c.Send(req));
  auto r = c.Read();
  ASSERT_TRUE(r);
  ExpectJsonError(*r, 413, "request_too_large");
  EXPECT_TRUE(c.WaitClosed());

  Client ok(port());
  auto r2 = RoundTrip(ok,
                      "POST /echo HTTP/1.1\r\nHost: test\r\nTransfer-Encoding: chunked\r\n\r\n"
                      "3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n");
  ASSERT_TRUE(r2);
  EXPECT_EQ(r2->body(), "POST /echo x=- body=abcde");
}

TEST_F(ServerTest, HugeHeaderGets431AndLongTarget414) {
  StartServer();
  {
    Client c(port());
    ASSERT_TRUE(c.Send(Http("GET", "/healthz", {}, "X-Big: " + std::string(20000, 'a') + "\r\n")));
    auto r = c.Read();
    ASSERT_TRUE(r);
    ExpectJsonError(*r, 431, "request_header_too_large");
    EXPECT_TRUE(c.WaitClosed());
  }
  {
    Client c(port());
    ASSERT_TRUE(c.Send(Http("GET", "/echo?x=" + std::string(9000, 'q'))));
    auto r = c.Read();
    ASSERT_TRUE(r);
    ExpectJsonError(*r, 414, "uri_too_long");
    EXPECT_TRUE(c.WaitClosed());
  }
}

TEST_F(ServerTest, MalformedRequestsGet400AndAreClosed) {
  StartServer();
  struct Row {
    const char* name;
    std::string bytes;
    int status;
  };
  const Row rows[] = {
      {"garbage", "GARBAGE\r\n\r\n", 400},
      {"binary", std::string("\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\r\n\r\n", 15), 400},
      {"bad_version", "GET / HTTP/1.x\r\nHost: a\r\n\r\n", 400},
      {"two_digit_version", "GET / HTTP/11\r\nHost: a\r\n\r\n", 400},
      {"not_http", "GET / FTP/1.1\r\nHost: a\r\n\r\n", 400},
      {"http09", "GET /\r\n\r\n", 400},
      {"http2_version", "GET / HTTP/2.0\r\nHost: a\r\n\r\n", 400},
      {"http12_version", "GET / HTTP/1.2\r\nHost: a\r\n\r\n", 400},
      {"no_host", "GET /healthz HTTP/1.1\r\n\r\n", 400},
      {"two_hosts", "GET /healthz HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 400},
      {"absolute_form", "GET http://evil.example/healthz HTTP/1.1\r\nHost: a\r\n\r\n", 400},
      {"asterisk_form", "OPTIONS * HTTP/1.1\r\nHost: a\r\n\r\n", 400},
      {"space_in_target", "GET /a b HTTP/1.1\r\nHost: a\r\n\r\n", 400},
      {"header_without_colon", "GET / HTTP/1.1\r\nHost a\r\n\r\n", 400},
      {"space_before_colon", "GET / HTTP/1.1\r\nHost : a\r\n\r\n", 400},
      {"bad_content_length", "POST /echo HTTP/1.1\r\nHost: a\r\nContent-Length: abc\r\n\r\n", 400},
      {"conflicting_content_lengths",
       "POST /echo HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab", 400},
      {"bad_chunk_size",
       "POST /echo HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nab\r\n0\r\n\r\n",
       400},
      {"chunk_missing_crlf",
       "POST /echo HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nabXX0\r\n\r\n",
       400},
      {"te_and_content_length",
       "POST /echo HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n"
       "0\r\n\r\n",
       400},
      {"content_length_and_te",
       "POST /echo HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n"
       "0\r\n\r\n",
       400},
      {"te_gzip", "POST /echo HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip\r\n\r\nxxxx", 400},
      {"te_gzip_chunked",
       "POST /echo HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n", 400},
      {"expect_other",
       "POST /echo HTTP/1.1\r\nHost: a\r\nExpect: 200-ok\r\nContent-Length: 1\r\n\r\nx", 417},
  };
  for (const Row& row : rows) {
    SCOPED_TRACE(row.name);
    Client c(port());
    ASSERT_TRUE(c.Send(row.bytes));
    auto r = c.Read();
    ASSERT_TRUE(r);
    EXPECT_EQ(r->result_int(), static_cast<unsigned>(row.status)) << r->body();
    EXPECT_EQ(Field(*r, "Content-Type"), "application/json");
    EXPECT_NE(r->body().find("\"error\":"), std::string::npos);
    EXPECT_FALSE(r->keep_alive());
    EXPECT_TRUE(c.WaitClosed());
  }
  // None of it hurt the server.
  Client c(port());
  auto r = RoundTrip(c, Http("GET", "/healthz"));
  ASSERT_TRUE(r);
  EXPECT_EQ(r->result_int(), 200u);
}

TEST_F(ServerTest, KeepAliveAndPipelining) {
  StartServer();
  Client c(port());
  std::set<std::string> ids;
  for (int i = 0; i < 5; ++i) {
    auto r = RoundTrip(c, Http("GET", "/echo?x=" + std::to_string(i)));
    ASSERT_TRUE(r);
    EXPECT_EQ(r->body(), "GET /echo x=" + std::to_string(i) + " body=");
    EXPECT_TRUE(r->keep_alive());
    ids.insert(Field(*r, "X-Request-Id"));
  }
  EXPECT_EQ(ids.size(), 5u);

  // Three requests in one write are answered in order.
  ASSERT_TRUE(c.Send(Http("GET", "/echo?x=a") + Http("POST", "/echo", "b") + Http("GET", "/nope")));
  auto r1 = c.Read();
  auto r2 = c.Read();
  auto r3 = c.Read();
  ASSERT_TRUE(r1 && r2 && r3);
  EXPECT_EQ(r1->body(), "GET /echo x=a body=");
  EXPECT_EQ(r2->body(), "POST /echo x=- body=b");
  EXPECT_EQ(r3->result_int(), 404u);

  // "Connection: close" is honoured.
  auto last = RoundTrip(c, Http("GET", "/healthz", {}, "Connection: close\r\n"));
  ASSERT_TRUE(last);
  EXPECT_FALSE(last->keep_alive());
  EXPECT_TRUE(c.WaitClosed());

  // HTTP/1.0 closes unless asked to keep alive.
  Client old(port());
  ASSERT_TRUE(old.Send("GET /healthz HTTP/1.0\r\n\r\n"));
  auto r10 = old.Read();
  ASSERT_TRUE(r10);
  EXPECT_EQ(r10->version(), 10u);
  EXPECT_EQ(r10->result_int(), 200u);
  EXPECT_TRUE(old.WaitClosed());
}

TEST_F(ServerTest, ExpectContinue) {
  StartServer();
  Client c(port());
  ASSERT_TRUE(c.Send(
      "POST /echo HTTP/1.1\r\nHost: t\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\n"));
  auto interim = c.Read();
  ASSERT_TRUE(interim);
  EXPECT_EQ(interim->result_int(), 100u);
  ASSERT_TRUE(c.Send("hello"));
  auto r = c.Read();
  ASSERT_TRUE(r);
  EXPECT_EQ(r->body(), "POST /echo x=- body=hello");
}

TEST_F(ServerTest, SlowClientsAreDisconnected) {
  ServerOptions o = TestOptions();
  o.read_timeout = milliseconds(300);
  o.idle_timeout = milliseconds(300);
  StartServer(o);

  // Slowloris: a header that trickles in and never ends.
  Client slow(port());
  auto start = SteadyClock::now();
  ASSERT_TRUE(slow.Send("GET /healthz HTTP/1.1\r\nHost: t\r\n"));
  bool closed = false;
  for (int i = 0; i < 30 && !closed; ++i) {
    std::this_thread::sleep_for(milliseconds(50));
    closed = !slow.Send("X");
    if (!closed) closed = slow.WaitClosed(milliseconds(1));
  }
  if (!closed) closed = slow.WaitClosed(milliseconds(1000));
  auto elapsed = SteadyClock::now() - start;
  EXPECT_TRUE(closed);
  EXPECT_GE(elapsed, milliseconds(250));
  EXPECT_LT(elapsed, milliseconds(1400));

  // A client that connects and says nothing.
  Client silent(port());
  EXPECT_TRUE(silent.WaitClosed(milliseconds(1500)));

  // An idle keep-alive connection is closed after idle_timeout.
  Client idle(port());
  auto r = RoundTrip(idle, Http("GET", "/healthz"));
  ASSERT_TRUE(r);
  EXPECT_TRUE(idle.WaitClosed(milliseconds(1500)));

  // Meanwhile a well-behaved client is served.
  Client good(port());
  auto g = RoundTrip(good, Http("GET", "/healthz"));
  ASSERT_TRUE(g);
  EXPECT_EQ(g->result_int(), 200u);
  EXPECT_GE(log_->Matching("http read timeout").size(), 2u);
}

TEST_F(ServerTest, HandlerExceptionIsAGeneric500) {
  StartServer();
  Client c(port());
  auto r = RoundTrip(c, Http("GET", "/boom"));
  ASSERT_TRUE(r);
  ExpectJsonError(*r, 500, "server_error");
  EXPECT_EQ(r->body().find("secret-exception-text"), std::string::npos);
  std::string id = Field(*r, "X-Request-Id");
  auto logged = log_->Matching("secret-exception-text");
  ASSERT_EQ(logged.size(), 1u);
  EXPECT_NE(logged[0].find(id), std::string::npos) << logged[0];

  // A response that would split the header is refused too.
  r = RoundTrip(c, Http("GET", "/bad-header"));
  ASSERT_TRUE(r);
  ExpectJsonError(*r, 500, "server_error");
  EXPECT_EQ(Field(*r, "Set-Cookie"), "");
  EXPECT_EQ(Field(*r, "X-Injected"), "");

  // The connection survived both.
  r = RoundTrip(c, Http("GET", "/healthz"));
  ASSERT_TRUE(r);
  EXPECT_EQ(r->result_int(), 200u);
}

TEST_F(ServerTest, AccessLogHasNoSecrets) {
  StartServer();
  Client c(port());
  auto r = RoundTrip(c, Http("POST", "/echo?x=SECRETQUERY", "SECRETBODY",
                             "Authorization: Bearer SECRETAUTH\r\nCookie: s=SECRETCOOKIE\r\n"));
  ASSERT_TRUE(r);
  EXPECT_EQ(r->result_int(), 200u);
  std::string id = Field(*r, "X-Request-Id");
  // The line is written once the response is out, maybe just after the client has read it.
  std::vector<std::string> lines;
  for (int i = 0; i < 400 && lines.empty(); ++i) {
    lines = log_->Matching("id=" + id);
    if (lines.empty()) std::this_thread::sleep_for(milliseconds(5));
  }
  ASSERT_EQ(lines.size(), 1u);
  const std::string& line = lines[0];
  EXPECT_EQ(line.rfind("http method=POST path=/echo status=200 bytes=", 0), 0u) << line;
  EXPECT_NE(line.find(" us="), std::string::npos) << line;
  EXPECT_NE(line.find(" remote=127.0.0.1:"), std::string::npos) << line;
  for (const std::string& l : log_->Lines()) {
    for (const char* secret : {"SECRETQUERY", "SECRETBODY", "SECRETAUTH", "SECRETCOOKIE"}) {
      EXPECT_EQ(l.find(secret), std::string::npos) << l;
    }
  }
}

TEST_F(ServerTest, ConcurrentClients) {
  StartServer();
  constexpr int kThreads = 4;
  constexpr int kRequests = 200;
  std::atomic<int> ok{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      std::unique_ptr<Client> c;
      for (int i = 0; i < kRequests; ++i) {
        if (i % 50 == 0) c = std::make_unique<Client>(port());  // some fresh connections too
        std::string x = std::to_string(t) + "-" + std::to_string(i);
        if (!c->Send(Http("GET", "/echo?x=" + x))) continue;
        auto r = c->Read();
        if (r && r->result_int() == 200 && r->body() == "GET /echo x=" + x + " body=") ++ok;
      }
    });
  }
  for (auto& th : threads) th.join();
  EXPECT_EQ(ok.load(), kThreads * kRequests);
}

TEST_F(ServerTest, StopLetsASlowHandlerFinish) {
  StartServer();
  Client idle(port());
  ASSERT_TRUE(RoundTrip(idle, Http("GET", "/healthz")));
  Client busy(port());
  ASSERT_TRUE(busy.Send(Http("GET", "/slow")));
  for (int i = 0; i < 200 && !slow_started_.load(); ++i)
    std::this_thread::sleep_for(milliseconds(5));
  ASSERT_TRUE(slow_started_.load());

  std::thread stopper([&] { server_->Stop(); });
  // The idle keep-alive connection is closed at once; the busy one gets its answer.
  EXPECT_TRUE(idle.WaitClosed(milliseconds(1000)));
  auto r = busy.Read();
  ASSERT_TRUE(r);
  EXPECT_EQ(r->result_int(), 200u);
  EXPECT_EQ(r->body(), "slow done");
  EXPECT_FALSE(r->keep_alive());
  EXPECT_TRUE(busy.WaitClosed());
  busy.Close();  // ends the server's lingering close at once
  stopper.join();
  EXPECT_TRUE(slow_finished_.load());
  EXPECT_EQ(server_->active_connections(), 0u);

  Client late(server_->port());
  EXPECT_FALSE(late.connected());
  server_->Stop();  // idempotent
}

TEST_F(ServerTest, StopIsPromptWhenIdle) {
  StartServer();
  Client idle(port());
  ASSERT_TRUE(RoundTrip(idle, Http("GET", "/healthz")));
  auto start = SteadyClock::now();
  server_->Stop();
  EXPECT_LT(SteadyClock::now() - start, milliseconds(1000));
  EXPECT_TRUE(idle.WaitClosed(milliseconds(100)));
}

TEST_F(ServerTest, ConnectionCapAnswers503) {
  ServerOptions o = TestOptions();
  o.max_connections = 2;
  StartServer(o);
  auto a = std::make_unique<Client>(port());
  Client b(port());
  ASSERT_TRUE(RoundTrip(*a, Http("GET", "/healthz")));
  ASSERT_TRUE(RoundTrip(b, Http("GET", "/healthz")));

  {
    Client c(port());
    ASSERT_TRUE(c.Send(Http("GET", "/healthz")));
    auto r = c.Read();
    ASSERT_TRUE(r);
    ExpectJsonError(*r, 503, "temporarily_unavailable");
    EXPECT_EQ(Field(*r, "Retry-After"), "1");
    EXPECT_TRUE(c.WaitClosed());
  }

  a.reset();  // frees a slot
  for (int i = 0; i < 200 && server_->active_connections() > 1; ++i) {
    std::this_thread::sleep_for(milliseconds(5));
  }
  Client d(port());
  auto ok = RoundTrip(d, Http("GET", "/healthz"));
  ASSERT_TRUE(ok);
  EXPECT_EQ(ok->result_int(), 200u);
}

TEST_F(ServerTest, StartErrors) {
  StartServer();
  ServerOptions o = TestOptions();
  o.port = port();
  Server same_port(o, Router());
  Status s = same_port.Start();
  EXPECT_EQ(s.code(), StatusCode::kUnavailable) << s.ToString();
  EXPECT_NE(s.message().find(std::to_string(port())), std::string::npos) << s.ToString();
  EXPECT_EQ(same_port.Start().code(), StatusCode::kFailedPrecondition);

  o.port = 0;
  o.address = "localhost:80";
  EXPECT_EQ(Server(o, Router()).Start().code(), StatusCode::kInvalidArgument);
  o.address = "192.0.2.1";  // TEST-NET-1: not an address of this machine
  EXPECT_EQ(Server(o, Router()).Start().code(), StatusCode::kInvalidArgument);
  o.address = "127.0.0.1";
  o.threads = -1;
  EXPECT_EQ(Server(o, Router()).Start().code(), StatusCode::kInvalidArgument);

  EXPECT_EQ(server_->Start().code(), StatusCode::kFailedPrecondition);
}

TEST_F(ServerTest, StopOnSignals) {
  StartServer();
  ASSERT_TRUE(server_->StopOnSignals().ok());
  ASSERT_EQ(::raise(SIGTERM), 0);
  server_->Wait();  // returns once the signal-triggered stop is done
  Client late(server_->port());
  EXPECT_FALSE(late.connected());
  EXPECT_EQ(log_->Matching("signal 15").size(), 1u);
}

TEST_F(ServerTest, RequestStopFromAHandler) {
  Router router;
  Server* self = nullptr;
  ASSERT_TRUE(router
                  .Add("POST", "/shutdown",
                       [&self](const Request&) {
                         self->RequestStop();
                         return JsonResponse(202, "{}");
                       })
                  .ok());
  ServerOptions o = TestOptions();
  server_ = std::make_unique<Server>(o, std::move(router));
  self = server_.get();
  ASSERT_TRUE(server_->Start().ok());
  std::thread waiter([&] { server_->Wait(); });
  Client c(port());
  auto r = RoundTrip(c, Http("POST", "/shutdown"));
  ASSERT_TRUE(r);
  EXPECT_EQ(r->result_int(), 202u);
  c.Close();
  waiter.join();
  Client late(server_->port());
  EXPECT_FALSE(late.connected());
}

}  // namespace
}  // namespace kw::http
