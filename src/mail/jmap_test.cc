// The JMAP processor without HTTP: every method, its errors, back-references, state/changes,
// access rules and the audit records each call leaves.
#include "mail/jmap.h"

#include <gtest/gtest.h>

#include <random>

#include <fmt/format.h>

#include "mail/test_util.h"

namespace kw::mail {
namespace {

using testing::Crlf;

constexpr std::string_view kUsing =
    R"(["urn:ietf:params:jmap:core","urn:ietf:params:jmap:mail","urn:ietf:params:jmap:submission"])";

class JmapTest : public ::testing::Test {
 protected:
  void SetUp() override {
    StoreOptions o;
    o.path = dir_.File("mail.db");
    o.clock = &clock_;
    store_ = std::move(Store::Open(o).value());
    alice_ = store_->EnsureAccount("tenant-a", "user-alice", "alice@contoso.test", "alice@contoso.test").value();
    carol_ = store_->EnsureAccount("tenant-a", "user-carol", "carol@contoso.test", "carol@contoso.test").value();
    bob_ = store_->EnsureAccount("tenant-b", "user-bob", "bob@fabrikam.test", "bob@fabrikam.test").value();
    processor_ = std::make_unique<Processor>(store_.get(), &audit_, limits_, &clock_);
    alice_p_ = User("tenant-a", "user-alice");
    bob_p_ = User("tenant-b", "user-bob");
  }

  static Principal User(std::string tenant, std::string user) {
    Principal p;
    p.tenant_id = std::move(tenant);
    p.user_id = std::move(user);
    p.client_app_id = "mail-web";
    return p;
  }
  static Principal App(std::string tenant, bool read, bool write, bool send) {
    Principal p;
    p.tenant_id = std::move(tenant);
    p.user_id = "daemon-app";
    p.client_app_id = "daemon-app";
    p.app_only = true;
    p.scope_read = read;
    p.scope_write = write;
    p.scope_send = send;
    return p;
  }

  JmapResponse Raw(const Principal& p, std::string_view body) {
    audit::AuditRecord base;
    base.user_id = p.user_id;
    base.client_app_id = p.client_app_id;
    base.token_tenant_id = p.tenant_id;
    return processor_->Process(p, base, body);
  }

  // Runs `calls` (a JSON array text) and returns methodResponses.
  Value Calls(const Principal& p, std::string_view calls) {
    JmapResponse r = Raw(p, fmt::format(R"({{"using":{},"methodCalls":{}}})", kUsing, calls));
    EXPECT_EQ(r.status, 200) << r.body;
    auto v = ParseJson(r.body);
    EXPECT_TRUE(v.ok()) << r.body;
    if (!v.ok() || !v->Find("methodResponses")) return Value::MakeArray();
    return *v->Find("methodResponses");
  }
  // One call; returns [name, args, id].
  Value Call(const Principal& p, std::string_view name, std::string_view args) {
    Value r = Calls(p, fmt::format(R"([["{}",{},"c1"]])", name, args));
    if (r.as_array().empty()) return Value::MakeArray();
    return r.as_array()[0];
  }
  static std::string ErrorType(const Value& resp) {
    if (!resp.is_array() || resp.as_array().size() != 3 || resp.as_array()[0].as_string() != "error") return "";
    return resp.as_array()[1].Find("type")->as_string();
  }
  static const Value& Args(const Value& resp) { return resp.as_array()[1]; }

  std::string RoleId(const Account& a, std::string_view role) {
    std::string out;
    EXPECT_TRUE(store_->Read([&](Txn& t) -> Status {
      KW_ASSIGN_OR_RETURN(auto boxes, t.ListMailboxes(a.id, false));
      for (const auto& m : boxes) {
        if (m.role == role) out = m.id;
      }
      return Status::Ok();
    }).ok());
    return out;
  }

  std::string Deliver(const Account& a, std::string_view raw) {
    auto r = store_->Deliver(a.id, Crlf(raw));
    EXPECT_TRUE(r.ok()) << r.status().ToString();
    return r.ok() ? r->id : "";
  }

