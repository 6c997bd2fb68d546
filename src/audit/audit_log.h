// AuditLog: the tamper-evident record of every access to a mailbox, a token or a key.
//
// Contract (implementation in audit_log.cc and friends; the on-disk format is documented in the
// file that writes it):
//  - Every record is kept. Nothing is merged, deduplicated, sampled or throttled, for every
//    tenant, by default (the 2023 log merged Bind reads per 2 minutes, dropped duplicates, stopped
//    after 1,000 records a day and was a paid extra: none of that here).
//  - Append-only segment files under a directory. Each record carries a sequence number (1, 2,
//    ...; gap-free) and the SHA-256 of the previous record (a hash chain), so an edited, removed,
//    reordered or truncated record is found by VerifyLog and named (segment file, offset, seq).
//  - Append returns only once the record is on disk (fsync); concurrent appenders share fsyncs
//    (group commit: a writer thread writes whatever was submitted while a sync thread waits for
//    the previous fdatasync). AppendAsync + WaitDurable split the two halves, so a producer
//    submits many records and waits once; a record is acknowledged only after its fdatasync.
//    A crash never leaves a half-written record that is read as valid: on Open a torn tail is
//    cut off (and reported), and everything acknowledged is there.
//  - Retention (default 180 days) drops whole old segments and keeps what remains verifiable (the
//    first kept record's predecessor hash is recorded as the anchor).
//  - Subscribers (the detection engine) receive every record in sequence order, at least once,
//    starting from a sequence number they choose (so a restarted consumer resumes without gaps).
//
// Thread safety: AuditLog is thread-safe. Subscriber callbacks run on one thread per
// subscription, one record at a time; a callback may call Append (its own record arrives later).
//
// This header is the contract between the audit module and its users (mail, identity's sink,
// detect's live mode); change it only together with them.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "core/clock.h"
#include "core/status.h"

namespace kw::audit {

// One message touched by an access (Exchange's FolderItems entry).
struct AuditItem {
  std::string id;                   // Keyward's email id
  std::string internet_message_id;  // "<...@...>" (RFC 5322 Message-ID)
  std::string folder_path;          // "\\Inbox" style path of its mailbox
};

// One audited event. Fields that do not apply are left empty/zero. Modelled on Exchange's
// MailItemsAccessed record, plus the token facts that would have exposed the 2023 forgery.
struct AuditRecord {
  // Assigned by AuditLog::Append (ignored on input).
  uint64_t seq = 0;
  std::string prev_hash;  // hex SHA-256 of the previous record ("" before the first)
  std::string hash;       // hex SHA-256 of this record (chained)

  int64_t time_ms = 0;      // UTC, milliseconds since the epoch; 0: Append stamps the clock
  std::string tenant_id;    // the tenant whose data or keys were touched
  std::string operation;    // MailItemsAccessed, Send, Update, Delete, MailboxLogin,
                            // TokenRejected, TokenIssued, TokenRefused, TokenRevoked,
                            // SignInFailed, KeyGenerated, KeyPublished, KeyActivated, ...
  std::string access_type;  // "Bind" (content, headers, blob reads) or "Sync" (listings,
                            // changes) for MailItemsAccessed; "" otherwise
  std::string user_id;      // the acting user (token sub); "" for app-only access
  std::string user_upn;     // the acting user's name when known
  std::string mailbox_owner;  // owner (UPN) of the mailbox accessed
  std::string mailbox_id;     // Keyward account id of that mailbox
  std::vector<AuditItem> items;  // every item, never merged
  std::string client_app_id;  // the token's azp
  std::string resource;       // what was called, e.g. "jmap:Email/get", "identity:token"
  std::string client_ip;
  std::string user_agent;
  std::string session_id;
  std::string token_id;        // jti
  std::string token_kid;       // the signing key's kid
  std::string token_issuer;    // iss
  std::string token_tenant_id; // the token's tid (may differ from tenant_id: an alert)
  int64_t token_issued_at = 0; // iat, Unix seconds
  std::string result;          // "Succeeded" or "Failed"
  std::string reason;          // reason code (token::ReasonCode, JMAP error type, ...)
  std::string detail;          // a JSON object text with anything else (for a rejected token,
                               // the claims it asserted); "" for none
};

struct AuditLogOptions {
  std::string dir;  // required; created 0700 if missing (its parent must exist)
  uint64_t segment_bytes = 64ull << 20;  // a segment is closed once the next group would pass
                                         // this (a record is never split); 4 KiB .. 4 GiB
  int64_t retention_days = 180;  // 0: keep forever
  bool fsync = true;             // false only for tests and benchmarks that say so
  const Clock* clock = Clock::System();
  // Additions (not part of the first contract draft; defaults keep its behaviour):
  // How often the `checkpoint` file (last durable seq and hash) is rewritten by a background
  // thread when records were added; it is also written when the log is closed. 0: only at close.
  int64_t checkpoint_interval_ms = 1000;
  // Records kept in memory for live subscribers; a subscriber further behind reads from disk.
  size_t subscription_buffer = 4096;
};

// Where services write records: AuditLog in production, MemoryAuditWriter in tests.
class AuditWriter {
 public:
  virtual ~AuditWriter() = default;
  // Durable when it returns OK (for AuditLog). Services refuse the request when it fails:
  // an access that cannot be recorded does not happen.
  virtual Result<uint64_t> Append(AuditRecord record) = 0;

