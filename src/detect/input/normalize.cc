// Record normalisation, one function per format. What each format looks like on disk, and what a
// record becomes (also in docs/log-formats.md):
//
//   JSON lines / arrays, Keyward audit log: emitted as is. Keyward audit records are JSON lines
//     whose first record has "seq" and "prev_hash" members (product keyward, service audit).
//
//   UAL JSON (product m365, service audit): either the AuditData object itself
//     {"CreationTime":"2023-06-16T01:02:03","Id":"…","Operation":"MailItemsAccessed",…}
//     emitted as is, or an export row wrapping it, {"AuditData":"{\"CreationTime\":…}", …} or
//     {"AuditData":{…}, …}: the AuditData member (string or object) is the record.
//
//   Sentinel OfficeActivity (product m365, service audit): a row of the Log Analytics table,
//     normalised to AuditData form so that the same rules run on both:
//       renamed   OfficeId→Id, OfficeWorkload→Workload, Client_IPAddress→ClientIPAddress,
//                 Logon_Type→LogonType, OfficeObjectId→ObjectId, Site_→Site, Site_Url→SiteUrl,
//                 Start_Time→StartTime, Event_Data→EventData,
//                 AzureActiveDirectory_EventType→AzureActiveDirectoryEventType;
//       typed     RecordType and UserType names ("ExchangeItemAggregated", "Regular") become the
//                 UAL numbers, LogonType ("0"/"Owner"), InternalLogonType, OperationCount and
//                 Version numeric strings become numbers, ExternalAccess "true"/"false" a bool;
//       unpacked  arrays and objects stored as JSON strings (Folders, Item, AffectedItems,
//                 Parameters, OperationProperties, AppAccessContext, ModifiedProperties,
//                 ExtendedProperties, Folder, DestFolder, Members, and any other string value that
//                 starts with "[{" or "{\"" and parses) become JSON values;
//       dropped   null and "" values (Sentinel's rendering of an absent field), the workspace
//                 columns TenantId, SourceSystem, Type, and "_"-prefixed system columns;
//                 TimeGenerated becomes CreationTime ("2023-06-16T01:02:03", no fraction, no
//                 zone) when the row has none, and is dropped.
//
//   Azure Monitor / Entra ID (product azure): a diagnostic-settings record
//     {"time":…,"resourceId":…,"operationName":…,"category":"SignInLogs","resultType":"0",
//      "properties":{"userPrincipalName":…,"status":{"errorCode":0},…}}
//     (one per line, or {"records":[…]} wrappers), or a Graph API / portal object (signIn or
//     directoryAudit resources, as an array, lines, or an {"@odata.context":…,"value":[…]} page).
//     Service from the category: SignInLogs, NonInteractiveUserSignInLogs,
//     ServicePrincipalSignInLogs, ManagedIdentitySignInLogs → signinlogs; AuditLogs → auditlogs;
//     RiskyUsers, UserRiskEvents… → riskdetection; any other category → activitylogs; a Graph
//     object with activityDisplayName → auditlogs, else signinlogs. The record keeps every
//     original member and gains the Sentinel column names (SigninLogs / AuditLogs tables) that
//     SigmaHQ rules use, unless a member of that exact name exists:
//       time→TimeGenerated, resultType→ResultType, resultDescription→ResultDescription,
//       operationName→OperationName, category→Category, correlationId→CorrelationId, …;
//       every member m of properties (or of the Graph object) → M (first letter upper-cased),
//       except ipAddress→IPAddress, location→LocationDetails plus Location = its
//       countryOrRegion, appliedConditionalAccessPolicies→ConditionalAccessPolicies,
//       resourceId→ResourceIdentity, networkLocationDetails→NetworkLocationDetails as a JSON
//       string (as Sentinel stores it, so `NetworkLocationDetails: '[]'` matches),
//       operationType→AADOperationType; for activity logs also OperationNameValue,
//       CategoryValue, ActivityStatusValue and ResourceProviderValue (from resourceId's
//       "/providers/<namespace>/"); status→Status as a string, "Success" for errorCode 0,
//       otherwise "Failure: <failureReason>; <additionalDetails>", plus ResultType (the error
//       code as a string, as Sentinel types it) and ResultDescription (failureReason) when absent.
//
//   evtx_dump JSON (product windows): {"Event":{"System":{"EventID":4624,"Channel":"Security",
//     …},"EventData":{…}}} emitted as is (not flattened: the engine's field mapping reads
//     Event.System.* and Event.EventData.*), except that an EventID object
//     {"#text":4624,"#attributes":{"Qualifiers":…}} is replaced by its #text as a number. The
//     service comes from Event.System.Channel (Security→security, …/Sysmon/Operational→sysmon,
//     Windows PowerShell→powershell-classic, …); an unknown channel leaves it empty.
#include "detect/input/normalize.h"

