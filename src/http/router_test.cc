#include "http/router.h"

#include <gtest/gtest.h>

#include <mutex>
#include <stdexcept>
#include <string>
#include <vector>

#include "core/log.h"

namespace kw::http {
namespace {

Handler Named(std::string name) {
  return [name](const Request& req) {
    std::string body = name;
    for (const auto& [k, v] : req.path_params) body += " " + k + "=" + v;
    Response r;
    r.body = body;
    return r;
  };
}

Response DispatchTo(const Router& router, std::string method, std::string path) {
  Request req;
  req.method = std::move(method);
  req.path = std::move(path);
  req.target = req.path;
  return router.Dispatch(&req);
}

class RouterTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_TRUE(router_.Add("GET", "/", Named("root")).ok());
    ASSERT_TRUE(router_.Add("POST", "/{tenant}/v2.0/token", Named("token")).ok());
    ASSERT_TRUE(router_.Add("POST", "/common/v2.0/token", Named("common-token")).ok());
    ASSERT_TRUE(router_.Add("GET", "/{tenant}/v2.0/keys", Named("keys")).ok());
    ASSERT_TRUE(router_.Add("DELETE", "/{tenant}/v2.0/keys", Named("delete-keys")).ok());
    ASSERT_TRUE(router_.Add("GET", "/{tenant}/users/{user}", Named("user")).ok());
    ASSERT_TRUE(router_.Add("GET", "/{tenant}/users/me", Named("me")).ok());
  }
  Router router_;
};

TEST_F(RouterTest, Routes) {
  struct Row {
    const char* method;
    const char* path;
    int status;
    const char* body;  // substring; for errors, the "error" code
  };
  const Row rows[] = {
      {"GET", "/", 200, "root"},
      {"POST", "/t1/v2.0/token", 200, "token tenant=t1"},
      {"POST", "/common/v2.0/token", 200, "common-token"},   // literal beats {tenant}
      {"POST", "/t%31/v2.0/token", 200, "token tenant=t1"},  // segments are percent-decoded
      {"POST", "/a+b/v2.0/token", 200, "token tenant=a+b"},  // no '+' to space in paths
      {"GET", "/t1/users/u7", 200, "user tenant=t1 user=u7"},
      {"GET", "/t1/users/me", 200, "me tenant=t1"},
      {"GET", "/t1/v2.0/token", 405, "method_not_allowed"},
      {"GET", "/t1/v2.0/token/", 404, "not_found"},  // no trailing-slash folding
      {"GET", "/t1/v2.0", 404, "not_found"},
      {"GET", "//v2.0/keys", 404, "not_found"},  // a parameter never matches ""
      {"GET", "/nope", 404, "not_found"},
      {"POST", "/a%2Fb/v2.0/token", 400, "invalid_request"},  // encoded '/'
      {"POST", "/a%00/v2.0/token", 400, "invalid_request"},
      {"POST", "/a%zz/v2.0/token", 400, "invalid_request"},
      {"POST", "/%C3%28/v2.0/token", 400, "invalid_request"},  // invalid UTF-8
      {"GET", "/t1/../t2/v2.0/keys", 400, "invalid_request"},
      {"GET", "/./", 400, "invalid_request"},
      {"GET", "/t1/v2.0/%2e%2e", 400, "invalid_request"},
      {"HEAD", "/t1/v2.0/keys", 200, "keys"},   // HEAD runs the GET route
      {"get", "/", 405, "method_not_allowed"},  // methods are case-sensitive
  };
  for (const Row& row : rows) {
    SCOPED_TRACE(std::string(row.method) + " " + row.path);
    Response r = DispatchTo(router_, row.method, row.path);
    EXPECT_EQ(r.status, row.status) << r.body;
    EXPECT_NE(r.body.find(row.body), std::string::npos) << r.body;
    if (row.status >= 400) {
      EXPECT_EQ(r.content_type, "application/json");
      EXPECT_NE(r.body.find("\"error_description\""), std::string::npos) << r.body;
      ASSERT_EQ(r.headers.count("cache-control"), 1u);
      EXPECT_EQ(r.headers.find("Cache-Control")->second, "no-store");
    }
  }
}

TEST_F(RouterTest, MethodNotAllowedListsAllow) {
  Response r = DispatchTo(router_, "PUT", "/t1/v2.0/keys");
  EXPECT_EQ(r.status, 405);
  ASSERT_EQ(r.headers.count("Allow"), 1u);
  EXPECT_EQ(r.headers.find("allow")->second, "DELETE, GET, HEAD");
  EXPECT_EQ(
      r.body,
      R"({"error":"method_not_allowed","error_description":"method not allowed at this path"})");
}

