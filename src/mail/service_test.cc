// End-to-end tests of the mail service: a real http::Server on an ephemeral port, a TrustStore
// with keys made here, tokens signed with token::SignCompact, driven over HTTP.
#include "mail/service.h"

#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <poll.h>
#include <chrono>
#include <thread>
#include <sys/socket.h>
#include <unistd.h>

#include <fmt/format.h>

#include "crypto/crypto.h"
#include "http/server.h"
#include "http/test_client.h"
#include "mail/test_util.h"
#include "token/jws.h"

namespace kw::mail {
namespace {

using testing::Crlf;

constexpr std::string_view kTenantA = "72f988bf-86f1-41af-91ab-2d7cd011db47";
constexpr std::string_view kTenantB = "4a1c2f3e-5b6d-4e7f-8a9b-0c1d2e3f4a5b";
constexpr std::string_view kConsumer = "9188040d-6c67-4c5b-b112-36a304b66dad";
constexpr std::string_view kAudience = "https://mail.keyward.test";
constexpr std::string_view kTemplate = "https://login.keyward.test/{tenantid}/v2.0";
constexpr std::string_view kStormUserAgent =
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/92.0.4515.159 Safari/537.36";
constexpr int64_t kNow = 1'700'000'000;

std::string IssuerOf(std::string_view tenant) {
  return fmt::format("https://login.keyward.test/{}/v2.0", tenant);
}

using test::HttpResult;

HttpResult Send(uint16_t port, std::string_view method, std::string_view target, std::string_view body,
                std::string_view extra_headers) {
  return test::SendHttp(port, method, target, body, extra_headers);
}

// An open event-source connection, read with deadlines (the response never ends by itself).
class EventStream {
 public:
  EventStream(uint16_t port, std::string_view target, std::string_view headers) {
    fd_ = ::socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_port = htons(port);
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (::connect(fd_, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) return;
    std::string req = fmt::format("GET {} HTTP/1.1\r\nHost: 127.0.0.1\r\n{}\r\n", target, headers);
    ::send(fd_, req.data(), req.size(), MSG_NOSIGNAL);
  }
  ~EventStream() { ::close(fd_); }
  // Reads until `needle` arrived, the peer closed, or `ms` passed; returns everything so far.
  const std::string& ReadUntil(std::string_view needle, int ms = 3000) {
    auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(ms);
    while (text_.find(needle) == std::string::npos && !closed_) {
      auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now()).count();
      if (left <= 0) break;
      pollfd p{fd_, POLLIN, 0};
      if (::poll(&p, 1, static_cast<int>(left)) <= 0) break;
      char buf[4096];
      ssize_t n = ::recv(fd_, buf, sizeof(buf), 0);
      if (n <= 0) {
        closed_ = true;
        break;
      }
      text_.append(buf, static_cast<size_t>(n));
    }
    return text_;
  }
  bool closed() const { return closed_; }
  size_t Count(std::string_view needle) const {
    size_t n = 0;
    for (size_t at = text_.find(needle); at != std::string::npos; at = text_.find(needle, at + 1)) ++n;
    return n;
  }

 private:
  int fd_ = -1;
  bool closed_ = false;
  std::string text_;
};

class MailServiceTest : public ::testing::Test {
 protected:
  void SetUp() override { Start(); }
  void TearDown() override {
    server_.reset();
    service_.reset();
  }

  void AddKey(const std::string& kid, std::string issuer, token::IssuerKind kind, std::string_view tenant) {
    auto priv = crypto::PrivateKey::Generate(crypto::Algorithm::kES256).value();
    token::TrustedKeySpec spec;
    spec.kid = kid;
    spec.issuer = std::move(issuer);
    spec.kind = kind;
    spec.tenant_id = std::string(tenant);
    spec.alg = crypto::Algorithm::kES256;
    spec.key = priv.public_key();
    ASSERT_TRUE(store_->Add(std::move(spec)).ok());
    keys_.insert_or_assign(kid, std::move(priv));
  }