  FakeClock clock_;
  testing::TempDir dir_;
  testing::RecordingAuditWriter audit_;
  JmapLimits limits_;
  std::unique_ptr<Store> store_;
  std::unique_ptr<Processor> processor_;
  Account alice_, carol_, bob_;
  Principal alice_p_, bob_p_;
};

TEST_F(JmapTest, RequestLevelProblems) {
  struct Row {
    std::string body, type;
    int status;
  };
  std::vector<Row> rows = {
      {"not json", "notJSON", 400},
      {R"({"using":[],"using":[],"methodCalls":[]})", "notJSON", 400},  // duplicate member
      {"[1,2]", "notRequest", 400},
      {R"({"using":"x","methodCalls":[]})", "notRequest", 400},
      {R"({"using":[],"methodCalls":[["Core/echo",{}]]})", "notRequest", 400},
      {R"({"using":[],"methodCalls":[],"extra":1})", "notRequest", 400},
      {R"({"using":["urn:example:nope"],"methodCalls":[]})", "unknownCapability", 400},
      {"{\"using\":[\"\xff\"],\"methodCalls\":[]}", "notJSON", 400},
  };
  std::string many = R"({"using":["urn:ietf:params:jmap:core"],"methodCalls":[)";
  for (int i = 0; i < 40; ++i) many += fmt::format(R"({}["Core/echo",{{}},"c{}"])", i ? "," : "", i);
  many += "]}";
  rows.push_back({many, "limit", 400});
  for (const auto& row : rows) {
    JmapResponse r = Raw(alice_p_, row.body);
    EXPECT_EQ(r.status, row.status) << row.body;
    EXPECT_EQ(r.content_type, "application/problem+json");
    auto v = ParseJson(r.body);
    ASSERT_TRUE(v.ok());
    EXPECT_EQ(v->Find("type")->as_string(), "urn:ietf:params:jmap:error:" + row.type) << row.body;
  }
  JmapResponse big = Raw(alice_p_, std::string(limits_.max_size_request + 1, ' '));
  EXPECT_NE(big.body.find("maxSizeRequest"), std::string::npos);
}

TEST_F(JmapTest, EchoAndUnknownMethod) {
  Value r = Calls(alice_p_, R"([["Core/echo",{"hello":true,"n":[1,2]},"e"],["Nope/get",{},"x"]])");
  ASSERT_EQ(r.as_array().size(), 2u);
  EXPECT_EQ(r.as_array()[0].Serialize(), R"(["Core/echo",{"hello":true,"n":[1,2]},"e"])");
  EXPECT_EQ(ErrorType(r.as_array()[1]), "unknownMethod");
  // A mail method without the mail capability in "using" is unknown too.
  JmapResponse raw = Raw(alice_p_, fmt::format(
      R"({{"using":["urn:ietf:params:jmap:core"],"methodCalls":[["Mailbox/get",{{"accountId":"{}"}},"m"]]}})",
      alice_.id));
  EXPECT_NE(raw.body.find("unknownMethod"), std::string::npos);
}

TEST_F(JmapTest, MailboxGetQuerySet) {
  Value r = Call(alice_p_, "Mailbox/get", fmt::format(R"({{"accountId":"{}"}})", alice_.id));
  ASSERT_EQ(r.as_array()[0].as_string(), "Mailbox/get") << r.Serialize();
  EXPECT_EQ(Args(r).Find("list")->as_array().size(), 6u);
  std::string state = Args(r).Find("state")->as_string();

  r = Call(alice_p_, "Mailbox/query",
           fmt::format(R"({{"accountId":"{}","filter":{{"role":"inbox"}},"calculateTotal":true}})", alice_.id));
  EXPECT_EQ(Args(r).Find("ids")->as_array()[0].as_string(), RoleId(alice_, "inbox"));
  EXPECT_EQ(Args(r).Find("total")->as_int(), 1);

  Value s = Calls(alice_p_, fmt::format(R"([
    ["Mailbox/set",{{"accountId":"{0}","create":{{"p":{{"name":"Projects"}},"c":{{"name":"2023","parentId":"#p"}}}}}},"s"],
    ["Mailbox/get",{{"accountId":"{0}","ids":["#c"],"properties":["name","parentId"]}},"g"]])",
      alice_.id));
  ASSERT_EQ(s.as_array().size(), 2u);
  const Value& created = *Args(s.as_array()[0]).Find("created");
  std::string p_id = created.Find("p")->Find("id")->as_string();
  ASSERT_EQ(Args(s.as_array()[1]).Find("list")->as_array().size(), 1u) << s.Serialize();
  const Value& got = Args(s.as_array()[1]).Find("list")->as_array()[0];
  EXPECT_EQ(got.Find("name")->as_string(), "2023");
  EXPECT_EQ(got.Find("parentId")->as_string(), p_id);

  // Destroying a parent with a child is refused; a duplicate role is refused.
  r = Call(alice_p_, "Mailbox/set",
           fmt::format(R"({{"accountId":"{}","destroy":["{}"],"create":{{"x":{{"name":"Box","role":"inbox"}}}}}})",
                       alice_.id, p_id));
  EXPECT_EQ(Args(r).Find("notDestroyed")->Find(p_id)->Find("type")->as_string(), "mailboxHasChild");
  EXPECT_EQ(Args(r).Find("notCreated")->Find("x")->Find("type")->as_string(), "invalidProperties");

  r = Call(alice_p_, "Mailbox/changes", fmt::format(R"({{"accountId":"{}","sinceState":"{}"}})", alice_.id, state));
  EXPECT_EQ(Args(r).Find("created")->as_array().size(), 2u);

  r = Call(alice_p_, "Mailbox/set", fmt::format(R"({{"accountId":"{}","ifInState":"{}","destroy":[]}})", alice_.id, state));
  EXPECT_EQ(ErrorType(r), "stateMismatch");
}

