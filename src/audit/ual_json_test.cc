#include <gtest/gtest.h>
#include <simdjson.h>

#include <regex>

#include "audit/audit_log.h"
#include "audit/test_util.h"

namespace kw::audit {
namespace {

AuditRecord BindRecord() {
  AuditRecord r;
  r.seq = 42;
  r.hash = std::string(64, 'a');
  r.prev_hash = std::string(64, 'b');
  r.time_ms = 1'686'877'323'456;  // 2023-06-16T01:02:03.456Z
  r.tenant_id = "6babcaad-604b-40ac-a9d7-9fd97c0b779f";
  r.operation = "MailItemsAccessed";
  r.access_type = "Bind";
  r.user_id = "u-alice";
  r.user_upn = "alice@contoso.example";
  r.mailbox_owner = "Alice@Contoso.example";
  r.mailbox_id = "mbx-alice";
  r.items = {{"e1", "<m1@contoso.example>", "\\Inbox"},
             {"e2", "<m2@contoso.example>", "\\Sent Items"},
             {"e3", "<m3@contoso.example>", "\\Inbox"}};
  r.client_app_id = "d3590ed6-52b3-4102-aeff-aad2292ab01c";
  r.resource = "jmap:Email/get";
  r.client_ip = "51.89.156.153";
  r.user_agent = "Client=REST;Client=RESTSystem;;";
  r.session_id = "sess-1";
  r.token_id = "jti-xyz";
  r.token_kid = "consumer-2016";
  r.token_issuer = "https://login.keyward.example/consumers/v2.0";
  r.token_tenant_id = "9188040d-6c67-4c5b-b112-36a304b66dad";
  r.token_issued_at = 1'686'870'000;  // 2023-06-15T23:00:00
  r.result = "Succeeded";
  r.reason = "ok";
  r.detail = R"({"claims":{"scp":"Mail.Read"}})";
  return r;
}

std::string_view Str(simdjson::dom::element e, const char* key) {
  return e[key].get_string().value();
}

TEST(UalJsonTest, MailItemsAccessedBindWithTwoFolders) {
  std::string text = ToUalJson(BindRecord());
  simdjson::dom::parser parser;
  auto doc = parser.parse(text);
  ASSERT_FALSE(doc.error()) << text;
  simdjson::dom::element e = doc.value();
  EXPECT_EQ(Str(e, "CreationTime"), "2023-06-16T01:02:03");
  EXPECT_TRUE(std::regex_match(std::string(Str(e, "Id")),
                               std::regex("[0-9a-f]{8}-[0-9a-f]{4}-8[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}")))
      << Str(e, "Id");
  simdjson::dom::parser same_parser;
  EXPECT_EQ(Str(e, "Id"), Str(same_parser.parse(ToUalJson(BindRecord())).value(), "Id"))
      << "the Id is deterministic";
  AuditRecord other = BindRecord();
  other.seq = 43;
  simdjson::dom::parser other_parser;
  EXPECT_NE(std::string(Str(e, "Id")),
            std::string(Str(other_parser.parse(ToUalJson(other)).value(), "Id")));
  EXPECT_EQ(Str(e, "Operation"), "MailItemsAccessed");
  EXPECT_EQ(Str(e, "OrganizationId"), "6babcaad-604b-40ac-a9d7-9fd97c0b779f");
  EXPECT_EQ(e["RecordType"].get_int64().value(), 50);
  EXPECT_EQ(Str(e, "ResultStatus"), "Succeeded");
  EXPECT_EQ(Str(e, "UserId"), "alice@contoso.example");
  EXPECT_EQ(Str(e, "UserKey"), "u-alice");
  EXPECT_EQ(e["UserType"].get_int64().value(), 0);
  EXPECT_EQ(Str(e, "Workload"), "Exchange");
  EXPECT_EQ(Str(e, "ClientIPAddress"), "51.89.156.153");
  EXPECT_EQ(Str(e, "ClientInfoString"), "Client=REST;Client=RESTSystem;;");
  EXPECT_EQ(Str(e, "AppId"), "d3590ed6-52b3-4102-aeff-aad2292ab01c");
  EXPECT_EQ(Str(e, "ClientAppId"), "d3590ed6-52b3-4102-aeff-aad2292ab01c");
  EXPECT_EQ(e["ExternalAccess"].get_bool().value(), false);
  EXPECT_EQ(e["LogonType"].get_int64().value(), 0) << "owner (UPN compared case-insensitively)";
  EXPECT_EQ(Str(e, "MailboxGuid"), "mbx-alice");
  EXPECT_EQ(Str(e, "MailboxOwnerUPN"), "Alice@Contoso.example");
  EXPECT_EQ(Str(e, "SessionId"), "sess-1");
  EXPECT_EQ(e["OperationCount"].get_int64().value(), 3);
  auto props = e["OperationProperties"].get_array().value();
  ASSERT_EQ(props.size(), 2u);
  EXPECT_EQ(Str(props.at(0).value(), "Name"), "MailAccessType");
  EXPECT_EQ(Str(props.at(0).value(), "Value"), "Bind");
  EXPECT_EQ(Str(props.at(1).value(), "Name"), "IsThrottled");
  EXPECT_EQ(Str(props.at(1).value(), "Value"), "False");
  auto folders = e["Folders"].get_array().value();
  ASSERT_EQ(folders.size(), 2u);
  auto inbox = folders.at(0).value();
  EXPECT_EQ(Str(inbox, "Path"), "\\Inbox");
  EXPECT_EQ(Str(inbox, "Id").size(), 32u);
  auto inbox_items = inbox["FolderItems"].get_array().value();
  ASSERT_EQ(inbox_items.size(), 2u);
  EXPECT_EQ(Str(inbox_items.at(0).value(), "InternetMessageId"), "<m1@contoso.example>");
  EXPECT_EQ(Str(inbox_items.at(1).value(), "InternetMessageId"), "<m3@contoso.example>");
  EXPECT_EQ(Str(inbox_items.at(1).value(), "Id"), "e3");
  auto sent = folders.at(1).value();
  EXPECT_EQ(Str(sent, "Path"), "\\Sent Items");
  EXPECT_NE(Str(sent, "Id"), Str(inbox, "Id"));
  ASSERT_EQ(sent["FolderItems"].get_array().value().size(), 1u);
  EXPECT_EQ(Str(sent["FolderItems"].at(0).value(), "InternetMessageId"), "<m2@contoso.example>");
  auto ctx = e["AppAccessContext"];
  EXPECT_EQ(Str(ctx.value(), "ClientAppId"), "d3590ed6-52b3-4102-aeff-aad2292ab01c");
  EXPECT_EQ(Str(ctx.value(), "IssuedAtTime"), "2023-06-15T23:00:00");
  EXPECT_EQ(Str(ctx.value(), "UniqueTokenId"), "jti-xyz");
  EXPECT_EQ(Str(e, "TokenTenantId"), "9188040d-6c67-4c5b-b112-36a304b66dad");
  auto kw = e["Keyward"].value();
  EXPECT_EQ(kw["Seq"].get_uint64().value(), 42u);
  EXPECT_EQ(Str(kw, "Hash"), std::string(64, 'a'));
  EXPECT_EQ(Str(kw, "TokenKid"), "consumer-2016");
  EXPECT_EQ(Str(kw, "TokenIssuer"), "https://login.keyward.example/consumers/v2.0");
  EXPECT_EQ(Str(kw, "Reason"), "ok");
  EXPECT_EQ(Str(kw["Detail"]["claims"].value(), "scp"), "Mail.Read");
}

TEST(UalJsonTest, RecordTypeWorkloadAndLogonTypeTable) {
  struct Case {
    const char* name;
    void (*mutate)(AuditRecord*);
    int64_t record_type;
    const char* workload;
    int64_t logon_type;
    int64_t user_type;
  } cases[] = {
      {"mail_read", [](AuditRecord*) {}, 50, "Exchange", 0, 0},
      {"send", [](AuditRecord* r) { r->operation = "Send"; r->access_type.clear(); }, 2, "Exchange", 0, 0},
      {"delegate", [](AuditRecord* r) { r->mailbox_owner = "bob@contoso.example"; }, 50, "Exchange", 2, 0},
      {"app_only", [](AuditRecord* r) { r->user_id.clear(); r->user_upn.clear(); }, 50, "Exchange", 0, 5},
      {"token_rejected", [](AuditRecord* r) { r->operation = "TokenRejected"; r->items.clear(); }, 15, "AzureActiveDirectory", 0, 0},
      {"key_event", [](AuditRecord* r) { r->operation = "key_generated"; }, 15, "AzureActiveDirectory", 0, 0},
      {"identity_resource", [](AuditRecord* r) { r->operation = "SignInFailed"; r->resource = "identity:token"; }, 15, "AzureActiveDirectory", 0, 0},
  };
  simdjson::dom::parser parser;
  for (const auto& c : cases) {
    AuditRecord r = BindRecord();
    c.mutate(&r);
    std::string text = ToUalJson(r);
    auto e = parser.parse(text).value();
    EXPECT_EQ(e["RecordType"].get_int64().value(), c.record_type) << c.name;
    EXPECT_EQ(Str(e, "Workload"), c.workload) << c.name;
    EXPECT_EQ(e["LogonType"].get_int64().value(), c.logon_type) << c.name;
    EXPECT_EQ(e["UserType"].get_int64().value(), c.user_type) << c.name;
    EXPECT_EQ(e["OperationProperties"].error() == simdjson::SUCCESS, r.operation == "MailItemsAccessed")
        << c.name;
  }
}

}  // namespace
}  // namespace kw::audit
