// A generator of realistic Microsoft 365 unified-audit-log (UAL) AuditData records, for tests,
// benchmarks and demonstrations (`keyward gen-logs`).
//
// The records are what Exchange Online and Entra ID write to the unified audit log: the field
// names and value forms of /work/shared/reference/storm-0558.md (CreationTime without a zone
// suffix, Id, Operation, OrganizationId, RecordType, ResultStatus, UserId, UserKey, UserType,
// Workload, ClientIPAddress, ClientInfoString, AppId, ClientAppId, ExternalAccess, LogonType,
// MailboxGuid, MailboxOwnerUPN, SessionId, OperationCount, OperationProperties, Folders,
// AppAccessContext, TokenTenantId). Operations: MailItemsAccessed (Bind and Sync), Send,
// MailboxLogin, MoveToDeletedItems, New-InboxRule (Exchange), UserLoggedIn and UserLoginFailed
// (AzureActiveDirectory, RecordType 15). No value is an empty string or null.
//
// The population: tenants with domains and corporate address ranges; users with UPNs, time zones,
// working hours, a home address, usual clients (Outlook desktop, OWA, Outlook mobile, and for a
// few a tenant-approved third-party REST application). Activity follows each user's local working
// day (a thinned Poisson process, so records come out in time order with a diurnal and weekly
// pattern).
//
// Optional actor (Storm-0558-like): from a given day, on weekdays between 00:00 and 09:00 UTC,
// sessions of bulk Bind reads (MailItemsAccessed, many items each) of a few target mailboxes, by
// an AppId that no user of the tenant ever uses, from the published 2023 proxy addresses, with
// ClientInfoString "Client=REST;Client=RESTSystem;;" and no sign-in (UserLoggedIn) behind them.
// Each record says whether it is the actor's (the ground truth).
//
// Determinism: the same options produce the same bytes on every platform (own PRNG, integer
// arithmetic only). Thread-compatibility: one generator per thread.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>

#include "core/status.h"

namespace kw::detect {

struct UalActorOptions {
  bool enabled = false;
  int target_mailboxes = 3;    // users of the first tenant whose mail is read
  int start_day = 2;           // days after UalGeneratorOptions::start_unix_seconds
  int sessions_per_day = 3;    // on weekdays, each starting between 00:00 and 09:00 UTC
  int reads_per_session = 40;  // MailItemsAccessed Bind records per session
};

struct UalGeneratorOptions {
  uint64_t seed = 1;
  int tenants = 1;
  int users_per_tenant = 50;
  // Start of the generated period; default 2023-05-15T00:00:00Z (a Monday).
  int64_t start_unix_seconds = 1684108800;
  // Average records per user on a working day.
  int records_per_user_per_day = 150;
  UalActorOptions actor;
};

// One generated record, valid during the callback.
struct GeneratedRecord {
  std::string_view audit_data;     // one AuditData JSON object, no newline
  std::string_view id;             // its "Id"
  std::string_view creation_time;  // its "CreationTime", e.g. 2023-05-15T08:01:02
  std::string_view user_id;        // its "UserId"
  std::string_view operation;      // its "Operation"
  int record_type = 0;             // its "RecordType"
  int64_t unix_seconds = 0;
  bool actor = false;  // ground truth: written by the injected actor
};

class UalGenerator {
 public:
  explicit UalGenerator(UalGeneratorOptions options);
  ~UalGenerator();
  UalGenerator(const UalGenerator&) = delete;
  UalGenerator& operator=(const UalGenerator&) = delete;

  // Calls sink for each record, in time order, until max_records records or max_bytes bytes of
  // AuditData text have been produced (0 means no limit; at least one limit must be non-zero).
  // Successive calls continue the same stream.
  void Generate(uint64_t max_records, uint64_t max_bytes,
                const std::function<void(const GeneratedRecord&)>& sink);

  const UalGeneratorOptions& options() const;
  // The actor's AppId (a GUID drawn from the seed), whether or not the actor is enabled.
  std::string_view actor_app_id() const;

  class Impl;

 private:
  std::unique_ptr<Impl> impl_;
};

// Search-UnifiedAuditLog's name of a RecordType number ("ExchangeItemAggregated" for 50), or the
// number as text when unknown.
std::string RecordTypeName(int record_type);

// Renderings of generated records, as the exports that hold them.
enum class UalRendering {
  kAuditDataLines,  // one AuditData object per line (.jsonl)
  kAuditDataArray,  // a JSON array of AuditData objects, one per line (.json)
  kCsv,             // Search-UnifiedAuditLog | Export-Csv (UTF-8 BOM, every field quoted)
  kSentinel,        // Sentinel OfficeActivity rows, one per line
};

// Appends the CSV header line (with BOM) / one CSV row for a record.
void AppendUalCsvHeader(std::string* out);
void AppendUalCsvRow(const GeneratedRecord& r, uint64_t index, std::string* out);

// Converts AuditData JSON to a Sentinel OfficeActivity row: renamed columns (Id→OfficeId,
// Workload→OfficeWorkload, ClientIPAddress→Client_IPAddress, LogonType→Logon_Type,
// ObjectId→OfficeObjectId), RecordType and UserType as names, CreationTime→TimeGenerated with a
// Z, arrays and objects as JSON strings, ExternalAccess and Logon_Type as strings, plus the
// workspace columns TenantId, SourceSystem and Type. One converter per thread.
class SentinelRenderer {
 public:
  SentinelRenderer();
  ~SentinelRenderer();
  Status Append(std::string_view audit_data, std::string* out);

 private:
  struct State;
  std::unique_ptr<State> state_;
};

struct GenerateFileOptions {
  UalRendering rendering = UalRendering::kAuditDataLines;
  uint64_t max_records = 0;  // 0 = no limit (then max_bytes must be set)
  uint64_t max_bytes = 0;    // of AuditData text; 0 = no limit
  bool gzip = false;         // compress (also implied by a path ending in .gz)
  std::string truth_path;    // if set: the actor's record Ids, one per line
};

struct GenerateFileStats {
  uint64_t records = 0;
  uint64_t actor_records = 0;
  uint64_t bytes_written = 0;  // before compression
};

// Writes generated records to `path` in the rendering asked. Errors name the path.
Result<GenerateFileStats> WriteGeneratedLog(const std::string& path,
                                            const UalGeneratorOptions& options,
                                            const GenerateFileOptions& file_options);

}  // namespace kw::detect
