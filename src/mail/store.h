// Store: the mail data of every tenant on this server, in one embedded SQLite database
// (DATA_DIR/mail.db: WAL, synchronous=FULL, created 0600).
//
// Start here for mail data. Everything is scoped by account; an account belongs to exactly one
// tenant and one owner (a user id of that tenant). Access control is not decided here: the JMAP
// processor decides who may reach an account, the store only refuses ids of another account
// (they are "not found", exactly as ids that never existed).
//
// Schema (one block, created on Open; version in PRAGMA user_version):
//   accounts(id, tenant_id, owner_user_id, name, email, modseq)   UNIQUE(tenant_id, owner_user_id)
//   mailboxes(id, account_id, name, parent_id, role, sort_order, subscribed)
//   threads(id, account_id, subject_key)  thread_ids(account_id, message_id, thread_id)
//   emails(rowid, id, account_id, thread_id, blob_id, message_id, size, received_at, sent_at,
//          has_attachment, subject_key, from_key, to_key, summary, headers, body)
//     summary: JSON object of the cheap properties (blobId ... preview), headers: the raw header
//     list, body: {bodyStructure, textBody, htmlBody, attachments, bodyValues}; all precomputed at
//     import so Email/get only reads and filters JSON.
//   email_mailboxes(email_id, mailbox_id)   email_keywords(email_id, keyword)
//   email_fts: FTS5(subject, from_, to_, cc, bcc, body), rowid = emails.rowid
//   blobs(id, data)   blob_owners(account_id, blob_id)   email_blobs(blob_id, email_id)   -- content-addressed ("B" + SHA-256 prefix)
//   changes(account_id, type, modseq, object_id, op, time_ms)  states(account_id, type, modseq, floor)
// Ids: accounts "A" + 16 random hex digits; mailboxes "F…", emails "M…", threads "T…",
// submissions "S…" from AUTOINCREMENT counters, never reused.
//
// State and changes: each account has one modseq counter; every created/updated/destroyed object
// takes the next value and is logged in `changes` with its type ("Email", "Mailbox", "Thread",
// "EmailSubmission"). A type's state string is the modseq of its last change. /changes from any
// state newer than the type's floor works; Prune drops log rows older than change_retention_days
// (default 45, so at least 30 days of history always answer) and raises the floor.
//
// Threads: a new email joins the thread of any message it references (In-Reply-To, References)
// or that references it, when the subjects agree after removing "Re:"/"Fwd:" prefixes;
// otherwise it starts a thread.
//
// Concurrency: a pool of connections, one leased per Read/Write call (each keeps its prepared
// statements, so no statement is prepared twice on a connection); writes are serialized by one
// mutex and run in BEGIN IMMEDIATE transactions. All public methods are thread-safe.
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "core/clock.h"
#include "core/sqlite.h"
#include "core/status.h"
#include "mail/json_value.h"
#include "mail/mime.h"

namespace kw::mail {

struct StoreOptions {
  std::string path;  // the database file (DATA_DIR/mail.db); required, not ":memory:"
  int64_t change_retention_days = 45;
  ParseLimits parse_limits;
  const Clock* clock = Clock::System();
};

struct Account {
  std::string id, tenant_id, owner_user_id;
  std::string name;   // owner's UPN / user name
  std::string email;  // delivery address, lower case
};

struct Mailbox {
  std::string id, name, parent_id, role;  // parent_id/role "" for none
  int64_t sort_order = 0;
  bool subscribed = true;
  int64_t total_emails = 0, unread_emails = 0, total_threads = 0, unread_threads = 0;
};

// What a query or a listing knows about one email (enough for audit items).
struct EmailRef {
  std::string id, thread_id, message_id, mailbox_id;  // mailbox_id: the first, by id
};

struct EmailRow {
  std::string id, thread_id, blob_id, message_id;
  std::vector<std::string> mailbox_ids, keywords;
  std::string summary_json;                // see the file comment
  std::string headers_json, body_json;     // filled only when asked for
};

struct ChangeSet {
  std::string old_state, new_state;
  bool has_more = false;
  std::vector<std::string> created, updated, destroyed;
  bool only_counts = false;  // Mailbox: every update in range touched counts only
};

enum class ChangeOp { kCreated = 0, kUpdated = 1, kDestroyed = 2, kCounts = 3 };

// Store errors a JMAP caller maps to its own types carry these prefixes in the message
// (code kInvalidArgument / kNotFound / kFailedPrecondition): see jmap.cc.
inline constexpr std::string_view kCannotCalculateChanges = "cannotCalculateChanges";

struct ImportRequest {
  std::string raw;  // RFC 5322 bytes
  std::vector<std::string> mailbox_ids;
  std::vector<std::string> keywords;
  int64_t received_at = 0;  // Unix seconds; 0: now
};

struct ImportResult {
  std::string id, blob_id, thread_id, message_id;
  int64_t size = 0;
};

class Store;

// A transaction on one leased connection. Read methods work in both Read and Write; the others
// REQUIRE a Write transaction. Not thread-safe; lives only inside Store::Read/Write callbacks.
class Txn {
 public:
  // ---- accounts ----
  Result<Account> GetAccount(std::string_view account_id);
  // NotFound when the tenant has no account for that owner.
  Result<Account> FindAccountByOwner(std::string_view tenant_id, std::string_view owner_user_id);
  Result<Account> FindAccountByEmail(std::string_view email);
  Result<std::vector<Account>> ListAccounts(std::string_view tenant_id);

