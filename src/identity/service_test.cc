// End-to-end tests of the identity service: the service and a real http::Server on an ephemeral
// port, driven over HTTP by a minimal blocking client.
#include "identity/service.h"

#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <memory>
#include <thread>
#include <mutex>
#include <string>
#include <vector>

#include <fmt/format.h>

#include "core/base64url.h"
#include "core/json.h"
#include "core/log.h"
#include "http/form.h"
#include "http/server.h"
#include "http/test_client.h"
#include "identity/audit_log_sink.h"
#include "identity/test_util.h"
#include "token/jws.h"
#include "token/verifier.h"

namespace kw::identity {
namespace {

using token::Reason;

constexpr std::string_view kTenantA = "72f988bf-86f1-41af-91ab-2d7cd011db47";
constexpr std::string_view kTenantB = "4a1c2f3e-5b6d-4e7f-8a9b-0c1d2e3f4a5b";
constexpr std::string_view kAudience = "https://mail.keyward.test";
constexpr std::string_view kPassword = "correct horse battery staple";

using test::HttpResult;

// test::SendHttp, with the form content type on POSTs (every POST here is a form).
HttpResult Send(uint16_t port, std::string_view method, std::string_view target,
                std::string_view body = {}, std::string_view extra_headers = {}) {
  std::string headers(extra_headers);
  if (method == "POST") headers = "Content-Type: application/x-www-form-urlencoded\r\n" + headers;
  return test::SendHttp(port, method, target, body, headers);
}

std::string FormEncode(std::string_view s) {
  std::string out;
  for (unsigned char ch : s) {
    if (std::isalnum(ch) || ch == '-' || ch == '.' || ch == '_' || ch == '~') {
      out.push_back(static_cast<char>(ch));
    } else {
      out += fmt::format("%{:02X}", ch);
    }
  }
  return out;
}

std::string BasicHeader(std::string_view id, std::string_view secret) {
  std::string b = Base64UrlEncode(FormEncode(id) + ":" + FormEncode(secret));
  for (char& ch : b) {
    if (ch == '-') ch = '+';
    if (ch == '_') ch = '/';
  }
  while (b.size() % 4) b.push_back('=');
  return "Authorization: Basic " + b + "\r\n";
}

// A member of a JSON object body, as text ("" if absent or not a string / bool / int).
std::string Member(const std::string& body, std::string_view name) {
  json::StrictParser parser;
  auto doc = parser.Parse(body);
  if (!doc.ok() || !doc->is_object()) return "";
  auto v = doc->get_object().value()[name];
  if (v.error()) return "";
  if (v.is_string()) return std::string(v.get_string().value());
  if (v.is_bool()) return v.get_bool().value() ? "true" : "false";
  if (v.is_int64()) return std::to_string(v.get_int64().value());
  return json::Minify(v.value());
}

std::string KidOf(std::string_view token) {
  token::ParsedJws jws;
  std::string detail;
  if (token::ParseCompactJws(token, {}, &jws, &detail) != Reason::kOk) return "";
  return jws.kid;
}

class ServiceTest : public ::testing::Test {
 protected:
  void SetUp() override {
    kw::SetLogSink(
        [this](LogLevel, std::string_view line) {
          std::lock_guard lock(log_mu_);
          log_.emplace_back(line);
        },
        LogLevel::kDebug);
  }
  void TearDown() override {
    server_.reset();
    service_.reset();
    kw::SetLogSink(nullptr);
  }

  void Start(bool password_grant = false) {
    IdentityServiceOptions o;
    o.data_dir = dir_.File("data");
    o.enable_password_grant = password_grant;
    o.password_cost = PasswordCost::Minimum();
    o.tick_interval_seconds = tick_interval_seconds_;
    o.key_refresh_interval_ms = key_refresh_interval_ms_;
    o.clock = &clock_;
    o.audit_sink = audit_sink_;
    auto s = IdentityService::Open(o);
    ASSERT_TRUE(s.ok()) << s.status().ToString();
    service_ = std::move(*s);
    auto& d = service_->directory();
    if (!d.GetTenant(kTenantA).ok()) {
      ASSERT_TRUE(d.CreateTenant("Contoso", kTenantA).ok());
      ASSERT_TRUE(d.CreateTenant("Fabrikam", kTenantB).ok());
      ClientApp a;
      a.tenant_id = kTenantA;
      a.name = "mail-daemon";
      a.audiences = {std::string(kAudience), "https://calendar.keyward.test"};
      a.scopes = {"Mail.Read", "Mail.Send"};
      auto ca = d.CreateApp(a);
      ASSERT_TRUE(ca.ok());
      app_a_ = ca->app.client_id;
      secret_a_ = ca->client_secret;
      a.name = "other-daemon";
      auto ca2 = d.CreateApp(a);
      ASSERT_TRUE(ca2.ok());
      app_a2_ = ca2->app.client_id;
      secret_a2_ = ca2->client_secret;
      a.tenant_id = kTenantB;
      auto cb = d.CreateApp(a);
      ASSERT_TRUE(cb.ok());
      app_b_ = cb->app.client_id;
      secret_b_ = cb->client_secret;
      ASSERT_TRUE(d.CreateUser(kTenantA, "alice", kPassword).ok());
    }
    auto router = service_->BuildRouter();
    ASSERT_TRUE(router.ok());
    http::ServerOptions so;
    so.threads = 2;
    server_ = std::make_unique<http::Server>(so, std::move(*router));
    ASSERT_TRUE(server_->Start().ok());
    ASSERT_TRUE(
        service_->SetBaseUrl(fmt::format("http://127.0.0.1:{}", server_->port())).ok());
  }

