#include "detect/input/record_reader.h"

#include <gtest/gtest.h>
#include <sys/resource.h>

#include <atomic>
#include <string>
#include <thread>
#include <vector>

#include "detect/input/test_util.h"
#include "detect/input/ual_generator.h"

namespace kw::detect {
namespace {

using testing::Canonical;
using testing::Gzip;
using testing::ReadAll;
using testing::ReadResult;
using testing::TempDir;

struct Case {
  const char* name;
  const char* file;  // file name (extension matters for kAuto)
  std::string content;
  LogFormat format;  // as given to Open
  LogFormat detected;
  // Expected records: canonical JSON (or a prefix of the JSON when it starts with '~': then only
  // "contains" is checked), with line numbers.
  std::vector<std::pair<std::string, uint64_t>> records;
  std::vector<uint64_t> bad_lines;  // lines of bad records, in order
  const char* product = "";
  const char* service = "";
};

std::vector<Case> Cases() {
  return {
      {"jsonl_crlf_blank_lines",
       "a.jsonl",
       "{\"a\":1}\r\n\r\n{\"b\":\"x\\\"}\"}\n   \n{\"c\":[1,{\"d\":2}]}",
       LogFormat::kAuto,
       LogFormat::kJsonLines,
       {{R"({"a":1})", 1}, {R"({"b":"x\"}"})", 3}, {R"({"c":[1,{"d":2}]})", 5}},
       {}},
      {"jsonl_malformed_and_truncated",
       "a.ndjson",
       R"({"a":1}
not json
[1,2]
{"b":2}
{"c":3, "trunc)",
       LogFormat::kAuto,
       LogFormat::kJsonLines,
       {{R"({"a":1})", 1}, {R"({"b":2})", 4}},
       {2, 3, 5}},
      {"json_array_pretty",
       "export.json",
       R"([
  {"x": "a]b}c", "y": [1, 2, {"z": "\\"}]},
  {"x": "q\"uote"}
  ,{"x": 3}
])",
       LogFormat::kAuto,
       LogFormat::kJsonArray,
       {{R"({"x":"a]b}c","y":[1,2,{"z":"\\"}]})", 1}, {R"({"x":"q\"uote"})", 2}, {R"({"x":3})", 3}},
       {}},
      {"json_array_truncated",
       "t.json",
       R"([{"a":1},{"b":2},{"c":)",
       LogFormat::kAuto,
       LogFormat::kJsonArray,
       {{R"({"a":1})", 1}, {R"({"b":2})", 2}},
       {3}},
      {"json_array_bad_element_resyncs",
       "t.json",
       "[\n{\"a\":1},\n{\"b\":]\n{\"c\":3},\n7,\n{\"d\":4}\n]",
       LogFormat::kAuto,
       LogFormat::kJsonArray,
       {{R"({"a":1})", 1}, {R"({"c":3})", 3}, {R"({"d":4})", 5}},
       {2, 4}},
      {"json_array_stray_close_bracket",
       "t.json",
       "[{\"a\":1}}\n,{\"b\":2}\n]",
       LogFormat::kAuto,
       LogFormat::kJsonArray,
       {{R"({"a":1})", 1}, {R"({"b":2})", 3}},
       {2}},
      {"concatenated_pretty_objects",
       "c.json",
       "{\n \"a\": 1\n}\n{\n \"b\": 2\n}\n",
       LogFormat::kAuto,
       LogFormat::kJsonArray,
       {{R"({"a":1})", 1}, {R"({"b":2})", 2}},
       {}},
      {"keyward_audit",
       "audit.log",
       R"({"seq":1,"prev_hash":"00","hash":"ab","time":"2026-01-01T00:00:00Z","tenant":"t","operation":"mail.read"}
{"seq":2,"prev_hash":"ab","hash":"cd","time":"2026-01-01T00:00:01Z","tenant":"t","operation":"mail.send"})",
       LogFormat::kAuto,
       LogFormat::kKeywardAudit,
       {{"~\"seq\":1", 1}, {"~\"seq\":2", 2}},
       {},
       "keyward",
       "audit"},
      {"ual_json_bare_and_wrapped",
       "ual.json",
       R"([
{"RecordType":"ExchangeItemAggregated","AuditData":"{\"CreationTime\":\"2023-06-16T01:02:04\",\"Id\":\"2\",\"Operation\":\"Send\"}"},
{"AuditData":{"CreationTime":"2023-06-16T01:02:05","Id":"3","Operation":"MailboxLogin"}},
{"AuditData":"{not json"},
{"CreationTime":"2023-06-16T01:02:03","Id":"1","Operation":"MailItemsAccessed","RecordType":50,"Workload":"Exchange"}
])",
       LogFormat::kAuto,
       LogFormat::kUalJson,
       {{R"({"CreationTime":"2023-06-16T01:02:04","Id":"2","Operation":"Send"})", 1},
        {R"({"CreationTime":"2023-06-16T01:02:05","Id":"3","Operation":"MailboxLogin"})", 2},
        {R"({"CreationTime":"2023-06-16T01:02:03","Id":"1","Operation":"MailItemsAccessed","RecordType":50,"Workload":"Exchange"})",
         4}},
       {3},
       "m365",
       "audit"},
      {"ual_json_lines_bare",
       "ual.jsonl",
       R"({"CreationTime":"2023-06-16T01:02:03","Id":"1","Operation":"MailItemsAccessed","RecordType":50}
{"CreationTime":"2023-06-16T01:02:04","Id":"2","Operation":"Send","RecordType":2)",
       LogFormat::kAuto,
       LogFormat::kUalJson,
       {{R"({"CreationTime":"2023-06-16T01:02:03","Id":"1","Operation":"MailItemsAccessed","RecordType":50})",
         1}},
       {2},
       "m365",
       "audit"},
      {"ual_csv_bom_multiline_type_line",
       "audit.csv",
       "\xEF\xBB\xBF#TYPE Deserialized.Microsoft.Exchange.Management.SystemConfigurationTasks."
       "AuditRecord\r\n"
       "\"RecordType\",\"CreationDate\",\"UserIds\",\"Operations\",\"AuditData\","
       "\"ResultIndex\"\r\n"
       "\"ExchangeItem\",\"6/16/2023 1:02:03 AM\",\"a@x.com\",\"Send\","
       "\"{\"\"CreationTime\"\":\"\"2023-06-16T01:02:03\"\",\r\n\"\"Id\"\":\"\"1\"\","
       "\"\"Subject\"\":\"\"a, b\"\"\n"
       "}\",\"1\"\r\n"
       "\"ExchangeItem\",\"x\",\"a@x.com\",\"Send\",\"{\"\"Id\"\":\"\"2\"\"}\",\"2\"\r\n"
       "\"ExchangeItem\",\"x\",\"a@x.com\",\"Send\",\"{\"\"Id\"\":\"\"3\"\"}\"junk,\"3\"\r\n"
       "\"ExchangeItem\",\"x\"\r\n"
       "ExchangeItem,x,a@x.com,Send,\"{\"\"Id\"\":\"\"4\"\"}\",4\r\n",
       LogFormat::kAuto,
       LogFormat::kUalCsv,
       {{R"({"CreationTime":"2023-06-16T01:02:03","Id":"1","Subject":"a, b"})", 3},
        {R"({"Id":"2"})", 6},
        {R"({"Id":"4"})", 9}},
       {7, 8},
       "m365",
       "audit"},
      {"ual_csv_unquoted_header_truncated_quote",
       "x.csv",
       "RecordType,CreationDate,UserIds,Operations,AuditData\n"
       "2,x,u,Send,\"{\"\"Id\"\":\"\"1\"\"}\"\n"
       "2,x,u,Send,\"{\"\"Id\"\":\"\"2\n",
       LogFormat::kAuto,
       LogFormat::kUalCsv,
       {{R"({"Id":"1"})", 2}},
       {3},
       "m365",
       "audit"},
      {"csv_without_auditdata",
       "x.csv",
       "a,b,c\n1,2,3\n",
       LogFormat::kAuto,
       LogFormat::kUalCsv,
       {},
       {1}},
      {"sentinel_officeactivity",
       "oa.json",
       R"({"TenantId":"ws","SourceSystem":"OfficeActivityManager","TimeGenerated":"2023-06-16T01:02:03.000Z","OfficeId":"id1","OfficeWorkload":"Exchange","Operation":"MailItemsAccessed","RecordType":"ExchangeItemAggregated","UserType":"Regular","Client_IPAddress":"51.89.156.153","Logon_Type":"0","ExternalAccess":"false","Folders":"[{\"Path\":\"\\\\Inbox\",\"FolderItems\":[{\"InternetMessageId\":\"<a@b>\"}]}]","OperationProperties":"[{\"Name\":\"MailAccessType\",\"Value\":\"Bind\"}]","AppAccessContext":"{\"ClientAppId\":\"x\"}","UserId":"a@x.com","OrganizationId":"org","ClientInfoString":"Client=REST;Client=RESTSystem;;","MailboxOwnerUPN":"","Item":null,"_ResourceId":"r","Type":"OfficeActivity","Parameters":"not [json"})",
       LogFormat::kAuto,
       LogFormat::kSentinelOfficeActivity,
       {{R"({"CreationTime":"2023-06-16T01:02:03","Id":"id1","Workload":"Exchange","Operation":"MailItemsAccessed","RecordType":50,"UserType":0,"ClientIPAddress":"51.89.156.153","LogonType":0,"ExternalAccess":false,"Folders":[{"Path":"\\Inbox","FolderItems":[{"InternetMessageId":"<a@b>"}]}],"OperationProperties":[{"Name":"MailAccessType","Value":"Bind"}],"AppAccessContext":{"ClientAppId":"x"},"UserId":"a@x.com","OrganizationId":"org","ClientInfoString":"Client=REST;Client=RESTSystem;;","Parameters":"not [json"})",
         1}},
       {},
       "m365",
       "audit"},
      {"sentinel_odd_time_kept_whole",
       "oa.jsonl",
       R"({"OfficeWorkload":"Exchange","TimeGenerated":"16/06/2023 01:02:03 été +02"}
{"OfficeWorkload":"Exchange","TimeGenerated":"2023-06-16T01:02:03Z","CreationTime":"2023-06-16T01:02:04"})",
       LogFormat::kAuto,
       LogFormat::kSentinelOfficeActivity,
       {{R"({"Workload":"Exchange","CreationTime":"16/06/2023 01:02:03 été +02"})", 1},
        {R"({"Workload":"Exchange","CreationTime":"2023-06-16T01:02:04"})", 2}},
       {},
       "m365",
       "audit"},
      {"entra_signin_azure_monitor",
       "signin.json",
       R"({"time":"2023-06-16T01:02:03Z","resourceId":"/tenants/t/providers/Microsoft.aadiam","operationName":"Sign-in activity","category":"SignInLogs","resultType":"50053","resultDescription":"Account is locked","properties":{"userPrincipalName":"a@x.com","appId":"app","appDisplayName":"Office 365 Exchange Online","ipAddress":"1.2.3.4","status":{"errorCode":50053,"failureReason":"Account is locked"},"clientAppUsed":"Browser","userAgent":"azurehound/2.0","conditionalAccessStatus":"notApplied","riskLevelDuringSignIn":"none","authenticationRequirement":"singleFactorAuthentication","resourceDisplayName":"Office 365 Exchange Online","location":{"city":"Paris","countryOrRegion":"FR"},"networkLocationDetails":[],"deviceDetail":{"deviceId":"","trustType":""},"resourceId":"res"}})",
       LogFormat::kAuto,
       LogFormat::kEntraSignIn,
       {{R"(~"ResultType":"50053")", 1},
        {R"(~"Status":"Failure: Account is locked")", 1},
        {R"(~"AppDisplayName":"Office 365 Exchange Online")", 1},
        {R"(~"AuthenticationRequirement":"singleFactorAuthentication")", 1},
        {R"(~"Location":"FR")", 1},
        {R"(~"NetworkLocationDetails":"[]")", 1},
        {R"(~"IPAddress":"1.2.3.4")", 1},
        {R"(~"UserAgent":"azurehound/2.0")", 1},
        {R"(~"ResultDescription":"Account is locked")", 1},
        {R"(~"ResourceIdentity":"res")", 1},
        {R"(~"TimeGenerated":"2023-06-16T01:02:03Z")", 1},
        {R"(~"DeviceDetail":{"deviceId":"","trustType":""})", 1},
        {R"(~"properties":{"userPrincipalName")", 1}},
       {},
       "azure",
       "signinlogs"},
      {"entra_records_wrapper_pretty",
       "PT1H.json",
       R"({
  "records": [
    {"time": "t1", "category": "SignInLogs", "operationName": "Sign-in activity", "resultType": "0", "properties": {"status": {"errorCode": 0}, "userPrincipalName": "a@x.com"}},
    {"time": "t2", "category": "AuditLogs", "operationName": "Add member to role", "properties": {"activityDisplayName": "Add member to role", "result": "success", "loggedByService": "Core Directory"}},
    {"time": "t3", "category": "Administrative", "operationName": "MICROSOFT.COMPUTE/VIRTUALMACHINES/WRITE", "resourceId": "/SUBSCRIPTIONS/S/RESOURCEGROUPS/RG/PROVIDERS/MICROSOFT.COMPUTE/VIRTUALMACHINES/VM1", "properties": {}}
  ]
})",
       LogFormat::kAuto,
       LogFormat::kEntraSignIn,
       {{R"(~"Status":"Success")", 1},
        {R"(~"ActivityDisplayName":"Add member to role")", 2},
        {R"(~"OperationName":"MICROSOFT.COMPUTE/VIRTUALMACHINES/WRITE")", 3},
        {R"(~"OperationNameValue":"MICROSOFT.COMPUTE/VIRTUALMACHINES/WRITE")", 3},
        {R"(~"ResourceProviderValue":"MICROSOFT.COMPUTE")", 3}},
       {},
       "azure",
       ""},
      {"graph_signin_page",
       "graph.json",
       R"({"@odata.context":"https://graph.microsoft.com/v1.0/$metadata#auditLogs/signIns","value":[{"id":"1","createdDateTime":"2023-06-16T01:02:03Z","userPrincipalName":"a@x.com","appDisplayName":"Azure Portal","ipAddress":"5.6.7.8","status":{"errorCode":50126,"failureReason":"Invalid username or password","additionalDetails":"MFA denied; user declined"}}],"@odata.nextLink":"https://next"})",
       LogFormat::kAuto,
       LogFormat::kEntraSignIn,
       {{R"(~"ResultType":"50126")", 1},
        {R"(~"Status":"Failure: Invalid username or password; MFA denied; user declined")", 1},
        {R"(~"TimeGenerated":"2023-06-16T01:02:03Z")", 1}},
       {},
       "azure",
       "signinlogs"},
      {"evtx_jsonl_eventid_forms",
       "sec.jsonl",
       R"({"Event":{"System":{"EventID":4624,"Channel":"Security","TimeCreated":{"#attributes":{"SystemTime":"2023-06-16T01:02:03Z"}}},"EventData":{"LogonType":3}}}
{"Event":{"System":{"EventID":{"#text":7045,"#attributes":{"Qualifiers":16384}},"Channel":"System"},"EventData":{"ServiceName":"x"}}}
{"Event":{"System":{"EventID":{"#text":"1","#attributes":{"Qualifiers":""}},"Channel":"Microsoft-Windows-Sysmon/Operational"},"EventData":{"Image":"C:\\x.exe"}}}
{"Event":{"System":{"EventID":1,"Channel":"Some-Other/Operational"}}})",
       LogFormat::kAuto,
       LogFormat::kEvtxJson,
       {{"~\"EventID\":4624", 1}, {"~\"EventID\":7045,\"Channel\":\"System\"", 2}, {"~\"EventID\":1,\"Channel\":\"Microsoft-Windows-Sysmon/Operational\"", 3}, {"~\"Channel\":\"Some-Other/Operational\"", 4}},
       {},
       "windows",
       ""},
      {"evtx_json_with_record_lines",
       "app.json",
       "Record 1\n{\n  \"Event\": {\n    \"System\": {\n      \"EventID\": 4688,\n"
       "      \"Channel\": \"Security\"\n    }\n  }\n}\nRecord 2\n{\n  \"Event\": {\n"
       "    \"System\": {\n      \"EventID\": 4625,\n      \"Channel\": \"Security\"\n    }\n"
       "  }\n}\n",
       LogFormat::kAuto,
       LogFormat::kEvtxJson,
       {{"~4688", 1}, {"~4625", 2}},
       {},
       "windows",
       "security"},
      {"forced_format_overrides_detection",
       "x.txt",
       R"({"seq":1,"prev_hash":"0"})",
       LogFormat::kJsonLines,
       LogFormat::kJsonLines,
       {{R"({"seq":1,"prev_hash":"0"})", 1}},
       {}},
      {"empty_file", "e.jsonl", "", LogFormat::kAuto, LogFormat::kJsonLines, {}, {}},
  };
}