  // ---- state ----
  Result<std::string> State(std::string_view account_id, std::string_view type);
  // What push (RFC 8620 §7.3) compares: the state of every type ("Mailbox", "Email", "Thread",
  // "EmailSubmission", and "EmailDelivery", which moves only when an email is created), and
  // the account's modseq (*modseq), which moves with any change.
  struct PushState {
    std::map<std::string, std::string, std::less<>> types;
    int64_t modseq = 0;
  };
  Result<PushState> PushStates(std::string_view account_id);
  // Changes of `type` after `since` (at most max_changes ids). FailedPrecondition with message
  // "cannotCalculateChanges: ..." for an unknown or too old state.
  Result<ChangeSet> Changes(std::string_view account_id, std::string_view type,
                            std::string_view since, size_t max_changes);

  // ---- mailboxes ----
  Result<std::vector<Mailbox>> ListMailboxes(std::string_view account_id, bool with_counts);
  // "\\Inbox", "\\Projects\\2023": the mailbox path for audit records, by mailbox id.
  Result<std::map<std::string, std::string>> MailboxPaths(std::string_view account_id);
  Result<std::string> CreateMailbox(std::string_view account_id, const Mailbox& m);
  Status UpdateMailbox(std::string_view account_id, const Mailbox& m);
  // FailedPrecondition "mailboxHasChild" / "mailboxHasEmail" (unless remove_emails).
  Status DestroyMailbox(std::string_view account_id, std::string_view id, bool remove_emails);

  // ---- emails ----
  // Rows for `ids` in order; nullopt for ids not in the account.
  Result<std::vector<std::optional<EmailRow>>> GetEmails(std::string_view account_id,
                                                         const std::vector<std::string>& ids,
                                                         bool with_headers, bool with_body);
  // Runs a JMAP Email/query filter and sort (RFC 8621 §4.4). InvalidArgument with message
  // "unsupportedFilter: ..." / "unsupportedSort: ..." / "invalidArguments: ..." when refused.
  Result<std::vector<EmailRef>> QueryEmails(std::string_view account_id, const Value& filter,
                                            const Value& sort, bool collapse_threads);
  // id, thread, Message-ID and first mailbox of each existing id (missing ones skipped).
  Result<std::vector<EmailRef>> EmailRefs(std::string_view account_id,
                                          const std::vector<std::string>& ids);
  // Email ids of a thread, oldest first (empty if not in the account).
  Result<std::vector<std::string>> ThreadEmails(std::string_view account_id, std::string_view id);

  // Parses and stores a message. Every check (mailboxes of the account, a parsable message)
  // runs before the first write, so an error other than Internal leaves nothing behind and the
  // transaction may go on with the next message.
  Result<ImportResult> Import(std::string_view account_id, const ImportRequest& req);
  // Replaces the mailboxes and/or keywords of an email (nullopt: unchanged). NotFound.
  Status UpdateEmail(std::string_view account_id, std::string_view id,
                     const std::optional<std::vector<std::string>>& mailbox_ids,
                     const std::optional<std::vector<std::string>>& keywords);
  Status DestroyEmail(std::string_view account_id, std::string_view id);

  // ---- blobs ----
  // NotFound unless the blob belongs to the account.
  Result<std::string> GetBlob(std::string_view account_id, std::string_view blob_id);
  Result<std::string> PutBlob(std::string_view account_id, std::string_view bytes);
  // The account's emails that contain the blob (whole message or a part), for audit items.
  Result<std::vector<EmailRef>> EmailsWithBlob(std::string_view account_id, std::string_view blob_id);