  void Start(double rate = 0) {
    store_ = std::make_shared<token::TrustStore>();
    AddKey("a-es", IssuerOf(kTenantA), token::IssuerKind::kEnterprise, kTenantA);
    AddKey("b-es", IssuerOf(kTenantB), token::IssuerKind::kEnterprise, kTenantB);
    AddKey("consumer-1", IssuerOf(kConsumer), token::IssuerKind::kConsumer, kConsumer);
    MailServiceOptions o;
    o.data_dir = dir_.File("data");
    o.trust_store = store_;
    o.issuers = {std::string(kTemplate)};
    o.audience = std::string(kAudience);
    o.audit = &audit_;
    o.clock = &clock_;
    o.rate_per_second = rate;
    o.rate_burst = 1;
    auto s = MailService::Open(o);
    ASSERT_TRUE(s.ok()) << s.status().ToString();
    service_ = std::move(*s);
    auto router = service_->BuildRouter();
    ASSERT_TRUE(router.ok());
    http::ServerOptions so;
    so.threads = 2;
    so.max_body_bytes = 8 << 20;
    server_ = std::make_unique<http::Server>(so, std::move(*router));
    ASSERT_TRUE(server_->Start().ok());
    ASSERT_TRUE(service_->SetBaseUrl(fmt::format("http://127.0.0.1:{}", server_->port())).ok());
  }

  std::string Token(const std::string& kid, std::string_view tenant, std::string_view sub,
                    std::string_view azp = "mail-web", std::string_view scp = "Mail.Read",
                    std::string_view jti = "jti-1", std::string_view iss_tenant = {}) {
    std::string claims = fmt::format(
        R"({{"iss":"{}","tid":"{}","aud":"{}","sub":"{}","azp":"{}","scp":"{}","jti":"{}","iat":{},"nbf":{},"exp":{},"preferred_username":"{}@contoso.test"}})",
        IssuerOf(iss_tenant.empty() ? tenant : iss_tenant), tenant, kAudience, sub, azp, scp, jti, kNow,
        kNow, kNow + 3600, sub);
    return token::SignCompact(keys_.at(kid), crypto::Algorithm::kES256, kid, claims).value();
  }
  std::string AliceToken() { return Token("a-es", kTenantA, "alice"); }
  std::string BobToken() { return Token("b-es", kTenantB, "bob"); }

