#include "mail/store.h"

#include "core/html.h"

#include <algorithm>
#include <unordered_set>

#include <fmt/format.h>

#include "core/ascii.h"
#include "core/base64url.h"
#include "crypto/crypto.h"

namespace kw::mail {

namespace {

constexpr int kSchemaVersion = 1;

constexpr std::string_view kSchema = R"sql(
CREATE TABLE IF NOT EXISTS accounts (
  id TEXT PRIMARY KEY,
  tenant_id TEXT NOT NULL,
  owner_user_id TEXT NOT NULL,
  name TEXT NOT NULL,
  email TEXT NOT NULL,
  modseq INTEGER NOT NULL DEFAULT 0,
  UNIQUE (tenant_id, owner_user_id));
CREATE INDEX IF NOT EXISTS accounts_email ON accounts(email);
CREATE TABLE IF NOT EXISTS counters (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS mailboxes (
  id TEXT PRIMARY KEY,
  account_id TEXT NOT NULL REFERENCES accounts(id),
  name TEXT NOT NULL,
  parent_id TEXT NOT NULL DEFAULT '',
  role TEXT NOT NULL DEFAULT '',
  sort_order INTEGER NOT NULL DEFAULT 0,
  subscribed INTEGER NOT NULL DEFAULT 1);
CREATE INDEX IF NOT EXISTS mailboxes_account ON mailboxes(account_id);
CREATE TABLE IF NOT EXISTS threads (
  id TEXT PRIMARY KEY,
  account_id TEXT NOT NULL,
  subject_key TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS thread_ids (
  account_id TEXT NOT NULL,
  message_id TEXT NOT NULL,
  thread_id TEXT NOT NULL,
  PRIMARY KEY (account_id, message_id));
CREATE TABLE IF NOT EXISTS emails (
  rowid INTEGER PRIMARY KEY AUTOINCREMENT,
  id TEXT NOT NULL UNIQUE,
  account_id TEXT NOT NULL,
  thread_id TEXT NOT NULL,
  blob_id TEXT NOT NULL,
  message_id TEXT NOT NULL,
  size INTEGER NOT NULL,
  received_at INTEGER NOT NULL,
  sent_at INTEGER NOT NULL,
  has_attachment INTEGER NOT NULL,
  subject_key TEXT NOT NULL,
  from_key TEXT NOT NULL,
  to_key TEXT NOT NULL,
  summary TEXT NOT NULL,
  headers TEXT NOT NULL,
  body TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS emails_account ON emails(account_id, received_at);
CREATE INDEX IF NOT EXISTS emails_thread ON emails(thread_id);
CREATE TABLE IF NOT EXISTS email_mailboxes (
  email_id TEXT NOT NULL,
  mailbox_id TEXT NOT NULL,
  PRIMARY KEY (email_id, mailbox_id)) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS email_mailboxes_mailbox ON email_mailboxes(mailbox_id);
CREATE TABLE IF NOT EXISTS email_keywords (
  email_id TEXT NOT NULL,
  keyword TEXT NOT NULL,
  PRIMARY KEY (email_id, keyword)) WITHOUT ROWID;
CREATE VIRTUAL TABLE IF NOT EXISTS email_fts USING fts5(
  subject, from_, to_, cc, bcc, body, tokenize = 'unicode61 remove_diacritics 2');
CREATE TABLE IF NOT EXISTS blobs (id TEXT PRIMARY KEY, data BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS email_blobs (
  blob_id TEXT NOT NULL,
  email_id TEXT NOT NULL,
  PRIMARY KEY (blob_id, email_id)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS blob_owners (
  account_id TEXT NOT NULL,
  blob_id TEXT NOT NULL,
  PRIMARY KEY (account_id, blob_id)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS changes (
  account_id TEXT NOT NULL,
  type TEXT NOT NULL,
  modseq INTEGER NOT NULL,
  object_id TEXT NOT NULL,
  op INTEGER NOT NULL,
  time_ms INTEGER NOT NULL);
CREATE INDEX IF NOT EXISTS changes_by_type ON changes(account_id, type, modseq);
CREATE INDEX IF NOT EXISTS changes_by_time ON changes(time_ms);
CREATE TABLE IF NOT EXISTS states (
  account_id TEXT NOT NULL,
  type TEXT NOT NULL,
  modseq INTEGER NOT NULL DEFAULT 0,
  floor INTEGER NOT NULL DEFAULT 0,
  PRIMARY KEY (account_id, type)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS submissions (
  id TEXT PRIMARY KEY,
  account_id TEXT NOT NULL,
  email_id TEXT NOT NULL,
  identity_id TEXT NOT NULL,
  send_at INTEGER NOT NULL);
)sql";

struct DefaultMailbox {
  const char* role;
  const char* name;
  int sort;
};
constexpr DefaultMailbox kDefaults[] = {{"inbox", "Inbox", 1},  {"drafts", "Drafts", 2},
                                        {"sent", "Sent", 3},    {"archive", "Archive", 4},
                                        {"junk", "Junk", 5},    {"trash", "Trash", 6}};

// Splits "a\x01b" group_concat output.
std::vector<std::string> SplitList(const std::string& s) {
  std::vector<std::string> out;
  if (s.empty()) return out;
  size_t start = 0;
  while (true) {
    size_t p = s.find('\x01', start);
    out.push_back(s.substr(start, p == std::string::npos ? std::string::npos : p - start));
    if (p == std::string::npos) break;
    start = p + 1;
  }
  return out;
}

std::string AddressText(const Value& v) {
  std::string out;
  if (!v.is_array()) return out;
  for (const auto& a : v.as_array()) {
    if (!out.empty()) out.push_back(' ');
    if (const Value* n = a.Find("name"); n && n->is_string()) out += n->as_string() + " ";
    if (const Value* e = a.Find("email"); e && e->is_string()) out += e->as_string();
  }
  return out;
}

// The sort key of an address list: the first name, or else the first address.
std::string AddressKey(const Value& v) {
  if (!v.is_array() || v.as_array().empty()) return "";
  const Value& a = v.as_array().front();
  if (const Value* n = a.Find("name"); n && n->is_string() && !n->as_string().empty()) {
    return AsciiLowerCopy(n->as_string());
  }
  if (const Value* e = a.Find("email"); e && e->is_string()) return AsciiLowerCopy(e->as_string());
  return "";
}

Value IdList(const std::vector<std::string>& ids) {
  if (ids.empty()) return Value();
  Value out = Value::MakeArray();
  for (const auto& s : ids) out.Push(s);
  return out;
}

// FTS5 query text for the words of `text` (each quoted, so no FTS syntax reaches SQLite),
// restricted to `column` when not empty. Empty when there is no word.
std::string FtsQuery(std::string_view text, std::string_view column) {
  std::string out;
  size_t i = 0;
  while (i < text.size()) {
    while (i < text.size() && std::isspace(static_cast<unsigned char>(text[i]))) ++i;
    size_t start = i;
    while (i < text.size() && !std::isspace(static_cast<unsigned char>(text[i]))) ++i;
    if (i == start) break;
    std::string word(text.substr(start, i - start));
    std::string quoted = "\"";
    for (char c : word) {
      if (c == '"') quoted.push_back('"');
      quoted.push_back(c);
    }
    quoted.push_back('"');
    if (!out.empty()) out += " AND ";
    if (!column.empty()) out += fmt::format("{} : ", column);
    out += quoted;
  }
  return out;
}

std::string NewCounterId(char prefix, int64_t n) { return fmt::format("{}{}", prefix, n); }

}  // namespace

std::string SubjectKey(std::string_view subject) {
  std::string s = AsciiLowerCopy(subject);
  while (true) {
    size_t b = 0;
    while (b < s.size() && std::isspace(static_cast<unsigned char>(s[b]))) ++b;
    s.erase(0, b);
    bool stripped = false;
    for (std::string_view p : {"re:", "fwd:", "fw:", "aw:", "wg:", "sv:"}) {
      if (s.rfind(p, 0) == 0) {
        s.erase(0, p.size());
        stripped = true;
        break;
      }
    }
    if (!stripped && !s.empty() && s[0] == '[') {
      size_t close = s.find(']');
      if (close != std::string::npos && close < 64) {
        s.erase(0, close + 1);
        stripped = true;
      }
    }
    if (!stripped) break;
  }
  while (!s.empty() && std::isspace(static_cast<unsigned char>(s.back()))) s.pop_back();
  return s;
}

struct Txn::Conn {
  std::unique_ptr<sqlite::Db> db;
  std::unordered_map<std::string, std::unique_ptr<sqlite::Statement>> stmts;
};

Result<sqlite::Statement*> Txn::Stmt(std::string_view sql) {
  auto it = conn_->stmts.find(std::string(sql));
  if (it != conn_->stmts.end()) {
    KW_RETURN_IF_ERROR(it->second->Reset());
    return it->second.get();
  }
  KW_ASSIGN_OR_RETURN(auto st, conn_->db->Prepare(sql));
  auto owned = std::make_unique<sqlite::Statement>(std::move(st));
  auto* p = owned.get();
  conn_->stmts.emplace(std::string(sql), std::move(owned));
  return p;
}

Status Txn::RequireWrite() const {
  if (!write_) return InternalError("mail store: write in a read transaction");
  return Status::Ok();
}

Status Txn::Savepoint() { return conn_->db->Exec("SAVEPOINT item"); }
Status Txn::Release() { return conn_->db->Exec("RELEASE item"); }
Status Txn::RollbackToSavepoint() {
  KW_RETURN_IF_ERROR(conn_->db->Exec("ROLLBACK TO item"));
  recorded_.clear();
  return conn_->db->Exec("RELEASE item");
}

// ---------------------------------------------------------------- accounts

namespace {
Account AccountFrom(sqlite::Statement* s) {
  return Account{s->Text(0), s->Text(1), s->Text(2), s->Text(3), s->Text(4)};
}
constexpr std::string_view kAccountCols = "id, tenant_id, owner_user_id, name, email";
}  // namespace

Result<Account> Txn::GetAccount(std::string_view account_id) {
  KW_ASSIGN_OR_RETURN(auto* s, Stmt(fmt::format("SELECT {} FROM accounts WHERE id = ?", kAccountCols)));
  s->Bind(1, account_id);
  KW_ASSIGN_OR_RETURN(bool row, s->Step());
  if (!row) return NotFoundError(fmt::format("no account '{}'", account_id));
  return AccountFrom(s);
}

Result<Account> Txn::FindAccountByOwner(std::string_view tenant_id, std::string_view owner) {
  KW_ASSIGN_OR_RETURN(auto* s, Stmt(fmt::format(
      "SELECT {} FROM accounts WHERE tenant_id = ? AND owner_user_id = ?", kAccountCols)));
  s->Bind(1, tenant_id).Bind(2, owner);
  KW_ASSIGN_OR_RETURN(bool row, s->Step());
  if (!row) return NotFoundError("no account for that owner");
  return AccountFrom(s);
}

Result<Account> Txn::FindAccountByEmail(std::string_view email) {
  KW_ASSIGN_OR_RETURN(auto* s, Stmt(fmt::format("SELECT {} FROM accounts WHERE email = ?", kAccountCols)));
  s->Bind(1, AsciiLowerCopy(email));
  KW_ASSIGN_OR_RETURN(bool row, s->Step());
  if (!row) return NotFoundError(fmt::format("no account with address '{}'", email));
  return AccountFrom(s);
}

Result<std::vector<Account>> Txn::ListAccounts(std::string_view tenant_id) {
  KW_ASSIGN_OR_RETURN(auto* s, Stmt(fmt::format(
      "SELECT {} FROM accounts WHERE tenant_id = ? ORDER BY id", kAccountCols)));
  s->Bind(1, tenant_id);
  std::vector<Account> out;
  while (true) {
    KW_ASSIGN_OR_RETURN(bool row, s->Step());
    if (!row) break;
    out.push_back(AccountFrom(s));
  }
  return out;
}

// ---------------------------------------------------------------- state and changes

Status Txn::RecordChange(std::string_view account_id, std::string_view type, std::string_view id,
                         ChangeOp op) {
  KW_RETURN_IF_ERROR(RequireWrite());
  if (op == ChangeOp::kUpdated || op == ChangeOp::kCounts) {
    // One log row per object and transaction is enough for /changes; a full update supersedes
    // a counts-only one.
    std::string key = fmt::format("{}\x01{}\x01{}\x01{}", account_id, type, id,
                                  op == ChangeOp::kCounts ? "c" : "u");
    std::string full = fmt::format("{}\x01{}\x01{}\x01u", account_id, type, id);
    if (recorded_.count(key) || recorded_.count(full)) return Status::Ok();
    recorded_.insert(key);
  }
  KW_ASSIGN_OR_RETURN(auto* bump,
                      Stmt("UPDATE accounts SET modseq = modseq + 1 WHERE id = ? RETURNING modseq"));
  bump->Bind(1, account_id);
  KW_ASSIGN_OR_RETURN(bool row, bump->Step());
  if (!row) return NotFoundError(fmt::format("no account '{}'", account_id));
  int64_t modseq = bump->Int(0);
  KW_RETURN_IF_ERROR(bump->Reset());
  changed_accounts_.emplace(account_id);
  KW_ASSIGN_OR_RETURN(auto* ins, Stmt("INSERT INTO changes (account_id, type, modseq, object_id, op, "
                                      "time_ms) VALUES (?, ?, ?, ?, ?, ?)"));
  ins->Bind(1, account_id).Bind(2, type).Bind(3, modseq).Bind(4, id)
      .Bind(5, static_cast<int64_t>(op)).Bind(6, store_->options_.clock->NowMillis());
  KW_RETURN_IF_ERROR(ins->Run());
  KW_ASSIGN_OR_RETURN(auto* st, Stmt("INSERT INTO states (account_id, type, modseq) VALUES (?, ?, ?) "
                                     "ON CONFLICT (account_id, type) DO UPDATE SET modseq = excluded.modseq"));
  st->Bind(1, account_id).Bind(2, type).Bind(3, modseq);
  return st->Run();
}

Result<std::string> Txn::State(std::string_view account_id, std::string_view type) {
  KW_ASSIGN_OR_RETURN(auto* s, Stmt("SELECT modseq FROM states WHERE account_id = ? AND type = ?"));
  s->Bind(1, account_id).Bind(2, type);
  KW_ASSIGN_OR_RETURN(bool row, s->Step());
  return std::to_string(row ? s->Int(0) : 0);
}

Result<Txn::PushState> Txn::PushStates(std::string_view account_id) {
  PushState out;
  for (const char* type : {"Mailbox", "Email", "Thread", "EmailSubmission"}) out.types[type] = "0";
  KW_ASSIGN_OR_RETURN(auto* s, Stmt("SELECT type, modseq FROM states WHERE account_id = ?"));
  s->Bind(1, account_id);
  while (true) {
    KW_ASSIGN_OR_RETURN(bool row, s->Step());
    if (!row) break;
    out.types[s->Text(0)] = std::to_string(s->Int(1));
  }
  KW_RETURN_IF_ERROR(s->Reset());
  // EmailDelivery: the newest creation still in the log, else the Email floor (after a prune
  // nothing newer than the floor was created, so the floor is a lower bound that never moves
  // back past a value already pushed: push compares numerically and only goes forward).
  KW_ASSIGN_OR_RETURN(auto* d, Stmt("SELECT max(modseq) FROM changes WHERE account_id = ? AND "
                                    "type = 'Email' AND op = 0"));
  d->Bind(1, account_id);
  KW_ASSIGN_OR_RETURN(bool drow, d->Step());
  int64_t delivery = drow && !d->IsNull(0) ? d->Int(0) : 0;
  KW_RETURN_IF_ERROR(d->Reset());
  if (delivery == 0) {
    KW_ASSIGN_OR_RETURN(auto* f, Stmt("SELECT floor FROM states WHERE account_id = ? AND type = 'Email'"));
    f->Bind(1, account_id);
    KW_ASSIGN_OR_RETURN(bool frow, f->Step());
    if (frow && !f->IsNull(0)) delivery = f->Int(0);
    KW_RETURN_IF_ERROR(f->Reset());
  }
  out.types["EmailDelivery"] = std::to_string(delivery);
  KW_ASSIGN_OR_RETURN(auto* m, Stmt("SELECT modseq FROM accounts WHERE id = ?"));
  m->Bind(1, account_id);
  KW_ASSIGN_OR_RETURN(bool mrow, m->Step());
  if (!mrow) return NotFoundError(fmt::format("no account '{}'", account_id));
  out.modseq = m->Int(0);
  KW_RETURN_IF_ERROR(m->Reset());
  return out;
}

Result<ChangeSet> Txn::Changes(std::string_view account_id, std::string_view type,
                               std::string_view since, size_t max_changes) {
  int64_t since_seq = 0;
  if (since.empty() || since.size() > 18 ||
      !std::all_of(since.begin(), since.end(), [](char c) { return c >= '0' && c <= '9'; })) {
    return FailedPreconditionError(fmt::format("{}: '{}' is not a state of this server",
                                               kCannotCalculateChanges, since));
  }
  since_seq = std::stoll(std::string(since));
  KW_ASSIGN_OR_RETURN(auto* s, Stmt("SELECT modseq, floor FROM states WHERE account_id = ? AND type = ?"));
  s->Bind(1, account_id).Bind(2, type);
  KW_ASSIGN_OR_RETURN(bool row, s->Step());
  int64_t current = row ? s->Int(0) : 0, floor = row ? s->Int(1) : 0;
  KW_RETURN_IF_ERROR(s->Reset());
  if (since_seq > current) {
    return FailedPreconditionError(fmt::format("{}: state '{}' is newer than the current state",
                                               kCannotCalculateChanges, since));
  }
  if (since_seq < floor) {
    return FailedPreconditionError(fmt::format(
        "{}: state '{}' is older than the change history kept", kCannotCalculateChanges, since));
  }
  ChangeSet out;
  out.old_state = std::string(since);
  out.new_state = std::to_string(current);
  out.only_counts = true;
  KW_ASSIGN_OR_RETURN(auto* q, Stmt("SELECT modseq, object_id, op FROM changes WHERE account_id = ? "
                                    "AND type = ? AND modseq > ? ORDER BY modseq"));
  q->Bind(1, account_id).Bind(2, type).Bind(3, since_seq);
  struct Agg {
    bool created = false, destroyed = false;
    size_t order;
  };
  std::unordered_map<std::string, Agg> agg;
  std::vector<std::string> order;
  int64_t last = since_seq;
  while (true) {
    KW_ASSIGN_OR_RETURN(bool r, q->Step());
    if (!r) break;
    int64_t modseq = q->Int(0);
    std::string id = q->Text(1);
    auto op = static_cast<ChangeOp>(q->Int(2));
    auto it = agg.find(id);
    if (it == agg.end()) {
      if (order.size() >= max_changes) {
        out.has_more = true;
        break;
      }
      it = agg.emplace(id, Agg{false, false, order.size()}).first;
      order.push_back(id);
    }
    if (op == ChangeOp::kCreated) it->second.created = true;
    if (op == ChangeOp::kDestroyed) it->second.destroyed = true;
    if (op != ChangeOp::kCounts) out.only_counts = false;
    last = modseq;
  }
  if (out.has_more) out.new_state = std::to_string(last);
  for (const auto& id : order) {
    const Agg& a = agg[id];
    if (a.created && a.destroyed) continue;
    if (a.created) out.created.push_back(id);
    else if (a.destroyed) out.destroyed.push_back(id);
    else out.updated.push_back(id);
  }
  return out;
}

// ---------------------------------------------------------------- mailboxes

Result<std::vector<Mailbox>> Txn::ListMailboxes(std::string_view account_id, bool with_counts) {
  std::string sql =
      with_counts
          ? "SELECT m.id, m.name, m.parent_id, m.role, m.sort_order, m.subscribed, "
            "(SELECT count(*) FROM email_mailboxes em WHERE em.mailbox_id = m.id), "
            "(SELECT count(*) FROM email_mailboxes em WHERE em.mailbox_id = m.id AND NOT EXISTS "
            " (SELECT 1 FROM email_keywords k WHERE k.email_id = em.email_id AND k.keyword = '$seen')), "
            "(SELECT count(DISTINCT e.thread_id) FROM email_mailboxes em JOIN emails e ON e.id = em.email_id "
            " WHERE em.mailbox_id = m.id), "
            "(SELECT count(DISTINCT e.thread_id) FROM email_mailboxes em JOIN emails e ON e.id = em.email_id "
            " WHERE em.mailbox_id = m.id AND NOT EXISTS (SELECT 1 FROM email_keywords k WHERE "
            " k.email_id = em.email_id AND k.keyword = '$seen')) "
            "FROM mailboxes m WHERE m.account_id = ? ORDER BY m.sort_order, m.id"
          : "SELECT id, name, parent_id, role, sort_order, subscribed FROM mailboxes "
            "WHERE account_id = ? ORDER BY sort_order, id";
  KW_ASSIGN_OR_RETURN(auto* s, Stmt(sql));
  s->Bind(1, account_id);
  std::vector<Mailbox> out;
  while (true) {
    KW_ASSIGN_OR_RETURN(bool row, s->Step());
    if (!row) break;
    Mailbox m;
    m.id = s->Text(0);
    m.name = s->Text(1);
    m.parent_id = s->Text(2);
    m.role = s->Text(3);
    m.sort_order = s->Int(4);
    m.subscribed = s->Int(5) != 0;
    if (with_counts) {
      m.total_emails = s->Int(6);
      m.unread_emails = s->Int(7);
      m.total_threads = s->Int(8);
      m.unread_threads = s->Int(9);
    }
    out.push_back(std::move(m));
  }
  return out;
}

Result<std::map<std::string, std::string>> Txn::MailboxPaths(std::string_view account_id) {
  KW_ASSIGN_OR_RETURN(auto boxes, ListMailboxes(account_id, false));
  std::map<std::string, const Mailbox*> by_id;
  for (const auto& m : boxes) by_id[m.id] = &m;
  std::map<std::string, std::string> out;
  for (const auto& m : boxes) {
    std::string path;
    const Mailbox* cur = &m;
    for (int depth = 0; cur && depth < 32; ++depth) {
      path = "\\" + cur->name + path;
      auto it = by_id.find(cur->parent_id);
      cur = it == by_id.end() ? nullptr : it->second;
    }
    out[m.id] = path;
  }
  return out;
}

Result<std::string> Txn::CreateMailbox(std::string_view account_id, const Mailbox& m) {
  KW_RETURN_IF_ERROR(RequireWrite());
  KW_ASSIGN_OR_RETURN(auto* c, Stmt("INSERT INTO counters (name, value) VALUES ('mailbox', 1) "
                                    "ON CONFLICT (name) DO UPDATE SET value = value + 1 RETURNING value"));
  KW_ASSIGN_OR_RETURN(bool row, c->Step());
  if (!row) return InternalError("mailbox counter");
  std::string id = NewCounterId('F', c->Int(0));
  KW_RETURN_IF_ERROR(c->Reset());
  KW_ASSIGN_OR_RETURN(auto* s, Stmt("INSERT INTO mailboxes (id, account_id, name, parent_id, role, "
                                    "sort_order, subscribed) VALUES (?, ?, ?, ?, ?, ?, ?)"));
  s->Bind(1, id).Bind(2, account_id).Bind(3, m.name).Bind(4, m.parent_id).Bind(5, m.role)
      .Bind(6, m.sort_order).Bind(7, int64_t{m.subscribed ? 1 : 0});
  KW_RETURN_IF_ERROR(s->Run());
  KW_RETURN_IF_ERROR(RecordChange(account_id, "Mailbox", id, ChangeOp::kCreated));
  return id;
}

Status Txn::UpdateMailbox(std::string_view account_id, const Mailbox& m) {
  KW_RETURN_IF_ERROR(RequireWrite());
  KW_ASSIGN_OR_RETURN(auto* s, Stmt("UPDATE mailboxes SET name = ?, parent_id = ?, sort_order = ?, "
                                    "subscribed = ? WHERE id = ? AND account_id = ?"));
  s->Bind(1, m.name).Bind(2, m.parent_id).Bind(3, m.sort_order)
      .Bind(4, int64_t{m.subscribed ? 1 : 0}).Bind(5, m.id).Bind(6, account_id);
  KW_RETURN_IF_ERROR(s->Run());
  if (conn_->db->Changes() == 0) return NotFoundError(fmt::format("no mailbox '{}'", m.id));
  return RecordChange(account_id, "Mailbox", m.id, ChangeOp::kUpdated);
}

Status Txn::DestroyMailbox(std::string_view account_id, std::string_view id, bool remove_emails) {
  KW_RETURN_IF_ERROR(RequireWrite());
  KW_ASSIGN_OR_RETURN(auto* e, Stmt("SELECT 1 FROM mailboxes WHERE id = ? AND account_id = ?"));
  e->Bind(1, id).Bind(2, account_id);
  KW_ASSIGN_OR_RETURN(bool exists, e->Step());
  KW_RETURN_IF_ERROR(e->Reset());
  if (!exists) return NotFoundError(fmt::format("no mailbox '{}'", id));
  KW_ASSIGN_OR_RETURN(auto* ch, Stmt("SELECT 1 FROM mailboxes WHERE parent_id = ? AND account_id = ?"));
  ch->Bind(1, id).Bind(2, account_id);
  KW_ASSIGN_OR_RETURN(bool child, ch->Step());
  KW_RETURN_IF_ERROR(ch->Reset());
  if (child) return FailedPreconditionError("mailboxHasChild");
  KW_ASSIGN_OR_RETURN(auto* em, Stmt("SELECT email_id FROM email_mailboxes WHERE mailbox_id = ?"));
  em->Bind(1, id);
  std::vector<std::string> emails;
  while (true) {
    KW_ASSIGN_OR_RETURN(bool row, em->Step());
    if (!row) break;
    emails.push_back(em->Text(0));
  }
  KW_RETURN_IF_ERROR(em->Reset());
  if (!emails.empty() && !remove_emails) return FailedPreconditionError("mailboxHasEmail");
  for (const auto& eid : emails) {
    // An email only in this mailbox goes with it; others just leave it (RFC 8621 §2.5).
    KW_ASSIGN_OR_RETURN(auto* cnt, Stmt("SELECT count(*) FROM email_mailboxes WHERE email_id = ?"));
    cnt->Bind(1, eid);
    KW_ASSIGN_OR_RETURN(bool r, cnt->Step());
    int64_t n = r ? cnt->Int(0) : 0;
    KW_RETURN_IF_ERROR(cnt->Reset());
    if (n <= 1) {
      KW_RETURN_IF_ERROR(DestroyEmail(account_id, eid));
    } else {
      KW_ASSIGN_OR_RETURN(auto* del, Stmt("DELETE FROM email_mailboxes WHERE email_id = ? AND mailbox_id = ?"));
      del->Bind(1, eid).Bind(2, id);
      KW_RETURN_IF_ERROR(del->Run());
      KW_RETURN_IF_ERROR(RecordChange(account_id, "Email", eid, ChangeOp::kUpdated));
    }
  }
  KW_ASSIGN_OR_RETURN(auto* d, Stmt("DELETE FROM mailboxes WHERE id = ? AND account_id = ?"));
  d->Bind(1, id).Bind(2, account_id);
  KW_RETURN_IF_ERROR(d->Run());
  return RecordChange(account_id, "Mailbox", id, ChangeOp::kDestroyed);
}

// ---------------------------------------------------------------- emails

Result<std::vector<std::optional<EmailRow>>> Txn::GetEmails(std::string_view account_id,
                                                            const std::vector<std::string>& ids,
                                                            bool with_headers, bool with_body) {
  std::string sql = fmt::format(
      "SELECT e.id, e.thread_id, e.blob_id, e.message_id, e.summary, {}, {}, "
      "(SELECT group_concat(mailbox_id, char(1)) FROM email_mailboxes WHERE email_id = e.id), "
      "(SELECT group_concat(keyword, char(1)) FROM email_keywords WHERE email_id = e.id) "
      "FROM emails e WHERE e.id = ? AND e.account_id = ?",
      with_headers ? "e.headers" : "''", with_body ? "e.body" : "''");
  KW_ASSIGN_OR_RETURN(auto* s, Stmt(sql));
  std::vector<std::optional<EmailRow>> out;
  out.reserve(ids.size());
  for (const auto& id : ids) {
    KW_RETURN_IF_ERROR(s->Reset());
    s->Bind(1, id).Bind(2, account_id);
    KW_ASSIGN_OR_RETURN(bool row, s->Step());
    if (!row) {
      out.emplace_back();
      continue;
    }
    EmailRow r;
    r.id = s->Text(0);
    r.thread_id = s->Text(1);
    r.blob_id = s->Text(2);
    r.message_id = s->Text(3);
    r.summary_json = s->Text(4);
    r.headers_json = s->Text(5);
    r.body_json = s->Text(6);
    r.mailbox_ids = SplitList(s->Text(7));
    r.keywords = SplitList(s->Text(8));
    std::sort(r.mailbox_ids.begin(), r.mailbox_ids.end());
    out.push_back(std::move(r));
  }
  return out;
}

Result<std::vector<EmailRef>> Txn::EmailRefs(std::string_view account_id,
                                             const std::vector<std::string>& ids) {
  KW_ASSIGN_OR_RETURN(auto* s, Stmt(
      "SELECT e.id, e.thread_id, e.message_id, (SELECT min(mailbox_id) FROM email_mailboxes "
      "WHERE email_id = e.id) FROM emails e WHERE e.id = ? AND e.account_id = ?"));
  std::vector<EmailRef> out;
  for (const auto& id : ids) {
    KW_RETURN_IF_ERROR(s->Reset());
    s->Bind(1, id).Bind(2, account_id);
    KW_ASSIGN_OR_RETURN(bool row, s->Step());
    if (row) out.push_back(EmailRef{s->Text(0), s->Text(1), s->Text(2), s->Text(3)});
  }
  return out;
}

Result<std::vector<std::string>> Txn::ThreadEmails(std::string_view account_id, std::string_view id) {
  KW_ASSIGN_OR_RETURN(auto* s, Stmt("SELECT id FROM emails WHERE thread_id = ? AND account_id = ? "
                                    "ORDER BY received_at, rowid"));
  s->Bind(1, id).Bind(2, account_id);
  std::vector<std::string> out;
  while (true) {
    KW_ASSIGN_OR_RETURN(bool row, s->Step());
    if (!row) break;
    out.push_back(s->Text(0));
  }
  return out;
}

namespace {

// Builds the WHERE clause of an Email/query filter. Parameters are collected in order.
struct FilterSql {
  std::string sql;
  std::vector<std::variant<std::string, int64_t>> params;
};

Status BuildCondition(const Value& f, int depth, FilterSql* out);

Status BuildFilter(const Value& f, int depth, FilterSql* out) {
  if (depth > 16) return InvalidArgumentError("unsupportedFilter: filter nested too deeply");
  if (!f.is_object()) return InvalidArgumentError("invalidArguments: a filter must be an object");
  if (const Value* op = f.Find("operator")) {
    const Value* conds = f.Find("conditions");
    if (!op->is_string() || !conds || !conds->is_array() || f.as_object().size() != 2) {
      return InvalidArgumentError("invalidArguments: FilterOperator needs operator and conditions");
    }
    std::string_view o = op->as_string();
    std::string joiner;
    bool negate = false;
    if (o == "AND") joiner = " AND ";
    else if (o == "OR") joiner = " OR ";
    else if (o == "NOT") { joiner = " OR "; negate = true; }
    else return InvalidArgumentError(fmt::format("unsupportedFilter: operator '{}'", o));
    if (conds->as_array().empty()) {
      out->sql += negate ? "1" : (o == "AND" ? "1" : "0");
      return Status::Ok();
    }
    out->sql += negate ? "NOT (" : "(";
    bool first = true;
    for (const auto& c : conds->as_array()) {
      if (!first) out->sql += joiner;
      first = false;
      out->sql += "(";
      KW_RETURN_IF_ERROR(BuildFilter(c, depth + 1, out));
      out->sql += ")";
    }
    out->sql += ")";
    return Status::Ok();
  }
  return BuildCondition(f, depth, out);
}

Status BuildCondition(const Value& f, int, FilterSql* out) {
  std::vector<std::string> parts;
  auto str = [&](const Value& v, std::string_view name) -> Result<std::string> {
    if (!v.is_string()) return InvalidArgumentError(fmt::format("invalidArguments: '{}' must be a string", name));
    return v.as_string();
  };
  auto num = [&](const Value& v, std::string_view name) -> Result<int64_t> {
    if (!v.is_int() || v.as_int() < 0) {
      return InvalidArgumentError(fmt::format("invalidArguments: '{}' must be an UnsignedInt", name));
    }
    return v.as_int();
  };
  auto date = [&](const Value& v, std::string_view name) -> Result<int64_t> {
    int64_t t;
    if (!v.is_string() || !ParseUtcDate(v.as_string(), &t)) {
      return InvalidArgumentError(fmt::format("invalidArguments: '{}' must be a UTCDate", name));
    }
    return t;
  };
  std::vector<std::pair<std::string, std::string>> fts;  // column, text
  for (const auto& [k, v] : f.as_object()) {
    if (k == "inMailbox") {
      KW_ASSIGN_OR_RETURN(auto id, str(v, k));
      parts.push_back("EXISTS (SELECT 1 FROM email_mailboxes m WHERE m.email_id = e.id AND m.mailbox_id = ?)");
      out->params.emplace_back(id);
    } else if (k == "inMailboxOtherThan") {
      if (!v.is_array()) return InvalidArgumentError("invalidArguments: 'inMailboxOtherThan' must be an array");
      std::string in;
      for (const auto& id : v.as_array()) {
        KW_ASSIGN_OR_RETURN(auto s, str(id, k));
        in += in.empty() ? "?" : ", ?";
        out->params.emplace_back(s);
      }
      parts.push_back(in.empty() ? "EXISTS (SELECT 1 FROM email_mailboxes m WHERE m.email_id = e.id)"
                                 : "EXISTS (SELECT 1 FROM email_mailboxes m WHERE m.email_id = e.id AND "
                                   "m.mailbox_id NOT IN (" + in + "))");
    } else if (k == "before") {
      KW_ASSIGN_OR_RETURN(auto t, date(v, k));
      parts.push_back("e.received_at < ?");
      out->params.emplace_back(t);
    } else if (k == "after") {
      KW_ASSIGN_OR_RETURN(auto t, date(v, k));
      parts.push_back("e.received_at >= ?");
      out->params.emplace_back(t);
    } else if (k == "minSize") {
      KW_ASSIGN_OR_RETURN(auto n, num(v, k));
      parts.push_back("e.size >= ?");
      out->params.emplace_back(n);
    } else if (k == "maxSize") {
      KW_ASSIGN_OR_RETURN(auto n, num(v, k));
      parts.push_back("e.size < ?");
      out->params.emplace_back(n);
    } else if (k == "hasKeyword" || k == "notKeyword") {
      KW_ASSIGN_OR_RETURN(auto kw, str(v, k));
      parts.push_back(std::string(k == "notKeyword" ? "NOT " : "") +
                      "EXISTS (SELECT 1 FROM email_keywords k WHERE k.email_id = e.id AND k.keyword = ?)");
      out->params.emplace_back(AsciiLowerCopy(kw));
    } else if (k == "allInThreadHaveKeyword" || k == "someInThreadHaveKeyword" ||
               k == "noneInThreadHaveKeyword") {
      KW_ASSIGN_OR_RETURN(auto kw, str(v, k));
      std::string has = "EXISTS (SELECT 1 FROM email_keywords k WHERE k.email_id = t.id AND k.keyword = ?)";
      if (k == "allInThreadHaveKeyword") {
        parts.push_back("NOT EXISTS (SELECT 1 FROM emails t WHERE t.thread_id = e.thread_id AND NOT " + has + ")");
      } else if (k == "someInThreadHaveKeyword") {
        parts.push_back("EXISTS (SELECT 1 FROM emails t WHERE t.thread_id = e.thread_id AND " + has + ")");
      } else {
        parts.push_back("NOT EXISTS (SELECT 1 FROM emails t WHERE t.thread_id = e.thread_id AND " + has + ")");
      }
      out->params.emplace_back(AsciiLowerCopy(kw));
    } else if (k == "hasAttachment") {
      if (!v.is_bool()) return InvalidArgumentError("invalidArguments: 'hasAttachment' must be a boolean");
      parts.push_back(v.as_bool() ? "e.has_attachment = 1" : "e.has_attachment = 0");
    } else if (k == "text" || k == "from" || k == "to" || k == "cc" || k == "bcc" || k == "subject" ||
               k == "body") {
      KW_ASSIGN_OR_RETURN(auto t, str(v, k));
      std::string col = k == "text" ? "" : k == "from" ? "from_" : k == "to" ? "to_" : k;
      fts.emplace_back(col, t);
    } else {
      return InvalidArgumentError(fmt::format("unsupportedFilter: condition '{}'", k));
    }
  }
  if (!fts.empty()) {
    std::string q;
    for (const auto& [col, text] : fts) {
      std::string part = FtsQuery(text, col);
      if (part.empty()) continue;
      if (!q.empty()) q += " AND ";
      q += part;
    }
    if (!q.empty()) {
      parts.push_back("e.rowid IN (SELECT rowid FROM email_fts WHERE email_fts MATCH ?)");
      out->params.emplace_back(q);
    }
  }
  if (parts.empty()) {
    out->sql += "1";
    return Status::Ok();
  }
  for (size_t i = 0; i < parts.size(); ++i) {
    if (i) out->sql += " AND ";
    out->sql += parts[i];
  }
  return Status::Ok();
}

}  // namespace

Result<std::vector<EmailRef>> Txn::QueryEmails(std::string_view account_id, const Value& filter,
                                               const Value& sort, bool collapse_threads) {
  FilterSql f;
  if (!filter.is_null()) KW_RETURN_IF_ERROR(BuildFilter(filter, 0, &f));
  std::string order;
  if (!sort.is_null()) {
    if (!sort.is_array()) return InvalidArgumentError("invalidArguments: 'sort' must be an array");
    for (const auto& c : sort.as_array()) {
      const Value* prop = c.Find("property");
      if (!prop || !prop->is_string()) {
        return InvalidArgumentError("invalidArguments: a Comparator needs a 'property'");
      }
      bool asc = true;
      for (const auto& [k, v] : c.as_object()) {
        if (k == "isAscending") {
          if (!v.is_bool()) return InvalidArgumentError("invalidArguments: 'isAscending' must be a boolean");
          asc = v.as_bool();
        } else if (k == "collation") {
          if (!v.is_string() || (v.as_string() != "i;unicode-casemap" && v.as_string() != "i;ascii-casemap")) {
            return InvalidArgumentError("unsupportedSort: collation");
          }
        } else if (k != "property") {
          return InvalidArgumentError(fmt::format("unsupportedSort: comparator member '{}'", k));
        }
      }
      const std::string& p = prop->as_string();
      std::string col;
      if (p == "receivedAt") col = "e.received_at";
      else if (p == "sentAt") col = "e.sent_at";
      else if (p == "size") col = "e.size";
      else if (p == "subject") col = "e.subject_key";
      else if (p == "from") col = "e.from_key";
      else if (p == "to") col = "e.to_key";
      else return InvalidArgumentError(fmt::format("unsupportedSort: property '{}'", p));
      if (!order.empty()) order += ", ";
      order += col + (asc ? " ASC" : " DESC");
    }
  }
  if (order.empty()) order = "e.received_at DESC";
  std::string sql = fmt::format(
      "SELECT e.id, e.thread_id, e.message_id, (SELECT min(mailbox_id) FROM email_mailboxes WHERE "
      "email_id = e.id) FROM emails e WHERE e.account_id = ? AND ({}) ORDER BY {}, e.rowid DESC",
      f.sql.empty() ? "1" : f.sql, order);
  KW_ASSIGN_OR_RETURN(auto* s, Stmt(sql));
  s->Bind(1, account_id);
  int i = 2;
  for (const auto& p : f.params) {
    if (std::holds_alternative<std::string>(p)) s->Bind(i++, std::get<std::string>(p));
    else s->Bind(i++, std::get<int64_t>(p));
  }
  std::vector<EmailRef> out;
  std::unordered_set<std::string> threads;
  while (true) {
    KW_ASSIGN_OR_RETURN(bool row, s->Step());
    if (!row) break;
    EmailRef r{s->Text(0), s->Text(1), s->Text(2), s->Text(3)};
    if (collapse_threads && !threads.insert(r.thread_id).second) continue;
    out.push_back(std::move(r));
  }
  // Dynamic queries vary with the filter: keep the cache from growing without bound.
  if (conn_->stmts.size() > 512) conn_->stmts.clear();
  return out;
}

Status Txn::CheckMailboxes(std::string_view account_id, const std::vector<std::string>& ids) {
  if (ids.empty()) return InvalidArgumentError("an email must be in at least one mailbox");
  KW_ASSIGN_OR_RETURN(auto* s, Stmt("SELECT 1 FROM mailboxes WHERE id = ? AND account_id = ?"));
  for (const auto& id : ids) {
    KW_RETURN_IF_ERROR(s->Reset());
    s->Bind(1, id).Bind(2, account_id);
    KW_ASSIGN_OR_RETURN(bool row, s->Step());
    if (!row) return NotFoundError(fmt::format("no mailbox '{}'", id));
  }
  return s->Reset();
}

Status Txn::TouchMailboxes(std::string_view account_id, const std::vector<std::string>& ids) {
  for (const auto& id : ids) {
    KW_RETURN_IF_ERROR(RecordChange(account_id, "Mailbox", id, ChangeOp::kCounts));
  }
  return Status::Ok();
}

Result<std::string> Txn::ThreadFor(std::string_view account_id, const ParsedEmail& e) {
  std::string key = SubjectKey(e.subject);
  std::vector<std::string> ids = e.references;
  ids.insert(ids.end(), e.in_reply_to.begin(), e.in_reply_to.end());
  if (!e.message_id.empty()) ids.push_back(e.message_id);
  KW_ASSIGN_OR_RETURN(auto* s, Stmt("SELECT t.id FROM thread_ids i JOIN threads t ON t.id = i.thread_id "
                                    "WHERE i.account_id = ? AND i.message_id = ? AND t.subject_key = ?"));
  std::string thread;
  for (const auto& mid : ids) {
    if (mid.empty()) continue;
    KW_RETURN_IF_ERROR(s->Reset());
    s->Bind(1, account_id).Bind(2, mid).Bind(3, key);
    KW_ASSIGN_OR_RETURN(bool row, s->Step());
    if (row) {
      thread = s->Text(0);
      break;
    }
  }
  KW_RETURN_IF_ERROR(s->Reset());
  if (thread.empty()) {
    KW_ASSIGN_OR_RETURN(auto* c, Stmt("INSERT INTO counters (name, value) VALUES ('thread', 1) "
                                      "ON CONFLICT (name) DO UPDATE SET value = value + 1 RETURNING value"));
    KW_ASSIGN_OR_RETURN(bool row, c->Step());
    if (!row) return InternalError("thread counter");
    thread = NewCounterId('T', c->Int(0));
    KW_RETURN_IF_ERROR(c->Reset());
    KW_ASSIGN_OR_RETURN(auto* t, Stmt("INSERT INTO threads (id, account_id, subject_key) VALUES (?, ?, ?)"));
    t->Bind(1, thread).Bind(2, account_id).Bind(3, key);
    KW_RETURN_IF_ERROR(t->Run());
    KW_RETURN_IF_ERROR(RecordChange(account_id, "Thread", thread, ChangeOp::kCreated));
  } else {
    KW_RETURN_IF_ERROR(RecordChange(account_id, "Thread", thread, ChangeOp::kUpdated));
  }
  KW_ASSIGN_OR_RETURN(auto* reg, Stmt("INSERT OR IGNORE INTO thread_ids (account_id, message_id, thread_id) "
                                      "VALUES (?, ?, ?)"));
  for (const auto& mid : ids) {
    if (mid.empty()) continue;
    KW_RETURN_IF_ERROR(reg->Reset());
    reg->Bind(1, account_id).Bind(2, mid).Bind(3, thread);
    KW_RETURN_IF_ERROR(reg->Run());
  }
  return thread;
}

Result<ImportResult> Txn::Import(std::string_view account_id, const ImportRequest& req) {
  KW_RETURN_IF_ERROR(RequireWrite());
  KW_RETURN_IF_ERROR(CheckMailboxes(account_id, req.mailbox_ids));
  KW_ASSIGN_OR_RETURN(ParsedEmail e, ParseMessage(req.raw, store_->options_.parse_limits));
  std::string blob_id = BlobIdFor(req.raw);
  KW_ASSIGN_OR_RETURN(std::string thread, ThreadFor(account_id, e));
  KW_ASSIGN_OR_RETURN(auto* c, Stmt("INSERT INTO counters (name, value) VALUES ('email', 1) "
                                    "ON CONFLICT (name) DO UPDATE SET value = value + 1 RETURNING value"));
  KW_ASSIGN_OR_RETURN(bool crow, c->Step());
  if (!crow) return InternalError("email counter");
  std::string id = NewCounterId('M', c->Int(0));
  KW_RETURN_IF_ERROR(c->Reset());
  int64_t received = req.received_at ? req.received_at : store_->options_.clock->NowSeconds();

  Value summary = Value::MakeObject();
  summary.Add("blobId", blob_id);
  summary.Add("threadId", thread);
  summary.Add("size", static_cast<int64_t>(e.size));
  summary.Add("receivedAt", FormatUtcDate(received));
  summary.Add("messageId", e.message_id.empty() ? Value() : IdList({e.message_id}));
  summary.Add("inReplyTo", IdList(e.in_reply_to));
  summary.Add("references", IdList(e.references));
  summary.Add("sender", e.sender);
  summary.Add("from", e.from);
  summary.Add("to", e.to);
  summary.Add("cc", e.cc);
  summary.Add("bcc", e.bcc);
  summary.Add("replyTo", e.reply_to);
  summary.Add("subject", e.subject);
  summary.Add("sentAt", e.has_sent_at ? Value(FormatUtcDate(e.sent_at)) : Value());
  summary.Add("hasAttachment", e.has_attachment);
  summary.Add("preview", e.preview);
  Value body = Value::MakeObject();
  body.Add("bodyStructure", e.body_structure);
  body.Add("textBody", e.text_body);
  body.Add("htmlBody", e.html_body);
  body.Add("attachments", e.attachments);
  body.Add("bodyValues", e.body_values);

  KW_ASSIGN_OR_RETURN(auto* ins, Stmt(
      "INSERT INTO emails (id, account_id, thread_id, blob_id, message_id, size, received_at, sent_at, "
      "has_attachment, subject_key, from_key, to_key, summary, headers, body) "
      "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING rowid"));
  ins->Bind(1, id).Bind(2, account_id).Bind(3, thread).Bind(4, blob_id).Bind(5, e.message_id)
      .Bind(6, static_cast<int64_t>(e.size)).Bind(7, received).Bind(8, e.has_sent_at ? e.sent_at : received)
      .Bind(9, int64_t{e.has_attachment ? 1 : 0}).Bind(10, SubjectKey(e.subject))
      .Bind(11, AddressKey(e.from)).Bind(12, AddressKey(e.to)).Bind(13, summary.Serialize())
      .Bind(14, e.headers.Serialize()).Bind(15, body.Serialize());
  KW_ASSIGN_OR_RETURN(bool irow, ins->Step());
  if (!irow) return InternalError("email insert returned no row");
  int64_t rowid = ins->Int(0);
  KW_RETURN_IF_ERROR(ins->Reset());

  KW_ASSIGN_OR_RETURN(auto* fts, Stmt("INSERT INTO email_fts (rowid, subject, from_, to_, cc, bcc, body) "
                                      "VALUES (?, ?, ?, ?, ?, ?, ?)"));
  fts->Bind(1, rowid).Bind(2, e.subject).Bind(3, AddressText(e.from)).Bind(4, AddressText(e.to))
      .Bind(5, AddressText(e.cc)).Bind(6, AddressText(e.bcc)).Bind(7, e.search_text);
  KW_RETURN_IF_ERROR(fts->Run());

  KW_ASSIGN_OR_RETURN(auto* mb, Stmt("INSERT OR IGNORE INTO email_mailboxes (email_id, mailbox_id) VALUES (?, ?)"));
  for (const auto& m : req.mailbox_ids) {
    KW_RETURN_IF_ERROR(mb->Reset());
    mb->Bind(1, id).Bind(2, m);
    KW_RETURN_IF_ERROR(mb->Run());
  }
  KW_ASSIGN_OR_RETURN(auto* kw, Stmt("INSERT OR IGNORE INTO email_keywords (email_id, keyword) VALUES (?, ?)"));
  for (const auto& k : req.keywords) {
    KW_RETURN_IF_ERROR(kw->Reset());
    kw->Bind(1, id).Bind(2, AsciiLowerCopy(k));
    KW_RETURN_IF_ERROR(kw->Run());
  }
  // Blobs: the whole message and every leaf part, content-addressed and owned by the account.
  KW_ASSIGN_OR_RETURN(auto* bl, Stmt("INSERT OR IGNORE INTO blobs (id, data) VALUES (?, ?)"));
  KW_ASSIGN_OR_RETURN(auto* own, Stmt("INSERT OR IGNORE INTO blob_owners (account_id, blob_id) VALUES (?, ?)"));
  KW_ASSIGN_OR_RETURN(auto* eb, Stmt("INSERT OR IGNORE INTO email_blobs (blob_id, email_id) VALUES (?, ?)"));
  auto put = [&](const std::string& bid, std::string_view data) -> Status {
    KW_RETURN_IF_ERROR(eb->Reset());
    eb->Bind(1, bid).Bind(2, id);
    KW_RETURN_IF_ERROR(eb->Run());
    KW_RETURN_IF_ERROR(bl->Reset());
    bl->Bind(1, bid).BindBlob(2, data);
    KW_RETURN_IF_ERROR(bl->Run());
    KW_RETURN_IF_ERROR(own->Reset());
    own->Bind(1, account_id).Bind(2, bid);
    return own->Run();
  };
  KW_RETURN_IF_ERROR(put(blob_id, req.raw));
  for (const auto& [bid, data] : e.blobs) KW_RETURN_IF_ERROR(put(bid, data));

  KW_RETURN_IF_ERROR(RecordChange(account_id, "Email", id, ChangeOp::kCreated));
  KW_RETURN_IF_ERROR(TouchMailboxes(account_id, req.mailbox_ids));
  return ImportResult{id, blob_id, thread, e.message_id, static_cast<int64_t>(e.size)};
}

Status Txn::UpdateEmail(std::string_view account_id, std::string_view id,
                        const std::optional<std::vector<std::string>>& mailbox_ids,
                        const std::optional<std::vector<std::string>>& keywords) {
  KW_RETURN_IF_ERROR(RequireWrite());
  KW_ASSIGN_OR_RETURN(auto rows, GetEmails(account_id, {std::string(id)}, false, false));
  if (!rows[0]) return NotFoundError(fmt::format("no email '{}'", id));
  const EmailRow& row = *rows[0];
  std::vector<std::string> touched = row.mailbox_ids;
  if (mailbox_ids) {
    KW_RETURN_IF_ERROR(CheckMailboxes(account_id, *mailbox_ids));
    KW_ASSIGN_OR_RETURN(auto* del, Stmt("DELETE FROM email_mailboxes WHERE email_id = ?"));
    del->Bind(1, id);
    KW_RETURN_IF_ERROR(del->Run());
    KW_ASSIGN_OR_RETURN(auto* mb, Stmt("INSERT OR IGNORE INTO email_mailboxes (email_id, mailbox_id) VALUES (?, ?)"));
    for (const auto& m : *mailbox_ids) {
      KW_RETURN_IF_ERROR(mb->Reset());
      mb->Bind(1, id).Bind(2, m);
      KW_RETURN_IF_ERROR(mb->Run());
      touched.push_back(m);
    }
  }
  if (keywords) {
    KW_ASSIGN_OR_RETURN(auto* del, Stmt("DELETE FROM email_keywords WHERE email_id = ?"));
    del->Bind(1, id);
    KW_RETURN_IF_ERROR(del->Run());
    KW_ASSIGN_OR_RETURN(auto* kw, Stmt("INSERT OR IGNORE INTO email_keywords (email_id, keyword) VALUES (?, ?)"));
    for (const auto& k : *keywords) {
      KW_RETURN_IF_ERROR(kw->Reset());
      kw->Bind(1, id).Bind(2, AsciiLowerCopy(k));
      KW_RETURN_IF_ERROR(kw->Run());
    }
  }
  KW_RETURN_IF_ERROR(RecordChange(account_id, "Email", id, ChangeOp::kUpdated));
  KW_RETURN_IF_ERROR(RecordChange(account_id, "Thread", row.thread_id, ChangeOp::kUpdated));
  std::sort(touched.begin(), touched.end());
  touched.erase(std::unique(touched.begin(), touched.end()), touched.end());
  return TouchMailboxes(account_id, touched);
}

Status Txn::DestroyEmail(std::string_view account_id, std::string_view id) {
  KW_RETURN_IF_ERROR(RequireWrite());
  KW_ASSIGN_OR_RETURN(auto rows, GetEmails(account_id, {std::string(id)}, false, false));
  if (!rows[0]) return NotFoundError(fmt::format("no email '{}'", id));
  const EmailRow row = *rows[0];
  KW_ASSIGN_OR_RETURN(auto* rid, Stmt("SELECT rowid FROM emails WHERE id = ?"));
  rid->Bind(1, id);
  KW_ASSIGN_OR_RETURN(bool r, rid->Step());
  int64_t rowid = r ? rid->Int(0) : 0;
  KW_RETURN_IF_ERROR(rid->Reset());
  for (std::string_view sql : {"DELETE FROM email_mailboxes WHERE email_id = ?",
                               "DELETE FROM email_blobs WHERE email_id = ?",
                               "DELETE FROM email_keywords WHERE email_id = ?",
                               "DELETE FROM emails WHERE id = ?"}) {
    KW_ASSIGN_OR_RETURN(auto* d, Stmt(sql));
    d->Bind(1, id);
    KW_RETURN_IF_ERROR(d->Run());
  }
  KW_ASSIGN_OR_RETURN(auto* f, Stmt("DELETE FROM email_fts WHERE rowid = ?"));
  f->Bind(1, rowid);
  KW_RETURN_IF_ERROR(f->Run());
  KW_RETURN_IF_ERROR(RecordChange(account_id, "Email", id, ChangeOp::kDestroyed));
  KW_ASSIGN_OR_RETURN(auto left, ThreadEmails(account_id, row.thread_id));
  if (left.empty()) {
    KW_ASSIGN_OR_RETURN(auto* dt, Stmt("DELETE FROM threads WHERE id = ?"));
    dt->Bind(1, row.thread_id);
    KW_RETURN_IF_ERROR(dt->Run());
    KW_ASSIGN_OR_RETURN(auto* di, Stmt("DELETE FROM thread_ids WHERE thread_id = ?"));
    di->Bind(1, row.thread_id);
    KW_RETURN_IF_ERROR(di->Run());
    KW_RETURN_IF_ERROR(RecordChange(account_id, "Thread", row.thread_id, ChangeOp::kDestroyed));
  } else {
    KW_RETURN_IF_ERROR(RecordChange(account_id, "Thread", row.thread_id, ChangeOp::kUpdated));
  }
  // The blobs stay: other emails may share them, and the owner may still download them until
  // an expiry sweep (not implemented) removes unreferenced ones.
  return TouchMailboxes(account_id, row.mailbox_ids);
}

// ---------------------------------------------------------------- blobs

Result<std::string> Txn::GetBlob(std::string_view account_id, std::string_view blob_id) {
  KW_ASSIGN_OR_RETURN(auto* s, Stmt("SELECT b.data FROM blob_owners o JOIN blobs b ON b.id = o.blob_id "
                                    "WHERE o.account_id = ? AND o.blob_id = ?"));
  s->Bind(1, account_id).Bind(2, blob_id);
  KW_ASSIGN_OR_RETURN(bool row, s->Step());
  if (!row) return NotFoundError(fmt::format("no blob '{}'", blob_id));
  std::string data = s->Blob(0);
  KW_RETURN_IF_ERROR(s->Reset());
  return data;
}

Result<std::vector<EmailRef>> Txn::EmailsWithBlob(std::string_view account_id, std::string_view blob_id) {
  KW_ASSIGN_OR_RETURN(auto* s, Stmt("SELECT email_id FROM email_blobs WHERE blob_id = ?"));
  s->Bind(1, blob_id);
  std::vector<std::string> ids;
  while (true) {
    KW_ASSIGN_OR_RETURN(bool row, s->Step());
    if (!row) break;
    ids.push_back(s->Text(0));
  }
  KW_RETURN_IF_ERROR(s->Reset());
  return EmailRefs(account_id, ids);
}

Result<std::string> Txn::PutBlob(std::string_view account_id, std::string_view bytes) {
  KW_RETURN_IF_ERROR(RequireWrite());
  std::string id = BlobIdFor(bytes);
  KW_ASSIGN_OR_RETURN(auto* bl, Stmt("INSERT OR IGNORE INTO blobs (id, data) VALUES (?, ?)"));
  bl->Bind(1, id).BindBlob(2, bytes);
  KW_RETURN_IF_ERROR(bl->Run());
  KW_ASSIGN_OR_RETURN(auto* own, Stmt("INSERT OR IGNORE INTO blob_owners (account_id, blob_id) VALUES (?, ?)"));
  own->Bind(1, account_id).Bind(2, id);
  KW_RETURN_IF_ERROR(own->Run());
  return id;
}

// ---------------------------------------------------------------- search snippets

namespace {
std::string EscapeHtmlMarked(std::string_view s) {
  // \x02 / \x03 are the match markers handed to FTS5's highlight(); everything else is escaped.
  std::string escaped = HtmlEscape(s);
  std::string out;
  out.reserve(escaped.size() + 16);
  for (char c : escaped) {
    if (c == '\x02') {
      out += "<mark>";
    } else if (c == '\x03') {
      out += "</mark>";
    } else {
      out.push_back(c);
    }
  }
  return out;
}

void CollectText(const Value& f, std::string* text, int depth) {
  if (depth > 16 || !f.is_object()) return;
  if (const Value* c = f.Find("conditions"); c && c->is_array()) {
    const Value* op = f.Find("operator");
    if (op && op->is_string() && op->as_string() == "NOT") return;
    for (const auto& x : c->as_array()) CollectText(x, text, depth + 1);
    return;
  }
  for (const char* k : {"text", "subject", "body"}) {
    if (const Value* v = f.Find(k); v && v->is_string()) {
      if (!text->empty()) text->push_back(' ');
      *text += v->as_string();
    }
  }
}
}  // namespace

Result<std::vector<Txn::Snippet>> Txn::Snippets(std::string_view account_id, const Value& filter,
                                                const std::vector<std::string>& email_ids) {
  std::string words;
  CollectText(filter, &words, 0);
  std::string query;
  // Snippets highlight any of the words, in the subject or the body.
  {
    std::string q = FtsQuery(words, "");
    for (size_t p = q.find(" AND "); p != std::string::npos; p = q.find(" AND ", p)) {
      q.replace(p, 5, " OR ");
    }
    query = q;
  }
  std::vector<Snippet> out;
  KW_ASSIGN_OR_RETURN(auto* s, Stmt(
      "SELECT highlight(email_fts, 0, char(2), char(3)), snippet(email_fts, 5, char(2), char(3), '…', 24) "
      "FROM email_fts WHERE email_fts MATCH ? AND rowid = (SELECT rowid FROM emails WHERE id = ? AND "
      "account_id = ?)"));
  for (const auto& id : email_ids) {
    Snippet sn;
    sn.email_id = id;
    if (!query.empty()) {
      KW_RETURN_IF_ERROR(s->Reset());
      s->Bind(1, query).Bind(2, id).Bind(3, account_id);
      KW_ASSIGN_OR_RETURN(bool row, s->Step());
      if (row) {
        std::string subj = s->Text(0), body = s->Text(1);
        if (subj.find('\x02') != std::string::npos) sn.subject = EscapeHtmlMarked(subj);
        if (body.find('\x02') != std::string::npos) sn.preview = EscapeHtmlMarked(body);
      }
    }
    out.push_back(std::move(sn));
  }
  return out;
}

// ---------------------------------------------------------------- submissions

Result<std::string> Txn::RecordSubmission(std::string_view account_id, std::string_view email_id,
                                          std::string_view identity_id) {
  KW_RETURN_IF_ERROR(RequireWrite());
  KW_ASSIGN_OR_RETURN(auto* c, Stmt("INSERT INTO counters (name, value) VALUES ('submission', 1) "
                                    "ON CONFLICT (name) DO UPDATE SET value = value + 1 RETURNING value"));
  KW_ASSIGN_OR_RETURN(bool row, c->Step());
  if (!row) return InternalError("submission counter");
  std::string id = NewCounterId('S', c->Int(0));
  KW_RETURN_IF_ERROR(c->Reset());
  KW_ASSIGN_OR_RETURN(auto* s, Stmt("INSERT INTO submissions (id, account_id, email_id, identity_id, "
                                    "send_at) VALUES (?, ?, ?, ?, ?)"));
  s->Bind(1, id).Bind(2, account_id).Bind(3, email_id).Bind(4, identity_id)
      .Bind(5, store_->options_.clock->NowSeconds());
  KW_RETURN_IF_ERROR(s->Run());
  KW_RETURN_IF_ERROR(RecordChange(account_id, "EmailSubmission", id, ChangeOp::kCreated));
  return id;
}

// ---------------------------------------------------------------- Store

Result<std::unique_ptr<Txn::Conn>> Store::NewConn() {
  KW_ASSIGN_OR_RETURN(auto db, sqlite::Db::Open(options_.path));
  // Per-item savepoints (/set, import, batches) keep a statement journal: in memory, not in
  // temporary files (measured: 2.6x the import cost otherwise).
  KW_RETURN_IF_ERROR(db->Exec("PRAGMA temp_store = MEMORY"));
  auto c = std::make_unique<Txn::Conn>();
  c->db = std::move(db);
  return c;
}

std::unique_ptr<Txn::Conn> Store::Lease() {
  std::lock_guard lock(pool_mu_);
  if (pool_.empty()) return nullptr;
  auto c = std::move(pool_.back());
  pool_.pop_back();
  return c;
}

void Store::Return(std::unique_ptr<Txn::Conn> c) {
  std::lock_guard lock(pool_mu_);
  if (pool_.size() < 64) pool_.push_back(std::move(c));
}

Result<std::unique_ptr<Store>> Store::Open(StoreOptions options) {
  if (options.path.empty() || options.path == ":memory:") {
    return InvalidArgumentError("mail store: a database file path is required");
  }
  if (options.change_retention_days < 30) {
    return InvalidArgumentError("mail store: change_retention_days must be at least 30");
  }
  if (!options.clock) return InvalidArgumentError("mail store: clock is required");
  std::unique_ptr<Store> store(new Store(std::move(options)));
  KW_ASSIGN_OR_RETURN(auto conn, store->NewConn());
  KW_RETURN_IF_ERROR(conn->db->Exec(kSchema));
  KW_RETURN_IF_ERROR(conn->db->Exec(fmt::format("PRAGMA user_version = {}", kSchemaVersion)));
  store->Return(std::move(conn));
  return store;
}

Store::Store(StoreOptions options) : options_(std::move(options)) {}
Store::~Store() = default;

Status Store::Read(const std::function<Status(Txn&)>& fn) {
  std::unique_ptr<Txn::Conn> conn = Lease();
  if (!conn) {
    KW_ASSIGN_OR_RETURN(conn, NewConn());
  }
  Txn txn(this, conn.get(), false);
  // BEGIN/COMMIT as cached statements: a read is on the hot path of every request.
  Status s = txn.Stmt("BEGIN").status();
  if (s.ok()) s = txn.Stmt("BEGIN").value()->Run();
  if (s.ok()) {
    s = fn(txn);
    for (auto& [sql, st] : conn->stmts) st->Reset().IgnoreError();
    auto end = txn.Stmt(s.ok() ? "COMMIT" : "ROLLBACK");
    Status c = end.ok() ? end.value()->Run() : end.status();
    if (s.ok()) s = c;
  }
  Return(std::move(conn));
  return s;
}

Status Store::Write(const std::function<Status(Txn&)>& fn) {
  std::unique_ptr<Txn::Conn> conn = Lease();
  if (!conn) {
    KW_ASSIGN_OR_RETURN(conn, NewConn());
  }
  Status s;
  std::set<std::string> changed;
  {
    std::lock_guard lock(write_mu_);
    s = conn->db->Exec("BEGIN IMMEDIATE");
    if (s.ok()) {
      Txn txn(this, conn.get(), true);
      s = fn(txn);
      for (auto& [sql, st] : conn->stmts) st->Reset().IgnoreError();
      if (s.ok()) {
        s = conn->db->Exec("COMMIT");
        if (!s.ok()) conn->db->Exec("ROLLBACK").IgnoreError();
      } else {
        conn->db->Exec("ROLLBACK").IgnoreError();
      }
      if (s.ok()) changed = std::move(txn.changed_accounts_);
    }
  }
  Return(std::move(conn));
  if (!changed.empty() && change_listener_) change_listener_(changed);
  return s;
}

Result<Account> Store::EnsureAccount(std::string_view tenant_id, std::string_view owner_user_id,
                                     std::string_view name, std::string_view email) {
  if (tenant_id.empty() || owner_user_id.empty()) {
    return InvalidArgumentError("an account needs a tenant and an owner");
  }
  Account out;
  Status s = Write([&](Txn& t) -> Status {
    auto existing = t.FindAccountByOwner(tenant_id, owner_user_id);
    if (existing.ok()) {
      out = *existing;
      return Status::Ok();
    }
    out.id = "A" + HexEncode(crypto::RandomBytes(8));
    out.tenant_id = std::string(tenant_id);
    out.owner_user_id = std::string(owner_user_id);
    out.name = std::string(name);
    out.email = AsciiLowerCopy(email);
    KW_ASSIGN_OR_RETURN(auto* ins, t.Stmt("INSERT INTO accounts (id, tenant_id, owner_user_id, name, email) "
                                          "VALUES (?, ?, ?, ?, ?)"));
    ins->Bind(1, out.id).Bind(2, out.tenant_id).Bind(3, out.owner_user_id).Bind(4, out.name)
        .Bind(5, out.email);
    KW_RETURN_IF_ERROR(ins->Run());
    accounts_generation_.fetch_add(1);
    for (const auto& d : kDefaults) {
      Mailbox m;
      m.name = d.name;
      m.role = d.role;
      m.sort_order = d.sort;
      KW_RETURN_IF_ERROR(t.CreateMailbox(out.id, m).status());
    }
    return Status::Ok();
  });
  if (!s.ok()) return s;
  return out;
}

Result<ImportResult> Store::Deliver(std::string_view account_id, std::string_view raw) {
  ImportResult out;
  Status s = Write([&](Txn& t) -> Status {
    KW_RETURN_IF_ERROR(t.GetAccount(account_id).status());
    KW_ASSIGN_OR_RETURN(auto boxes, t.ListMailboxes(account_id, false));
    std::string inbox;
    for (const auto& m : boxes) {
      if (m.role == "inbox") inbox = m.id;
    }
    if (inbox.empty()) return FailedPreconditionError("the account has no inbox");
    ImportRequest req;
    req.raw = std::string(raw);
    req.mailbox_ids = {inbox};
    KW_ASSIGN_OR_RETURN(out, t.Import(account_id, req));
    return Status::Ok();
  });
  if (!s.ok()) return s;
  return out;
}

Result<std::vector<Result<ImportResult>>> Store::DeliverBatch(const std::vector<Delivery>& deliveries) {
  std::vector<Result<ImportResult>> out;
  Status s = Write([&](Txn& t) -> Status {
    out.clear();
    std::map<std::string, std::string> inboxes;
    for (const auto& d : deliveries) {
      auto it = inboxes.find(d.account_id);
      if (it == inboxes.end()) {
        std::string inbox;
        auto boxes = t.ListMailboxes(d.account_id, false);
        if (!boxes.ok()) return boxes.status();
        for (const auto& m : *boxes) {
          if (m.role == "inbox") inbox = m.id;
        }
        it = inboxes.emplace(d.account_id, inbox).first;
      }
      if (it->second.empty()) {
        out.emplace_back(NotFoundError(fmt::format("no account '{}' with an inbox", d.account_id)));
        continue;
      }
      ImportRequest req;
      req.raw = d.raw;
      req.mailbox_ids = {it->second};
      // No savepoint needed: Import validates everything before it writes (see store.h).
      auto r = t.Import(d.account_id, req);
      if (!r.ok() && r.status().code() == StatusCode::kInternal) return r.status();
      out.push_back(std::move(r));
    }
    return Status::Ok();
  });
  if (!s.ok()) return s;
  return out;
}

Result<int64_t> Store::Prune() {
  int64_t cutoff = options_.clock->NowMillis() - options_.change_retention_days * 86'400'000;
  int64_t dropped = 0;
  Status s = Write([&](Txn& t) -> Status {
    KW_ASSIGN_OR_RETURN(auto* f, t.Stmt(
        "INSERT INTO states (account_id, type, modseq, floor) SELECT account_id, type, max(modseq), "
        "max(modseq) FROM changes WHERE time_ms < ? GROUP BY account_id, type "
        "ON CONFLICT (account_id, type) DO UPDATE SET floor = max(floor, excluded.floor)"));
    f->Bind(1, cutoff);
    KW_RETURN_IF_ERROR(f->Run());
    KW_ASSIGN_OR_RETURN(auto* d, t.Stmt("DELETE FROM changes WHERE time_ms < ?"));
    d->Bind(1, cutoff);
    KW_RETURN_IF_ERROR(d->Run());
    dropped = t.conn_->db->Changes();
    return Status::Ok();
  });
  if (!s.ok()) return s;
  return dropped;
}

}  // namespace kw::mail