TEST_F(JmapTest, ImportQueryGetWithBackReferences) {
  std::string blob;
  ASSERT_TRUE(store_->Write([&](Txn& t) -> Status {
    KW_ASSIGN_OR_RETURN(blob, t.PutBlob(alice_.id, Crlf(testing::kAlternativeWithAttachment)));
    return Status::Ok();
  }).ok());
  std::string inbox = RoleId(alice_, "inbox");
  Value r = Calls(alice_p_, fmt::format(R"([
    ["Email/import",{{"accountId":"{0}","emails":{{"e1":{{"blobId":"{1}","mailboxIds":{{"{2}":true}},"keywords":{{"$seen":true}},"receivedAt":"2023-06-19T07:00:00Z"}}}}}},"i"],
    ["Email/query",{{"accountId":"{0}","filter":{{"inMailbox":"{2}"}},"sort":[{{"property":"receivedAt","isAscending":false}}],"calculateTotal":true}},"q"],
    ["Email/get",{{"accountId":"{0}","#ids":{{"resultOf":"q","name":"Email/query","path":"/ids"}},
      "properties":["threadId","subject","from","to","preview","hasAttachment","keywords","mailboxIds","textBody","attachments","bodyValues","header:Subject:asText","header:X-Missing","receivedAt"],
      "fetchTextBodyValues":true}},"g"],
    ["Thread/get",{{"accountId":"{0}","#ids":{{"resultOf":"g","name":"Email/get","path":"/list/*/threadId"}}}},"t"]])",
      alice_.id, blob, inbox));
  ASSERT_EQ(r.as_array().size(), 4u) << r.Serialize();
  std::string id = Args(r.as_array()[0]).Find("created")->Find("e1")->Find("id")->as_string();
  EXPECT_EQ(Args(r.as_array()[1]).Find("ids")->Serialize(), fmt::format(R"(["{}"])", id));
  const Value& e = Args(r.as_array()[2]).Find("list")->as_array()[0];
  EXPECT_EQ(e.Find("subject")->as_string(), "Plans for the offsite");
  EXPECT_EQ(e.Find("header:Subject:asText")->as_string(), "Plans for the offsite");
  EXPECT_TRUE(e.Find("header:X-Missing")->is_null());
  EXPECT_EQ(e.Find("preview")->as_string(), "Agenda: hiking, then dinner.");
  EXPECT_TRUE(e.Find("hasAttachment")->as_bool());
  EXPECT_EQ(e.Find("keywords")->Serialize(), R"({"$seen":true})");
  EXPECT_EQ(e.Find("receivedAt")->as_string(), "2023-06-19T07:00:00Z");
  EXPECT_EQ(e.Find("attachments")->as_array()[0].Find("name")->as_string(), "agenda.pdf");
  std::string part = e.Find("textBody")->as_array()[0].Find("partId")->as_string();
  EXPECT_EQ(e.Find("bodyValues")->Find(part)->Find("value")->as_string(), "Agenda: hiking, then dinner.");
  // Thread/get through a "*" pointer.
  EXPECT_EQ(Args(r.as_array()[3]).Find("list")->as_array()[0].Find("emailIds")->Serialize(),
            fmt::format(R"(["{}"])", id));
  // A blob that is not a message, a mailbox of nobody: refused, nothing written.
  std::string empty_blob;
  ASSERT_TRUE(store_->Write([&](Txn& t) -> Status {
    KW_ASSIGN_OR_RETURN(empty_blob, t.PutBlob(alice_.id, ""));
    return Status::Ok();
  }).ok());
  Value bad = Call(alice_p_, "Email/import", fmt::format(
      R"({{"accountId":"{0}","emails":{{"a":{{"blobId":"{1}","mailboxIds":{{"{2}":true}}}},"b":{{"blobId":"{3}","mailboxIds":{{"F999":true}}}},"c":{{"blobId":"Bnope","mailboxIds":{{"{2}":true}}}}}}}})",
      alice_.id, empty_blob, inbox, blob));
  EXPECT_EQ(Args(bad).Find("notCreated")->Find("a")->Find("type")->as_string(), "invalidEmail");
  EXPECT_EQ(Args(bad).Find("notCreated")->Find("b")->Find("type")->as_string(), "invalidProperties");
  EXPECT_EQ(Args(bad).Find("notCreated")->Find("c")->Find("type")->as_string(), "blobNotFound");
  EXPECT_TRUE(Args(bad).Find("created")->is_null());
  Value after = Call(alice_p_, "Email/query", fmt::format(R"({{"accountId":"{}"}})", alice_.id));
  EXPECT_EQ(Args(after).Find("ids")->as_array().size(), 1u);

  // The attachment's blob downloads; someone else's blob id is not found.
  std::string att_blob = e.Find("attachments")->as_array()[0].Find("blobId")->as_string();
  ASSERT_TRUE(store_->Read([&](Txn& t) -> Status {
    KW_ASSIGN_OR_RETURN(auto data, t.GetBlob(alice_.id, att_blob));
    EXPECT_EQ(data.substr(0, 5), "%PDF-");
    EXPECT_FALSE(t.GetBlob(bob_.id, att_blob).ok());
    return Status::Ok();
  }).ok());
}

