#include "mail/store.h"

#include <gtest/gtest.h>

#include "mail/test_util.h"

namespace kw::mail {
namespace {

using testing::Crlf;

class StoreTest : public ::testing::Test {
 protected:
  void SetUp() override {
    StoreOptions o;
    o.path = dir_.File("mail.db");
    o.clock = &clock_;
    auto s = Store::Open(o);
    ASSERT_TRUE(s.ok()) << s.status().ToString();
    store_ = std::move(*s);
    auto a = store_->EnsureAccount("tenant-a", "user-alice", "alice@contoso.test", "alice@contoso.test");
    ASSERT_TRUE(a.ok()) << a.status().ToString();
    alice_ = *a;
  }

  std::string State(std::string_view type) {
    std::string out;
    EXPECT_TRUE(store_->Read([&](Txn& t) -> Status {
      KW_ASSIGN_OR_RETURN(out, t.State(alice_.id, type));
      return Status::Ok();
    }).ok());
    return out;
  }

  FakeClock clock_;
  testing::TempDir dir_;
  std::unique_ptr<Store> store_;
  Account alice_;
};

TEST_F(StoreTest, AccountHasDefaultMailboxes) {
  std::vector<Mailbox> boxes;
  ASSERT_TRUE(store_->Read([&](Txn& t) -> Status {
    KW_ASSIGN_OR_RETURN(boxes, t.ListMailboxes(alice_.id, true));
    return Status::Ok();
  }).ok());
  std::set<std::string> roles;
  for (const auto& m : boxes) roles.insert(m.role);
  EXPECT_EQ(roles, (std::set<std::string>{"inbox", "drafts", "sent", "archive", "junk", "trash"}));
  auto again = store_->EnsureAccount("tenant-a", "user-alice", "x", "y");
  ASSERT_TRUE(again.ok());
  EXPECT_EQ(again->id, alice_.id);
}

TEST_F(StoreTest, DeliverThreadsAndChanges) {
  std::string state0 = State("Email");
  auto a = store_->Deliver(alice_.id, Crlf(testing::kPlain));
  ASSERT_TRUE(a.ok()) << a.status().ToString();
  auto b = store_->Deliver(alice_.id, Crlf(testing::kReply));
  ASSERT_TRUE(b.ok());
  auto c = store_->Deliver(alice_.id, Crlf(testing::kAlternativeWithAttachment));
  ASSERT_TRUE(c.ok());
  EXPECT_EQ(a->thread_id, b->thread_id);
  EXPECT_NE(a->thread_id, c->thread_id);
  ChangeSet cs;
  ASSERT_TRUE(store_->Read([&](Txn& t) -> Status {
    KW_ASSIGN_OR_RETURN(cs, t.Changes(alice_.id, "Email", state0, 100));
    return Status::Ok();
  }).ok());
  EXPECT_EQ(cs.created, (std::vector<std::string>{a->id, b->id, c->id}));
  EXPECT_EQ(cs.new_state, State("Email"));
  // Paging with max_changes.
  ASSERT_TRUE(store_->Read([&](Txn& t) -> Status {
    KW_ASSIGN_OR_RETURN(cs, t.Changes(alice_.id, "Email", state0, 2));
    return Status::Ok();
  }).ok());
  EXPECT_TRUE(cs.has_more);
  EXPECT_EQ(cs.created.size(), 2u);
  std::string mid = cs.new_state;
  ASSERT_TRUE(store_->Read([&](Txn& t) -> Status {
    KW_ASSIGN_OR_RETURN(cs, t.Changes(alice_.id, "Email", mid, 2));
    return Status::Ok();
  }).ok());
  EXPECT_EQ(cs.created, (std::vector<std::string>{c->id}));
  // Destroy: created+destroyed in range cancels out; from the later state it is destroyed.
  std::string before_destroy = State("Email");
  ASSERT_TRUE(store_->Write([&](Txn& t) { return t.DestroyEmail(alice_.id, c->id); }).ok());
  ASSERT_TRUE(store_->Read([&](Txn& t) -> Status {
    KW_ASSIGN_OR_RETURN(cs, t.Changes(alice_.id, "Email", state0, 100));
    return Status::Ok();
  }).ok());
  EXPECT_EQ(cs.created.size(), 2u);
  EXPECT_TRUE(cs.destroyed.empty());
  ASSERT_TRUE(store_->Read([&](Txn& t) -> Status {
    KW_ASSIGN_OR_RETURN(cs, t.Changes(alice_.id, "Email", before_destroy, 100));
    return Status::Ok();
  }).ok());
  EXPECT_EQ(cs.destroyed, (std::vector<std::string>{c->id}));
}

TEST_F(StoreTest, ChangesRetention) {
  std::string state0 = State("Email");
  ASSERT_TRUE(store_->Deliver(alice_.id, Crlf(testing::kPlain)).ok());
  clock_.AdvanceSeconds(31 * 86400);
  ASSERT_TRUE(store_->Prune().ok());
  // 31 days of history still answer.
  Status s = store_->Read([&](Txn& t) { return t.Changes(alice_.id, "Email", state0, 10).status(); });
  EXPECT_TRUE(s.ok()) << s.ToString();
  clock_.AdvanceSeconds(20 * 86400);
  ASSERT_TRUE(store_->Prune().ok());
  s = store_->Read([&](Txn& t) { return t.Changes(alice_.id, "Email", state0, 10).status(); });
  EXPECT_EQ(s.code(), StatusCode::kFailedPrecondition);
  EXPECT_NE(s.message().find("cannotCalculateChanges"), std::string::npos);
  s = store_->Read([&](Txn& t) { return t.Changes(alice_.id, "Email", "garbage", 10).status(); });
  EXPECT_EQ(s.code(), StatusCode::kFailedPrecondition);
}

TEST_F(StoreTest, QueryAndSearch) {
  auto a = store_->Deliver(alice_.id, Crlf(testing::kPlain));
  auto c = store_->Deliver(alice_.id, Crlf(testing::kAlternativeWithAttachment));
  auto d = store_->Deliver(alice_.id, Crlf(testing::kCharsets));
  ASSERT_TRUE(a.ok() && c.ok() && d.ok());
  auto query = [&](std::string_view filter) {
    std::vector<std::string> ids;
    Status s = store_->Read([&](Txn& t) -> Status {
      KW_ASSIGN_OR_RETURN(auto f, ParseJson(filter));
      KW_ASSIGN_OR_RETURN(auto refs, t.QueryEmails(alice_.id, f, Value(), false));
      for (auto& r : refs) ids.push_back(r.id);
      return Status::Ok();
    });
    EXPECT_TRUE(s.ok()) << s.ToString();
    return ids;
  };
  EXPECT_EQ(query(R"({"text":"hiking"})"), (std::vector<std::string>{c->id}));
  EXPECT_EQ(query(R"({"from":"bob@fabrikam.test"})"), (std::vector<std::string>{a->id}));
  EXPECT_EQ(query(R"({"body":"creme"})"), (std::vector<std::string>{d->id}));
  EXPECT_EQ(query(R"({"hasAttachment":true})"), (std::vector<std::string>{c->id}));
  EXPECT_EQ(query(R"({"operator":"NOT","conditions":[{"hasAttachment":true}]})").size(), 2u);
  EXPECT_EQ(query(R"({"text":"\"unbalanced ( quote"})").size(), 0u);
  Status s = store_->Read([&](Txn& t) {
    return t.QueryEmails(alice_.id, ParseJson(R"({"bogus":1})").value(), Value(), false).status();
  });
  EXPECT_NE(s.message().find("unsupportedFilter"), std::string::npos);
  std::vector<Txn::Snippet> sn;
  ASSERT_TRUE(store_->Read([&](Txn& t) -> Status {
    KW_ASSIGN_OR_RETURN(sn, t.Snippets(alice_.id, ParseJson(R"({"text":"hiking"})").value(), {c->id, a->id}));
    return Status::Ok();
  }).ok());
  ASSERT_EQ(sn.size(), 2u);
  ASSERT_TRUE(sn[0].preview.has_value());
  EXPECT_NE(sn[0].preview->find("<mark>hiking</mark>"), std::string::npos);
  EXPECT_FALSE(sn[1].preview.has_value());
}

TEST_F(StoreTest, OtherAccountsIdsAreNotFound) {
  auto bob = store_->EnsureAccount("tenant-b", "user-bob", "bob@fabrikam.test", "bob@fabrikam.test");
  ASSERT_TRUE(bob.ok());
  auto m = store_->Deliver(bob->id, Crlf(testing::kPlain));
  ASSERT_TRUE(m.ok());
  ASSERT_TRUE(store_->Read([&](Txn& t) -> Status {
    KW_ASSIGN_OR_RETURN(auto rows, t.GetEmails(alice_.id, {m->id}, true, true));
    EXPECT_FALSE(rows[0].has_value());
    EXPECT_EQ(t.GetBlob(alice_.id, m->blob_id).status().code(), StatusCode::kNotFound);
    EXPECT_TRUE(t.GetBlob(bob->id, m->blob_id).ok());
    return Status::Ok();
  }).ok());
  Status s = store_->Write([&](Txn& t) { return t.DestroyEmail(alice_.id, m->id); });
  EXPECT_EQ(s.code(), StatusCode::kNotFound);
}

TEST_F(StoreTest, DeliverBatchIsolatesBadMessages) {
  auto bob = store_->EnsureAccount("tenant-b", "user-bob", "bob", "bob@fabrikam.test").value();
  auto r = store_->DeliverBatch({{alice_.id, Crlf(testing::kPlain)},
                                 {alice_.id, ""},
                                 {"A-nope", Crlf(testing::kPlain)},
                                 {bob.id, Crlf(testing::kCharsets)}});
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  ASSERT_EQ(r->size(), 4u);
  EXPECT_TRUE((*r)[0].ok());
  EXPECT_EQ((*r)[1].status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ((*r)[2].status().code(), StatusCode::kNotFound);
  EXPECT_TRUE((*r)[3].ok());
  std::vector<EmailRef> refs;
  ASSERT_TRUE(store_->Read([&](Txn& t) -> Status {
    KW_ASSIGN_OR_RETURN(refs, t.QueryEmails(bob.id, Value(), Value(), false));
    return Status::Ok();
  }).ok());
  EXPECT_EQ(refs.size(), 1u);
}

TEST_F(StoreTest, RejectsUnparsable) {
  auto r = store_->Deliver(alice_.id, "");
  EXPECT_EQ(r.status().code(), StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace kw::mail