  HttpResult Get(std::string_view target, const std::string& token) {
    return Send(server_->port(), "GET", target, "",
                fmt::format("Authorization: Bearer {}\r\nUser-Agent: {}\r\n", token, kStormUserAgent));
  }
  HttpResult Post(std::string_view target, std::string_view body, const std::string& token,
                  std::string_view content_type = "application/json") {
    return Send(server_->port(), "POST", target, body,
                fmt::format("Authorization: Bearer {}\r\nUser-Agent: {}\r\nContent-Type: {}\r\n", token,
                            kStormUserAgent, content_type));
  }
  std::string SessionAccount(const std::string& token) {
    HttpResult r = Get("/.well-known/jmap", token);
    EXPECT_EQ(r.status, 200) << r.body;
    auto v = ParseJson(r.body);
    if (!v.ok()) return "";
    const Value* p = v->Find("primaryAccounts");
    const Value* id = p ? p->Find(kCapMail) : nullptr;
    return id && id->is_string() ? id->as_string() : "";
  }
  std::string Auth(const std::string& token) {
    return fmt::format("Authorization: Bearer {}\r\nUser-Agent: {}\r\n", token, kStormUserAgent);
  }
  bool WaitStreams(size_t n) {
    for (int i = 0; i < 300; ++i) {
      if (service_->push().open_streams() == n) return true;
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    return false;
  }
  Value Api(const std::string& token, std::string_view calls, int* status = nullptr) {
    HttpResult r = Post("/jmap/api",
                        fmt::format(R"({{"using":["urn:ietf:params:jmap:core","urn:ietf:params:jmap:mail"],"methodCalls":{}}})", calls),
                        token);
    if (status) *status = r.status;
    auto v = ParseJson(r.body);
    return v.ok() ? *v : Value();
  }

  FakeClock clock_{kNow * 1000};
  testing::TempDir dir_;
  testing::RecordingAuditWriter audit_;
  std::shared_ptr<token::TrustStore> store_;
  std::map<std::string, crypto::PrivateKey> keys_;
  std::unique_ptr<MailService> service_;
  std::unique_ptr<http::Server> server_;
};

TEST_F(MailServiceTest, SessionProvisionsAndRecordsLogin) {
  HttpResult r = Get("/.well-known/jmap", AliceToken());
  ASSERT_EQ(r.status, 200) << r.body;
  EXPECT_NE(r.headers.find("Cache-Control: no-cache"), std::string::npos);
  auto v = ParseJson(r.body);
  ASSERT_TRUE(v.ok());
  EXPECT_EQ(v->Find("accounts")->as_object().size(), 1u);
  EXPECT_EQ(v->Find("username")->as_string(), "alice@contoso.test");
  EXPECT_EQ(v->Find("apiUrl")->as_string(), fmt::format("http://127.0.0.1:{}/jmap/api", server_->port()));
  EXPECT_EQ(v->Find("capabilities")->Find(kCapCore)->Find("maxObjectsInGet")->as_int(), 500);
  auto recs = audit_.records();
  ASSERT_EQ(recs.size(), 1u);
  EXPECT_EQ(recs[0].operation, "MailboxLogin");
  EXPECT_EQ(recs[0].tenant_id, kTenantA);
  EXPECT_EQ(recs[0].user_id, "alice");
  EXPECT_EQ(recs[0].user_upn, "alice@contoso.test");
  EXPECT_EQ(recs[0].client_ip, "127.0.0.1");
  EXPECT_EQ(recs[0].user_agent, kStormUserAgent);
  EXPECT_EQ(recs[0].token_kid, "a-es");
  EXPECT_EQ(recs[0].token_id, "jti-1");
  EXPECT_EQ(recs[0].token_issued_at, kNow);
  EXPECT_FALSE(recs[0].session_id.empty());
  // Same account on the second fetch.
  std::string a1 = SessionAccount(AliceToken());
  EXPECT_EQ(a1, recs[0].mailbox_id);
}

// The 2023 forgery: a consumer signing key signs a token naming an enterprise tenant.
TEST_F(MailServiceTest, ConsumerKeyForgedEnterpriseTokenIsRefusedAndRecorded) {
  std::string alice = SessionAccount(AliceToken());
  audit_.Clear();
  std::string forged = Token("consumer-1", kTenantA, "alice", "d3590ed6-52b3-4102-aeff-aad2292ab01c",
                             "Mail.Read", "forged-jti");
  for (std::string_view target : {"/.well-known/jmap", "/jmap/api"}) {
    HttpResult r = target == "/jmap/api"
                       ? Post(target, fmt::format(R"({{"using":[],"methodCalls":[["Email/query",{{"accountId":"{}"}},"q"]]}})", alice), forged)
                       : Get(target, forged);
    EXPECT_EQ(r.status, 401);
    EXPECT_NE(r.headers.find("WWW-Authenticate: Bearer realm=\"keyward-mail\", error=\"invalid_token\""),
              std::string::npos);
    EXPECT_EQ(r.body.find("alice"), std::string::npos);
  }
  auto recs = audit_.records();
  ASSERT_EQ(recs.size(), 2u);
  for (const auto& rec : recs) {
    EXPECT_EQ(rec.operation, "TokenRejected");
    EXPECT_EQ(rec.result, "Failed");
    EXPECT_EQ(rec.reason, "key_issuer_mismatch");
    EXPECT_EQ(rec.tenant_id, kTenantA);
    EXPECT_EQ(rec.token_kid, "consumer-1");
    EXPECT_EQ(rec.token_issuer, IssuerOf(kTenantA));
    EXPECT_EQ(rec.client_ip, "127.0.0.1");
    EXPECT_EQ(rec.user_agent, kStormUserAgent);
    EXPECT_EQ(rec.client_app_id, "d3590ed6-52b3-4102-aeff-aad2292ab01c");
    EXPECT_EQ(rec.token_id, "forged-jti");
    auto detail = ParseJson(rec.detail);
    ASSERT_TRUE(detail.ok()) << rec.detail;
    EXPECT_EQ(detail->Find("claims")->Find("sub")->as_string(), "alice");
    EXPECT_EQ(detail->Find("kid")->as_string(), "consumer-1");
  }
  EXPECT_EQ(recs[1].resource, "jmap:api");
}

TEST_F(MailServiceTest, MissingAndMalformedTokens) {
  HttpResult r = Send(server_->port(), "GET", "/.well-known/jmap", "", "");
  EXPECT_EQ(r.status, 401);
  r = Get("/.well-known/jmap", "not.a.token");
  EXPECT_EQ(r.status, 401);
  r = Send(server_->port(), "GET", "/.well-known/jmap", "", "Authorization: Basic YTpi\r\n");
  EXPECT_EQ(r.status, 401);
  // A token for another audience.
  std::string claims = fmt::format(
      R"({{"iss":"{}","tid":"{}","aud":"https://other","sub":"alice","azp":"x","jti":"j","iat":{},"exp":{}}})",
      IssuerOf(kTenantA), kTenantA, kNow, kNow + 600);
  r = Get("/.well-known/jmap", token::SignCompact(keys_.at("a-es"), crypto::Algorithm::kES256, "a-es", claims).value());
  EXPECT_EQ(r.status, 401);
  auto recs = audit_.records();
  ASSERT_EQ(recs.size(), 4u);
  EXPECT_EQ(recs[0].reason, "missing_token");
  EXPECT_EQ(recs[1].reason, "malformed");
  EXPECT_EQ(recs[2].reason, "missing_token");
  EXPECT_EQ(recs[3].reason, "audience_mismatch");
}

TEST_F(MailServiceTest, ApiRoundTripWithAuditFacts) {
  std::string alice = SessionAccount(AliceToken());
  ASSERT_TRUE(service_->store().Deliver(alice, Crlf(testing::kPlain)).ok());
  audit_.Clear();
  Value v = Api(AliceToken(), fmt::format(R"([["Email/query",{{"accountId":"{0}"}},"q"],
      ["Email/get",{{"accountId":"{0}","#ids":{{"resultOf":"q","name":"Email/query","path":"/ids"}},"properties":["subject","preview"]}},"g"]])",
                                          alice));
  ASSERT_TRUE(v.is_object());
  const Value& list = *v.Find("methodResponses")->as_array()[1].as_array()[1].Find("list");
  EXPECT_EQ(list.as_array()[0].Find("subject")->as_string(), "Quarterly numbers");
  auto recs = audit_.records();
  ASSERT_EQ(recs.size(), 2u);
  EXPECT_EQ(recs[0].access_type, "Sync");
  EXPECT_EQ(recs[1].access_type, "Bind");
  EXPECT_EQ(recs[1].resource, "jmap:Email/get");
  ASSERT_EQ(recs[1].items.size(), 1u);
  EXPECT_EQ(recs[1].items[0].internet_message_id, "<q1@fabrikam.test>");
  EXPECT_EQ(recs[1].items[0].folder_path, "\\Inbox");
  EXPECT_EQ(recs[1].client_ip, "127.0.0.1");
  EXPECT_EQ(recs[1].token_issuer, IssuerOf(kTenantA));
  EXPECT_EQ(recs[1].token_tenant_id, kTenantA);
  EXPECT_EQ(recs[1].mailbox_owner, "alice@contoso.test");
  EXPECT_EQ(recs[1].client_app_id, "mail-web");