void CheckCase(const Case& c, const ReadResult& r) {
  ASSERT_TRUE(r.status.ok()) << r.status.ToString();
  EXPECT_EQ(LogFormatName(r.format), LogFormatName(c.detected));
  // "~" expectations may repeat a record to check several members; collapse them by line.
  std::vector<std::pair<std::string, uint64_t>> exact;
  size_t next = 0;
  uint64_t last_line = 0;
  for (const auto& [want, line] : c.records) {
    if (want[0] == '~') {
      if (line != last_line) {
        ASSERT_LT(next, r.records.size()) << "missing record at line " << line;
        ++next;
      }
      last_line = line;
      const auto& got = r.records[next - 1];
      EXPECT_EQ(got.line, line);
      EXPECT_NE(got.json.find(want.substr(1)), std::string::npos)
          << "record " << got.json << " lacks " << want.substr(1);
    } else {
      ASSERT_LT(next, r.records.size()) << "missing record " << want;
      const auto& got = r.records[next++];
      last_line = line;
      EXPECT_EQ(Canonical(got.json), Canonical(want));
      EXPECT_EQ(got.line, line) << got.json;
    }
  }
  EXPECT_EQ(r.records.size(), next);
  std::vector<uint64_t> bad_lines;
  for (const BadRecord& b : r.bad.first) bad_lines.push_back(b.line);
  EXPECT_EQ(bad_lines, c.bad_lines);
  EXPECT_EQ(r.bad.count, c.bad_lines.size());
  for (const BadRecord& b : r.bad.first) EXPECT_FALSE(b.reason.empty());
  if (!r.records.empty()) {
    EXPECT_EQ(r.records[0].product, c.product);
    if (std::string_view(c.service).size() > 0) {
      EXPECT_EQ(r.records[0].service, c.service);
    }
  }
}

