#include "detect/input/ual_generator.h"

#include <gtest/gtest.h>
#include <simdjson.h>

#include <array>
#include <fstream>
#include <map>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include "detect/input/record_reader.h"
#include "detect/input/test_util.h"

namespace kw::detect {
namespace {

using testing::Canonical;
using testing::ReadAll;
using testing::ReadResult;
using testing::TempDir;

std::string Generate(const UalGeneratorOptions& o, uint64_t n, std::vector<bool>* actor = nullptr) {
  UalGenerator g(o);
  std::string out;
  g.Generate(n, 0, [&](const GeneratedRecord& r) {
    out.append(r.audit_data);
    out.push_back('\n');
    if (actor != nullptr) actor->push_back(r.actor);
  });
  return out;
}

UalGeneratorOptions WithActor() {
  UalGeneratorOptions o;
  o.seed = 7;
  o.users_per_tenant = 30;
  o.tenants = 2;
  o.actor.enabled = true;
  o.actor.start_day = 1;
  return o;
}

TEST(UalGeneratorTest, SameSeedSameBytesDifferentSeedDifferentBytes) {
  UalGeneratorOptions o = WithActor();
  std::string a = Generate(o, 10000);
  EXPECT_EQ(a, Generate(o, 10000));
  o.seed = 8;
  EXPECT_NE(a, Generate(o, 10000));

  // Two calls continue one stream: 3000 + 7000 records equal 10000 at once.
  UalGenerator g(WithActor());
  std::string split;
  auto sink = [&](const GeneratedRecord& r) {
    split.append(r.audit_data);
    split.push_back('\n');
  };
  g.Generate(3000, 0, sink);
  g.Generate(7000, 0, sink);
  EXPECT_EQ(a, split);
}

TEST(UalGeneratorTest, ByteLimit) {
  UalGenerator g(UalGeneratorOptions{});
  uint64_t bytes = 0, records = 0;
  g.Generate(0, 1 << 20, [&](const GeneratedRecord& r) {
    bytes += r.audit_data.size();
    ++records;
  });
  EXPECT_GE(bytes, 1u << 20);
  EXPECT_LT(bytes, (1u << 20) + 16 * 1024);
  EXPECT_GT(records, 100u);
}

struct Parsed {
  simdjson::dom::parser parser;
  simdjson::dom::object o;
  bool Parse(const std::string& line) {
    simdjson::dom::element e;
    if (parser.parse(line).get(e)) return false;
    return e.get(o) == simdjson::SUCCESS;
  }
  std::string Str(std::string_view k) {
    std::string_view v;
    return o[k].get(v) == simdjson::SUCCESS ? std::string(v) : std::string("<absent>");
  }
  bool Has(std::string_view k) {
    simdjson::dom::element e;
    return o[k].get(e) == simdjson::SUCCESS;
  }
};

TEST(UalGeneratorTest, RecordsAreRealistic) {
  UalGeneratorOptions o = WithActor();
  o.records_per_user_per_day = 40;  // 20000 records span 8 days
  std::vector<bool> actor;
  std::string text = Generate(o, 20000, &actor);
  std::istringstream in(text);
  std::string line;
  Parsed p;
  std::map<std::string, int> ops;
  std::array<int, 24> by_hour{};
  std::set<std::string> normal_apps;
  std::string last_time;
  size_t i = 0, actor_records = 0;
  std::string actor_app;
  const std::set<std::string> proxies = {
      "51.89.156.153",   "176.31.90.129",  "137.74.181.100", "193.36.119.45",  "185.158.248.159",
      "131.153.78.188",  "37.143.130.146", "146.70.157.45",  "185.195.200.39", "185.38.142.229",
      "146.70.121.44",   "31.42.177.181",  "185.51.134.52",  "173.44.226.70",  "45.14.227.233",
      "185.236.231.109", "178.73.220.149", "45.14.227.212",  "91.222.173.225", "146.70.35.168",
      "146.70.157.213",  "31.42.177.201",  "5.252.176.8",    "80.85.158.215",  "193.149.129.88",
      "5.252.178.68",    "116.202.251.8",  "185.158.248.93", "20.108.240.252", "146.70.135.182"};
  while (std::getline(in, line)) {
    ASSERT_TRUE(p.Parse(line)) << line;
    EXPECT_EQ(line.find("\"\""), std::string::npos) << "empty string value in " << line;
    for (const char* k : {"CreationTime", "Id", "Operation", "OrganizationId", "RecordType",
                          "ResultStatus", "UserId", "UserKey", "UserType", "Workload"}) {
      ASSERT_TRUE(p.Has(k)) << k << " missing in " << line;
    }
    std::string t = p.Str("CreationTime");
    ASSERT_EQ(t.size(), 19u) << t;  // no zone suffix, no fraction
    EXPECT_GE(t, last_time) << "out of time order";
    last_time = t;
    std::string op = p.Str("Operation");
    ++ops[op];
    int64_t rt = 0;
    ASSERT_EQ(p.o["RecordType"].get(rt), simdjson::SUCCESS);
    if (op == "MailItemsAccessed") {
      EXPECT_EQ(rt, 50);
      for (const char* k :
           {"ClientIPAddress", "ClientInfoString", "AppId", "ClientAppId", "ExternalAccess",
            "LogonType", "MailboxGuid", "MailboxOwnerUPN", "SessionId", "OperationCount",
            "OperationProperties", "Folders", "TokenTenantId"}) {
        EXPECT_TRUE(p.Has(k)) << k << " missing in " << line;
      }
      EXPECT_NE(line.find("\"MailAccessType\""), std::string::npos);
    }
    if (op == "UserLoggedIn" || op == "UserLoginFailed") {
      EXPECT_EQ(rt, 15);
      EXPECT_EQ(p.Str("Workload"), "AzureActiveDirectory");
      EXPECT_EQ(p.Str("ResultStatus"), op == "UserLoggedIn" ? "Success" : "Failed");
    }
    if (actor[i]) {
      ++actor_records;
      EXPECT_EQ(op, "MailItemsAccessed");
      EXPECT_EQ(p.Str("ClientInfoString"), "Client=REST;Client=RESTSystem;;");
      EXPECT_TRUE(proxies.count(p.Str("ClientIPAddress"))) << p.Str("ClientIPAddress");
      EXPECT_LT(t.substr(11, 2), "09");
      EXPECT_NE(line.find("\"MailAccessType\",\"Value\":\"Bind\""), std::string::npos);
      EXPECT_TRUE(p.Has("AppAccessContext"));
      if (actor_app.empty()) actor_app = p.Str("AppId");
      EXPECT_EQ(p.Str("AppId"), actor_app);
    } else {
      if (p.Has("AppId")) normal_apps.insert(p.Str("AppId"));
      by_hour[std::stoi(t.substr(11, 2))]++;
    }
    ++i;
  }
  EXPECT_EQ(i, 20000u);
  EXPECT_GT(actor_records, 50u);
  EXPECT_EQ(normal_apps.count(actor_app), 0u) << "the actor's AppId must be never seen";
  EXPECT_TRUE(normal_apps.count("00000002-0000-0ff1-ce00-000000000000"));  // OWA
  for (const char* op : {"MailItemsAccessed", "Send", "MailboxLogin", "UserLoggedIn",
                         "UserLoginFailed", "MoveToDeletedItems", "New-InboxRule"}) {
    EXPECT_GT(ops[op], 0) << op;
  }
  EXPECT_GT(ops["MailItemsAccessed"], ops["Send"]);
  // A diurnal rhythm: the busiest UTC hour has several times the records of the quietest.
  int busiest = *std::max_element(by_hour.begin(), by_hour.end());
  int quietest = *std::min_element(by_hour.begin(), by_hour.end());
  EXPECT_GT(busiest, 4 * std::max(quietest, 1));
}

// The three renderings read back through the readers give the same normalised records.
TEST(UalGeneratorTest, CsvAndSentinelRenderingsReadBackToTheSameRecords) {
  TempDir dir;
  UalGeneratorOptions o = WithActor();
  o.records_per_user_per_day = 20;  // 4000 records span several days, actor days included
  GenerateFileOptions fo;
  fo.max_records = 4000;
  std::map<UalRendering, std::string> paths = {
      {UalRendering::kAuditDataLines, dir.path() + "/ual.jsonl"},
      {UalRendering::kAuditDataArray, dir.path() + "/ual.json.gz"},
      {UalRendering::kCsv, dir.path() + "/ual.csv"},
      {UalRendering::kSentinel, dir.path() + "/officeactivity.json"},
  };
  std::map<UalRendering, ReadResult> read;
  std::string truth_path = dir.path() + "/truth.txt";
  for (const auto& [rendering, path] : paths) {
    fo.rendering = rendering;
    fo.truth_path = rendering == UalRendering::kAuditDataLines ? truth_path : "";
    auto stats = WriteGeneratedLog(path, o, fo);
    ASSERT_TRUE(stats.ok()) << stats.status().ToString();
    EXPECT_EQ(stats->records, 4000u);
    read[rendering] = ReadAll(path);
    ASSERT_TRUE(read[rendering].status.ok());
    EXPECT_EQ(read[rendering].bad.count, 0u) << path << ": " << read[rendering].bad.first[0].reason;
    ASSERT_EQ(read[rendering].records.size(), 4000u) << path;
  }
  EXPECT_EQ(read[UalRendering::kAuditDataLines].format, LogFormat::kUalJson);
  EXPECT_EQ(read[UalRendering::kAuditDataArray].format, LogFormat::kUalJson);
  EXPECT_EQ(read[UalRendering::kCsv].format, LogFormat::kUalCsv);
  EXPECT_EQ(read[UalRendering::kSentinel].format, LogFormat::kSentinelOfficeActivity);
  const auto& want = read[UalRendering::kAuditDataLines].records;
  for (UalRendering r :
       {UalRendering::kAuditDataArray, UalRendering::kCsv, UalRendering::kSentinel}) {
    const auto& got = read[r].records;
    for (size_t i = 0; i < want.size(); ++i) {
      ASSERT_EQ(Canonical(got[i].json), Canonical(want[i].json))
          << "rendering " << int(r) << " record " << i;
      EXPECT_EQ(got[i].product, "m365");
      EXPECT_EQ(got[i].service, "audit");
    }
  }
  // The CSV's AuditData column is the JSON line byte for byte.
  EXPECT_EQ(read[UalRendering::kCsv].records[10].json, want[10].json);
  EXPECT_EQ(read[UalRendering::kCsv].records[10].line, 12u);  // BOM+header is line 1

  // The truth file lists exactly the actor's record Ids.
  std::ifstream truth(truth_path);
  std::set<std::string> ids;
  for (std::string id; std::getline(truth, id);) ids.insert(id);
  size_t actor_seen = 0;
  for (const auto& rec : want) {
    Parsed p;
    ASSERT_TRUE(p.Parse(rec.json));
    bool is_actor = ids.count(p.Str("Id")) > 0;
    actor_seen += is_actor;
    EXPECT_EQ(is_actor, rec.json.find("Client=REST;Client=RESTSystem;;") != std::string::npos &&
                            rec.json.find("\"AppAccessContext\"") != std::string::npos);
  }
  EXPECT_EQ(actor_seen, ids.size());
  EXPECT_GT(ids.size(), 100u);
}

}  // namespace
}  // namespace kw::detect