  // Bob (tenant B) cannot reach it through any route.
  SessionAccount(BobToken());
  v = Api(BobToken(), fmt::format(R"([["Email/query",{{"accountId":"{}"}},"q"]])", alice));
  EXPECT_EQ(v.Find("methodResponses")->as_array()[0].as_array()[1].Find("type")->as_string(), "accountNotFound");
}

TEST_F(MailServiceTest, UploadImportDownload) {
  std::string alice = SessionAccount(AliceToken());
  std::string bob = SessionAccount(BobToken());
  std::string raw = Crlf(testing::kAlternativeWithAttachment);
  HttpResult up = Post(fmt::format("/jmap/upload/{}", alice), raw, AliceToken(), "message/rfc822");
  ASSERT_EQ(up.status, 201) << up.body;
  auto uv = ParseJson(up.body).value();
  std::string blob = uv.Find("blobId")->as_string();
  EXPECT_EQ(uv.Find("type")->as_string(), "message/rfc822");
  EXPECT_EQ(uv.Find("size")->as_int(), static_cast<int64_t>(raw.size()));
  Value inbox_q = Api(AliceToken(), fmt::format(R"([["Mailbox/query",{{"accountId":"{}","filter":{{"role":"inbox"}}}},"m"]])", alice));
  std::string inbox = inbox_q.Find("methodResponses")->as_array()[0].as_array()[1].Find("ids")->as_array()[0].as_string();
  Value imp = Api(AliceToken(), fmt::format(R"([["Email/import",{{"accountId":"{}","emails":{{"x":{{"blobId":"{}","mailboxIds":{{"{}":true}}}}}}}},"i"]])",
                                            alice, blob, inbox));
  ASSERT_TRUE(imp.Find("methodResponses")->as_array()[0].as_array()[1].Find("created")->Find("x")) << imp.Serialize();
  audit_.Clear();
  HttpResult down = Get(fmt::format("/jmap/download/{}/{}/offsite.eml?type=message/rfc822", alice, blob), AliceToken());
  EXPECT_EQ(down.status, 200);
  EXPECT_EQ(down.body, raw);
  EXPECT_NE(down.headers.find("Content-Disposition: attachment; filename=\"offsite.eml\""), std::string::npos);
  auto recs = audit_.records();
  ASSERT_EQ(recs.size(), 1u);
  EXPECT_EQ(recs[0].access_type, "Bind");
  ASSERT_EQ(recs[0].items.size(), 1u);
  EXPECT_EQ(recs[0].items[0].internet_message_id, "<offsite@contoso.test>");
  // Bob: not through Alice's account id, not through his own.
  audit_.Clear();
  EXPECT_EQ(Get(fmt::format("/jmap/download/{}/{}/x", alice, blob), BobToken()).status, 404);
  EXPECT_EQ(Get(fmt::format("/jmap/download/{}/{}/x", bob, blob), BobToken()).status, 404);
  EXPECT_EQ(Post(fmt::format("/jmap/upload/{}", alice), "x", BobToken()).status, 404);
  recs = audit_.records();
  ASSERT_EQ(recs.size(), 3u);
  EXPECT_EQ(recs[0].reason, "accountNotFound");
  EXPECT_EQ(recs[1].reason, "blobNotFound");
  EXPECT_EQ(recs[2].reason, "accountNotFound");
}

TEST_F(MailServiceTest, AppOnlyTokenScopes) {
  std::string alice = SessionAccount(AliceToken());
  std::string reader = Token("a-es", kTenantA, "daemon", "daemon", "Mail.Read", "jti-app");
  HttpResult r = Get("/.well-known/jmap", reader);
  ASSERT_EQ(r.status, 200);
  auto v = ParseJson(r.body).value();
  EXPECT_TRUE(v.Find("accounts")->Find(alice));
  EXPECT_TRUE(v.Find("accounts")->Find(alice)->Find("isReadOnly")->as_bool());
  Value q = Api(reader, fmt::format(R"([["Email/query",{{"accountId":"{}"}},"q"],["Mailbox/set",{{"accountId":"{}","create":{{"x":{{"name":"n"}}}}}},"s"]])", alice, alice));
  EXPECT_EQ(q.Find("methodResponses")->as_array()[0].as_array()[0].as_string(), "Email/query");
  EXPECT_EQ(q.Find("methodResponses")->as_array()[1].as_array()[1].Find("type")->as_string(), "forbidden");
  std::string noscope = Token("a-es", kTenantA, "daemon", "daemon", "Calendars.Read", "jti-app2");
  v = ParseJson(Get("/.well-known/jmap", noscope).body).value();
  EXPECT_TRUE(v.Find("accounts")->as_object().empty());
  // An app of tenant B sees nothing of tenant A.
  std::string other = Token("b-es", kTenantB, "daemon", "daemon", "Mail.ReadWrite", "jti-app3");
  q = Api(other, fmt::format(R"([["Email/query",{{"accountId":"{}"}},"q"]])", alice));
  EXPECT_EQ(q.Find("methodResponses")->as_array()[0].as_array()[1].Find("type")->as_string(), "accountNotFound");
}

TEST_F(MailServiceTest, AuditUnavailableRefusesEverything) {
  std::string alice = SessionAccount(AliceToken());
  audit_.set_fail(true);
  EXPECT_EQ(Get("/.well-known/jmap", AliceToken()).status, 503);
  int status = 0;
  Api(AliceToken(), fmt::format(R"([["Mailbox/get",{{"accountId":"{}"}},"m"]])", alice), &status);
  EXPECT_EQ(status, 503);
  EXPECT_EQ(Get("/.well-known/jmap", "garbage").status, 503);
  EXPECT_EQ(Post(fmt::format("/jmap/upload/{}", alice), "data", AliceToken()).status, 503);
}

TEST_F(MailServiceTest, RateLimitedMailboxGets429) {
  server_.reset();
  service_.reset();
  Start(/*rate=*/1.0);
  std::string alice = SessionAccount(AliceToken());
  int status = 0;
  Api(AliceToken(), fmt::format(R"([["Mailbox/get",{{"accountId":"{}"}},"m"]])", alice), &status);
  EXPECT_EQ(status, 200);
  HttpResult r = Post("/jmap/api", fmt::format(R"({{"using":["urn:ietf:params:jmap:mail"],"methodCalls":[["Mailbox/get",{{"accountId":"{}"}},"m"]]}})", alice), AliceToken());
  EXPECT_EQ(r.status, 429);
  EXPECT_NE(r.headers.find("Retry-After: 1"), std::string::npos);
  clock_.AdvanceSeconds(1);
  Api(AliceToken(), fmt::format(R"([["Mailbox/get",{{"accountId":"{}"}},"m"]])", alice), &status);
  EXPECT_EQ(status, 200);
}

namespace push_test {
// The "data:" JSON of the first state event in `text`.
Value FirstStateChange(const std::string& text) {
  size_t at = text.find("event: state\n");
  if (at == std::string::npos) return Value();
  size_t data = text.find("data: ", at);
  size_t end = text.find('\n', data);
  if (data == std::string::npos || end == std::string::npos) return Value();
  auto v = ParseJson(text.substr(data + 6, end - data - 6));
  return v.ok() ? *v : Value();
}
std::string EventId(const std::string& text) {
  size_t at = text.find("\nid: ");
  if (at == std::string::npos) return "";
  return text.substr(at + 5, text.find('\n', at + 5) - at - 5);
}
}  // namespace push_test

TEST_F(MailServiceTest, EventSourcePushesStateChangesAndClosesAfterState) {
  std::string alice = SessionAccount(AliceToken());
  audit_.Clear();
  EventStream es(server_->port(), "/jmap/eventsource?types=*&closeafter=state&ping=0", Auth(AliceToken()));
  ASSERT_TRUE(WaitStreams(1));
  const std::string& head = es.ReadUntil("\r\n\r\n");
  EXPECT_NE(head.find("HTTP/1.1 200"), std::string::npos) << head;
  EXPECT_NE(head.find("Content-Type: text/event-stream"), std::string::npos);
  EXPECT_NE(head.find("Cache-Control: no-cache"), std::string::npos);
  ASSERT_TRUE(service_->store().Deliver(alice, Crlf(testing::kPlain)).ok());
  const std::string& text = es.ReadUntil("0\r\n\r\n");  // the end: closeafter=state
  Value change = push_test::FirstStateChange(text);
  ASSERT_TRUE(change.is_object()) << text;
  EXPECT_EQ(change.Find("@type")->as_string(), "StateChange");
  const Value* mine = change.Find("changed")->Find(alice);
  ASSERT_NE(mine, nullptr) << text;
  for (const char* type : {"Email", "EmailDelivery", "Thread", "Mailbox"}) {
    EXPECT_NE(mine->Find(type), nullptr) << type << " in " << text;
  }
  // The pushed Email state is the one Email/get now reports.
  Value v = Api(AliceToken(), fmt::format(R"([["Email/get",{{"accountId":"{}","ids":[]}},"g"]])", alice));
  EXPECT_EQ(v.Find("methodResponses")->as_array()[0].as_array()[1].Find("state")->as_string(),
            mine->Find("Email")->as_string());
  EXPECT_NE(push_test::EventId(text).find(alice + ":"), std::string::npos) << text;
  es.ReadUntil("never", 2000);
  EXPECT_TRUE(es.closed());
  auto recs = audit_.records();
  ASSERT_GE(recs.size(), 1u);
  EXPECT_EQ(recs[0].operation, "MailboxLogin");
  EXPECT_EQ(recs[0].resource, "jmap:eventsource");
}

TEST_F(MailServiceTest, EventSourceFiltersTypesAndSendsPings) {
  std::string alice = SessionAccount(AliceToken());
  ASSERT_TRUE(service_->store().Deliver(alice, Crlf(testing::kPlain)).ok());
  Value q = Api(AliceToken(), fmt::format(R"([["Email/query",{{"accountId":"{}"}},"q"]])", alice));
  std::string email = q.Find("methodResponses")->as_array()[0].as_array()[1].Find("ids")->as_array()[0].as_string();
  std::string rw = Token("a-es", kTenantA, "alice", "mail-web", "Mail.ReadWrite");
  EventStream es(server_->port(), "/jmap/eventsource?types=EmailDelivery&closeafter=no&ping=1", Auth(rw));
  ASSERT_TRUE(WaitStreams(1));
  // Marking an email read moves Email, not EmailDelivery: nothing is pushed for it.
  Value set = Api(rw, fmt::format(R"([["Email/set",{{"accountId":"{}","update":{{"{}":{{"keywords/$seen":true}}}}}},"s"]])", alice, email));
  ASSERT_NE(set.Find("methodResponses")->as_array()[0].as_array()[1].Find("updated"), nullptr) << set.Serialize();
  const std::string& pinged = es.ReadUntil("event: ping", 2500);
  EXPECT_NE(pinged.find("data: {\"interval\":1}"), std::string::npos) << pinged;
  EXPECT_EQ(pinged.find("event: state"), std::string::npos) << pinged;
  // A delivery moves EmailDelivery: pushed, and only that type.
  ASSERT_TRUE(service_->store().Deliver(alice, Crlf(testing::kReply)).ok());
  const std::string& text = es.ReadUntil("event: state");
  Value change = push_test::FirstStateChange(text);
  ASSERT_TRUE(change.is_object()) << text;
  const Value* mine = change.Find("changed")->Find(alice);
  ASSERT_NE(mine, nullptr);
  EXPECT_EQ(mine->as_object().size(), 1u) << text;
  EXPECT_NE(mine->Find("EmailDelivery"), nullptr);
  EXPECT_FALSE(es.closed());
}

TEST_F(MailServiceTest, EventSourceIsolatesTenantsAndCatchesUpWithLastEventId) {
  std::string alice = SessionAccount(AliceToken());
  SessionAccount(BobToken());
  EventStream bob(server_->port(), "/jmap/eventsource?types=*&closeafter=state&ping=0", Auth(BobToken()));
  std::string id;
  {
    EventStream es(server_->port(), "/jmap/eventsource?types=*&closeafter=state&ping=0", Auth(AliceToken()));
    ASSERT_TRUE(WaitStreams(2));
    ASSERT_TRUE(service_->store().Deliver(alice, Crlf(testing::kPlain)).ok());
    id = push_test::EventId(es.ReadUntil("0\r\n\r\n"));
    ASSERT_FALSE(id.empty());
  }
  // Bob's stream saw nothing of Alice's mail.
  EXPECT_EQ(bob.ReadUntil("event: state", 500).find("event: state"), std::string::npos);
  // Up to date: reconnecting with the last id pushes nothing at once.
  {
    EventStream es(server_->port(), "/jmap/eventsource?types=*&closeafter=state&ping=0",
                   Auth(AliceToken()) + fmt::format("Last-Event-ID: {}\r\n", id));
    EXPECT_EQ(es.ReadUntil("event: state", 500).find("event: state"), std::string::npos);
  }
  // Mail arrives while the client is away: it learns at once on reconnecting.
  ASSERT_TRUE(service_->store().Deliver(alice, Crlf(testing::kReply)).ok());
  EventStream back(server_->port(), "/jmap/eventsource?types=Email&closeafter=state&ping=0",
                   Auth(AliceToken()) + fmt::format("Last-Event-ID: {}\r\n", id));
  Value change = push_test::FirstStateChange(back.ReadUntil("0\r\n\r\n"));
  ASSERT_TRUE(change.is_object());
  EXPECT_NE(change.Find("changed")->Find(alice)->Find("Email"), nullptr);
}

TEST_F(MailServiceTest, EventSourceRefusesBadParametersAndTokens) {
  for (std::string_view target : {"/jmap/eventsource?types=Email,&closeafter=no&ping=0",
                                  "/jmap/eventsource?types=*&closeafter=maybe&ping=0",
                                  "/jmap/eventsource?types=*&closeafter=no&ping=-1"}) {
    EXPECT_EQ(Get(target, AliceToken()).status, 400) << target;
  }
  audit_.Clear();
  std::string forged = Token("consumer-1", kTenantA, "alice");
  HttpResult r = Get("/jmap/eventsource?types=*&closeafter=no&ping=0", forged);
  EXPECT_EQ(r.status, 401);
  auto recs = audit_.records();
  ASSERT_EQ(recs.size(), 1u);
  EXPECT_EQ(recs[0].operation, "TokenRejected");
  EXPECT_EQ(recs[0].reason, "key_issuer_mismatch");
  EXPECT_EQ(service_->push().open_streams(), 0u);
}

}  // namespace
}  // namespace kw::mail