#include <fmt/format.h>

#include <algorithm>
#include <array>
#include <cctype>
#include <charconv>
#include <cstring>

#include "core/ascii.h"
#include "core/json.h"

namespace kw::detect::internal {
namespace {

using simdjson::dom::element;
using simdjson::dom::element_type;
using simdjson::dom::object;

struct ChannelService {
  std::string_view channel;
  std::string_view service;
};

constexpr ChannelService kChannels[] = {
    {"Security", "security"},
    {"System", "system"},
    {"Application", "application"},
    {"Microsoft-Windows-Sysmon/Operational", "sysmon"},
    {"Microsoft-Windows-PowerShell/Operational", "powershell"},
    {"Windows PowerShell", "powershell-classic"},
    {"Microsoft-Windows-TaskScheduler/Operational", "taskscheduler"},
    {"Microsoft-Windows-WMI-Activity/Operational", "wmi"},
    {"Microsoft-Windows-Windows Defender/Operational", "windefend"},
    {"Microsoft-Windows-Windows Firewall With Advanced Security/Firewall", "firewall-as"},
    {"Microsoft-Windows-Bits-Client/Operational", "bits-client"},
    {"Microsoft-Windows-CodeIntegrity/Operational", "codeintegrity-operational"},
    {"DNS Server", "dns-server"},
    {"Microsoft-Windows-DNS-Client/Operational", "dns-client"},
    {"Microsoft-Windows-NTLM/Operational", "ntlm"},
    {"Microsoft-Windows-TerminalServices-LocalSessionManager/Operational",
     "terminalservices-localsessionmanager"},
    {"Microsoft-Windows-SmbClient/Security", "smbclient-security"},
    {"Microsoft-Windows-AppLocker/EXE and DLL", "applocker"},
    {"Microsoft-Windows-AppLocker/MSI and Script", "applocker"},
    {"Microsoft-Windows-AppLocker/Packaged app-Deployment", "applocker"},
    {"Microsoft-Windows-AppLocker/Packaged app-Execution", "applocker"},
    {"Microsoft-Windows-DriverFrameworks-UserMode/Operational", "driver-framework"},
    {"Microsoft-Windows-LSA/Operational", "lsa-server"},
    {"OpenSSH/Operational", "openssh"},
    {"Microsoft-Windows-Shell-Core/Operational", "shell-core"},
    {"Microsoft-Windows-PrintService/Admin", "printservice-admin"},
    {"Microsoft-Windows-PrintService/Operational", "printservice-operational"},
    {"Microsoft-Windows-CAPI2/Operational", "capi2"},
    {"Microsoft-Windows-Security-Mitigations/KernelMode", "security-mitigations"},
    {"Microsoft-Windows-Security-Mitigations/UserMode", "security-mitigations"},
    {"Microsoft-Windows-AppXDeploymentServer/Operational", "appxdeployment-server"},
    {"MSExchange Management", "msexchange-management"},
    {"Microsoft-Windows-Diagnosis-Scripted/Operational", "diagnosis-scripted"},
};
constexpr size_t kChannelCount = sizeof(kChannels) / sizeof(kChannels[0]);

const std::array<LogSourceHint, kSrcWindows + 1 + kChannelCount>& HintTable() {
  static const auto* table = [] {
    auto* t = new std::array<LogSourceHint, kSrcWindows + 1 + kChannelCount>();
    (*t)[kSrcNone] = {};
    (*t)[kSrcM365Audit] = {"m365", "audit", ""};
    (*t)[kSrcAzureSignIn] = {"azure", "signinlogs", ""};
    (*t)[kSrcAzureAudit] = {"azure", "auditlogs", ""};
    (*t)[kSrcAzureActivity] = {"azure", "activitylogs", ""};
    (*t)[kSrcAzureRisk] = {"azure", "riskdetection", ""};
    (*t)[kSrcKeywardAudit] = {"keyward", "audit", ""};
    (*t)[kSrcWindows] = {"windows", "", ""};
    for (size_t i = 0; i < kChannelCount; ++i)
      (*t)[kSrcWindows + 1 + i] = {"windows", kChannels[i].service, ""};
    return t;
  }();
  return *table;
}

uint16_t WindowsSource(std::string_view channel) {
  for (size_t i = 0; i < kChannelCount; ++i) {
    if (kChannels[i].channel.size() == channel.size() &&
        std::equal(channel.begin(), channel.end(), kChannels[i].channel.begin(),
                   [](char a, char b) { return std::tolower(a) == std::tolower(b); })) {
      return static_cast<uint16_t>(kSrcWindows + 1 + i);
    }
  }
  return kSrcWindows;
}

std::string_view Trim(std::string_view s) {
  size_t b = 0, e = s.size();
  while (b < e && (s[b] == ' ' || s[b] == '\t' || s[b] == '\r' || s[b] == '\n')) ++b;
  while (e > b && (s[e - 1] == ' ' || s[e - 1] == '\t' || s[e - 1] == '\r' || s[e - 1] == '\n'))
    --e;
  return s.substr(b, e - b);
}

bool Contains(std::string_view hay, std::string_view needle) {
  return hay.find(needle) != std::string_view::npos;
}

std::optional<std::string_view> StringMember(object o, std::string_view key) {
  std::string_view v;
  if (o[key].get(v) == simdjson::SUCCESS) return v;
  return std::nullopt;
}

bool HasMember(object o, std::string_view key) {
  element e;
  return o[key].get(e) == simdjson::SUCCESS;
}

// Copies s into *buf with simdjson padding, for parsing a JSON text held in a string.
std::string_view Padded(std::string_view s, std::string* buf) {
  buf->assign(s);
  buf->reserve(s.size() + simdjson::SIMDJSON_PADDING);
  return *buf;
}

void AppendKey(std::string* out, bool* first, std::string_view key) {
  if (!*first) out->push_back(',');
  *first = false;
  json::AppendQuoted(out, key);
  out->push_back(':');
}

std::optional<int64_t> ParseInt(std::string_view s) {
  int64_t v = 0;
  auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
  if (ec != std::errc() || p != s.data() + s.size()) return std::nullopt;
  return v;
}

struct NameNumber {
  std::string_view name;
  int number;
};

// AuditLogRecordType values (Office 365 Management Activity API schema).
constexpr NameNumber kRecordTypes[] = {
    {"ExchangeAdmin", 1},
    {"ExchangeItem", 2},
    {"ExchangeItemGroup", 3},
    {"SharePoint", 4},
    {"SharePointFileOperation", 6},
    {"OneDrive", 7},
    {"AzureActiveDirectory", 8},
    {"AzureActiveDirectoryAccountLogon", 9},
    {"DataCenterSecurityCmdlet", 10},
    {"ComplianceDLPSharePoint", 11},
    {"ComplianceDLPExchange", 13},
    {"SharePointSharingOperation", 14},
    {"AzureActiveDirectoryStsLogon", 15},
    {"SkypeForBusinessPSTNUsage", 16},
    {"SkypeForBusinessUsersBlocked", 17},
    {"SecurityComplianceCenterEOPCmdlet", 18},
    {"ExchangeAggregatedOperation", 19},
    {"PowerBIAudit", 20},
    {"CRM", 21},
    {"Yammer", 22},
    {"SkypeForBusinessCmdlets", 23},
    {"Discovery", 24},
    {"MicrosoftTeams", 25},
    {"ThreatIntelligence", 28},
    {"MailSubmission", 29},
    {"MicrosoftFlow", 30},
    {"AeD", 31},
    {"MicrosoftStream", 32},
    {"ComplianceDLPSharePointClassification", 33},
    {"ThreatFinder", 34},
    {"Project", 35},
    {"SharePointListOperation", 36},
    {"SharePointCommentOperation", 37},
    {"DataGovernance", 38},
    {"Kaizala", 39},
    {"SecurityComplianceAlerts", 40},
    {"ThreatIntelligenceUrl", 41},
    {"SecurityComplianceInsights", 42},
    {"MIPLabel", 43},
    {"WorkplaceAnalytics", 44},
    {"PowerAppsApp", 45},
    {"PowerAppsPlan", 46},
    {"ThreatIntelligenceAtpContent", 47},
    {"LabelContentExplorer", 48},
    {"TeamsHealthcare", 49},
    {"ExchangeItemAggregated", 50},
    {"HygieneEvent", 51},
    {"DataInsightsRestApiAudit", 52},
    {"InformationBarrierPolicyApplication", 53},
    {"SharePointListItemOperation", 54},
    {"SharePointContentTypeOperation", 55},
    {"SharePointFieldOperation", 56},
    {"MicrosoftTeamsAdmin", 57},
    {"HRSignal", 58},
    {"MicrosoftTeamsDevice", 59},
    {"MicrosoftTeamsAnalytics", 60},
    {"InformationWorkerProtection", 61},
    {"Campaign", 62},
    {"DLPEndpoint", 63},
    {"AirInvestigation", 64},
    {"Quarantine", 65},
    {"MicrosoftForms", 66},
};

constexpr NameNumber kUserTypes[] = {
    {"Regular", 0},          {"Reserved", 1},     {"Admin", 2},
    {"DcAdmin", 3},          {"System", 4},       {"Application", 5},
    {"ServicePrincipal", 6}, {"CustomPolicy", 7}, {"SystemPolicy", 8},
};

constexpr NameNumber kLogonTypes[] = {
    {"Owner", 0},     {"Admin", 1},         {"Delegated", 2},  {"Delegate", 2},
    {"Transport", 3}, {"SystemService", 4}, {"BestAccess", 5}, {"DelegatedAdmin", 6},
};

template <size_t N>
std::optional<int64_t> NumberFor(std::string_view s, const NameNumber (&table)[N]) {
  if (auto v = ParseInt(s)) return v;
  for (const NameNumber& nn : table) {
    if (nn.name == s) return nn.number;
  }
  return std::nullopt;
}

struct Rename {
  std::string_view from;
  std::string_view to;
};

constexpr Rename kSentinelRenames[] = {
    {"OfficeId", "Id"},
    {"OfficeWorkload", "Workload"},
    {"Client_IPAddress", "ClientIPAddress"},
    {"Logon_Type", "LogonType"},
    {"OfficeObjectId", "ObjectId"},
    {"Site_", "Site"},
    {"Site_Url", "SiteUrl"},
    {"Start_Time", "StartTime"},
    {"Event_Data", "EventData"},
    {"AzureActiveDirectory_EventType", "AzureActiveDirectoryEventType"},
};

constexpr std::string_view kSentinelDropped[] = {"TenantId", "SourceSystem", "Type",
                                                 "TimeGenerated"};

constexpr std::string_view kSentinelJsonStrings[] = {"Folders",
                                                     "Item",
                                                     "AffectedItems",
                                                     "Parameters",
                                                     "OperationProperties",
                                                     "AppAccessContext",
                                                     "ModifiedProperties",
                                                     "ExtendedProperties",
                                                     "Folder",
                                                     "DestFolder",
                                                     "Members",
                                                     "CrossMailboxOperations",
                                                     "EventData"};

constexpr std::string_view kSentinelIntegers[] = {"InternalLogonType", "OperationCount", "Version",
                                                  "AzureActiveDirectoryEventType"};

template <size_t N>
bool In(std::string_view s, const std::string_view (&list)[N]) {
  return std::find(std::begin(list), std::end(list), s) != std::end(list);
}

// "2023-06-16T01:02:03.1234567Z" → "2023-06-16T01:02:03", the UAL CreationTime form.
// Anything else is kept as it is.
std::string_view UalTime(std::string_view t) {
  if (t.size() < 19) return t;
  for (size_t i = 0; i < 19; ++i) {
    char want = i == 4 || i == 7 ? '-' : i == 10 ? 'T' : i == 13 || i == 16 ? ':' : '0';
    if (want == '0' ? (t[i] < '0' || t[i] > '9') : t[i] != want) return t;
  }
  return t.substr(0, 19);
}

bool IsSignInCategory(std::string_view c) {
  return c == "SignInLogs" || c == "NonInteractiveUserSignInLogs" ||
         c == "ServicePrincipalSignInLogs" || c == "ManagedIdentitySignInLogs" ||
         c == "ADFSSignInLogs";
}

bool IsRiskCategory(std::string_view c) {
  return c == "RiskyUsers" || c == "UserRiskEvents" || c == "RiskyServicePrincipals" ||
         c == "ServicePrincipalRiskEvents";
}


struct AzureAlias {
  std::string_view from;
  std::string_view to;
};

constexpr AzureAlias kAzureTopAliases[] = {
    {"time", "TimeGenerated"},
    {"resourceId", "ResourceId"},
    {"operationName", "OperationName"},
    {"operationVersion", "OperationVersion"},
    {"category", "Category"},
    {"tenantId", "AADTenantId"},
    {"resultType", "ResultType"},
    {"resultSignature", "ResultSignature"},
    {"resultDescription", "ResultDescription"},
    {"durationMs", "DurationMs"},
    {"callerIpAddress", "CallerIPAddress"},
    {"correlationId", "CorrelationId"},
    {"identity", "Identity"},
    {"level", "Level"},
};

constexpr AzureAlias kAzurePropertyAliases[] = {
    {"ipAddress", "IPAddress"},
    {"appliedConditionalAccessPolicies", "ConditionalAccessPolicies"},
    {"resourceId", "ResourceIdentity"},
    {"riskEventTypes_v2", "RiskEventTypes_V2"},
    {"operationType", "AADOperationType"},
};

// Builds an object as: every original member, then aliases not already present.
class AliasWriter {
 public:
  AliasWriter(std::string* out) : out_(out) {}
  // Copies every member of o, duplicates included (they are the input's, not ours to judge).
  void Original(object o) {
    out_->push_back('{');
    for (auto f : o) {
      if (!first_) out_->push_back(',');
      first_ = false;
      if (!Has(f.key)) keys_.emplace_back(f.key);
      json::AppendQuoted(out_, f.key);
      out_->push_back(':');
      AppendJson(f.value, out_);
    }
  }
  bool Has(std::string_view k) const {
    return std::find(keys_.begin(), keys_.end(), k) != keys_.end();
  }
  // Returns false (and writes nothing) when k exists.
  bool Key(std::string_view k) {
    if (Has(k)) return false;
    if (!first_) out_->push_back(',');
    first_ = false;
    keys_.emplace_back(k);
    json::AppendQuoted(out_, k);
    out_->push_back(':');
    return true;
  }
  void Alias(std::string_view k, element v) {
    if (Key(k)) AppendJson(v, out_);
  }
  void AliasString(std::string_view k, std::string_view v) {
    if (Key(k)) json::AppendQuoted(out_, v);
  }
  void End() { out_->push_back('}'); }