TEST(RecordReaderTest, Formats) {
  TempDir dir;
  for (const Case& c : Cases()) {
    SCOPED_TRACE(c.name);
    std::string path = dir.Write(std::string(c.name) + "/" + c.file, c.content);
    CheckCase(c, ReadAll(path, c.format));
    // The same file gzip-compressed, named with and without .gz, reads the same.
    std::string gz = Gzip(c.content);
    CheckCase(c, ReadAll(dir.Write(std::string(c.name) + "/gz/" + c.file + ".gz", gz), c.format));
    CheckCase(c, ReadAll(dir.Write(std::string(c.name) + "/gz2/" + c.file, gz), c.format));
    // Tiny batches and windows give the same records.
    ReaderOptions small;
    small.batch_bytes = 1;
    CheckCase(c, ReadAll(path, c.format, small));
    // And from memory.
    CheckCase(c, testing::ReadAllFrom(RecordReader::OpenBuffer(c.content, path, c.format)));
  }
}

TEST(RecordReaderTest, RecordsArePaddedForSimdjson) {
  TempDir dir;
  std::string path = dir.Write("a.jsonl", "{\"a\":1}\n{\"b\":[1,2,3]}\n{\"c\":\"x\"}");
  auto reader = RecordReader::Open(path);
  ASSERT_TRUE(reader.ok());
  RecordBatch batch;
  ASSERT_TRUE(*(*reader)->NextBatch(&batch));
  ASSERT_EQ(batch.size(), 3u);
  simdjson::dom::parser parser;
  for (size_t i = 0; i < batch.size(); ++i) {
    Record r = batch[i];
    simdjson::dom::element e;
    EXPECT_EQ(parser.parse(r.json.data(), r.json.size(), false).get(e), simdjson::SUCCESS);
    EXPECT_EQ(r.file, path);
  }
  // The batch outlives the reader.
  reader->reset();
  EXPECT_EQ(batch[2].json, R"({"c":"x"})");
}