TEST_F(JmapTest, ResultReferenceErrors) {
  Value r = Calls(alice_p_, fmt::format(R"([
    ["Email/query",{{"accountId":"{0}"}},"q"],
    ["Email/get",{{"accountId":"{0}","#ids":{{"resultOf":"q","name":"Email/changes","path":"/ids"}}}},"g1"],
    ["Email/get",{{"accountId":"{0}","#ids":{{"resultOf":"zz","name":"Email/query","path":"/ids"}}}},"g2"],
    ["Email/get",{{"accountId":"{0}","#ids":{{"resultOf":"q","name":"Email/query","path":"/nope"}}}},"g3"],
    ["Email/get",{{"accountId":"{0}","ids":[],"#ids":{{"resultOf":"q","name":"Email/query","path":"/ids"}}}},"g4"]])",
      alice_.id));
  ASSERT_EQ(r.as_array().size(), 5u);
  EXPECT_EQ(ErrorType(r.as_array()[1]), "invalidResultReference");
  EXPECT_EQ(ErrorType(r.as_array()[2]), "invalidResultReference");
  EXPECT_EQ(ErrorType(r.as_array()[3]), "invalidResultReference");
  EXPECT_EQ(ErrorType(r.as_array()[4]), "invalidArguments");
}

TEST_F(JmapTest, SetChangesAndQueryChanges) {
  std::string a = Deliver(alice_, testing::kPlain);
  Value st = Call(alice_p_, "Email/get", fmt::format(R"({{"accountId":"{}","ids":[]}})", alice_.id));
  std::string state = Args(st).Find("state")->as_string();
  Value mstate = Call(alice_p_, "Mailbox/get", fmt::format(R"({{"accountId":"{}","ids":[]}})", alice_.id));
  std::string mailbox_state = Args(mstate).Find("state")->as_string();
  std::string b = Deliver(alice_, testing::kReply);
  std::string archive = RoleId(alice_, "archive");
  Value r = Call(alice_p_, "Email/set", fmt::format(
      R"({{"accountId":"{}","ifInState":"{}","update":{{"{}":{{"keywords/$seen":true,"mailboxIds":{{"{}":true}}}}}}}})",
      alice_.id, state, a, archive));
  EXPECT_EQ(ErrorType(r), "stateMismatch");
  r = Call(alice_p_, "Email/set", fmt::format(
      R"({{"accountId":"{}","update":{{"{}":{{"keywords/$seen":true,"mailboxIds":{{"{}":true}}}},"M999":{{"keywords/$seen":true}}}},"destroy":["M998"]}})",
      alice_.id, a, archive));
  EXPECT_TRUE(Args(r).Find("updated")->Find(a));
  EXPECT_EQ(Args(r).Find("notUpdated")->Find("M999")->Find("type")->as_string(), "notFound");
  EXPECT_EQ(Args(r).Find("notDestroyed")->Find("M998")->Find("type")->as_string(), "notFound");

  r = Call(alice_p_, "Email/changes", fmt::format(R"({{"accountId":"{}","sinceState":"{}"}})", alice_.id, state));
  EXPECT_EQ(Args(r).Find("created")->Serialize(), fmt::format(R"(["{}"])", b));
  EXPECT_EQ(Args(r).Find("updated")->Serialize(), fmt::format(R"(["{}"])", a));
  r = Call(alice_p_, "Mailbox/changes", fmt::format(R"({{"accountId":"{}","sinceState":"{}"}})", alice_.id, mailbox_state));
  EXPECT_EQ(Args(r).Find("updatedProperties")->as_array().size(), 4u) << r.Serialize();
  EXPECT_EQ(Args(r).Find("updated")->as_array().size(), 2u);  // inbox and archive counts

  r = Call(alice_p_, "Email/queryChanges", fmt::format(
      R"({{"accountId":"{}","sinceQueryState":"{}","filter":{{"inMailbox":"{}"}}}})", alice_.id, state,
      RoleId(alice_, "inbox")));
  EXPECT_EQ(Args(r).Find("removed")->Serialize(), fmt::format(R"(["{}"])", a));
  EXPECT_EQ(Args(r).Find("added")->Serialize(), fmt::format(R"([{{"id":"{}","index":0}}])", b));
  r = Call(alice_p_, "Email/queryChanges", fmt::format(
      R"({{"accountId":"{}","sinceQueryState":"{}","maxChanges":1}})", alice_.id, state));
  EXPECT_EQ(ErrorType(r), "tooManyChanges");

  r = Call(alice_p_, "Thread/get", fmt::format(R"({{"accountId":"{}","ids":["T1","T404"]}})", alice_.id));
  EXPECT_EQ(Args(r).Find("list")->as_array()[0].Find("emailIds")->Serialize(), fmt::format(R"(["{}","{}"])", a, b));
  EXPECT_EQ(Args(r).Find("notFound")->Serialize(), R"(["T404"])");

  r = Call(alice_p_, "Email/changes", fmt::format(R"({{"accountId":"{}","sinceState":"nonsense"}})", alice_.id));
  EXPECT_EQ(ErrorType(r), "cannotCalculateChanges");

  r = Call(alice_p_, "Email/set", fmt::format(R"({{"accountId":"{}","destroy":["{}"]}})", alice_.id, a));
  EXPECT_EQ(Args(r).Find("destroyed")->Serialize(), fmt::format(R"(["{}"])", a));
  r = Call(alice_p_, "Email/get", fmt::format(R"({{"accountId":"{}","ids":["{}"]}})", alice_.id, a));
  EXPECT_EQ(Args(r).Find("notFound")->Serialize(), fmt::format(R"(["{}"])", a));
}