  std::string Path(std::string_view tenant, std::string_view endpoint) {
    return fmt::format("/{}/v2.0/{}", tenant, endpoint);
  }
  HttpResult Post(std::string_view tenant, std::string_view endpoint, std::string_view body,
                  std::string_view headers = {}) {
    return Send(server_->port(), "POST", Path(tenant, endpoint), body, headers);
  }
  // client_credentials at tenant A with client_secret_post.
  HttpResult TokenA(std::string extra = "") {
    return Post(kTenantA, "token",
                fmt::format("grant_type=client_credentials&client_id={}&client_secret={}{}",
                            app_a_, secret_a_, extra));
  }
  std::string IssueA() {
    HttpResult r = TokenA();
    EXPECT_EQ(r.status, 200) << r.body;
    return Member(r.body, "access_token");
  }
  HttpResult IntrospectA(std::string_view token) {
    return Post(kTenantA, "introspect", "token=" + std::string(token),
                BasicHeader(app_a_, secret_a_));
  }
  token::VerifierPolicy PolicyA() {
    token::VerifierPolicy p;
    p.issuers = {service_->IssuerFor(kTenantA)};
    p.audiences = {std::string(kAudience)};
    return p;
  }

  int64_t tick_interval_seconds_ = 0;
  std::shared_ptr<AuditSink> audit_sink_;  // null: the file sink
  int64_t key_refresh_interval_ms_ = 1000;
  testing::TempDir dir_;
  FakeClock clock_{static_cast<int64_t>(::time(nullptr)) * 1000};
  std::unique_ptr<IdentityService> service_;
  std::unique_ptr<http::Server> server_;
  std::string app_a_, secret_a_, app_a2_, secret_a2_, app_b_, secret_b_;
  std::mutex log_mu_;
  std::vector<std::string> log_;
};

TEST_F(ServiceTest, DiscoveryDocument) {
  Start();
  std::string iss = service_->IssuerFor(kTenantA);
  HttpResult r = Send(server_->port(), "GET", Path(kTenantA, ".well-known/openid-configuration"));
  ASSERT_EQ(r.status, 200) << r.body;
  EXPECT_EQ(Member(r.body, "issuer"), iss);
  EXPECT_EQ(Member(r.body, "jwks_uri"), iss + "/keys");
  EXPECT_EQ(Member(r.body, "token_endpoint"), iss + "/token");
  EXPECT_EQ(Member(r.body, "introspection_endpoint"), iss + "/introspect");
  EXPECT_EQ(Member(r.body, "revocation_endpoint"), iss + "/revoke");
  EXPECT_EQ(Member(r.body, "authorization_endpoint"), iss + "/authorize");
  EXPECT_EQ(Member(r.body, "grant_types_supported"),
            R"(["authorization_code","refresh_token","client_credentials"])");
  EXPECT_EQ(Member(r.body, "token_endpoint_auth_methods_supported"),
            R"(["client_secret_basic","client_secret_post","none"])");
  EXPECT_EQ(Member(r.body, "id_token_signing_alg_values_supported"), R"(["ES256"])");
  EXPECT_EQ(Member(r.body, "response_types_supported"), R"(["code"])");
  EXPECT_EQ(Member(r.body, "code_challenge_methods_supported"), R"(["S256"])");

  HttpResult unknown = Send(server_->port(), "GET",
                            Path("00000000-0000-0000-0000-000000000000",
                                 ".well-known/openid-configuration"));
  EXPECT_EQ(unknown.status, 404);
  EXPECT_EQ(Member(unknown.body, "error"), "not_found");
}

TEST_F(ServiceTest, JwksVerifiesIssuedToken) {
  Start();
  std::string token = IssueA();
  HttpResult r = Send(server_->port(), "GET", Path(kTenantA, "keys"));
  ASSERT_EQ(r.status, 200);
  EXPECT_NE(r.body.find(KidOf(token)), std::string::npos);
  EXPECT_NE(r.body.find(R"("issuer":")" + service_->IssuerFor(kTenantA)), std::string::npos);
  auto store = token::TrustStore::FromJwks(r.body, "", token::IssuerKind::kEnterprise, kTenantA);
  ASSERT_TRUE(store.ok()) << store.status().ToString();
  token::Verifier verifier(std::shared_ptr<token::TrustStore>(std::move(*store)), PolicyA(),
                           &clock_);
  auto v = verifier.Verify(token);
  ASSERT_TRUE(v.ok()) << v.detail;
  EXPECT_EQ(v.token->claims.sub, app_a_);
  EXPECT_EQ(v.token->claims.azp, app_a_);
  EXPECT_EQ(v.token->claims.tid, kTenantA);
  EXPECT_EQ(v.token->claims.scp, "Mail.Read Mail.Send");
  EXPECT_FALSE(v.token->claims.jti.empty());
  EXPECT_EQ(*v.token->claims.exp - *v.token->claims.iat, 3600);
}

TEST_F(ServiceTest, ClientCredentialsBasicAndPost) {
  Start();
  HttpResult basic = Post(kTenantA, "token", "grant_type=client_credentials&scope=Mail.Read",
                          BasicHeader(app_a_, secret_a_));
  ASSERT_EQ(basic.status, 200) << basic.body;
  EXPECT_EQ(Member(basic.body, "token_type"), "Bearer");
  EXPECT_EQ(Member(basic.body, "expires_in"), "3600");
  EXPECT_EQ(Member(basic.body, "scope"), "Mail.Read");
  EXPECT_NE(basic.headers.find("Cache-Control: no-store"), std::string::npos);
  HttpResult post = TokenA("&resource=https%3A%2F%2Fcalendar.keyward.test");
  ASSERT_EQ(post.status, 200) << post.body;

  token::Verifier verifier(service_->trust_store(), PolicyA(), &clock_);
  auto v = verifier.Verify(Member(basic.body, "access_token"));
  ASSERT_TRUE(v.ok()) << v.detail;
  EXPECT_EQ(v.token->claims.aud, std::vector<std::string>{std::string(kAudience)});
  // The second token is for the calendar audience, not the mail one.
  EXPECT_EQ(verifier.Verify(Member(post.body, "access_token")).reason, Reason::kAudienceMismatch);
}

TEST_F(ServiceTest, TokenEndpointErrors) {
  Start();
  struct Case {
    std::string name, tenant, body, headers;
    int status;
    std::string error;
  };
  std::string cc = "grant_type=client_credentials";
  std::string post_a = fmt::format("&client_id={}&client_secret={}", app_a_, secret_a_);
  std::vector<Case> cases = {
      {"wrong secret (post)", std::string(kTenantA),
       fmt::format("{}&client_id={}&client_secret=wrong", cc, app_a_), "", 401, "invalid_client"},
      {"wrong secret (basic)", std::string(kTenantA), cc, BasicHeader(app_a_, "wrong"), 401,
       "invalid_client"},
      {"no client auth", std::string(kTenantA), cc, "", 401, "invalid_client"},
      {"unknown grant", std::string(kTenantA), "grant_type=urn:foo" + post_a, "", 400,
       "unsupported_grant_type"},
      {"password disabled", std::string(kTenantA),
       fmt::format("grant_type=password&username=alice&password={}{}", FormEncode(kPassword),
                   post_a),
       "", 400, "unsupported_grant_type"},
      {"scope not allowed", std::string(kTenantA), cc + "&scope=Mail.Read%20Admin" + post_a, "",
       400, "invalid_scope"},
      {"malformed scope", std::string(kTenantA), cc + "&scope=Mail.Read%20%20Mail.Send" + post_a,
       "", 400, "invalid_scope"},
      {"audience not allowed", std::string(kTenantA), cc + "&audience=https%3A%2F%2Fevil" + post_a,
       "", 400, "invalid_target"},
      {"duplicate parameter", std::string(kTenantA), cc + "&grant_type=client_credentials" + post_a,
       "", 400, "invalid_request"},
      {"malformed form", std::string(kTenantA), cc + "&&x=1" + post_a, "", 400, "invalid_request"},
      {"bad percent-encoding", std::string(kTenantA), cc + "&scope=%zz" + post_a, "", 400,
       "invalid_request"},
      {"missing grant_type", std::string(kTenantA), post_a.substr(1), "", 400, "invalid_request"},
      {"two auth methods", std::string(kTenantA),
       cc + "&client_secret=" + secret_a_, BasicHeader(app_a_, secret_a_), 400,
       "invalid_request"},
      {"tenant A app at tenant B", std::string(kTenantB), cc + post_a, "", 401,
       "invalid_client"},
      {"tenant A app at tenant B (basic)", std::string(kTenantB), cc,
       BasicHeader(app_a_, secret_a_), 401, "invalid_client"},
  };
  for (const Case& c : cases) {
    HttpResult r = Post(c.tenant, "token", c.body, c.headers);
    EXPECT_EQ(r.status, c.status) << c.name << ": " << r.body;
    EXPECT_EQ(Member(r.body, "error"), c.error) << c.name << ": " << r.body;
    // A Basic challenge unless the client authenticated in the body (RFC 6749 §5.2).
    bool challenged = r.headers.find("WWW-Authenticate: Basic") != std::string::npos;
    EXPECT_EQ(challenged, c.status == 401 && c.body.find("client_secret") == std::string::npos)
        << c.name;
  }
  // The right app at its own tenant B works.
  HttpResult ok = Post(kTenantB, "token", cc, BasicHeader(app_b_, secret_b_));
  EXPECT_EQ(ok.status, 200) << ok.body;
}

TEST_F(ServiceTest, PasswordGrantWhenEnabled) {
  Start(/*password_grant=*/true);
  std::string base = fmt::format("grant_type=password&username=alice&client_id={}&client_secret={}",
                                 app_a_, secret_a_);
  HttpResult ok = Post(kTenantA, "token", base + "&password=" + FormEncode(kPassword));
  ASSERT_EQ(ok.status, 200) << ok.body;
  token::Verifier verifier(service_->trust_store(), PolicyA(), &clock_);
  auto v = verifier.Verify(Member(ok.body, "access_token"));
  ASSERT_TRUE(v.ok()) << v.detail;
  auto users = service_->directory().ListUsers(kTenantA);
  ASSERT_TRUE(users.ok());
  EXPECT_EQ(v.token->claims.sub, users->front().id);

  HttpResult bad = Post(kTenantA, "token", base + "&password=wrong-password");
  EXPECT_EQ(bad.status, 400);
  EXPECT_EQ(Member(bad.body, "error"), "invalid_grant");
  std::string audit = testing::ReadAllOrEmpty(dir_.File("data/identity-audit.jsonl"));
  EXPECT_NE(audit.find("sign_in_failed"), std::string::npos);
  EXPECT_EQ(audit.find("wrong-password"), std::string::npos);
  EXPECT_EQ(audit.find(FormEncode(kPassword)), std::string::npos);
  EXPECT_EQ(audit.find(std::string(kPassword)), std::string::npos);
}

TEST_F(ServiceTest, ConsumerKeyForgingEnterpriseTokenIsInactive) {
  Start();
  // A token signed by the consumer ring's key but claiming tenant A's issuer: the 2023 forgery.
  auto consumer = service_->Ring(kConsumerTenantId);
  ASSERT_TRUE(consumer.ok());
  auto key = (*consumer)->SigningKey();
  ASSERT_TRUE(key.ok());
  ASSERT_TRUE(service_->Ring(kTenantA).ok());
  int64_t now = clock_.NowSeconds();
  std::string claims = fmt::format(
      R"({{"iss":"{}","tid":"{}","aud":"{}","sub":"{}","azp":"{}","jti":"forged-1","iat":{},"nbf":{},"exp":{}}})",
      service_->IssuerFor(kTenantA), kTenantA, kAudience, app_a_, app_a_, now, now, now + 600);
  auto forged = token::SignCompact(key->key, key->alg, key->kid, claims);
  ASSERT_TRUE(forged.ok());

  HttpResult r = IntrospectA(*forged);
  ASSERT_EQ(r.status, 200) << r.body;
  EXPECT_EQ(r.body, R"({"active":false})");
  token::Verifier verifier(service_->trust_store(), PolicyA(), &clock_);
  EXPECT_EQ(verifier.Verify(*forged).reason, Reason::kKeyIssuerMismatch);

  // The genuine token is active, with its claims.
  std::string genuine = IssueA();
  HttpResult g = IntrospectA(genuine);
  EXPECT_EQ(Member(g.body, "active"), "true") << g.body;
  EXPECT_EQ(Member(g.body, "client_id"), app_a_);
  EXPECT_EQ(Member(g.body, "tid"), kTenantA);
}

TEST_F(ServiceTest, RevokedTokenIsInactiveAcrossRestart) {
  Start();
  std::string token = IssueA();
  EXPECT_EQ(Member(IntrospectA(token).body, "active"), "true");
  // Another client may not revoke it.
  HttpResult other = Post(kTenantB, "revoke", "token=" + token, BasicHeader(app_b_, secret_b_));
  EXPECT_EQ(other.status, 200);  // not a valid token at tenant B: nothing to do
  EXPECT_EQ(Member(IntrospectA(token).body, "active"), "true");
  HttpResult other_a = Post(kTenantA, "revoke", "token=" + token, BasicHeader(app_a2_, secret_a2_));
  EXPECT_EQ(other_a.status, 400);
  EXPECT_EQ(Member(other_a.body, "error"), "unauthorized_client");
  EXPECT_EQ(Member(IntrospectA(token).body, "active"), "true");

  HttpResult rv = Post(kTenantA, "revoke", "token=" + token, BasicHeader(app_a_, secret_a_));
  EXPECT_EQ(rv.status, 200) << rv.body;
  EXPECT_EQ(IntrospectA(token).body, R"({"active":false})");
  // Revoking again and revoking garbage are fine.
  EXPECT_EQ(Post(kTenantA, "revoke", "token=" + token, BasicHeader(app_a_, secret_a_)).status, 200);
  EXPECT_EQ(Post(kTenantA, "revoke", "token=garbage", BasicHeader(app_a_, secret_a_)).status, 200);
  EXPECT_EQ(Post(kTenantA, "revoke", "token=x", BasicHeader(app_a_, "wrong")).status, 401);
  EXPECT_EQ(Post(kTenantA, "revoke", "", BasicHeader(app_a_, secret_a_)).status, 400);

  // After a restart on the same data directory (and the same base URL), still revoked; a
  // fresh token of the same key is still active.
  std::string base = service_->IssuerFor("x");
  server_.reset();
  service_.reset();
  IdentityServiceOptions o;
  o.data_dir = dir_.File("data");
  o.password_cost = PasswordCost::Minimum();
  o.tick_interval_seconds = 0;
  o.clock = &clock_;
  o.base_url = base.substr(0, base.size() - std::string_view("/x/v2.0").size());
  auto s = IdentityService::Open(o);
  ASSERT_TRUE(s.ok()) << s.status().ToString();
  service_ = std::move(*s);
  auto router = service_->BuildRouter();
  ASSERT_TRUE(router.ok());
  server_ = std::make_unique<http::Server>(http::ServerOptions{}, std::move(*router));
  ASSERT_TRUE(server_->Start().ok());
  EXPECT_EQ(IntrospectA(token).body, R"({"active":false})");
  std::string fresh = IssueA();
  EXPECT_EQ(KidOf(fresh), KidOf(token));
  EXPECT_EQ(Member(IntrospectA(fresh).body, "active"), "true");

  std::string audit = testing::ReadAllOrEmpty(dir_.File("data/identity-audit.jsonl"));
  EXPECT_NE(audit.find("\"type\":\"token_revoked\""), std::string::npos);
  EXPECT_NE(audit.find("\"type\":\"token_issued\""), std::string::npos);
}

TEST_F(ServiceTest, RevokedKeyMakesItsTokensInactiveAtOnce) {
  Start();
  std::string token = IssueA();
  EXPECT_EQ(Member(IntrospectA(token).body, "active"), "true");
  auto ring = service_->Ring(kTenantA);
  ASSERT_TRUE(ring.ok());
  ASSERT_TRUE((*ring)->Revoke(KidOf(token), "suspected theft").ok());
  EXPECT_EQ(IntrospectA(token).body, R"({"active":false})");
  // The next token is signed by a new key.
  std::string next = IssueA();
  EXPECT_NE(KidOf(next), KidOf(token));
  EXPECT_EQ(Member(IntrospectA(next).body, "active"), "true");
  HttpResult jwks = Send(server_->port(), "GET", Path(kTenantA, "keys"));
  EXPECT_EQ(jwks.body.find(KidOf(token)), std::string::npos);
}

TEST_F(ServiceTest, WorldReadableMasterKeyRefusesToStart) {
  ::mkdir(dir_.File("data").c_str(), 0700);
  testing::WriteWithMode(dir_.File("data/master.key"), std::string(64, 'a') + "\n", 0644);
  IdentityServiceOptions o;
  o.data_dir = dir_.File("data");
  o.tick_interval_seconds = 0;
  auto s = IdentityService::Open(o);
  ASSERT_FALSE(s.ok());
  EXPECT_EQ(s.status().code(), StatusCode::kPermissionDenied);
  EXPECT_NE(s.status().message().find("chmod 600"), std::string::npos) << s.status().message();
  EXPECT_FALSE(std::filesystem::exists(dir_.File("data/keyward.db")));

  testing::WriteWithMode(dir_.File("data/master.key"), "not a key\n", 0600);
  auto m = IdentityService::Open(o);
  ASSERT_FALSE(m.ok());
  EXPECT_EQ(m.status().code(), StatusCode::kInvalidArgument);
}

TEST_F(ServiceTest, MasterKeyCreatedPrivateOnFirstStart) {
  Start();
  struct stat st {};
  ASSERT_EQ(::stat(dir_.File("data/master.key").c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600u);
}

TEST_F(ServiceTest, SecretsNeverInResponsesLogsOrAudit) {
  Start(/*password_grant=*/true);
  std::vector<HttpResult> responses;
  responses.push_back(TokenA());
  responses.push_back(Post(kTenantA, "token", "grant_type=client_credentials",
                           BasicHeader(app_a_, secret_a_)));
  responses.push_back(Post(kTenantB, "token", "grant_type=client_credentials",
                           BasicHeader(app_a_, secret_a_)));
  responses.push_back(Post(kTenantA, "token", "grant_type=nope", BasicHeader(app_a_, secret_a_)));
  responses.push_back(Post(kTenantA, "token",
                           "grant_type=client_credentials&scope=Nope&client_id=" + app_a_ +
                               "&client_secret=" + secret_a_));
  responses.push_back(Post(kTenantA, "token",
                           fmt::format("grant_type=password&username=alice&password={}",
                                       FormEncode(kPassword)),
                           BasicHeader(app_a_, secret_a_)));
  std::string token = Member(responses[0].body, "access_token");
  responses.push_back(IntrospectA(token));
  responses.push_back(Post(kTenantA, "revoke", "token=" + token, BasicHeader(app_a_, secret_a_)));
  ASSERT_FALSE(token.empty());
  for (const auto& r : responses) {
    EXPECT_EQ(r.body.find(secret_a_), std::string::npos) << r.body;
    EXPECT_EQ(r.headers.find(secret_a_), std::string::npos);
  }
  std::string audit = testing::ReadAllOrEmpty(dir_.File("data/identity-audit.jsonl"));
  EXPECT_NE(audit.find("token_refused"), std::string::npos);
  for (std::string_view secret : {std::string_view(secret_a_), std::string_view(token),
                                  kPassword}) {
    EXPECT_EQ(audit.find(secret), std::string::npos) << secret;
  }
  std::lock_guard lock(log_mu_);
  EXPECT_FALSE(log_.empty());  // the access log at least
  for (const auto& line : log_) {
    EXPECT_EQ(line.find(secret_a_), std::string::npos) << line;
    EXPECT_EQ(line.find(token), std::string::npos) << line;
    EXPECT_EQ(line.find(kPassword), std::string::npos) << line;
  }
}

// ---- authorization code with PKCE, refresh tokens, admin API, cross-process revocation ----

constexpr std::string_view kRedirect = "http://127.0.0.1:9/callback";
constexpr std::string_view kVerifier = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";  // RFC 7636 B

// The value of header `name` in a raw header block ("" if absent).
std::string HeaderOf(const std::string& headers, std::string_view name) {
  std::string lower_headers = headers;
  for (char& c : lower_headers) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  std::string key = "\r\n" + std::string(name) + ": ";
  for (char& c : key) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  size_t at = lower_headers.find(key);
  if (at == std::string::npos) return "";
  size_t start = at + key.size();
  size_t end = headers.find("\r\n", start);
  return headers.substr(start, end == std::string::npos ? std::string::npos : end - start);
}

// The decoded query parameter `name` of a URL ("" if absent).
std::string QueryOf(const std::string& url, std::string_view name) {
  size_t q = url.find('?');
  if (q == std::string::npos) return "";
  auto params = http::ParseQuery(std::string_view(url).substr(q + 1));
  if (!params.ok()) return "";
  auto it = params->find(name);
  return it == params->end() ? "" : it->second;
}

class AuthorizationCodeTest : public ServiceTest {
 protected:
  void StartWithPublicApp() {
    Start();
    ClientApp a;
    a.tenant_id = kTenantA;
    a.name = "Keyward Mail web";
    a.confidential = false;
    a.redirect_uris = {std::string(kRedirect)};
    a.audiences = {std::string(kAudience)};
    a.scopes = {"Mail.Read"};
    auto made = service_->directory().CreateApp(a);
    ASSERT_TRUE(made.ok()) << made.status().ToString();
    public_app_ = made->app.client_id;
  }
  std::string AuthorizeQuery(std::string extra = "") {
    return fmt::format(
        "response_type=code&client_id={}&redirect_uri={}&scope={}&state=s123&nonce=n456"
        "&code_challenge={}&code_challenge_method=S256{}",
        public_app_, FormEncode(kRedirect), FormEncode("openid Mail.Read"), PkceS256(kVerifier),
        extra);
  }
  // Signs alice in at the login form; returns the redirect.
  HttpResult SignIn(std::string_view password = kPassword, std::string extra = "") {
    return Post(kTenantA, "authorize",
                AuthorizeQuery(extra) + "&username=alice&password=" + FormEncode(password));
  }
  std::string CodeForAlice() {
    HttpResult r = SignIn();
    EXPECT_EQ(r.status, 303) << r.body;
    return QueryOf(HeaderOf(r.headers, "Location"), "code");
  }
  HttpResult Redeem(std::string_view code, std::string_view verifier = kVerifier,
                    std::string_view redirect = kRedirect) {
    return Post(kTenantA, "token",
                fmt::format("grant_type=authorization_code&client_id={}&code={}&redirect_uri={}"
                            "&code_verifier={}",
                            public_app_, code, FormEncode(redirect), verifier));
  }
  HttpResult Refresh(std::string_view refresh_token) {
    return Post(kTenantA, "token",
                fmt::format("grant_type=refresh_token&client_id={}&refresh_token={}",
                            public_app_, refresh_token));
  }
  std::string public_app_;
};

TEST_F(AuthorizationCodeTest, LoginFormCodePkceIdTokenAndRotatingRefresh) {
  StartWithPublicApp();
  HttpResult form = Send(server_->port(), "GET", Path(kTenantA, "authorize?" + AuthorizeQuery()));
  ASSERT_EQ(form.status, 200) << form.body;
  EXPECT_NE(HeaderOf(form.headers, "Content-Type").find("text/html"), std::string::npos);
  EXPECT_EQ(HeaderOf(form.headers, "X-Frame-Options"), "DENY");
  EXPECT_NE(form.body.find("name=\"password\""), std::string::npos);
  EXPECT_NE(form.body.find("value=\"s123\""), std::string::npos);
  EXPECT_NE(form.body.find("Keyward Mail web"), std::string::npos);

  HttpResult wrong = SignIn("not the password");
  EXPECT_EQ(wrong.status, 401);
  EXPECT_NE(wrong.body.find("Invalid user name or password"), std::string::npos);
  EXPECT_EQ(HeaderOf(wrong.headers, "Location"), "");

  HttpResult ok = SignIn();
  ASSERT_EQ(ok.status, 303) << ok.body;
  std::string location = HeaderOf(ok.headers, "Location");
  EXPECT_EQ(location.rfind(std::string(kRedirect) + "?", 0), 0u) << location;
  EXPECT_EQ(QueryOf(location, "state"), "s123");
  EXPECT_EQ(QueryOf(location, "iss"), service_->IssuerFor(kTenantA));
  std::string code = QueryOf(location, "code");
  ASSERT_FALSE(code.empty());

  HttpResult tokens = Redeem(code);
  ASSERT_EQ(tokens.status, 200) << tokens.body;
  std::string access = Member(tokens.body, "access_token");
  std::string id_token = Member(tokens.body, "id_token");
  std::string refresh = Member(tokens.body, "refresh_token");
  ASSERT_FALSE(access.empty());
  ASSERT_FALSE(id_token.empty());
  ASSERT_FALSE(refresh.empty());
  EXPECT_EQ(Member(tokens.body, "scope"), "openid Mail.Read");

  token::Verifier verifier(service_->trust_store(), PolicyA(), &clock_);
  auto v = verifier.Verify(access);
  ASSERT_TRUE(v.ok()) << v.detail;
  EXPECT_EQ(v.token->claims.azp, public_app_);
  EXPECT_EQ(v.token->claims.scp, "Mail.Read");
  auto alice = service_->directory().ListUsers(kTenantA);
  ASSERT_TRUE(alice.ok());
  EXPECT_EQ(v.token->claims.sub, alice->front().id);

  token::VerifierPolicy id_policy = PolicyA();
  id_policy.audiences = {public_app_};
  token::Verifier id_verifier(service_->trust_store(), id_policy, &clock_);
  auto idv = id_verifier.Verify(id_token);
  ASSERT_TRUE(idv.ok()) << idv.detail;
  EXPECT_NE(idv.token->claims.json.find("\"nonce\":\"n456\""), std::string::npos);

  // Rotation: each refresh returns a new refresh token.
  HttpResult r1 = Refresh(refresh);
  ASSERT_EQ(r1.status, 200) << r1.body;
  std::string refresh2 = Member(r1.body, "refresh_token");
  std::string access2 = Member(r1.body, "access_token");
  ASSERT_FALSE(refresh2.empty());
  EXPECT_NE(refresh2, refresh);
  EXPECT_EQ(Member(IntrospectA(access2).body, "active"), "true");

  // Reuse of the first refresh token: refused, and the whole family dies, access tokens too.
  HttpResult reuse = Refresh(refresh);
  EXPECT_EQ(reuse.status, 400);
  EXPECT_EQ(Member(reuse.body, "error"), "invalid_grant");
  HttpResult after = Refresh(refresh2);
  EXPECT_EQ(Member(after.body, "error"), "invalid_grant");
  EXPECT_EQ(IntrospectA(access).body, R"({"active":false})");
  EXPECT_EQ(IntrospectA(access2).body, R"({"active":false})");
  std::string audit = testing::ReadAllOrEmpty(dir_.File("data/identity-audit.jsonl"));
  EXPECT_NE(audit.find("refresh token reuse"), std::string::npos);
  EXPECT_NE(audit.find("sign_in_failed"), std::string::npos);
  // No code, token, refresh token or password in the audit log or any log line.
  std::vector<std::string> secrets = {code, access, id_token, refresh, refresh2,
                                      std::string(kPassword), "not the password"};
  for (const auto& secret : secrets) EXPECT_EQ(audit.find(secret), std::string::npos) << secret;
  std::lock_guard lock(log_mu_);
  for (const auto& line : log_) {
    for (const auto& secret : secrets) EXPECT_EQ(line.find(secret), std::string::npos) << line;
  }
}

TEST_F(AuthorizationCodeTest, AuthorizationRequestErrors) {
  StartWithPublicApp();
  auto get = [&](std::string query) {
    return Send(server_->port(), "GET", Path(kTenantA, "authorize?" + query));
  };
  // Client and redirect URI unverified: an error page, never a redirect.
  HttpResult unknown = get("response_type=code&client_id=nope&redirect_uri=" +
                           FormEncode(kRedirect));
  EXPECT_EQ(unknown.status, 400);
  EXPECT_EQ(HeaderOf(unknown.headers, "Location"), "");
  HttpResult bad_redirect = get(fmt::format(
      "response_type=code&client_id={}&redirect_uri={}&code_challenge={}"
      "&code_challenge_method=S256",
      public_app_, FormEncode("https://evil.example/cb"), PkceS256(kVerifier)));
  EXPECT_EQ(bad_redirect.status, 400);
  EXPECT_EQ(HeaderOf(bad_redirect.headers, "Location"), "");
  HttpResult other_tenant = Send(server_->port(), "GET",
                                 Path(kTenantB, "authorize?" + AuthorizeQuery()));
  EXPECT_EQ(other_tenant.status, 400);

  struct Case {
    std::string query;
    std::string error;
  };
  const std::string base = fmt::format("client_id={}&redirect_uri={}&state=xyz", public_app_,
                                       FormEncode(kRedirect));
  const std::string pkce = "&code_challenge=" + PkceS256(kVerifier);
  std::vector<Case> cases = {
      {base + "&response_type=token" + pkce + "&code_challenge_method=S256",
       "unsupported_response_type"},
      {base + "&response_type=code", "invalid_request"},                               // no PKCE
      {base + "&response_type=code" + pkce + "&code_challenge_method=plain", "invalid_request"},
      {base + "&response_type=code&code_challenge=short&code_challenge_method=S256",
       "invalid_request"},
      {base + "&response_type=code" + pkce + "&code_challenge_method=S256&scope=Mail.Send",
       "invalid_scope"},
      {base + "&response_type=code" + pkce + "&code_challenge_method=S256&resource=https%3A%2F%2Fx",
       "invalid_target"},
  };
  for (const Case& c : cases) {
    HttpResult r = get(c.query);
    ASSERT_EQ(r.status, 303) << c.query << "\n" << r.body;
    std::string location = HeaderOf(r.headers, "Location");
    EXPECT_EQ(QueryOf(location, "error"), c.error) << c.query;
    EXPECT_EQ(QueryOf(location, "state"), "xyz");
    EXPECT_TRUE(QueryOf(location, "code").empty());
  }
}

TEST_F(AuthorizationCodeTest, CodeRedemptionErrors) {
  StartWithPublicApp();
  // PKCE mismatch, and the code is spent by the failed attempt.
  std::string code = CodeForAlice();
  HttpResult mismatch = Redeem(code, "a-different-verifier-that-is-long-enough-to-be-valid-1234");
  EXPECT_EQ(Member(mismatch.body, "error"), "invalid_grant");
  EXPECT_NE(Member(mismatch.body, "error_description").find("pkce_mismatch"), std::string::npos);
  EXPECT_EQ(Member(Redeem(code).body, "error"), "invalid_grant");

  // Wrong redirect URI at the token endpoint.
  code = CodeForAlice();
  HttpResult wrong_redirect = Redeem(code, kVerifier, "http://127.0.0.1:9/other");
  EXPECT_NE(Member(wrong_redirect.body, "error_description").find("wrong_redirect_uri"),
            std::string::npos);

  // Replay: the second redemption fails and revokes what the first one issued.
  code = CodeForAlice();
  HttpResult first = Redeem(code);
  ASSERT_EQ(first.status, 200) << first.body;
  std::string access = Member(first.body, "access_token");
  EXPECT_EQ(Member(IntrospectA(access).body, "active"), "true");
  HttpResult replay = Redeem(code);
  EXPECT_EQ(replay.status, 400);
  EXPECT_NE(Member(replay.body, "error_description").find("code_replayed"), std::string::npos);
  EXPECT_EQ(IntrospectA(access).body, R"({"active":false})");
  EXPECT_EQ(Member(Refresh(Member(first.body, "refresh_token")).body, "error"), "invalid_grant");

  // Expired code.
  code = CodeForAlice();
  clock_.AdvanceSeconds(GrantStore::kCodeLifetimeSeconds + 1);
  EXPECT_NE(Member(Redeem(code).body, "error_description").find("expired"), std::string::npos);

  // Missing verifier; a public client may not use client_credentials; a confidential client
  // must authenticate; unknown grant types.
  EXPECT_EQ(Member(Post(kTenantA, "token",
                        "grant_type=authorization_code&code=x&redirect_uri=y&client_id=" +
                            public_app_).body,
                   "error"),
            "invalid_request");
  EXPECT_EQ(Member(Post(kTenantA, "token", "grant_type=client_credentials&client_id=" +
                                               public_app_).body,
                   "error"),
            "unauthorized_client");
  HttpResult no_secret =
      Post(kTenantA, "token", "grant_type=client_credentials&client_id=" + app_a_);
  EXPECT_EQ(no_secret.status, 401);
  EXPECT_EQ(Member(no_secret.body, "error"), "invalid_client");
  EXPECT_EQ(Member(Post(kTenantA, "token", "grant_type=urn%3Aietf%3Aparams%3Aoauth%3Agrant-type"
                                           "%3Ajwt-bearer&client_id=" + public_app_).body,
                   "error"),
            "unsupported_grant_type");
  EXPECT_EQ(Member(Refresh("no-such-refresh-token").body, "error"), "invalid_grant");
}

TEST_F(AuthorizationCodeTest, RevokingARefreshTokenKillsItsFamily) {
  StartWithPublicApp();
  HttpResult tokens = Redeem(CodeForAlice());
  ASSERT_EQ(tokens.status, 200) << tokens.body;
  std::string refresh = Member(tokens.body, "refresh_token");
  HttpResult revoked = Post(kTenantA, "revoke",
                            fmt::format("token={}&token_type_hint=refresh_token&client_id={}",
                                        refresh, public_app_));
  EXPECT_EQ(revoked.status, 200) << revoked.body;
  EXPECT_EQ(Member(Refresh(refresh).body, "error"), "invalid_grant");
  EXPECT_EQ(IntrospectA(Member(tokens.body, "access_token")).body, R"({"active":false})");
}

TEST_F(ServiceTest, AdminApiListsRotatesAndRevokesKeys) {
  Start();
  std::string admin = testing::ReadAllOrEmpty(dir_.File("data/admin.token"));
  while (!admin.empty() && admin.back() == '\n') admin.pop_back();
  ASSERT_GE(admin.size(), 32u);
  struct stat st {};
  ASSERT_EQ(::stat(dir_.File("data/admin.token").c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600u);
  std::string auth = "Authorization: Bearer " + admin + "\r\n";

  EXPECT_EQ(Send(server_->port(), "GET", "/admin/keys").status, 401);
  EXPECT_EQ(Send(server_->port(), "GET", "/admin/keys", "", "Authorization: Bearer nope\r\n").status,
            401);
  std::string token = IssueA();
  std::string old_kid = KidOf(token);
  HttpResult list = Send(server_->port(), "GET", "/admin/keys", "", auth);
  ASSERT_EQ(list.status, 200) << list.body;
  EXPECT_NE(list.body.find(old_kid), std::string::npos);
  EXPECT_EQ(list.body.find("sealed"), std::string::npos);

  HttpResult no_reason = Send(server_->port(), "POST",
                              fmt::format("/admin/tenants/{}/keys/rotate", kTenantA), "", auth);
  EXPECT_EQ(no_reason.status, 400);
  HttpResult rotated = Send(server_->port(), "POST",
                            fmt::format("/admin/tenants/{}/keys/rotate", kTenantA),
                            "reason=drill&immediate=true", auth);
  ASSERT_EQ(rotated.status, 200) << rotated.body;
  std::string new_kid = Member(rotated.body, "kid");
  EXPECT_NE(new_kid, old_kid);
  EXPECT_EQ(KidOf(IssueA()), new_kid);
  // The old key still verifies the tokens it signed (retiring), until revoked.
  EXPECT_EQ(Member(IntrospectA(token).body, "active"), "true");
  HttpResult revoked = Send(server_->port(), "POST", fmt::format("/admin/keys/{}/revoke", old_kid),
                            "reason=compromised", auth);
  ASSERT_EQ(revoked.status, 200) << revoked.body;
  EXPECT_EQ(IntrospectA(token).body, R"({"active":false})");
  EXPECT_EQ(Send(server_->port(), "POST", "/admin/keys/nope/revoke", "reason=x", auth).status, 404);
}

TEST_F(ServiceTest, RevocationByAnotherProcessArrivesWithinOneRefreshInterval) {
  tick_interval_seconds_ = 60;
  key_refresh_interval_ms_ = 50;
  Start();
  std::string token = IssueA();
  ASSERT_EQ(Member(IntrospectA(token).body, "active"), "true");
  // Another process: its own connection to keys.db, as `keyward keys revoke` has.
  auto other = SqliteKeyStore::OpenFile(dir_.File("data/keys.db"));
  ASSERT_TRUE(other.ok());
  auto rec = (*other)->LoadKid(KidOf(token));
  ASSERT_TRUE(rec.ok());
  rec->state = SigningKeyState::kRevoked;
  rec->revoked_at = clock_.NowSeconds();
  rec->revoked_reason = "revoked elsewhere";
  auto start = std::chrono::steady_clock::now();
  ASSERT_TRUE((*other)->Update(*rec).ok());
  std::string body;
  while (std::chrono::steady_clock::now() - start < std::chrono::seconds(5)) {
    body = IntrospectA(token).body;
    if (body == R"({"active":false})") break;
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
  }
  auto took = std::chrono::duration_cast<std::chrono::milliseconds>(
      std::chrono::steady_clock::now() - start);
  EXPECT_EQ(body, R"({"active":false})");
  // One refresh interval, plus scheduling slack on a loaded 2-core machine.
  EXPECT_LE(took.count(), 50 + 450) << "took " << took.count() << " ms";
  std::printf("cross-process revocation took %lld ms (refresh interval 50 ms)\n",
              static_cast<long long>(took.count()));
}

TEST_F(ServiceTest, SecondServiceOnTheSameDirectoryIsRefused) {
  Start();
  IdentityServiceOptions o;
  o.data_dir = dir_.File("data");
  o.tick_interval_seconds = 0;
  auto second = IdentityService::Open(o);
  ASSERT_FALSE(second.ok());
  EXPECT_EQ(second.status().code(), StatusCode::kFailedPrecondition);
  EXPECT_NE(second.status().message().find("admin API"), std::string::npos);
}

TEST_F(ServiceTest, TokenEventsReachTheAuditLogWithTheirFacts) {
  auto writer = std::make_shared<audit::MemoryAuditWriter>();
  audit_sink_ = std::make_shared<AuditLogSink>(writer);
  Start();
  HttpResult r = Post(kTenantA, "token",
                      fmt::format("grant_type=client_credentials&client_id={}&client_secret={}",
                                  app_a_, secret_a_),
                      "User-Agent: audit-test/1.0\r\n");
  ASSERT_EQ(r.status, 200) << r.body;
  token::Verifier verifier(service_->trust_store(), PolicyA(), &clock_);
  auto v = verifier.Verify(Member(r.body, "access_token"));
  ASSERT_TRUE(v.ok());
  Post(kTenantA, "token", "grant_type=client_credentials&client_id=" + app_a_ + "&client_secret=no");
  bool issued = false, refused = false, key_events = false;
  for (const auto& rec : writer->records()) {
    key_events |= rec.operation == "KeyGenerated";
    if (rec.operation == "TokenIssued") {
      issued = true;
      EXPECT_EQ(rec.token_id, v.token->claims.jti);
      EXPECT_EQ(rec.client_app_id, app_a_);
      EXPECT_EQ(rec.tenant_id, kTenantA);
      EXPECT_EQ(rec.token_kid, v.token->kid);
      EXPECT_EQ(rec.client_ip, "127.0.0.1");
      EXPECT_EQ(rec.user_agent, "audit-test/1.0");
      EXPECT_EQ(rec.result, "Succeeded");
    }
    if (rec.operation == "TokenRefused") {
      refused = true;
      EXPECT_EQ(rec.result, "Failed");
    }
    EXPECT_GT(rec.seq, 0u);
  }
  EXPECT_TRUE(issued);
  EXPECT_TRUE(refused);
  EXPECT_TRUE(key_events);
  EXPECT_EQ(AuditOperationName(AuditEventType::kKeyAgeWarning), "KeyAgeWarning");
}

}  // namespace
}  // namespace kw::identity