// The producer/worker pattern of `keyward hunt`: batches move to other threads, which read them
// concurrently after the reader is gone.
TEST(RecordReaderTest, BatchesMoveToWorkerThreads) {
  TempDir dir;
  std::string content;
  for (int i = 0; i < 50000; ++i) content += "{\"i\":" + std::to_string(i) + "}\n";
  ReaderOptions o;
  o.batch_bytes = 4096;
  auto reader = RecordReader::Open(dir.Write("n.jsonl", content), LogFormat::kAuto, o);
  ASSERT_TRUE(reader.ok());
  std::vector<RecordBatch> batches;
  for (;;) {
    RecordBatch b;
    auto more = (*reader)->NextBatch(&b);
    ASSERT_TRUE(more.ok());
    if (!*more) break;
    batches.push_back(std::move(b));
  }
  reader->reset();
  EXPECT_GT(batches.size(), 50u);
  std::atomic<uint64_t> sum{0}, lines{0};
  std::vector<std::thread> workers;
  for (int t = 0; t < 4; ++t) {
    workers.emplace_back([&, t] {
      simdjson::dom::parser parser;
      for (size_t b = t; b < batches.size(); b += 4) {
        for (size_t i = 0; i < batches[b].size(); ++i) {
          Record r = batches[b][i];
          int64_t v = 0;
          if (parser.parse(r.json.data(), r.json.size(), false)["i"].get(v) == simdjson::SUCCESS) {
            sum += static_cast<uint64_t>(v);
          }
          lines += r.line;
        }
      }
    });
  }
  for (auto& w : workers) w.join();
  EXPECT_EQ(sum.load(), 49999ull * 50000 / 2);
  EXPECT_EQ(lines.load(), 50000ull * 50001 / 2);
}