TEST_F(JmapTest, QueryErrorsAndPaging) {
  std::string a = Deliver(alice_, testing::kPlain);
  std::string b = Deliver(alice_, testing::kAlternativeWithAttachment);
  std::string c = Deliver(alice_, testing::kCharsets);
  auto q = [&](std::string_view extra) {
    return Call(alice_p_, "Email/query", fmt::format(R"({{"accountId":"{}"{}}})", alice_.id, extra));
  };
  EXPECT_EQ(ErrorType(q(R"(,"filter":{"bogus":1})")), "unsupportedFilter");
  EXPECT_EQ(ErrorType(q(R"(,"sort":[{"property":"bogus"}])")), "unsupportedSort");
  EXPECT_EQ(ErrorType(q(R"(,"anchor":"M404")")), "anchorNotFound");
  EXPECT_EQ(ErrorType(q(R"(,"limit":-1)")), "invalidArguments");
  EXPECT_EQ(ErrorType(q(R"(,"filter":{"before":"yesterday"})")), "invalidArguments");
  Value r = q(R"(,"sort":[{"property":"subject"}],"position":1,"limit":1,"calculateTotal":true)");
  // Subjects: "Plans...", "Quarterly...", "Résumé...": the second is the plain message.
  EXPECT_EQ(Args(r).Find("ids")->Serialize(), fmt::format(R"(["{}"])", a));
  EXPECT_EQ(Args(r).Find("total")->as_int(), 3);
  r = q(fmt::format(R"(,"sort":[{{"property":"subject"}}],"anchor":"{}","anchorOffset":1)", b));
  EXPECT_EQ(Args(r).Find("ids")->Serialize(), fmt::format(R"(["{}","{}"])", a, c));
  r = q(R"(,"filter":{"operator":"OR","conditions":[{"text":"hiking"},{"subject":"Résumé"}]},"sort":[{"property":"subject"}])");
  EXPECT_EQ(Args(r).Find("ids")->Serialize(), fmt::format(R"(["{}","{}"])", b, c));

  r = Call(alice_p_, "SearchSnippet/get", fmt::format(
      R"({{"accountId":"{}","filter":{{"text":"hiking"}},"emailIds":["{}","{}","M404"]}})", alice_.id, b, a));
  const auto& list = Args(r).Find("list")->as_array();
  ASSERT_EQ(list.size(), 2u);
  EXPECT_NE(list[0].Find("preview")->as_string().find("<mark>hiking</mark>"), std::string::npos);
  EXPECT_TRUE(list[1].Find("preview")->is_null());
  EXPECT_EQ(Args(r).Find("notFound")->Serialize(), R"(["M404"])");
}

TEST_F(JmapTest, Limits) {
  limits_.max_objects_in_get = 2;
  limits_.max_objects_in_set = 1;
  processor_ = std::make_unique<Processor>(store_.get(), &audit_, limits_, &clock_);
  Value r = Call(alice_p_, "Email/get", fmt::format(R"({{"accountId":"{}","ids":["a","b","c"]}})", alice_.id));
  EXPECT_EQ(ErrorType(r), "requestTooLarge");
  r = Call(alice_p_, "Email/set", fmt::format(R"({{"accountId":"{}","destroy":["a","b"]}})", alice_.id));
  EXPECT_EQ(ErrorType(r), "requestTooLarge");
  r = Call(alice_p_, "Email/get", fmt::format(R"({{"accountId":"{}","ids":"x"}})", alice_.id));
  EXPECT_EQ(ErrorType(r), "invalidArguments");
  r = Call(alice_p_, "Email/get", fmt::format(R"({{"accountId":"{}","ids":[],"properties":["nope"]}})", alice_.id));
  EXPECT_EQ(ErrorType(r), "invalidArguments");
}