 private:
  std::string* out_;
  std::vector<std::string> keys_;
  bool first_ = true;
};

uint16_t AzureSource(object o, object props, bool has_props) {
  std::string_view category = StringMember(o, "category").value_or("");
  if (!category.empty()) {
    if (IsSignInCategory(category)) return kSrcAzureSignIn;
    if (category == "AuditLogs") return kSrcAzureAudit;
    if (IsRiskCategory(category)) return kSrcAzureRisk;
    if (has_props || HasMember(o, "resourceId")) return kSrcAzureActivity;
  }
  if (HasMember(props, "activityDisplayName") || HasMember(props, "initiatedBy")) {
    return kSrcAzureAudit;
  }
  return kSrcAzureSignIn;
}

}  // namespace

const LogSourceHint& SourceHintAt(uint16_t index) {
  const auto& t = HintTable();
  return index < t.size() ? t[index] : t[kSrcNone];
}

void AppendJson(element e, std::string* out) {
  switch (e.type()) {
    case element_type::OBJECT: {
      out->push_back('{');
      bool first = true;
      for (auto f : object(e)) {
        AppendKey(out, &first, f.key);
        AppendJson(f.value, out);
      }
      out->push_back('}');
      return;
    }
    case element_type::ARRAY: {
      out->push_back('[');
      bool first = true;
      for (element v : simdjson::dom::array(e)) {
        if (!first) out->push_back(',');
        first = false;
        AppendJson(v, out);
      }
      out->push_back(']');
      return;
    }
    case element_type::STRING:
      json::AppendQuoted(out, std::string_view(e));
      return;
    case element_type::INT64:
      fmt::format_to(std::back_inserter(*out), "{}", int64_t(e));
      return;
    case element_type::UINT64:
      fmt::format_to(std::back_inserter(*out), "{}", uint64_t(e));
      return;
    case element_type::DOUBLE:
      fmt::format_to(std::back_inserter(*out), "{}", double(e));
      return;
    case element_type::BOOL:
      *out += bool(e) ? "true" : "false";
      return;
    case element_type::NULL_VALUE:
      *out += "null";
      return;
  }
}

LogFormat ClassifyFirstRecord(element first) {
  object o;
  if (first.get(o) != simdjson::SUCCESS) return LogFormat::kJsonLines;
  simdjson::dom::array inner;
  if (o["records"].get(inner) == simdjson::SUCCESS ||
      (HasMember(o, "@odata.context") && o["value"].get(inner) == simdjson::SUCCESS)) {
    for (element e : inner) {
      LogFormat f = ClassifyFirstRecord(e);
      return f == LogFormat::kJsonLines ? LogFormat::kEntraSignIn : f;
    }
    return LogFormat::kEntraSignIn;
  }
  if (HasMember(o, "seq") && HasMember(o, "prev_hash")) return LogFormat::kKeywardAudit;
  object ev;
  if (o["Event"].get(ev) == simdjson::SUCCESS) return LogFormat::kEvtxJson;
  if (HasMember(o, "AuditData")) return LogFormat::kUalJson;
  if (HasMember(o, "OfficeWorkload") || HasMember(o, "Client_IPAddress") ||
      HasMember(o, "OfficeId") || StringMember(o, "Type") == "OfficeActivity") {
    return LogFormat::kSentinelOfficeActivity;
  }
  if (HasMember(o, "category") && HasMember(o, "operationName") &&
      (HasMember(o, "properties") || HasMember(o, "resourceId"))) {
    return LogFormat::kEntraSignIn;
  }
  if ((HasMember(o, "userPrincipalName") && HasMember(o, "appDisplayName") &&
       HasMember(o, "createdDateTime")) ||
      (HasMember(o, "activityDisplayName") && HasMember(o, "initiatedBy"))) {
    return LogFormat::kEntraSignIn;
  }
  if (HasMember(o, "CreationTime") && HasMember(o, "Operation") && HasMember(o, "RecordType")) {
    return LogFormat::kUalJson;
  }
  return LogFormat::kJsonLines;
}

Normalizer::Normalizer(LogFormat format, bool validate_json)
    : format_(format), validate_(validate_json) {}

std::string Normalizer::ParseObject(std::string_view text, element* e) {
  auto err = parser_.parse(text.data(), text.size(), /*realloc_if_needed=*/false).get(*e);
  if (err) return fmt::format("malformed JSON: {}", simdjson::error_message(err));
  if (!e->is_object()) return "not a JSON object";
  return {};
}

std::string Normalizer::Normalize(std::string_view text, RecordSink* out) {
  text = Trim(text);
  switch (format_) {
    case LogFormat::kAuto:
    case LogFormat::kJsonLines:
    case LogFormat::kJsonArray:
      return Passthrough(text, kSrcNone, out);
    case LogFormat::kKeywardAudit:
      return Passthrough(text, kSrcKeywardAudit, out);
    case LogFormat::kUalJson:
    case LogFormat::kUalCsv:
      return Ual(text, out);
    case LogFormat::kSentinelOfficeActivity:
    case LogFormat::kEntraSignIn:
    case LogFormat::kEvtxJson: {
      if (text.empty() || text.front() != '{') return "not a JSON object";
      element e;
      std::string reason = ParseObject(text, &e);
      if (!reason.empty()) return reason;
      if (format_ == LogFormat::kSentinelOfficeActivity) return Sentinel(e, out);
      if (format_ == LogFormat::kEntraSignIn) return Azure(e, out);
      return Evtx(text, e, out);
    }
  }
  return "unknown format";
}

std::string Normalizer::Passthrough(std::string_view text, uint16_t source, RecordSink* out) {
  if (text.size() < 2 || text.front() != '{' || text.back() != '}') {
    if (text.empty()) return "empty record";
    if (text.front() == '{') return "truncated or malformed JSON object (no closing brace)";
    return "not a JSON object";
  }
  if (validate_) {
    element e;
    std::string reason = ParseObject(text, &e);
    if (!reason.empty()) return reason;
  }
  out->Add(text, source);
  return {};
}

std::string Normalizer::Ual(std::string_view text, RecordSink* out) {
  // A file holds either bare AuditData objects (passed through unparsed, the fast path) or
  // wrapped ones; the first record decides, so that the bare case costs no search per record.
  if (ual_wrapped_ == UalWrapped::kUnknown) {
    ual_wrapped_ = Contains(text, "\"AuditData\"") ? UalWrapped::kYes : UalWrapped::kNo;
  }
  if (ual_wrapped_ == UalWrapped::kNo) return Passthrough(text, kSrcM365Audit, out);
  if (text.empty() || text.front() != '{') return "not a JSON object";
  element e;
  std::string reason = ParseObject(text, &e);
  if (!reason.empty()) return reason;
  element audit;
  if (object(e)["AuditData"].get(audit) != simdjson::SUCCESS) {
    return Passthrough(text, kSrcM365Audit, out);
  }
  if (audit.is_string()) {
    std::string_view inner = Trim(std::string_view(audit));
    std::string_view padded = Padded(inner, &scratch_);
    if (padded.empty() || padded.front() != '{') return "AuditData is not a JSON object";
    element ie;
    auto err = inner_parser_.parse(padded.data(), padded.size(), false).get(ie);
    if (err) return fmt::format("AuditData holds malformed JSON: {}", simdjson::error_message(err));
    if (!ie.is_object()) return "AuditData is not a JSON object";
    out->Add(padded, kSrcM365Audit);
    return {};
  }
  if (!audit.is_object()) return "AuditData is neither a JSON object nor a string";
  scratch_.clear();
  AppendJson(audit, &scratch_);
  out->Add(scratch_, kSrcM365Audit);
  return {};
}

std::string Normalizer::Sentinel(element e, RecordSink* out) {
  object o(e);
  std::string& w = scratch_;
  w.clear();
  w.push_back('{');
  bool first = true;
  if (!HasMember(o, "CreationTime")) {
    if (auto t = StringMember(o, "TimeGenerated"); t && !t->empty()) {
      AppendKey(&w, &first, "CreationTime");
      json::AppendQuoted(&w, UalTime(*t));
    }
  }
  for (auto f : o) {
    std::string_view key = f.key;
    element v = f.value;
    if (key.empty() || key.front() == '_' || In(key, kSentinelDropped)) continue;
    if (v.is_null()) continue;
    std::string_view sv;
    bool is_string = v.get(sv) == simdjson::SUCCESS;
    if (is_string && sv.empty()) continue;
    for (const Rename& r : kSentinelRenames) {
      if (r.from == key) {
        key = r.to;
        break;
      }
    }
    AppendKey(&w, &first, key);
    if (!is_string) {
      AppendJson(v, &w);
      continue;
    }
    std::optional<int64_t> number;
    if (key == "RecordType")
      number = NumberFor(sv, kRecordTypes);
    else if (key == "UserType")
      number = NumberFor(sv, kUserTypes);
    else if (key == "LogonType")
      number = NumberFor(sv, kLogonTypes);
    else if (In(key, kSentinelIntegers))
      number = ParseInt(sv);
    if (number) {
      fmt::format_to(std::back_inserter(w), "{}", *number);
      continue;
    }
    if (key == "ExternalAccess" &&
        (sv == "true" || sv == "True" || sv == "false" || sv == "False")) {
      w += (sv[0] == 't' || sv[0] == 'T') ? "true" : "false";
      continue;
    }
    std::string_view t = Trim(sv);
    bool looks_json =
        t.size() >= 2 && ((t[0] == '[' && t.back() == ']') || (t[0] == '{' && t.back() == '}'));
    bool known = In(key, kSentinelJsonStrings);
    if (looks_json && (known || t.starts_with("[{") || t.starts_with("{\"") || t == "[]")) {
      std::string_view padded = Padded(t, &scratch2_);
      element inner;
      if (inner_parser_.parse(padded.data(), padded.size(), false).get(inner) ==
          simdjson::SUCCESS) {
        AppendJson(inner, &w);
        continue;
      }
    }
    json::AppendQuoted(&w, sv);
  }
  w.push_back('}');
  out->Add(w, kSrcM365Audit);
  return {};
}

std::string Normalizer::Azure(element e, RecordSink* out) {
  object o(e);
  simdjson::dom::array wrapped;
  if (o["records"].get(wrapped) == simdjson::SUCCESS ||
      (HasMember(o, "@odata.context") && o["value"].get(wrapped) == simdjson::SUCCESS)) {
    // Normalise every element first so that a bad one rejects the line as a whole: a partial
    // line would be reported neither as good nor as bad.
    std::vector<std::pair<std::string, uint16_t>> done;
    for (element r : wrapped) {
      struct Collect : RecordSink {
        std::vector<std::pair<std::string, uint16_t>>* v;
        void Add(std::string_view j, uint16_t s) override { v->emplace_back(std::string(j), s); }
      } c;
      c.v = &done;
      if (!r.is_object()) return "an element of the records array is not a JSON object";
      std::string reason = Azure(r, &c);
      if (!reason.empty()) return reason;
    }
    for (auto& [j, s] : done) {
      j.reserve(j.size() + simdjson::SIMDJSON_PADDING);
      out->Add(j, s);
    }
    return {};
  }
  object props = o;
  bool has_props = o["properties"].get(props) == simdjson::SUCCESS;
  if (!has_props) props = o;
  uint16_t source = AzureSource(o, props, has_props);

  std::string& w = scratch_;
  w.clear();
  AliasWriter aw(&w);
  aw.Original(o);
  if (has_props) {
    for (const AzureAlias& a : kAzureTopAliases) {
      element v;
      if (o[a.from].get(v) == simdjson::SUCCESS) aw.Alias(a.to, v);
    }
    if (source == kSrcAzureActivity) {
      // Sentinel's AzureActivity columns, which SigmaHQ's activitylogs rules also use.
      element v;
      if (o["operationName"].get(v) == simdjson::SUCCESS) aw.Alias("OperationNameValue", v);
      if (o["category"].get(v) == simdjson::SUCCESS) aw.Alias("CategoryValue", v);
      if (o["resultType"].get(v) == simdjson::SUCCESS) aw.Alias("ActivityStatusValue", v);
      std::string_view rid = StringMember(o, "resourceId").value_or("");
      size_t at = AsciiLowerCopy(rid).rfind("/providers/");
      if (at != std::string_view::npos) {
        std::string_view provider = rid.substr(at + 11);
        aw.AliasString("ResourceProviderValue", provider.substr(0, provider.find('/')));
      }
    }
  } else if (auto t = StringMember(o, "createdDateTime")) {
    aw.AliasString("TimeGenerated", *t);
  } else if (auto t2 = StringMember(o, "activityDateTime")) {
    aw.AliasString("TimeGenerated", *t2);
  }
  for (auto f : props) {
    std::string_view key = f.key;
    element v = f.value;
    if (key.empty()) continue;
    if (key == "status" && v.is_object()) {
      object st(v);
      int64_t code = 0;
      bool has_code = st["errorCode"].get(code) == simdjson::SUCCESS;
      std::string_view code_text;
      if (!has_code && st["errorCode"].get(code_text) == simdjson::SUCCESS) {
        if (auto c = ParseInt(code_text)) {
          code = *c;
          has_code = true;
        }
      }
      std::string_view reason = StringMember(st, "failureReason").value_or("");
      std::string_view details = StringMember(st, "additionalDetails").value_or("");
      std::string status;
      if (has_code && code == 0) {
        status = "Success";
      } else {
        status = "Failure";
        if (!reason.empty()) fmt::format_to(std::back_inserter(status), ": {}", reason);
        if (!details.empty()) fmt::format_to(std::back_inserter(status), "; {}", details);
      }
      aw.AliasString("Status", status);
      if (has_code) aw.AliasString("ResultType", fmt::format("{}", code));
      if (!reason.empty() && !(has_code && code == 0)) aw.AliasString("ResultDescription", reason);
      continue;
    }
    if (key == "location" && v.is_object()) {
      aw.Alias("LocationDetails", v);
      if (auto c = StringMember(object(v), "countryOrRegion")) aw.AliasString("Location", *c);
      continue;
    }
    if (key == "networkLocationDetails") {
      std::string text;
      AppendJson(v, &text);
      aw.AliasString("NetworkLocationDetails", text);
      continue;
    }
    if (key == "resourceId" && !has_props) {
      aw.Alias("ResourceIdentity", v);
      continue;
    }
    bool aliased = false;
    for (const AzureAlias& a : kAzurePropertyAliases) {
      if (a.from == key) {
        aw.Alias(a.to, v);
        aliased = true;
        break;
      }
    }
    if (aliased) continue;
    if (std::islower(static_cast<unsigned char>(key[0]))) {
      std::string upper(key);
      upper[0] = static_cast<char>(std::toupper(static_cast<unsigned char>(upper[0])));
      aw.Alias(upper, v);
    }
  }
  aw.End();
  out->Add(w, source);
  return {};
}

std::string Normalizer::Evtx(std::string_view text, element e, RecordSink* out) {
  object root(e);
  object event, system;
  if (root["Event"].get(event) != simdjson::SUCCESS) return "no Event object (not evtx_dump JSON)";
  if (event["System"].get(system) != simdjson::SUCCESS) return "no Event.System object";
  uint16_t source = WindowsSource(StringMember(system, "Channel").value_or(""));
  element id;
  if (system["EventID"].get(id) != simdjson::SUCCESS || !id.is_object()) {
    out->Add(text, source);
    return {};
  }
  // {"#text":4624,"#attributes":{…}} → 4624, so that rules compare EventID with a number.
  element id_text;
  std::string id_json;
  if (object(id)["#text"].get(id_text) == simdjson::SUCCESS) {
    std::string_view s;
    if (id_text.get(s) == simdjson::SUCCESS && ParseInt(s)) {
      id_json = s;
    } else {
      AppendJson(id_text, &id_json);
    }
  } else {
    id_json = "null";
  }
  std::string& w = scratch_;
  w.clear();
  w.push_back('{');
  bool first = true;
  for (auto rf : root) {
    AppendKey(&w, &first, rf.key);
    if (rf.key != "Event") {
      AppendJson(rf.value, &w);
      continue;
    }
    w.push_back('{');
    bool efirst = true;
    for (auto ef : event) {
      AppendKey(&w, &efirst, ef.key);
      if (ef.key != "System") {
        AppendJson(ef.value, &w);
        continue;
      }
      w.push_back('{');
      bool sfirst = true;
      for (auto sf : system) {
        AppendKey(&w, &sfirst, sf.key);
        if (sf.key == "EventID") {
          w += id_json;
        } else {
          AppendJson(sf.value, &w);
        }
      }
      w.push_back('}');
    }
    w.push_back('}');
  }
  w.push_back('}');
  out->Add(w, source);
  return {};
}

}  // namespace kw::detect::internal