TEST(RecordReaderTest, ValidateJsonCatchesMalformedObjects) {
  TempDir dir;
  std::string path = dir.Write("a.jsonl", "{\"a\":1}\n{\"a\":1,,}\n{\"b\":2}\n");
  EXPECT_EQ(ReadAll(path).bad.count, 0u);  // structural check only
  ReaderOptions o;
  o.validate_json = true;
  ReadResult r = ReadAll(path, LogFormat::kAuto, o);
  EXPECT_EQ(r.records.size(), 2u);
  ASSERT_EQ(r.bad.count, 1u);
  EXPECT_EQ(r.bad.first[0].line, 2u);
  EXPECT_NE(r.bad.first[0].reason.find("malformed JSON"), std::string::npos);
}

// Found by fuzzing: normalised records stay valid JSON whatever the input's quirks.
TEST(RecordReaderTest, NormalisedRecordsAreValidJson) {
  TempDir dir;
  std::string path = dir.Write(
      "dup.json",
      R"({"category":"SignInLogs","operationName":"x","properties":{"appDisplayName":"a","appDisplayName":"b","status":{"errorCode":"x"}}}
{"category":"SignInLogs","operationName":"y","properties":{"location":"not an object","status":[]}})");
  ReaderOptions o;
  o.validate_json = true;
  ReadResult r = ReadAll(path, LogFormat::kAuto, o);
  ASSERT_EQ(r.records.size(), 2u);
  for (const auto& rec : r.records) {
    EXPECT_EQ(Canonical(rec.json).rfind("<invalid", 0), std::string::npos) << rec.json;
  }
  EXPECT_NE(r.records[0].json.find(R"("AppDisplayName":"a")"), std::string::npos);
  EXPECT_NE(r.records[0].json.find(R"("Status":"Failure")"), std::string::npos);
}