  // Additions for producers that write several records and wait once (a request that reads N
  // items): AppendAsync validates and queues the record and returns its sequence number without
  // waiting for the disk; the record is durable once WaitDurable(seq), or a WaitDurable of any
  // later seq, returns OK. Records are stored in the order of the calls that returned their
  // seqs. The defaults append synchronously, so every AuditWriter supports the pair.
  virtual Result<uint64_t> AppendAsync(AuditRecord record) { return Append(std::move(record)); }
  virtual Status WaitDurable(uint64_t seq) {
    (void)seq;
    return Status::Ok();
  }
};

// Keeps records in memory (seq and hashes assigned, chain not persisted). Thread-safe.
class MemoryAuditWriter final : public AuditWriter {
 public:
  Result<uint64_t> Append(AuditRecord record) override;
  std::vector<AuditRecord> records() const;
  void Clear();

 private:
  struct State;
  std::shared_ptr<State> state_ = MakeState();
  static std::shared_ptr<State> MakeState();
};

class AuditLog final : public AuditWriter {
 public:
  // Opens (or creates) the log; recovers a torn tail. Errors: InvalidArgument for bad options,
  // Unavailable for an unusable directory, DataLoss for a chain broken before the tail (run
  // VerifyLog to locate it; the log refuses to append after damage it cannot explain).
  static Result<std::unique_ptr<AuditLog>> Open(AuditLogOptions options);
  ~AuditLog();

  // Appends one record durably (see the contract); returns its sequence number.
  // Equivalent to WaitDurable(AppendAsync(record)).
  Result<uint64_t> Append(AuditRecord record) override;
  // Appends several records atomically in order with one fsync; returns the last seq.
  Result<uint64_t> AppendBatch(std::vector<AuditRecord> records);

  // Pipelined appends. AppendAsync validates and encodes the record in the calling thread,
  // assigns its sequence number and queues it for the writer thread; it returns at once
  // (InvalidArgument for a record Append would refuse, without using a seq; the log's failure
  // status once a write or fsync has failed). It blocks only while more than 16 MiB of encoded
  // records wait for the writer (backpressure). Sequence numbers follow the order in which
  // AppendAsync calls return, also across threads. AppendBatchAsync does the same for a batch
  // (all or nothing after a crash, as AppendBatch) and returns its last seq.
  Result<uint64_t> AppendAsync(AuditRecord record) override;
  Result<uint64_t> AppendBatchAsync(std::vector<AuditRecord> records);
  // Blocks until every record up to `seq` is on disk (written and fdatasync'ed): OK then, also
  // if the log failed afterwards. Returns the failure (Unavailable, naming the file and the
  // errno) when a write or fsync failed before `seq` was durable: that record and every later
  // one may be lost and must be treated as not recorded. InvalidArgument for a seq not yet
  // assigned. Thread-safe; any number of threads may wait.
  Status WaitDurable(uint64_t seq) override;

  // The newest durable sequence number (0 for an empty log). Every record up to it is on disk.
  uint64_t last_seq() const;
  // The oldest sequence number still kept (after retention); last_seq() + 1 when empty.
  uint64_t first_seq() const;

  // Writes the `checkpoint` file now (normally done every checkpoint_interval_ms and at close).
  Status WriteCheckpoint();

  using Subscriber = std::function<void(const AuditRecord&)>;
  // Delivers every record with seq >= from_seq (older ones read back from disk first), in order,
  // then each new one as it is appended, on a thread of its own. Returns an id for Unsubscribe.
  // A from_seq older than first_seq() starts at first_seq() (retention dropped the rest; a
  // warning is logged); from_seq 0 means 1. Memory is bounded by subscription_buffer records
  // shared by all subscriptions: a slow subscriber re-reads from disk, it never blocks Append.
  Result<uint64_t> Subscribe(uint64_t from_seq, Subscriber subscriber);
  // Stops delivery and joins the subscription's thread (or, from inside its own callback,
  // stops after the callback returns). Unknown ids are ignored.
  void Unsubscribe(uint64_t id);