  // ---- search ----
  struct Snippet {
    std::string email_id;
    std::optional<std::string> subject, preview;  // HTML with <mark>…</mark>; nullopt: no match
  };
  Result<std::vector<Snippet>> Snippets(std::string_view account_id, const Value& filter,
                                        const std::vector<std::string>& email_ids);

  // ---- submissions ----
  Result<std::string> RecordSubmission(std::string_view account_id, std::string_view email_id,
                                       std::string_view identity_id);

  // Logs a change (normally done by the methods above).
  Status RecordChange(std::string_view account_id, std::string_view type, std::string_view id,
                      ChangeOp op);

  // Savepoints around one item of a /set call, so a failed item leaves no trace.
  Status Savepoint();
  Status Release();
  Status RollbackToSavepoint();

 private:
  friend class Store;
  struct Conn;
  Txn(Store* store, Conn* conn, bool write) : store_(store), conn_(conn), write_(write) {}
  Result<sqlite::Statement*> Stmt(std::string_view sql);
  Status RequireWrite() const;
  Result<std::string> ThreadFor(std::string_view account_id, const ParsedEmail& e);
  Status CheckMailboxes(std::string_view account_id, const std::vector<std::string>& ids);
  Status TouchMailboxes(std::string_view account_id, const std::vector<std::string>& ids);

  Store* store_;
  Conn* conn_;
  bool write_;
  std::set<std::string> recorded_;  // (account, type, id) updates already logged
  std::set<std::string> changed_accounts_;  // accounts whose state this transaction moved
};

class Store {
 public:
  // Opens or creates the database and its schema. Errors: InvalidArgument for bad options,
  // Unavailable for an unusable file, Internal for SQLite failures.
  static Result<std::unique_ptr<Store>> Open(StoreOptions options);
  ~Store();

  // Runs `fn` in a read snapshot (BEGIN ... COMMIT) on a leased connection.
  Status Read(const std::function<Status(Txn&)>& fn);
  // Runs `fn` in a write transaction; an error from `fn` rolls everything back. Callers that
  // must record an access before it takes effect append the audit record at the end of `fn`.
  Status Write(const std::function<Status(Txn&)>& fn);

  // Creates the account for (tenant, owner) with the default mailboxes (inbox, drafts, sent,
  // trash, junk, archive), or returns the existing one. `email` is the delivery address.
  Result<Account> EnsureAccount(std::string_view tenant_id, std::string_view owner_user_id,
                                std::string_view name, std::string_view email);

  // Delivers raw RFC 5322 bytes into the account's inbox (`keyward mail deliver`, LMTP).
  // InvalidArgument for a message that cannot be parsed; NotFound for an unknown account.
  Result<ImportResult> Deliver(std::string_view account_id, std::string_view raw);

  struct Delivery {
    std::string account_id;
    std::string raw;
  };
  // Delivers many messages in one transaction (one fsync: the way to reach thousands of
  // messages a second, e.g. an LMTP session's recipients or a queue drained in batches). Each
  // message succeeds or fails alone (savepoints); results are in input order. The Status is
  // not OK only when the transaction itself fails (then nothing was delivered).
  Result<std::vector<Result<ImportResult>>> DeliverBatch(const std::vector<Delivery>& deliveries);

  // Called after every committed write transaction that changed the state of some accounts,
  // with their ids, on the writing thread (keep it short: push notification hubs only mark
  // accounts dirty). Changes made by another process (`keyward mail deliver` while the server
  // runs) are not seen. Set once, before the store is shared.
  using ChangeListener = std::function<void(const std::set<std::string>& account_ids)>;
  void SetChangeListener(ChangeListener listener) { change_listener_ = std::move(listener); }

  // Drops change-log rows older than the retention and raises the floors. Returns rows dropped.
  Result<int64_t> Prune();

  const StoreOptions& options() const { return options_; }
  // Moves whenever an account is created (callers cache account lists against it).
  uint64_t accounts_generation() const { return accounts_generation_.load(); }

 private:
  friend class Txn;
  explicit Store(StoreOptions options);
  Result<std::unique_ptr<Txn::Conn>> NewConn();
  std::unique_ptr<Txn::Conn> Lease();
  void Return(std::unique_ptr<Txn::Conn> c);

  StoreOptions options_;
  std::mutex pool_mu_;
  std::vector<std::unique_ptr<Txn::Conn>> pool_;
  std::mutex write_mu_;
  std::atomic<uint64_t> accounts_generation_{0};
  ChangeListener change_listener_;
};

// "Re: Fwd: Hello " -> "hello": the subject key threads and sorting compare.
std::string SubjectKey(std::string_view subject);

}  // namespace kw::mail