TEST(RouterAddTest, RefusesBadRoutes) {
  Router router;
  ASSERT_TRUE(router.Add("GET", "/{tenant}/x", Named("a")).ok());
  struct Row {
    const char* method;
    const char* pattern;
    StatusCode code;
  };
  const Row rows[] = {
      {"GET", "/{other}/x", StatusCode::kAlreadyExists},  // same shape, other param name
      {"GET", "/{tenant}/x", StatusCode::kAlreadyExists},
      {"", "/a", StatusCode::kInvalidArgument},
      {"G T", "/a", StatusCode::kInvalidArgument},
      {"GET", "", StatusCode::kInvalidArgument},
      {"GET", "a", StatusCode::kInvalidArgument},
      {"GET", "/a//b", StatusCode::kInvalidArgument},
      {"GET", "/a/", StatusCode::kInvalidArgument},
      {"GET", "/{}", StatusCode::kInvalidArgument},
      {"GET", "/{a", StatusCode::kInvalidArgument},
      {"GET", "/{a-b}", StatusCode::kInvalidArgument},
      {"GET", "/{a}/{a}", StatusCode::kInvalidArgument},
      {"GET", "/a%20b", StatusCode::kInvalidArgument},
      {"GET", "/a?b", StatusCode::kInvalidArgument},
      {"GET", "/..", StatusCode::kInvalidArgument},
  };
  for (const Row& row : rows) {
    SCOPED_TRACE(std::string(row.method) + " " + row.pattern);
    Status s = router.Add(row.method, row.pattern, Named("b"));
    EXPECT_EQ(s.code(), row.code) << s.ToString();
  }
  EXPECT_TRUE(router.Add("POST", "/{tenant}/x", Named("c")).ok());  // other method
  EXPECT_TRUE(router.Add("GET", "/{tenant}/y", Named("d")).ok());
  EXPECT_EQ(router.size(), 3u);
}

TEST(RouterDispatchTest, HandlerExceptionBecomesGeneric500) {
  std::mutex mu;
  std::vector<std::string> lines;
  SetLogSink(
      [&](LogLevel, std::string_view line) {
        std::lock_guard<std::mutex> lock(mu);
        lines.emplace_back(line);
      },
      LogLevel::kDebug);
  Router router;
  ASSERT_TRUE(router
                  .Add("GET", "/boom",
                       [](const Request&) -> Response {
                         throw std::runtime_error("secret database password hunter2");
                       })
                  .ok());
  ASSERT_TRUE(router.Add("GET", "/int", [](const Request&) -> Response { throw 42; }).ok());
  Request req;
  req.method = "GET";
  req.path = "/boom";
  req.request_id = "rid-1";
  Response r = router.Dispatch(&req);
  EXPECT_EQ(r.status, 500);
  EXPECT_EQ(r.body, R"({"error":"server_error","error_description":"internal server error"})");
  EXPECT_EQ(r.body.find("hunter2"), std::string::npos);
  req.path = "/int";
  EXPECT_EQ(router.Dispatch(&req).status, 500);
  SetLogSink(nullptr);
  ASSERT_EQ(lines.size(), 2u);
  EXPECT_NE(lines[0].find("rid-1"), std::string::npos);
  EXPECT_NE(lines[0].find("GET /boom"), std::string::npos);
}

TEST(RouterMergeTest, ServesBothAndRefusesConflicts) {
  Router a, b, c;
  ASSERT_TRUE(a.Add("GET", "/a", [](const Request&) { return JsonResponse(200, "{\"a\":1}"); }).ok());
  ASSERT_TRUE(b.Add("GET", "/b/{x}", [](const Request&) { return JsonResponse(200, "{}"); }).ok());
  ASSERT_TRUE(c.Add("GET", "/a", [](const Request&) { return JsonResponse(201, "{}"); }).ok());
  ASSERT_TRUE(a.Merge(b).ok());
  EXPECT_EQ(a.size(), 2u);
  Request req;
  req.method = "GET";
  req.path = "/b/7";
  EXPECT_EQ(a.Dispatch(&req).status, 200);
  EXPECT_EQ(req.PathParam("x"), "7");
  Status s = a.Merge(c);
  EXPECT_EQ(s.code(), StatusCode::kAlreadyExists);
  req.path = "/a";
  EXPECT_EQ(a.Dispatch(&req).body, "{\"a\":1}");
}

TEST(RequestTest, ClientIpDropsThePortAndBrackets) {
  Request r;
  for (const auto& [remote, ip] : std::vector<std::pair<std::string, std::string>>{
           {"127.0.0.1:40522", "127.0.0.1"}, {"[::1]:443", "::1"}, {"[2001:db8::7]:80", "2001:db8::7"}}) {
    r.remote_address = remote;
    EXPECT_EQ(r.ClientIp(), ip) << remote;
  }
}

}  // namespace
}  // namespace kw::http
