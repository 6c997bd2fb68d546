// LMTP (RFC 2033) end to end: a real LmtpServer on an ephemeral port, driven over a socket.
#include "mail/lmtp.h"

#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <string>
#include <thread>

#include "mail/test_util.h"

namespace kw::mail {
namespace {

using testing::Crlf;

class LmtpClient {
 public:
  explicit LmtpClient(uint16_t port) {
    fd_ = ::socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_port = htons(port);
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    connected_ = ::connect(fd_, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0;
  }
  ~LmtpClient() { ::close(fd_); }
  bool connected() const { return connected_; }
  void Send(std::string_view s) { ::send(fd_, s.data(), s.size(), MSG_NOSIGNAL); }
  // The next complete reply (multi-line replies joined), "" on timeout or close.
  std::string Reply(int ms = 3000) {
    auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(ms);
    while (true) {
      // A reply ends with a line whose 4th character is a space.
      size_t start = 0;
      while (true) {
        size_t nl = buf_.find("\r\n", start);
        if (nl == std::string::npos) break;
        if (nl - start >= 4 && buf_[start + 3] == ' ') {
          std::string out = buf_.substr(0, nl + 2);
          buf_.erase(0, nl + 2);
          return out;
        }
        if (nl - start == 3) {  // "250\r\n"
          std::string out = buf_.substr(0, nl + 2);
          buf_.erase(0, nl + 2);
          return out;
        }
        start = nl + 2;
      }
      auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now()).count();
      if (left <= 0) return "";
      pollfd p{fd_, POLLIN, 0};
      if (::poll(&p, 1, static_cast<int>(left)) <= 0) return "";
      char tmp[4096];
      ssize_t n = ::recv(fd_, tmp, sizeof(tmp), 0);
      if (n <= 0) return "";
      buf_.append(tmp, static_cast<size_t>(n));
    }
  }
  std::string Command(std::string_view line) {
    Send(std::string(line) + "\r\n");
    return Reply();
  }
  bool Closed(int ms = 3000) {
    pollfd p{fd_, POLLIN, 0};
    if (::poll(&p, 1, ms) <= 0) return false;
    char tmp[256];
    return ::recv(fd_, tmp, sizeof(tmp), 0) <= 0;
  }

 private:
  int fd_ = -1;
  bool connected_ = false;
  std::string buf_;
};

class LmtpTest : public ::testing::Test {
 protected:
  void SetUp() override {
    StoreOptions o;
    o.path = dir_.File("mail.db");
    o.clock = &clock_;
    auto s = Store::Open(o);
    ASSERT_TRUE(s.ok()) << s.status().ToString();
    store_ = std::move(*s);
    alice_ = store_->EnsureAccount("tenant-a", "alice", "alice", "alice@contoso.test").value();
    bob_ = store_->EnsureAccount("tenant-b", "bob", "bob", "bob@fabrikam.test").value();
    StartServer();
  }
  void StartServer() {
    LmtpOptions o;
    o.hostname = "mx.keyward.test";
    o.clock = &clock_;
    o.max_message_bytes = max_bytes_;
    o.max_recipients = 3;
    o.idle_timeout = std::chrono::milliseconds(idle_ms_);
    auto l = LmtpServer::Start(o, store_.get());
    ASSERT_TRUE(l.ok()) << l.status().ToString();
    lmtp_ = std::move(*l);
  }

  std::vector<EmailRef> Inbox(const Account& a) {
    std::vector<EmailRef> out;
    EXPECT_TRUE(store_->Read([&](Txn& t) -> Status {
      KW_ASSIGN_OR_RETURN(out, t.QueryEmails(a.id, Value(), Value(), false));
      return Status::Ok();
    }).ok());
    return out;
  }
  std::string Raw(const Account& a, const std::string& email_id) {
    std::string out;
    EXPECT_TRUE(store_->Read([&](Txn& t) -> Status {
      KW_ASSIGN_OR_RETURN(auto rows, t.GetEmails(a.id, {email_id}, false, false));
      if (rows.empty() || !rows[0]) return NotFoundError("no email");
      KW_ASSIGN_OR_RETURN(out, t.GetBlob(a.id, rows[0]->blob_id));
      return Status::Ok();
    }).ok());
    return out;
  }