// A record much larger than the input window is still delivered whole.
TEST(RecordReaderTest, LongRecordsGrowTheWindow) {
  TempDir dir;
  std::string big = "{\"x\":\"" + std::string(5 << 20, 'a') + "\"}";
  std::string big_csv = "{\"\"x\"\":\"\"" + std::string(5 << 20, 'a') + "\"\"}";
  for (const char* name : {"a.jsonl", "a.json", "a.csv"}) {
    SCOPED_TRACE(name);
    std::string n(name);
    std::string content = n == "a.json"  ? "[" + big + ",{\"b\":2}]"
                          : n == "a.csv" ? "AuditData\n\"" + big_csv + "\"\n\"{\"\"b\"\":2}\"\n"
                                         : big + "\n{\"b\":2}\n";
    ReadResult r = ReadAll(dir.Write(name, content));
    ASSERT_EQ(r.records.size(), 2u);
    EXPECT_EQ(r.records[0].json, big);
    EXPECT_EQ(r.bad.count, 0u);
  }
  // And over the limit it is a bad record, also in CSV, where framing resumes after it.
  ReaderOptions o;
  o.max_record_bytes = 1 << 20;
  ReadResult r = ReadAll(dir.Write("b.csv", "AuditData\n\"" + big_csv + "\"\n\"{\"\"b\"\":2}\"\n"),
                         LogFormat::kAuto, o);
  ASSERT_EQ(r.records.size(), 1u);
  EXPECT_EQ(r.records[0].json, "{\"b\":2}");
  EXPECT_EQ(r.bad.count, 1u);
  // Also when the whole row is already in the window.
  o.max_record_bytes = 200;
  std::string row = "{\"\"x\"\":\"\"" + std::string(500, 'a') + "\"\"}";
  r = ReadAll(dir.Write("c.csv", "AuditData\n\"" + row + "\"\n\"{\"\"b\"\":2}\"\n"), LogFormat::kAuto, o);
  ASSERT_EQ(r.records.size(), 1u);
  EXPECT_EQ(r.records[0].json, "{\"b\":2}");
  ASSERT_EQ(r.bad.count, 1u);
  EXPECT_EQ(r.bad.first[0].line, 2u);
}

TEST(RecordReaderTest, OversizeRecordIsBadAndSkipped) {
  TempDir dir;
  std::string big = "{\"x\":\"" + std::string(300000, 'a') + "\"}";
  ReaderOptions o;
  o.max_record_bytes = 100000;
  for (const char* name : {"a.jsonl", "a.json"}) {
    SCOPED_TRACE(name);
    std::string content = std::string(name) == "a.json" ? "[{\"a\":1},\n" + big + ",\n{\"b\":2}]"
                                                        : "{\"a\":1}\n" + big + "\n{\"b\":2}\n";
    ReadResult r = ReadAll(dir.Write(name, content), LogFormat::kAuto, o);
    ASSERT_EQ(r.records.size(), 2u);
    EXPECT_EQ(r.records[1].json, "{\"b\":2}");
    ASSERT_EQ(r.bad.count, 1u);
    EXPECT_EQ(r.bad.first[0].line, 2u);
    EXPECT_NE(r.bad.first[0].reason.find("limit"), std::string::npos);
  }
}