  // Drops segments whose newest record is older than the retention; the chain stays verifiable.
  Status ApplyRetention();

  const std::string& dir() const;

 private:
  struct Impl;
  explicit AuditLog(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

// ---- reading a log directory (also while a process appends to it) ----

struct VerifyProblem {
  std::string segment;  // file name
  uint64_t offset = 0;  // byte offset of the record in that file
  uint64_t seq = 0;     // the sequence number expected there
  std::string what;     // "edited", "removed", "reordered", "truncated", "malformed", ...
  std::string message;  // one sentence for a human (addition)
};
// `what` values: "edited" (a record's bytes do not match its own hash, or its hash does not
// match the checkpoint), "chain_broken" (a record's prev_hash is not its predecessor's hash: a
// record before it was rewritten with a recomputed hash), "removed" (records or a whole segment
// file missing), "reordered" (a record found after a later one), "duplicated", "truncated" (a
// segment cut short in the middle of the log, or the log ending before its checkpoint),
// "malformed" (not a record at all), "anchor" (the retention anchor does not match).
struct VerifyReport {
  uint64_t records = 0;
  uint64_t first_seq = 0, last_seq = 0;
  std::vector<VerifyProblem> problems;  // empty: intact
  // Additions: bytes after the last complete record of the newest segment (a write in progress,
  // or a torn tail that the next Open cuts off: never an acknowledged record); whether a
  // checkpoint file was found and compared.
  uint64_t incomplete_tail_bytes = 0;
  bool checkpoint_checked = false;
  bool ok() const { return problems.empty(); }
};
// Reads every segment of `dir` and checks each record's own hash, the sequence and the chain,
// the segment numbering, the anchor and (when present) the checkpoint. Errors only when the
// directory cannot be read; damage is reported in the VerifyReport.
Result<VerifyReport> VerifyLog(const std::string& dir);
// Same, with the checkpoint read from `checkpoint_path` (e.g. a copy kept on another host: a
// checkpoint in the log directory itself can be rewritten by whoever truncates the log).
Result<VerifyReport> VerifyLog(const std::string& dir, const std::string& checkpoint_path);

struct AuditQuery {
  std::string tenant_id, user, operation;  // "" matches all; user matches user_id or user_upn
  int64_t from_ms = 0, to_ms = 0;          // 0: unbounded; from_ms <= time_ms < to_ms
  uint64_t limit = 0;                      // 0: no limit
};
// Calls `fn` for each matching record in sequence order until it returns false. Queries do not
// verify hashes (VerifyLog does); a line that is not a record is a DataLoss error naming the
// segment and offset; an incomplete last line (a write in progress) is skipped.
Status QueryLog(const std::string& dir, const AuditQuery& query,
                const std::function<bool(const AuditRecord&)>& fn);

// The record as Microsoft 365 unified-audit-log AuditData JSON (field names as Exchange and
// Entra use them: CreationTime, Id, Operation, OrganizationId, RecordType, ResultStatus, UserId,
// UserKey, UserType, Workload, ClientIPAddress, ClientInfoString, AppId, ClientAppId, LogonType,
// MailboxGuid, MailboxOwnerUPN, SessionId, OperationCount, OperationProperties, Folders,
// AppAccessContext, TokenTenantId, plus Keyward's own fields under a "Keyward" member), so that
// existing tools and Sigma rules read it.
std::string ToUalJson(const AuditRecord& record);

// The record as one JSON object (Keyward's own export and on-disk form; the format is described
// in log_format.cc). `detail` is embedded as a JSON object; a detail that is not a JSON object
// is embedded as a string under "detail_text" instead (Append refuses such records).
std::string ToJson(const AuditRecord& record);

// Parses what ToJson wrote (strict: unknown members, duplicates, wrong types and invalid UTF-8
// are InvalidArgument naming the member). seq, prev_hash and hash are taken as written, not
// checked (VerifyLog checks them). FromJson(ToJson(r)) == r for every record Append accepts,
// once its detail is in canonical (minified) form.
Result<AuditRecord> FromJson(std::string_view json);

// The checks Append makes (InvalidArgument naming the field): operation required and at most
// 128 bytes of [A-Za-z0-9._:/-]; access_type "", "Bind" or "Sync"; result "", "Succeeded",
// "PartiallySucceeded" or "Failed"; every string valid UTF-8 and at most 64 KiB; at most
// 100,000 items; time_ms and token_issued_at within years 1970..9999; detail "" or a JSON object
// (strict: no duplicate members, depth <= 32); the whole record at most 1 MiB once encoded.
Status ValidateRecord(const AuditRecord& record);

bool operator==(const AuditItem& a, const AuditItem& b);
bool operator==(const AuditRecord& a, const AuditRecord& b);

}  // namespace kw::audit