  FakeClock clock_{1'700'000'000'000};
  testing::TempDir dir_;
  std::unique_ptr<Store> store_;
  std::unique_ptr<LmtpServer> lmtp_;
  Account alice_, bob_;
  size_t max_bytes_ = 1 << 20;
  int idle_ms_ = 5000;
};

TEST_F(LmtpTest, DeliversToEveryRecipientWithOneReplyEach) {
  LmtpClient c(lmtp_->port());
  ASSERT_TRUE(c.connected());
  EXPECT_EQ(c.Reply(), "220 mx.keyward.test LMTP Keyward ready\r\n");
  std::string lhlo = c.Command("LHLO relay.contoso.test");
  EXPECT_EQ(lhlo.rfind("250-mx.keyward.test\r\n", 0), 0u) << lhlo;
  EXPECT_NE(lhlo.find("250-PIPELINING\r\n"), std::string::npos);
  EXPECT_NE(lhlo.find("250 SIZE 1048576\r\n"), std::string::npos);
  EXPECT_EQ(c.Command("MAIL FROM:<carol@example.test> SIZE=400 BODY=8BITMIME"), "250 2.1.0 OK\r\n");
  EXPECT_EQ(c.Command("RCPT TO:<Alice@Contoso.test>"), "250 2.1.5 OK\r\n");
  EXPECT_EQ(c.Command("RCPT TO:<nobody@contoso.test>"), "550 5.1.1 <nobody@contoso.test>: no such mailbox\r\n");
  EXPECT_EQ(c.Command("RCPT TO:<bob@fabrikam.test>"), "250 2.1.5 OK\r\n");
  EXPECT_EQ(c.Reply(0), "");
  EXPECT_EQ(c.Command("DATA").substr(0, 4), "354 ");
  // A body line starting with a dot arrives dot-stuffed and is stored without it.
  std::string msg = Crlf(testing::kPlain);
  msg += "..hidden dot line\r\n";
  c.Send(msg + ".\r\n");
  std::string r1 = c.Reply();
  std::string r2 = c.Reply();
  EXPECT_EQ(r1.rfind("250 2.0.0 <Alice@Contoso.test> delivered as M", 0), 0u) << r1;
  EXPECT_EQ(r2.rfind("250 2.0.0 <bob@fabrikam.test> delivered as M", 0), 0u) << r2;
  EXPECT_EQ(c.Command("QUIT"), "221 2.0.0 mx.keyward.test closing\r\n");
  EXPECT_TRUE(c.Closed());

  auto a = Inbox(alice_);
  auto b = Inbox(bob_);
  ASSERT_EQ(a.size(), 1u);
  ASSERT_EQ(b.size(), 1u);
  EXPECT_EQ(a[0].message_id, "q1@fabrikam.test");
  std::string raw = Raw(alice_, a[0].id);
  EXPECT_EQ(raw.rfind("Return-Path: <carol@example.test>\r\nReceived: from relay.contoso.test ([127.0.0.1])\r\n"
                      "\tby mx.keyward.test with LMTP; Tue, 14 Nov 2023 22:13:20 +0000\r\n", 0), 0u) << raw;
  EXPECT_NE(raw.find("\r\n.hidden dot line\r\n"), std::string::npos);
  EXPECT_EQ(raw.find("..hidden"), std::string::npos);
  EXPECT_EQ(lmtp_->delivered(), 2u);
}

TEST_F(LmtpTest, PipelinedTransaction) {
  LmtpClient c(lmtp_->port());
  ASSERT_EQ(c.Reply().substr(0, 4), "220 ");
  // RFC 2920: everything up to DATA in one write; the replies come back in order.
  c.Send("LHLO relay\r\nMAIL FROM:<>\r\nRCPT TO:<alice@contoso.test>\r\nRCPT TO:<x@y.test>\r\nDATA\r\n");
  EXPECT_EQ(c.Reply().substr(0, 4), "250-");
  EXPECT_EQ(c.Reply(), "250 2.1.0 OK\r\n");
  EXPECT_EQ(c.Reply(), "250 2.1.5 OK\r\n");
  EXPECT_EQ(c.Reply().substr(0, 4), "550 ");
  EXPECT_EQ(c.Reply().substr(0, 4), "354 ");
  c.Send(Crlf(testing::kReply) + ".\r\nQUIT\r\n");
  EXPECT_EQ(c.Reply().substr(0, 10), "250 2.0.0 ");
  EXPECT_EQ(c.Reply().substr(0, 4), "221 ");
  EXPECT_EQ(Inbox(alice_).size(), 1u);
}

TEST_F(LmtpTest, SequenceAndSyntaxErrors) {
  LmtpClient c(lmtp_->port());
  c.Reply();
  EXPECT_EQ(c.Command("EHLO relay").substr(0, 10), "500 5.5.1 ");
  EXPECT_EQ(c.Command("MAIL FROM:<a@b.test>").substr(0, 10), "503 5.5.1 ");
  EXPECT_EQ(c.Command("LHLO").substr(0, 10), "501 5.5.4 ");
  c.Command("LHLO relay");
  EXPECT_EQ(c.Command("RCPT TO:<alice@contoso.test>").substr(0, 10), "503 5.5.1 ");
  EXPECT_EQ(c.Command("DATA").substr(0, 10), "503 5.5.1 ");
  EXPECT_EQ(c.Command("MAIL FROM:a@b.test").substr(0, 10), "501 5.5.4 ");
  EXPECT_EQ(c.Command("MAIL FROM:<a@b.test> SIZE=2000000").substr(0, 10), "552 5.3.4 ");
  EXPECT_EQ(c.Command("MAIL FROM:<a@b.test> AUTH=x").substr(0, 10), "555 5.5.4 ");
  EXPECT_EQ(c.Command("MAIL FROM:<a@b.test>"), "250 2.1.0 OK\r\n");
  EXPECT_EQ(c.Command("MAIL FROM:<a@b.test>").substr(0, 10), "503 5.5.1 ");
  EXPECT_EQ(c.Command("DATA").substr(0, 10), "503 5.5.1 ");  // no valid recipient yet
  for (int i = 0; i < 3; ++i) EXPECT_EQ(c.Command("RCPT TO:<alice@contoso.test>"), "250 2.1.5 OK\r\n");
  EXPECT_EQ(c.Command("RCPT TO:<alice@contoso.test>").substr(0, 10), "452 4.5.3 ");
  EXPECT_EQ(c.Command(std::string(600, 'X')).substr(0, 10), "500 5.5.2 ");
  EXPECT_EQ(c.Command("RSET"), "250 2.0.0 OK\r\n");
  EXPECT_EQ(c.Command("DATA").substr(0, 10), "503 5.5.1 ");
  EXPECT_EQ(c.Command("NOOP"), "250 2.0.0 OK\r\n");
  EXPECT_EQ(c.Command("VRFY alice").substr(0, 4), "252 ");
  EXPECT_EQ(c.Command("STARTTLS").substr(0, 10), "500 5.5.2 ");
  EXPECT_TRUE(Inbox(alice_).empty());
}

TEST_F(LmtpTest, OversizedAndLongLineMessagesAreRefusedPerRecipient) {
  lmtp_.reset();
  max_bytes_ = 4096;
  StartServer();
  LmtpClient c(lmtp_->port());
  c.Reply();
  c.Command("LHLO relay");
  auto transaction = [&](const std::string& body) {
    EXPECT_EQ(c.Command("MAIL FROM:<a@b.test>"), "250 2.1.0 OK\r\n");
    EXPECT_EQ(c.Command("RCPT TO:<alice@contoso.test>"), "250 2.1.5 OK\r\n");
    EXPECT_EQ(c.Command("RCPT TO:<bob@fabrikam.test>"), "250 2.1.5 OK\r\n");
    EXPECT_EQ(c.Command("DATA").substr(0, 4), "354 ");
    c.Send(body + ".\r\n");
    std::string first = c.Reply();
    return first + c.Reply();
  };
  std::string big = "Subject: big\r\n\r\n";
  for (int i = 0; i < 100; ++i) big += std::string(70, 'a') + "\r\n";
  std::string r = transaction(big);
  EXPECT_EQ(r, "552 5.3.4 <alice@contoso.test>: the message exceeds 4096 bytes\r\n"
               "552 5.3.4 <bob@fabrikam.test>: the message exceeds 4096 bytes\r\n");
  r = transaction("Subject: long\r\n\r\n" + std::string(1200, 'b') + "\r\n");
  EXPECT_EQ(r.substr(0, 10), "554 5.6.0 ") << r;
  // The session is still usable after both.
  r = transaction(Crlf(testing::kPlain));
  EXPECT_EQ(r.substr(0, 10), "250 2.0.0 ") << r;
  EXPECT_EQ(Inbox(alice_).size(), 1u);
  EXPECT_EQ(Inbox(bob_).size(), 1u);
}

TEST_F(LmtpTest, IdleTimeoutAndStop) {
  lmtp_.reset();
  idle_ms_ = 200;
  StartServer();
  {
    LmtpClient idle(lmtp_->port());
    idle.Reply();
    EXPECT_EQ(idle.Reply(2000), "421 4.4.2 idle timeout\r\n");
    EXPECT_TRUE(idle.Closed());
  }
  lmtp_.reset();
  idle_ms_ = 60'000;
  StartServer();
  LmtpClient c(lmtp_->port());
  c.Reply();
  c.Command("LHLO relay");
  c.Command("MAIL FROM:<a@b.test>");
  c.Command("RCPT TO:<alice@contoso.test>");
  c.Command("DATA");
  c.Send("Subject: half\r\n\r\nnot finished\r\n");
  auto start = std::chrono::steady_clock::now();
  lmtp_->Stop();
  EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::seconds(2));
  EXPECT_EQ(c.Reply(), "421 4.3.2 shutting down\r\n");
  EXPECT_TRUE(Inbox(alice_).empty());  // never acknowledged, never delivered
}

}  // namespace
}  // namespace kw::mail