TEST(RecordReaderTest, TruncatedGzipDeliversRecordsBeforeTheDamage) {
  TempDir dir;
  std::string content;
  for (int i = 0; i < 20000; ++i)
    content += "{\"i\":" + std::to_string(i) + ",\"pad\":\"xxxxxxxx\"}\n";
  std::string gz = Gzip(content);
  std::string path = dir.Write("t.jsonl.gz", gz.substr(0, gz.size() / 2));
  ReadResult r = ReadAll(path);
  ASSERT_TRUE(r.status.ok());
  EXPECT_GT(r.records.size(), 1000u);
  EXPECT_LT(r.records.size(), 20000u);
  for (size_t i = 0; i < r.records.size(); ++i) {
    ASSERT_EQ(r.records[i].json.substr(0, 5 + std::to_string(i).size()),
              "{\"i\":" + std::to_string(i));
  }
  bool reported = false;
  for (const BadRecord& b : r.bad.first) {
    reported |= b.reason.find("gzip stream truncated") != std::string::npos;
  }
  EXPECT_TRUE(reported);

  // Two concatenated members read as one stream; garbage after them is reported.
  std::string two = Gzip("{\"a\":1}\n") + Gzip("{\"b\":2}\n");
  EXPECT_EQ(ReadAll(dir.Write("two.gz", two)).records.size(), 2u);
  ReadResult g = ReadAll(dir.Write("garbage.gz", two + "garbage"));
  EXPECT_EQ(g.records.size(), 2u);
  EXPECT_EQ(g.bad.count, 1u);
}

TEST(RecordReaderTest, UnrecognisedAndMissingFiles) {
  TempDir dir;
  auto missing = RecordReader::Open(dir.path() + "/nope.jsonl");
  ASSERT_FALSE(missing.ok());
  EXPECT_EQ(missing.status().code(), StatusCode::kNotFound);
  auto binary = RecordReader::Open(dir.Write("x.bin", std::string("\x01\x02\x03garbage\n", 11)));
  ASSERT_FALSE(binary.ok());
  EXPECT_EQ(binary.status().code(), StatusCode::kInvalidArgument);
  auto utf16 = RecordReader::Open(dir.Write("x.json", std::string("\xFF\xFE{\0}\0", 6)),
                                  LogFormat::kJsonLines);
  ASSERT_FALSE(utf16.ok());
  EXPECT_NE(utf16.status().message().find("UTF-16"), std::string::npos);
  auto evtx = RecordReader::Open(dir.Write("x.evtx", "ElfFile\0\0\0"));
  ASSERT_FALSE(evtx.ok());
  EXPECT_NE(evtx.status().message().find("evtx_dump"), std::string::npos);
}

TEST(RecordReaderTest, FormatNamesRoundTrip) {
  for (LogFormat f : {LogFormat::kAuto, LogFormat::kJsonLines, LogFormat::kJsonArray,
                      LogFormat::kUalCsv, LogFormat::kUalJson, LogFormat::kSentinelOfficeActivity,
                      LogFormat::kEntraSignIn, LogFormat::kEvtxJson, LogFormat::kKeywardAudit}) {
    auto parsed = ParseLogFormat(LogFormatName(f));
    ASSERT_TRUE(parsed.ok());
    EXPECT_EQ(*parsed, f);
  }
  EXPECT_EQ(*ParseLogFormat("NDJSON"), LogFormat::kJsonLines);
  EXPECT_EQ(*ParseLogFormat("sentinel"), LogFormat::kSentinelOfficeActivity);
  auto bad = ParseLogFormat("xml");
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.status().message().find("ual-csv"), std::string::npos);
}

TEST(ExpandInputsTest, FilesDirectoriesGlobsAndMissingPaths) {
  TempDir dir;
  const std::string& d = dir.path();
  dir.Write("logs/b.jsonl", "{}");
  dir.Write("logs/a.jsonl", "{}");
  dir.Write("logs/sub/c.json.gz", "{}");
  dir.Write("logs/.hidden", "{}");
  dir.Write("logs/.git/config", "{}");
  dir.Write("other/x.csv", "");
  dir.Write("other/y.jsonl", "");

  auto all = ExpandInputs({d + "/logs"});
  ASSERT_TRUE(all.ok()) << all.status().ToString();
  EXPECT_EQ(*all, (std::vector<std::string>{d + "/logs/a.jsonl", d + "/logs/b.jsonl",
                                            d + "/logs/sub/c.json.gz"}));

  auto globbed = ExpandInputs({d + "/other/*.jsonl", d + "/logs/a.jsonl", d + "/other/*"});
  ASSERT_TRUE(globbed.ok());
  EXPECT_EQ(*globbed, (std::vector<std::string>{d + "/other/y.jsonl", d + "/logs/a.jsonl",
                                                d + "/other/x.csv"}));

  auto missing = ExpandInputs({d + "/logs", d + "/missing.jsonl"});
  ASSERT_FALSE(missing.ok());
  EXPECT_EQ(missing.status().code(), StatusCode::kNotFound);
  EXPECT_NE(missing.status().message().find("missing.jsonl"), std::string::npos);

  auto nomatch = ExpandInputs({d + "/*.evtx"});
  ASSERT_FALSE(nomatch.ok());
  EXPECT_EQ(nomatch.status().code(), StatusCode::kNotFound);

  dir.Write("empty/.keep", "");
  EXPECT_FALSE(ExpandInputs({d + "/empty"}).ok());
}