TEST_F(JmapTest, DraftSubmitToAnotherTenantWithOnSuccessUpdate) {
  std::string drafts = RoleId(alice_, "drafts"), sent = RoleId(alice_, "sent");
  Value r = Calls(alice_p_, fmt::format(R"([
    ["Email/set",{{"accountId":"{0}","create":{{"d":{{"mailboxIds":{{"{1}":true}},"keywords":{{"$draft":true}},
      "from":[{{"name":"Alice","email":"alice@contoso.test"}}],"to":[{{"name":"Bob","email":"bob@fabrikam.test"}}],
      "bcc":[{{"email":"carol@contoso.test"}}],
      "subject":"Café at noon?","textBody":[{{"partId":"t","type":"text/plain"}}],"bodyValues":{{"t":{{"value":"See you there."}}}}}}}}}},"s"],
    ["EmailSubmission/set",{{"accountId":"{0}","create":{{"sub":{{"identityId":"I{0}","emailId":"#d"}}}},
      "onSuccessUpdateEmail":{{"#sub":{{"mailboxIds/{1}":null,"mailboxIds/{2}":true,"keywords/$draft":null}}}}}},"x"]])",
      alice_.id, drafts, sent));
  ASSERT_EQ(r.as_array().size(), 3u) << r.Serialize();
  std::string draft_id = Args(r.as_array()[0]).Find("created")->Find("d")->Find("id")->as_string();
  EXPECT_EQ(r.as_array()[1].as_array()[0].as_string(), "EmailSubmission/set");
  EXPECT_TRUE(Args(r.as_array()[1]).Find("created")->Find("sub")) << r.Serialize();
  EXPECT_EQ(r.as_array()[2].as_array()[0].as_string(), "Email/set");
  EXPECT_TRUE(Args(r.as_array()[2]).Find("updated")->Find(draft_id));

  Value g = Call(alice_p_, "Email/get", fmt::format(R"({{"accountId":"{}","ids":["{}"],"properties":["mailboxIds","keywords"]}})", alice_.id, draft_id));
  const Value& e = Args(g).Find("list")->as_array()[0];
  EXPECT_EQ(e.Find("mailboxIds")->Serialize(), fmt::format(R"({{"{}":true}})", sent));
  EXPECT_EQ(e.Find("keywords")->Serialize(), "{}");

  // Bob (tenant B) and Carol (Bcc) received it; Bob's copy has no Bcc header.
  Value q = Calls(bob_p_, fmt::format(R"([["Email/query",{{"accountId":"{0}"}},"q"],
    ["Email/get",{{"accountId":"{0}","#ids":{{"resultOf":"q","name":"Email/query","path":"/ids"}},"properties":["subject","bcc","bodyValues"],"fetchTextBodyValues":true}},"g"]])",
      bob_.id));
  const auto& bl = Args(q.as_array()[1]).Find("list")->as_array();
  ASSERT_EQ(bl.size(), 1u);
  EXPECT_EQ(bl[0].Find("subject")->as_string(), "Café at noon?");
  EXPECT_TRUE(bl[0].Find("bcc")->is_null());
  Value cq = Call(User("tenant-a", "user-carol"), "Email/query", fmt::format(R"({{"accountId":"{}"}})", carol_.id));
  EXPECT_EQ(Args(cq).Find("ids")->as_array().size(), 1u);

  // Sending as someone else, to nobody on this server, or with nobody at all is refused.
  r = Calls(alice_p_, fmt::format(R"([
    ["Email/set",{{"accountId":"{0}","create":{{
      "spoof":{{"mailboxIds":{{"{1}":true}},"from":[{{"email":"ceo@contoso.test"}}],"to":[{{"email":"bob@fabrikam.test"}}],"subject":"x","textBody":[{{"partId":"t"}}],"bodyValues":{{"t":{{"value":"x"}}}}}},
      "ext":{{"mailboxIds":{{"{1}":true}},"from":[{{"email":"alice@contoso.test"}}],"to":[{{"email":"someone@elsewhere.test"}}],"subject":"x","textBody":[{{"partId":"t"}}],"bodyValues":{{"t":{{"value":"x"}}}}}},
      "none":{{"mailboxIds":{{"{1}":true}},"from":[{{"email":"alice@contoso.test"}}],"subject":"x","textBody":[{{"partId":"t"}}],"bodyValues":{{"t":{{"value":"x"}}}}}}}}}},"s"],
    ["EmailSubmission/set",{{"accountId":"{0}","create":{{
      "a":{{"identityId":"I{0}","emailId":"#spoof"}},"b":{{"identityId":"I{0}","emailId":"#ext"}},"c":{{"identityId":"I{0}","emailId":"#none"}},
      "d":{{"identityId":"Iother","emailId":"#ext"}}}}}},"x"]])",
      alice_.id, drafts));
  const Value& nc = *Args(r.as_array()[1]).Find("notCreated");
  EXPECT_EQ(nc.Find("a")->Find("type")->as_string(), "forbiddenFrom");
  EXPECT_EQ(nc.Find("b")->Find("type")->as_string(), "invalidRecipients");
  EXPECT_EQ(nc.Find("c")->Find("type")->as_string(), "noRecipients");
  EXPECT_EQ(nc.Find("d")->Find("type")->as_string(), "invalidProperties");

  Value id = Call(alice_p_, "Identity/get", fmt::format(R"({{"accountId":"{}"}})", alice_.id));
  EXPECT_EQ(Args(id).Find("list")->as_array()[0].Find("email")->as_string(), "alice@contoso.test");
}

