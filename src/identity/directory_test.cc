#include "identity/directory.h"

#include <gtest/gtest.h>

namespace kw::identity {
namespace {

class DirectoryTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto db = sqlite::Db::Open(":memory:");
    ASSERT_TRUE(db.ok());
    db_ = std::shared_ptr<sqlite::Db>(std::move(db).value());
    auto d = Directory::Open(db_, &clock_, PasswordCost::Minimum());
    ASSERT_TRUE(d.ok()) << d.status().ToString();
    dir_ = std::move(d).value();
  }
  FakeClock clock_;
  std::shared_ptr<sqlite::Db> db_;
  std::unique_ptr<Directory> dir_;
};

TEST_F(DirectoryTest, ConsumerTenantExistsAndTenantsAreCreated) {
  auto consumer = dir_->GetTenant(kConsumerTenantId);
  ASSERT_TRUE(consumer.ok());
  EXPECT_TRUE(consumer->consumer);
  auto t = dir_->CreateTenant("Contoso");
  ASSERT_TRUE(t.ok());
  EXPECT_EQ(t->id.size(), 36u);
  EXPECT_EQ(t->id[14], '4');  // version-4 GUID
  EXPECT_EQ(dir_->CreateTenant("Again", t->id).status().code(), StatusCode::kAlreadyExists);
  EXPECT_EQ(dir_->CreateTenant("").status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(dir_->CreateTenant("x", "a/b").status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(dir_->ListTenants()->size(), 2u);
  EXPECT_EQ(IssuerUrl("https://login.keyward.test/", "t1"), "https://login.keyward.test/t1/v2.0");
}

TEST_F(DirectoryTest, UsersAuthenticateWithArgon2id) {
  auto t = dir_->CreateTenant("Contoso", "t1").value();
  auto u = dir_->CreateUser("t1", "alice", "correct horse battery");
  ASSERT_TRUE(u.ok()) << u.status().ToString();
  EXPECT_EQ(dir_->CreateUser("t1", "alice", "another password").status().code(), StatusCode::kAlreadyExists);
  EXPECT_EQ(dir_->CreateUser("t1", "bob", "short").status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(dir_->CreateUser("nope", "bob", "long enough").status().code(), StatusCode::kNotFound);
  EXPECT_TRUE(dir_->Authenticate("t1", "alice", "correct horse battery").ok());
  // Wrong password, unknown user, other tenant: the same answer.
  using Row = std::tuple<std::string_view, std::string_view, std::string_view>;
  for (auto [tenant, user, pass] : {Row{"t1", "alice", "wrong password"},
                                    Row{"t1", "mallory", "correct horse battery"},
                                    Row{kConsumerTenantId, "alice", "correct horse battery"}}) {
    auto r = dir_->Authenticate(tenant, user, pass);
    EXPECT_EQ(r.status().code(), StatusCode::kUnauthenticated);
    EXPECT_EQ(r.status().message(), "invalid username or password");
  }
  ASSERT_TRUE(dir_->SetUserDisabled("t1", "alice", true).ok());
  EXPECT_FALSE(dir_->Authenticate("t1", "alice", "correct horse battery").ok());
  // The stored hash is an Argon2id string, never the password.
  auto q = db_->Prepare("SELECT password_hash FROM users");
  ASSERT_TRUE(*q->Step());
  EXPECT_TRUE(q->Text(0).starts_with("$argon2id$"));
  EXPECT_EQ(q->Text(0).find("correct horse"), std::string::npos);
}

TEST_F(DirectoryTest, ClientApplications) {
  dir_->CreateTenant("Contoso", "t1").value();
  ClientApp app;
  app.tenant_id = "t1";
  app.name = "Mail web";
  app.redirect_uris = {"https://mail.keyward.test/cb", "http://127.0.0.1:8080/cb"};
  app.audiences = {"https://mail.keyward.test"};
  app.scopes = {"Mail.Read", "Mail.Send"};
  auto created = dir_->CreateApp(app);
  ASSERT_TRUE(created.ok()) << created.status().ToString();
  EXPECT_FALSE(created->client_secret.empty());
  const std::string id = created->app.client_id;
  auto ok = dir_->AuthenticateClient(id, created->client_secret);
  ASSERT_TRUE(ok.ok());
  EXPECT_EQ(ok->scopes, app.scopes);
  EXPECT_EQ(ok->redirect_uris, app.redirect_uris);
  EXPECT_EQ(dir_->AuthenticateClient(id, "wrong").status().message(), "invalid client");
  EXPECT_EQ(dir_->AuthenticateClient("unknown", created->client_secret).status().message(), "invalid client");
  // The secret is stored only as a digest.
  auto q = db_->Prepare("SELECT secret_sha256 FROM apps");
  ASSERT_TRUE(*q->Step());
  EXPECT_EQ(q->Blob(0).size(), 32u);
  EXPECT_EQ(q->Blob(0).find(created->client_secret), std::string::npos);
  // Public clients have no secret and cannot authenticate with one.
  ClientApp spa = app;
  spa.name = "SPA";
  spa.confidential = false;
  auto pub = dir_->CreateApp(spa);
  ASSERT_TRUE(pub.ok());
  EXPECT_TRUE(pub->client_secret.empty());
  EXPECT_FALSE(dir_->AuthenticateClient(pub->app.client_id, "").ok());
  // Redirect URIs: https, or http on loopback only; no fragments.
  for (std::string bad : {"http://evil.example/cb", "https://x.example/cb#frag", "javascript:alert(1)"}) {
    ClientApp b = app;
    b.redirect_uris = {bad};
    EXPECT_EQ(dir_->CreateApp(b).status().code(), StatusCode::kInvalidArgument) << bad;
  }
  EXPECT_EQ(dir_->ListApps("t1")->size(), 2u);
}

}  // namespace
}  // namespace kw::identity