long MaxRssKiB() {
  struct rusage ru;
  getrusage(RUSAGE_SELF, &ru);
  return ru.ru_maxrss;
}

TEST(RecordReaderTest, HugeArrayStreamsWithBoundedMemory) {
  TempDir dir;
  std::string path = dir.path() + "/huge.json";
  UalGeneratorOptions go;
  go.users_per_tenant = 200;
  GenerateFileOptions fo;
  fo.rendering = UalRendering::kAuditDataArray;
  fo.max_bytes = 150u << 20;
  auto written = WriteGeneratedLog(path, go, fo);
  ASSERT_TRUE(written.ok()) << written.status().ToString();

  long before = MaxRssKiB();
  ReaderOptions o;
  o.batch_bytes = 256 << 10;
  auto reader = RecordReader::Open(path, LogFormat::kAuto, o);
  ASSERT_TRUE(reader.ok());
  EXPECT_EQ((*reader)->format(), LogFormat::kUalJson);
  RecordBatch batch;
  uint64_t records = 0, bytes = 0;
  for (;;) {
    auto more = (*reader)->NextBatch(&batch);
    ASSERT_TRUE(more.ok());
    if (!*more) break;
    EXPECT_LE(batch.payload_bytes(), o.batch_bytes + 64 * 1024);
    records += batch.size();
    bytes += batch.payload_bytes();
  }
  long grown_kib = MaxRssKiB() - before;
  EXPECT_EQ(records, written->records);
  EXPECT_EQ((*reader)->bad_records().count, 0u);
  EXPECT_EQ((*reader)->bytes_read(), (*reader)->total_bytes());
  EXPECT_GE(bytes, 150u << 20);
  EXPECT_LT(grown_kib, 32 * 1024) << "reading a 150 MB array grew the RSS by " << grown_kib
                                  << " KiB";
}

}  // namespace
}  // namespace kw::detect

namespace kw::detect {
namespace {

// Records are used in the read window they were read into, which goes to their batch: batches
// kept alive while the reader goes on must still hold their records, each followed by readable
// padding, whatever the batch size and however records fall across window refills.
TEST(RecordReaderTest, BatchesKeepTheirRecordsWhileTheReaderGoesOn) {
  TempDir dir;
  std::vector<std::string> lines;
  std::string text;
  for (int i = 0; i < 3000; ++i) {
    std::string line = "{\"n\":" + std::to_string(i) + ",\"pad\":\"" +
                       std::string(static_cast<size_t>(50 + (i * 7919) % 3000), 'a' + i % 26) + "\"}";
    lines.push_back(line);
    text += line + (i % 5 == 0 ? "\r\n" : "\n");
  }
  std::string path = dir.Write("lines.jsonl", text);
  for (size_t batch_bytes : {size_t{1000}, size_t{100000}, size_t{4} << 20}) {
    SCOPED_TRACE(batch_bytes);
    ReaderOptions o;
    o.batch_bytes = batch_bytes;
    auto reader = RecordReader::Open(path, LogFormat::kAuto, o);
    ASSERT_TRUE(reader.ok()) << reader.status().ToString();
    std::vector<std::unique_ptr<RecordBatch>> batches;
    for (;;) {
      auto b = std::make_unique<RecordBatch>();
      auto more = (*reader)->NextBatch(b.get());
      ASSERT_TRUE(more.ok()) << more.status().ToString();
      if (!*more) break;
      batches.push_back(std::move(b));
    }
    reader->reset();
    simdjson::dom::parser parser;
    size_t k = 0;
    for (const auto& b : batches) {
      for (size_t i = 0; i < b->size(); ++i, ++k) {
        Record r = (*b)[i];
        ASSERT_LT(k, lines.size());
        ASSERT_EQ(r.json, lines[k]);
        ASSERT_EQ(r.line, k + 1);
        simdjson::dom::element e;
        ASSERT_EQ(parser.parse(r.json.data(), r.json.size(), /*realloc_if_needed=*/false).get(e),
                  simdjson::SUCCESS);
      }
    }
    EXPECT_EQ(k, lines.size());
  }
}

}  // namespace
}  // namespace kw::detect