// Every method, called by a user of another tenant (and by another user of the same tenant)
// with Alice's account id, is accountNotFound and leaves a Failed record in Alice's tenant.
TEST_F(JmapTest, TenantIsolationForEveryMethod) {
  std::string a = Deliver(alice_, testing::kPlain);
  std::vector<std::pair<std::string, std::string>> methods = {
      {"Mailbox/get", "{}"},
      {"Mailbox/changes", R"({"sinceState":"0"})"},
      {"Mailbox/query", "{}"},
      {"Mailbox/set", R"({"create":{"x":{"name":"Stolen"}}})"},
      {"Email/get", fmt::format(R"({{"ids":["{}"]}})", a)},
      {"Email/changes", R"({"sinceState":"0"})"},
      {"Email/query", "{}"},
      {"Email/queryChanges", R"({"sinceQueryState":"0"})"},
      {"Email/set", fmt::format(R"({{"destroy":["{}"]}})", a)},
      {"Email/import", R"({"emails":{}})"},
      {"Thread/get", R"({"ids":["T1"]})"},
      {"Thread/changes", R"({"sinceState":"0"})"},
      {"Identity/get", "{}"},
      {"EmailSubmission/set", R"({"create":{}})"},
      {"SearchSnippet/get", fmt::format(R"({{"emailIds":["{}"]}})", a)},
  };
  for (const Principal& intruder : {bob_p_, User("tenant-a", "user-carol"), App("tenant-b", true, true, true)}) {
    for (const auto& [method, args] : methods) {
      audit_.Clear();
      std::string with_account = args;
      with_account.insert(1, fmt::format(R"("accountId":"{}"{})", alice_.id, args == "{}" ? "" : ","));
      Value r = Call(intruder, method, with_account);
      EXPECT_EQ(ErrorType(r), "accountNotFound") << method << " " << r.Serialize();
      auto recs = audit_.records();
      ASSERT_EQ(recs.size(), 1u) << method;
      EXPECT_EQ(recs[0].result, "Failed");
      EXPECT_EQ(recs[0].reason, "accountNotFound");
      EXPECT_EQ(recs[0].tenant_id, "tenant-a") << method;
      EXPECT_EQ(recs[0].mailbox_id, alice_.id);
      EXPECT_EQ(recs[0].resource, "jmap:" + method);
      EXPECT_TRUE(recs[0].items.empty());
    }
  }
  // Alice's email is still there, and Bob's account knows nothing of her ids.
  Value r = Call(alice_p_, "Email/get", fmt::format(R"({{"accountId":"{}","ids":["{}"],"properties":["subject"]}})", alice_.id, a));
  EXPECT_EQ(Args(r).Find("list")->as_array().size(), 1u);
  r = Call(bob_p_, "Email/get", fmt::format(R"({{"accountId":"{}","ids":["{}"]}})", bob_.id, a));
  EXPECT_EQ(Args(r).Find("notFound")->Serialize(), fmt::format(R"(["{}"])", a));
  r = Call(bob_p_, "Email/set", fmt::format(R"({{"accountId":"{}","update":{{"{}":{{"keywords/$seen":true}}}}}})", bob_.id, a));
  EXPECT_EQ(Args(r).Find("notUpdated")->Find(a)->Find("type")->as_string(), "notFound");
  r = Call(bob_p_, "Thread/get", fmt::format(R"({{"accountId":"{}","ids":["T1"]}})", bob_.id));
  EXPECT_EQ(Args(r).Find("notFound")->Serialize(), R"(["T1"])");
}

TEST_F(JmapTest, AppOnlyScopes) {
  std::string a = Deliver(alice_, testing::kPlain);
  Principal reader = App("tenant-a", true, false, false);
  Value r = Call(reader, "Email/get", fmt::format(R"({{"accountId":"{}","ids":["{}"]}})", alice_.id, a));
  EXPECT_EQ(Args(r).Find("list")->as_array().size(), 1u);
  r = Call(reader, "Email/set", fmt::format(R"({{"accountId":"{}","destroy":["{}"]}})", alice_.id, a));
  EXPECT_EQ(ErrorType(r), "forbidden");
  r = Call(reader, "EmailSubmission/set", fmt::format(R"({{"accountId":"{}","create":{{}}}})", alice_.id));
  EXPECT_EQ(ErrorType(r), "forbidden");
  Principal sender = App("tenant-a", false, false, true);
  r = Call(sender, "Email/get", fmt::format(R"({{"accountId":"{}","ids":["{}"]}})", alice_.id, a));
  EXPECT_EQ(ErrorType(r), "forbidden");
  Principal none = App("tenant-a", false, false, false);
  r = Call(none, "Email/get", fmt::format(R"({{"accountId":"{}","ids":["{}"]}})", alice_.id, a));
  EXPECT_EQ(ErrorType(r), "accountNotFound");
  EXPECT_EQ(processor_->AccountsFor(reader)->size(), 2u);  // alice and carol, not bob
  EXPECT_EQ(processor_->AccountsFor(none)->size(), 0u);
  EXPECT_EQ(processor_->AccountsFor(alice_p_)->size(), 1u);
}

TEST_F(JmapTest, AuditFailureWithholdsTheResponseAndRollsBack) {
  std::string a = Deliver(alice_, testing::kPlain);
  audit_.set_fail(true);
  JmapResponse r = Raw(alice_p_, fmt::format(
      R"({{"using":{},"methodCalls":[["Email/get",{{"accountId":"{}","ids":["{}"]}},"g"]]}})", kUsing, alice_.id, a));
  EXPECT_EQ(r.status, 503);
  EXPECT_EQ(r.body.find("Quarterly"), std::string::npos);
  r = Raw(alice_p_, fmt::format(
      R"({{"using":{},"methodCalls":[["Email/set",{{"accountId":"{}","destroy":["{}"]}},"s"]]}})", kUsing, alice_.id, a));
  EXPECT_EQ(r.status, 503);
  audit_.set_fail(false);
  Value g = Call(alice_p_, "Email/get", fmt::format(R"({{"accountId":"{}","ids":["{}"]}})", alice_.id, a));
  EXPECT_EQ(Args(g).Find("list")->as_array().size(), 1u) << "the destroy was rolled back";
}

TEST_F(JmapTest, RateLimitPerMailbox) {
  RateLimiter limiter(1.0, 2.0, &clock_);
  processor_ = std::make_unique<Processor>(store_.get(), &audit_, limits_, &clock_, &limiter);
  std::string body = fmt::format(R"({{"using":{},"methodCalls":[["Mailbox/get",{{"accountId":"{}","ids":[]}},"m"]]}})",
                                 kUsing, alice_.id);
  EXPECT_EQ(Raw(alice_p_, body).status, 200);
  EXPECT_EQ(Raw(alice_p_, body).status, 200);
  JmapResponse r = Raw(alice_p_, body);
  EXPECT_EQ(r.status, 429);
  EXPECT_GE(r.retry_after, 1);
  // Another mailbox is not affected.
  EXPECT_EQ(Raw(bob_p_, fmt::format(R"({{"using":{},"methodCalls":[["Mailbox/get",{{"accountId":"{}","ids":[]}},"m"]]}})",
                                    kUsing, bob_.id)).status, 200);
  clock_.AdvanceSeconds(2);
  EXPECT_EQ(Raw(alice_p_, body).status, 200);
}

// A random sequence of accesses yields exactly one record per call, with every item it touched.
TEST_F(JmapTest, AuditCompletenessOverRandomAccesses) {
  std::vector<std::string> ids;
  std::map<std::string, std::string> message_ids;
  for (int i = 0; i < 12; ++i) {
    std::string raw = fmt::format(
        "From: s{0}@fabrikam.test\nTo: alice@contoso.test\nSubject: note {0}\nMessage-ID: <n{0}@fabrikam.test>\n"
        "Content-Type: text/plain\n\nbody {0}\n", i);
    ids.push_back(Deliver(alice_, raw));
    message_ids[ids.back()] = fmt::format("<n{}@fabrikam.test>", i);
  }
  audit_.Clear();
  std::mt19937 rng(20230616);
  struct Expect {
    std::string operation, access, resource;
    std::vector<std::string> items;
  };
  std::vector<Expect> expected;
  for (int n = 0; n < 60; ++n) {
    int kind = static_cast<int>(rng() % 4);
    std::vector<std::string> pick;
    for (const auto& id : ids) {
      if (rng() % 3 == 0) pick.push_back(id);
    }
    std::string list;
    for (const auto& id : pick) list += (list.empty() ? "\"" : ",\"") + id + "\"";
    if (kind == 0) {
      Call(alice_p_, "Email/get", fmt::format(R"({{"accountId":"{}","ids":[{},"M404"],"properties":["subject"]}})", alice_.id, list));
      expected.push_back({"MailItemsAccessed", "Bind", "jmap:Email/get", pick});
    } else if (kind == 1) {
      Call(alice_p_, "SearchSnippet/get", fmt::format(R"({{"accountId":"{}","filter":{{"text":"body"}},"emailIds":[{}]}})", alice_.id, list));
      expected.push_back({"MailItemsAccessed", "Bind", "jmap:SearchSnippet/get", pick});
    } else if (kind == 2) {
      Value r = Call(alice_p_, "Email/query", fmt::format(R"({{"accountId":"{}","position":{},"limit":5}})", alice_.id, rng() % 10));
      std::vector<std::string> got;
      for (const auto& v : Args(r).Find("ids")->as_array()) got.push_back(v.as_string());
      expected.push_back({"MailItemsAccessed", "Sync", "jmap:Email/query", got});
    } else {
      if (pick.empty()) continue;
      std::string update;
      for (const auto& id : pick) update += fmt::format(R"({}"{}":{{"keywords/$flagged":true}})", update.empty() ? "" : ",", id);
      Call(alice_p_, "Email/set", fmt::format(R"({{"accountId":"{}","update":{{{}}}}})", alice_.id, update));
      expected.push_back({"Update", "", "jmap:Email/set", pick});
    }
  }
  auto recs = audit_.records();
  ASSERT_EQ(recs.size(), expected.size());
  for (size_t i = 0; i < recs.size(); ++i) {
    EXPECT_EQ(recs[i].operation, expected[i].operation) << i;
    EXPECT_EQ(recs[i].access_type, expected[i].access) << i;
    EXPECT_EQ(recs[i].resource, expected[i].resource) << i;
    EXPECT_EQ(recs[i].result, "Succeeded");
    EXPECT_EQ(recs[i].tenant_id, "tenant-a");
    EXPECT_EQ(recs[i].mailbox_id, alice_.id);
    EXPECT_EQ(recs[i].mailbox_owner, "alice@contoso.test");
    EXPECT_EQ(recs[i].user_id, "user-alice");
    ASSERT_EQ(recs[i].items.size(), expected[i].items.size()) << i << " " << recs[i].resource;
    for (size_t k = 0; k < recs[i].items.size(); ++k) {
      EXPECT_EQ(recs[i].items[k].id, expected[i].items[k]);
      EXPECT_EQ(recs[i].items[k].internet_message_id, message_ids[expected[i].items[k]]);
      EXPECT_EQ(recs[i].items[k].folder_path, "\\Inbox");
    }
  }
}

}  // namespace
}  // namespace kw::mail
