#include "detect/engine.h"

#include <chrono>

#include <gtest/gtest.h>

#include "detect/test_util.h"

namespace kw::detect {
namespace {

using testing::CountAlerts;
using testing::MustLoad;
using testing::Rule;

struct MatchCase {
  const char* name;
  const char* detection;  // the body of `detection:`, indented by two spaces
  const char* event;
  bool match;
};

// One row per modifier / value form / condition form. Each rule is compiled on its own.
const MatchCase kCases[] = {
    // Plain values, case-insensitivity, wildcards and escapes.
    {"exact", "  sel:\n    Operation: MailItemsAccessed\n  condition: sel\n",
     R"({"Operation":"MailItemsAccessed"})", true},
    {"exact is case-insensitive", "  sel:\n    Operation: mailitemsaccessed\n  condition: sel\n",
     R"({"Operation":"MailItemsAccessed"})", true},
    {"exact needs whole value", "  sel:\n    Operation: MailItems\n  condition: sel\n",
     R"({"Operation":"MailItemsAccessed"})", false},
    {"star wildcard", "  sel:\n    Image: '*\\cmd.exe'\n  condition: sel\n",
     R"({"Image":"C:\\Windows\\System32\\CMD.EXE"})", true},
    {"question wildcard", "  sel:\n    User: 'adm?n'\n  condition: sel\n",
     R"({"User":"admin"})", true},
    {"question wildcard needs one char", "  sel:\n    User: 'adm?n'\n  condition: sel\n",
     R"({"User":"admn"})", false},
    {"inner glob", "  sel:\n    Path: 'C:\\\\*\\\\evil\\\\*.dll'\n  condition: sel\n",
     R"({"Path":"c:\\users\\bob\\evil\\x.dll"})", true},
    {"escaped star is literal", "  sel:\n    Name: 'a\\*b'\n  condition: sel\n",
     R"({"Name":"a*b"})", true},
    {"escaped star does not glob", "  sel:\n    Name: 'a\\*b'\n  condition: sel\n",
     R"({"Name":"axxb"})", false},
    {"escaped backslash then star", "  sel:\n    Name: 'a\\\\*'\n  condition: sel\n",
     R"({"Name":"a\\anything"})", true},
    {"single backslash stays", "  sel:\n    Name: 'C:\\Windows'\n  condition: sel\n",
     R"({"Name":"c:\\windows"})", true},
    {"number value vs JSON number", "  sel:\n    EventID: 4624\n  condition: sel\n",
     R"({"EventID":4624})", true},
    {"number value vs JSON string", "  sel:\n    EventID: 4624\n  condition: sel\n",
     R"({"EventID":"4624"})", true},
    {"number value mismatch", "  sel:\n    EventID: 4624\n  condition: sel\n",
     R"({"EventID":4625})", false},
    {"boolean", "  sel:\n    ExternalAccess: true\n  condition: sel\n",
     R"({"ExternalAccess":true})", true},
    {"boolean mismatch", "  sel:\n    ExternalAccess: true\n  condition: sel\n",
     R"({"ExternalAccess":false})", false},
    {"null matches missing", "  sel:\n    Missing: null\n  condition: sel\n", R"({"a":1})", true},
    {"null matches JSON null", "  sel:\n    F: null\n  condition: sel\n", R"({"F":null})", true},
    {"null does not match value", "  sel:\n    F: null\n  condition: sel\n", R"({"F":"x"})", false},
    {"empty string", "  sel:\n    F: ''\n  condition: sel\n", R"({"F":""})", true},
    {"empty string vs missing", "  sel:\n    F: ''\n  condition: sel\n", R"({"G":""})", false},
    {"list is OR", "  sel:\n    Operation:\n      - A\n      - B\n  condition: sel\n",
     R"({"Operation":"b"})", true},
    {"map is AND", "  sel:\n    A: 1\n    B: 2\n  condition: sel\n", R"({"A":1,"B":3})", false},
    {"list of maps is OR", "  sel:\n    - A: 1\n    - B: 2\n  condition: sel\n",
     R"({"A":0,"B":2})", true},
    // Field access.
    {"dotted path", "  sel:\n    Actor.Type: User\n  condition: sel\n",
     R"({"Actor":{"Type":"user"}})", true},
    {"dotted key at top level", "  sel:\n    a.b: x\n  condition: sel\n", R"({"a.b":"x"})", true},
    {"case-insensitive field fallback", "  sel:\n    operation: X\n  condition: sel\n",
     R"({"Operation":"x"})", true},
    {"array: any element", "  sel:\n    Tags: b\n  condition: sel\n", R"({"Tags":["a","b"]})", true},
    {"array of objects on path", "  sel:\n    Props.Name: MailAccessType\n  condition: sel\n",
     R"({"Props":[{"Name":"x"},{"Name":"MailAccessType"}]})", true},
    {"#text wrapper", "  sel:\n    EventID: 4624\n  condition: sel\n",
     R"({"EventID":{"#attributes":{"Qualifiers":0},"#text":4624}})", true},
    {"missing field no match", "  sel:\n    X: a\n  condition: sel\n", R"({"Y":"a"})", false},
    // contains / startswith / endswith / all.
    {"contains", "  sel:\n    CommandLine|contains: mimikatz\n  condition: sel\n",
     R"({"CommandLine":"run MimiKatz.exe now"})", true},
    {"startswith", "  sel:\n    User|startswith: adm_\n  condition: sel\n",
     R"({"User":"ADM_bob"})", true},
    {"startswith mismatch", "  sel:\n    User|startswith: adm_\n  condition: sel\n",
     R"({"User":"x_adm_bob"})", false},
    {"endswith", "  sel:\n    Image|endswith: '\\powershell.exe'\n  condition: sel\n",
     R"({"Image":"C:\\x\\PowerShell.exe"})", true},
    {"contains|all", "  sel:\n    C|contains|all:\n      - -enc\n      - hidden\n  condition: sel\n",
     R"({"C":"ps -enc AAA -w hidden"})", true},
    {"contains|all needs all", "  sel:\n    C|contains|all:\n      - -enc\n      - hidden\n  condition: sel\n",
     R"({"C":"ps -enc AAA"})", false},
    {"all over array elements", "  sel:\n    T|all:\n      - a\n      - b\n  condition: sel\n",
     R"({"T":["a","b","c"]})", true},
    {"cased", "  sel:\n    C|cased: Admin\n  condition: sel\n", R"({"C":"admin"})", false},
    {"cased match", "  sel:\n    C|contains|cased: Admin\n  condition: sel\n",
     R"({"C":"xAdminx"})", true},
    // exists, neq.
    {"exists true", "  sel:\n    F|exists: true\n  condition: sel\n", R"({"F":null})", true},
    {"exists false", "  sel:\n    F|exists: false\n  condition: sel\n", R"({"G":1})", true},
    {"exists false but present", "  sel:\n    F|exists: false\n  condition: sel\n",
     R"({"F":1})", false},
    {"neq", "  sel:\n    Status|neq: Success\n  condition: sel\n", R"({"Status":"Failure"})", true},
    {"neq equal", "  sel:\n    Status|neq: Success\n  condition: sel\n", R"({"Status":"success"})",
     false},
    {"neq list means none of", "  sel:\n    S|neq:\n      - a\n      - b\n  condition: sel\n",
     R"({"S":"b"})", false},
    {"neq missing field", "  sel:\n    S|neq: a\n  condition: sel\n", R"({"T":"b"})", false},
    {"neq number", "  sel:\n    N|neq: 0\n  condition: sel\n", R"({"N":5})", true},
    // windash.
    {"windash slash", "  sel:\n    C|windash|contains: ' -exec '\n  condition: sel\n",
     R"({"C":"x /exec y"})", true},
    {"windash en dash", "  sel:\n    C|windash|contains: ' -exec '\n  condition: sel\n",
     "{\"C\":\"x \xE2\x80\x93" "exec y\"}", true},
    {"windash plain", "  sel:\n    C|windash|contains: ' -exec '\n  condition: sel\n",
     R"({"C":"x -exec y"})", true},
    {"windash no", "  sel:\n    C|windash|contains: ' -exec '\n  condition: sel\n",
     R"({"C":"x +exec y"})", false},
    // re.
    {"re", "  sel:\n    C|re: 'ab+c'\n  condition: sel\n", R"({"C":"xxabbbcxx"})", true},
    {"re is case-sensitive", "  sel:\n    C|re: 'ABC'\n  condition: sel\n", R"({"C":"abc"})", false},
    {"re|i", "  sel:\n    C|re|i: 'ABC'\n  condition: sel\n", R"({"C":"abc"})", true},
    {"re (?i) inline", "  sel:\n    C|re: '(?i)ABC'\n  condition: sel\n", R"({"C":"abc"})", true},
    {"re|m", "  sel:\n    C|re|m: '^b$'\n  condition: sel\n", R"({"C":"a\nb\nc"})", true},
    {"re without m", "  sel:\n    C|re: '^b$'\n  condition: sel\n", R"({"C":"a\nb\nc"})", false},
    {"re|s", "  sel:\n    C|re|s: 'a.b'\n  condition: sel\n", R"({"C":"a\nb"})", true},
    {"re without s", "  sel:\n    C|re: 'a.b'\n  condition: sel\n", R"({"C":"a\nb"})", false},
    {"re on number", "  sel:\n    N|re: '^46[0-9]+$'\n  condition: sel\n", R"({"N":4624})", true},
    // base64, base64offset, utf16.
    {"base64", "  sel:\n    C|base64: 'cmd'\n  condition: sel\n", R"({"C":"Y21k"})", true},
    {"base64 is cased", "  sel:\n    C|base64: 'cmd'\n  condition: sel\n", R"({"C":"y21k"})", false},
    {"base64|contains", "  sel:\n    C|base64|contains: 'http://'\n  condition: sel\n",
     R"({"C":"xx aHR0cDovLw== yy"})", true},
    {"base64offset offset 0", "  sel:\n    C|base64offset|contains: 'http://'\n  condition: sel\n",
     R"({"C":"aHR0cDovL2V2aWwuY29t"})", true},
    {"base64offset offset 1", "  sel:\n    C|base64offset|contains: 'http://'\n  condition: sel\n",
     R"({"C":"eGh0dHA6Ly9ldmlsLmNvbQ=="})", true},
    {"base64offset offset 2", "  sel:\n    C|base64offset|contains: 'http://'\n  condition: sel\n",
     R"({"C":"eHhodHRwOi8vZXZpbC5jb20="})", true},
    {"wide|base64offset", "  sel:\n    C|wide|base64offset|contains: 'ping'\n  condition: sel\n",
     R"({"C":"cABpAG4AZwA="})", true},
    {"utf16le|base64", "  sel:\n    C|utf16le|base64: 'cmd'\n  condition: sel\n",
     R"({"C":"YwBtAGQA"})", true},
    {"utf16be|base64", "  sel:\n    C|utf16be|base64: 'cmd'\n  condition: sel\n",
     R"({"C":"AGMAbQBk"})", true},
    {"utf16|base64", "  sel:\n    C|utf16|base64: 'cmd'\n  condition: sel\n",
     R"({"C":"//5jAG0AZAA="})", true},
    // Numeric comparisons.
    {"gt", "  sel:\n    N|gt: 10\n  condition: sel\n", R"({"N":11})", true},
    {"gt equal", "  sel:\n    N|gt: 10\n  condition: sel\n", R"({"N":10})", false},
    {"gte", "  sel:\n    N|gte: 10\n  condition: sel\n", R"({"N":10})", true},
    {"lt", "  sel:\n    N|lt: 10\n  condition: sel\n", R"({"N":9.5})", true},
    {"lte", "  sel:\n    N|lte: 10\n  condition: sel\n", R"({"N":11})", false},
    {"lt numeric string", "  sel:\n    N|lt: 10\n  condition: sel\n", R"({"N":"3"})", true},
    {"gt non-numeric", "  sel:\n    N|gt: 1\n  condition: sel\n", R"({"N":"abc"})", false},
    // Time parts.
    {"hour", "  sel:\n    T|hour: 3\n  condition: sel\n", R"({"T":"2023-06-16T03:41:00Z"})", true},
    {"hour lt", "  sel:\n    T|hour|lt: 9\n  condition: sel\n", R"({"T":"2023-06-16T08:59:00Z"})",
     true},
    {"hour lt no", "  sel:\n    T|hour|lt: 9\n  condition: sel\n", R"({"T":"2023-06-16T09:00:00Z"})",
     false},
    {"minute", "  sel:\n    T|minute: 41\n  condition: sel\n", R"({"T":"2023-06-16T03:41:00Z"})", true},
    {"day", "  sel:\n    T|day: 16\n  condition: sel\n", R"({"T":"2023-06-16T03:41:00Z"})", true},
    {"month", "  sel:\n    T|month: 6\n  condition: sel\n", R"({"T":"2023-06-16T03:41:00Z"})", true},
    {"year", "  sel:\n    T|year: 2023\n  condition: sel\n", R"({"T":"2023-06-16"})", true},
    {"week", "  sel:\n    T|week: 24\n  condition: sel\n", R"({"T":"2023-06-16T03:41:00Z"})", true},
    {"week of 1 Jan 2021 is 53", "  sel:\n    T|week: 53\n  condition: sel\n",
     R"({"T":"2021-01-01T00:00:00Z"})", true},
    // cidr.
    {"cidr v4", "  sel:\n    Ip|cidr: 10.0.0.0/8\n  condition: sel\n", R"({"Ip":"10.1.2.3"})", true},
    {"cidr v4 out", "  sel:\n    Ip|cidr: 10.0.0.0/8\n  condition: sel\n", R"({"Ip":"11.1.2.3"})",
     false},
    {"cidr /0", "  sel:\n    Ip|cidr: 0.0.0.0/0\n  condition: sel\n", R"({"Ip":"1.2.3.4"})", true},
    {"cidr /23", "  sel:\n    Ip|cidr: 192.168.2.0/23\n  condition: sel\n", R"({"Ip":"192.168.3.9"})",
     true},
    {"cidr v6", "  sel:\n    Ip|cidr: '2001:db8::/32'\n  condition: sel\n",
     R"({"Ip":"2001:DB8:1::5"})", true},
    {"cidr v6 out", "  sel:\n    Ip|cidr: '2001:db8::/32'\n  condition: sel\n",
     R"({"Ip":"2001:db9::5"})", false},
    {"cidr v4 vs v6", "  sel:\n    Ip|cidr: '::/0'\n  condition: sel\n", R"({"Ip":"1.2.3.4"})", false},
    {"cidr list", "  sel:\n    Ip|cidr:\n      - 10.0.0.0/8\n      - 172.16.0.0/12\n  condition: sel\n",
     R"({"Ip":"172.20.0.1"})", true},
    {"cidr not an ip", "  sel:\n    Ip|cidr: 10.0.0.0/8\n  condition: sel\n", R"({"Ip":"x"})", false},
    // fieldref.
    {"fieldref", "  sel:\n    A|fieldref: B\n  condition: sel\n", R"({"A":"bob","B":"BOB"})", true},
    {"fieldref differs", "  sel:\n    A|fieldref: B\n  condition: sel\n", R"({"A":"bob","B":"al"})",
     false},
    {"fieldref missing", "  sel:\n    A|fieldref: B\n  condition: sel\n", R"({"A":"bob"})", false},
    {"fieldref|contains", "  sel:\n    A|fieldref|contains: B\n  condition: sel\n",
     R"({"A":"C:\\bob\\x","B":"Bob"})", true},
    {"fieldref|startswith", "  sel:\n    A|fieldref|startswith: B\n  condition: sel\n",
     R"({"A":"bobby","B":"bob"})", true},
    {"fieldref|endswith", "  sel:\n    A|fieldref|endswith: B\n  condition: sel\n",
     R"({"A":"bobby","B":"bob"})", false},
    {"fieldref|neq", "  sel:\n    A|fieldref|neq: B\n  condition: sel\n", R"({"A":"x","B":"y"})", true},
    {"fieldref|cased", "  sel:\n    A|fieldref|cased: B\n  condition: sel\n",
     R"({"A":"bob","B":"BOB"})", false},
    {"fieldref numbers", "  sel:\n    A|fieldref: B\n  condition: sel\n", R"({"A":5,"B":"5"})", true},
    // Keywords.
    {"keywords", "  keywords:\n    - mimikatz\n    - 'event::clear'\n  condition: keywords\n",
     R"({"a":{"b":["x","run EVENT::CLEAR now"]}})", true},
    {"keywords none", "  keywords:\n    - mimikatz\n  condition: keywords\n", R"({"a":"b"})", false},
    {"keywords |all", "  keywords:\n    '|all':\n      - Oab\n      - ' -ExternalUrl '\n  condition: keywords\n",
     R"({"c":"Set-OabVirtualDirectory -ExternalUrl x"})", true},
    {"keywords |all partial", "  keywords:\n    '|all':\n      - Oab\n      - ' -ExternalUrl '\n  condition: keywords\n",
     R"({"c":"Set-OabVirtualDirectory"})", false},
    {"keyword numbers", "  keywords:\n    - 4624\n  condition: keywords\n", R"({"e":4624})", true},
    // Conditions.
    {"and not", "  sel:\n    A: 1\n  filter:\n    B: 2\n  condition: sel and not filter\n",
     R"({"A":1,"B":2})", false},
    {"and not passes", "  sel:\n    A: 1\n  filter:\n    B: 2\n  condition: sel and not filter\n",
     R"({"A":1,"B":3})", true},
    {"or", "  a:\n    A: 1\n  b:\n    B: 2\n  condition: a or b\n", R"({"B":2})", true},
    {"parentheses", "  a:\n    A: 1\n  b:\n    B: 2\n  c:\n    C: 3\n  condition: a and (b or c)\n",
     R"({"A":1,"C":3})", true},
    {"precedence and over or", "  a:\n    A: 1\n  b:\n    B: 2\n  c:\n    C: 3\n  condition: a or b and c\n",
     R"({"A":1})", true},
    {"precedence not", "  a:\n    A: 1\n  b:\n    B: 2\n  condition: not a and b\n",
     R"({"A":1,"B":2})", false},
    {"1 of pattern", "  sel_a:\n    A: 1\n  sel_b:\n    B: 2\n  condition: 1 of sel_*\n",
     R"({"B":2})", true},
    {"all of pattern", "  sel_a:\n    A: 1\n  sel_b:\n    B: 2\n  condition: all of sel_*\n",
     R"({"B":2})", false},
    {"all of pattern ok", "  sel_a:\n    A: 1\n  sel_b:\n    B: 2\n  condition: all of sel_*\n",
     R"({"A":1,"B":2})", true},
    {"1 of them", "  a:\n    A: 1\n  b:\n    B: 2\n  condition: 1 of them\n", R"({"B":2})", true},
    {"all of them skips _", "  a:\n    A: 1\n  _b:\n    B: 2\n  condition: all of them\n",
     R"({"A":1})", true},
    {"not 1 of filter", "  sel:\n    A: 1\n  filter_x:\n    B: 2\n  filter_y:\n    C: 3\n  condition: sel and not 1 of filter_*\n",
     R"({"A":1,"C":3})", false},
    {"condition list is OR", "  a:\n    A: 1\n  b:\n    B: 2\n  condition:\n    - a\n    - b\n",
     R"({"B":2})", true},
    {"uppercase keywords", "  a:\n    A: 1\n  b:\n    B: 2\n  condition: a AND NOT b\n",
     R"({"A":1})", true},
};

class MatchTest : public ::testing::TestWithParam<MatchCase> {};

TEST_P(MatchTest, Matches) {
  const MatchCase& c = GetParam();
  RuleSet rs = MustLoad(Rule(c.detection));
  EXPECT_EQ(CountAlerts(rs, {c.event}) == 1, c.match) << c.name << "\n" << c.detection << c.event;
}

INSTANTIATE_TEST_SUITE_P(Modifiers, MatchTest, ::testing::ValuesIn(kCases),
                         [](const ::testing::TestParamInfo<MatchCase>& i) {
                           std::string n;
                           for (const char* p = i.param.name; *p; ++p) {
                             n += std::isalnum(static_cast<unsigned char>(*p)) ? *p : '_';
                           }
                           return n + "_" + std::to_string(i.index);
                         });

// Each malformed rule is rejected with a position and a reason; nothing crashes.
struct RejectCase {
  const char* name;
  const char* yaml;
  int line;  // expected 1-based line (0: any)
  const char* reason_part;
};

const RejectCase kRejects[] = {
    {"bad yaml", "title: x\ndetection:\n  sel: [a, b\n  condition: sel\n", 0, "YAML"},
    {"tab indentation", "title: x\ndetection:\n\tsel: 1\n", 3, "YAML"},
    {"unknown modifier", "title: x\ndetection:\n  sel:\n    A|bogus: 1\n  condition: sel\n", 4,
     "unknown modifier 'bogus'"},
    {"unknown identifier", "title: x\ndetection:\n  sel:\n    A: 1\n  condition: sel and other\n", 5,
     "unknown search identifier 'other'"},
    {"no condition", "title: x\ndetection:\n  sel:\n    A: 1\n", 3, "no condition"},
    {"bad regex", "title: x\ndetection:\n  sel:\n    A|re: '(['\n  condition: sel\n", 4,
     "invalid regular expression"},
    {"lookahead", "title: x\ndetection:\n  sel:\n    A|re: 'a(?!b)'\n  condition: sel\n", 4,
     "lookaround"},
    {"bad cidr", "title: x\ndetection:\n  sel:\n    A|cidr: 10.0.0.0/33\n  condition: sel\n", 4, "cidr"},
    {"gt not a number", "title: x\ndetection:\n  sel:\n    A|gt: abc\n  condition: sel\n", 4,
     "not a number"},
    {"exists not bool", "title: x\ndetection:\n  sel:\n    A|exists: maybe\n  condition: sel\n", 4,
     "exists takes true or false"},
    {"aggregation", "title: x\ndetection:\n  sel:\n    A: 1\n  condition: sel | count() > 5\n", 5,
     "aggregation"},
    {"near", "title: x\ndetection:\n  sel:\n    A: 1\n  condition: sel near sel\n", 5, "unexpected"},
    {"nested list value", "title: x\ndetection:\n  sel:\n    A:\n      - [1, 2]\n  condition: sel\n", 5,
     "scalar"},
    {"unknown placeholder", "title: x\ndetection:\n  sel:\n    A|expand: '%nope%'\n  condition: sel\n",
     4, "placeholder %nope%"},
    {"contains and startswith", "title: x\ndetection:\n  sel:\n    A|contains|startswith: x\n  condition: sel\n",
     4, "exclude"},
    {"not a map", "- a\n- b\n", 1, "not a map"},
    {"no detection", "title: x\nfoo: bar\n", 1, "no detection"},
    {"of nothing", "title: x\ndetection:\n  sel:\n    A: 1\n  condition: 1 of filter_*\n", 5,
     "matches no search identifier"},
    {"dangling not", "title: x\ndetection:\n  sel:\n    A: 1\n  condition: sel and not\n", 5,
     "expected a search identifier"},
    {"unbalanced paren", "title: x\ndetection:\n  sel:\n    A: 1\n  condition: (sel\n", 5, "expected ')'"},
    {"bad timespan",
     "title: c\ncorrelation:\n  type: event_count\n  rules: [x]\n  timespan: 5 minutes\n  condition: {gte: 2}\n",
     5, "timespan"},
    {"unknown correlation ref",
     "title: c\ncorrelation:\n  type: event_count\n  rules: [nope]\n  timespan: 5m\n  condition: {gte: 2}\n",
     1, "unknown rule 'nope'"},
    {"value_count without field",
     "title: c\ncorrelation:\n  type: value_count\n  rules: [x]\n  timespan: 5m\n  condition: {gte: 2}\n",
     0, "needs condition.field"},
    {"value_percentile without field",
     "title: c\ncorrelation:\n  type: value_percentile\n  rules: [x]\n  group-by: [h]\n  timespan: 24h\n  condition: {lte: 1}\n",
     0, "value_percentile needs condition.field"},
    {"sigma 1 collection", "action: global\ntitle: x\n", 1, "not supported"},
    {"deep nesting", "title: x\ndetection: [[[[[[[[[[[[[[[[[[[[]]]]]]]]]]]]]]]]]]]]\n", 2,
     "detection must be a map"},
};

class RejectTest : public ::testing::TestWithParam<RejectCase> {};

TEST_P(RejectTest, ReportsPosition) {
  const RejectCase& c = GetParam();
  LoadReport report;
  auto rs = RuleSet::LoadFromStrings({{"bad.yml", c.yaml}}, {}, &report);
  ASSERT_TRUE(rs.ok()) << rs.status().ToString();
  ASSERT_EQ(report.rejected.size(), 1u) << c.name;
  const LoadIssue& issue = report.rejected[0];
  EXPECT_EQ(issue.file, "bad.yml");
  if (c.line) {
    EXPECT_EQ(issue.line, c.line) << issue.ToString();
  }
  EXPECT_NE(issue.reason.find(c.reason_part), std::string::npos) << issue.ToString();
  EXPECT_EQ(rs->rule_count(), 0u);
}

INSTANTIATE_TEST_SUITE_P(Malformed, RejectTest, ::testing::ValuesIn(kRejects),
                         [](const ::testing::TestParamInfo<RejectCase>& i) {
                           std::string n;
                           for (const char* p = i.param.name; *p; ++p) {
                             n += std::isalnum(static_cast<unsigned char>(*p)) ? *p : '_';
                           }
                           return n;
                         });

TEST(LoadTest, MultiDocumentFileKeepsGoodRulesAndReportsBadOnes) {
  const char* yaml = R"(title: good
id: g1
logsource: {product: test}
detection:
  sel: {A: 1}
  condition: sel
---
title: bad
id: b1
detection:
  sel: {A|nope: 1}
  condition: sel
---
title: good2
id: g2
logsource: {product: test}
detection:
  sel: {B: 1}
  condition: sel
)";
  LoadReport report;
  auto rs = RuleSet::LoadFromStrings({{"multi.yml", yaml}}, {}, &report);
  ASSERT_TRUE(rs.ok());
  EXPECT_EQ(rs->rule_count(), 2u);
  ASSERT_EQ(report.rejected.size(), 1u);
  EXPECT_EQ(report.rejected[0].rule_id, "b1");
  EXPECT_EQ(report.rejected[0].line, 11);
  EXPECT_EQ(report.rejected[0].ToString().substr(0, 13), "multi.yml:11:");
}

TEST(LoadTest, DocumentMarkersAndLineNumbers) {
  const char* yaml = "%YAML 1.2\n---\ntitle: a\nid: a\nlogsource: {product: test}\n"
                     "detection: {s: {A: 1}, condition: s}\n...\n# trailing comment\n"
                     "--- # second\ntitle: b\nid: b\ndetection:\n  s: {A|bad: 1}\n  condition: s\n";
  LoadReport report;
  auto rs = RuleSet::LoadFromStrings({{"m.yml", yaml}}, {}, &report);
  ASSERT_TRUE(rs.ok());
  EXPECT_EQ(rs->rule_count(), 1u);
  EXPECT_EQ(report.documents, 2);
  ASSERT_EQ(report.rejected.size(), 1u);
  EXPECT_EQ(report.rejected[0].line, 13) << report.rejected[0].ToString();
  EXPECT_EQ(rs->Rules()[0]->line, 3);
}

TEST(LoadTest, MissingPathIsAnError) {
  LoadReport report;
  auto rs = RuleSet::Load({"/nonexistent/rules"}, {}, &report);
  EXPECT_FALSE(rs.ok());
}

TEST(LoadTest, PlaceholdersExpand) {
  LoadOptions opts;
  opts.placeholders["Admins"] = {"adm_*", "root"};
  opts.placeholders["nets"] = {"10.0.0.0/8", "192.168.0.0/16"};
  RuleSet rs = MustLoad(Rule("  sel:\n    User|expand: '%Admins%'\n  condition: sel\n"), opts);
  EXPECT_EQ(CountAlerts(rs, {R"({"User":"ADM_bob"})", R"({"User":"root"})", R"({"User":"bob"})"}), 2u);
  RuleSet nets = MustLoad(Rule("  sel:\n    Ip|cidr|expand: '%nets%'\n  condition: sel\n"), opts);
  EXPECT_EQ(CountAlerts(nets, {R"({"Ip":"10.2.3.4"})", R"({"Ip":"192.168.1.1"})", R"({"Ip":"8.8.8.8"})"}),
            2u);
  RuleSet embedded = MustLoad(Rule("  sel:\n    U|expand|endswith: '@%Admins%'\n  condition: sel\n"), opts);
  EXPECT_EQ(CountAlerts(embedded, {R"({"U":"x@root"})", R"({"U":"x@bob"})"}), 1u);
  LoadOptions any;
  any.unknown_placeholder_matches_anything = true;
  RuleSet wild = MustLoad(Rule("  sel:\n    U|expand: '%nope%'\n  condition: sel\n"), any);
  EXPECT_EQ(CountAlerts(wild, {R"({"U":"whatever"})"}), 1u);
}

TEST(EngineTest, MalformedEventIsCountedAndNotFatal) {
  RuleSet rs = MustLoad(Rule("  sel:\n    A: 1\n  condition: sel\n"));
  Engine engine(rs);
  VectorAlertSink sink;
  EXPECT_FALSE(engine.Process("{not json", {"test", "", ""}, sink).ok());
  EXPECT_FALSE(engine.Process("[1,2]", {"test", "", ""}, sink).ok());
  EXPECT_FALSE(engine.Process("", {"test", "", ""}, sink).ok());
  EXPECT_TRUE(engine.Process(R"({"A":1})", {"test", "", ""}, sink).ok());
  EXPECT_EQ(engine.stats().malformed_events, 3u);
  EXPECT_EQ(sink.alerts.size(), 1u);
}

TEST(EngineTest, AlertCarriesRuleMetadataTimeAndEvent) {
  RuleSet rs = MustLoad(R"(title: Mail read by new app
id: 11111111-2222-3333-4444-555555555555
status: test
logsource: {product: m365, service: audit}
detection:
  sel: {Operation: MailItemsAccessed}
  condition: sel
tags: [attack.collection, attack.t1114.002, cve.2023-0000]
level: high
)");
  VectorAlertSink sink;
  Engine engine(rs);
  std::string ev = R"({"CreationTime":"2023-06-16T09:41:00","Operation":"MailItemsAccessed"})";
  ASSERT_TRUE(engine.Process(ev, {"m365", "audit", ""}, sink).ok());
  ASSERT_EQ(sink.alerts.size(), 1u);
  const auto& a = sink.alerts[0];
  EXPECT_EQ(a.rule_id, "11111111-2222-3333-4444-555555555555");
  EXPECT_EQ(a.level, "high");
  EXPECT_EQ(a.time_ms, *ParseIsoTime("2023-06-16T09:41:00Z"));
  EXPECT_NE(a.json.find(R"("event":{"CreationTime")"), std::string::npos) << a.json;
  EXPECT_NE(a.json.find("attack.t1114.002"), std::string::npos);
  EXPECT_NE(a.json.find("2023-06-16T09:41:00.000Z"), std::string::npos);
  auto infos = rs.Rules();
  ASSERT_EQ(infos.size(), 1u);
  EXPECT_EQ(infos[0]->attack.size(), 2u);
}

TEST(EngineTest, LogSourceSelectsRules) {
  RuleSet rs = MustLoad(R"(title: aws
id: a
logsource: {product: aws, service: cloudtrail}
detection: {sel: {eventName: X}, condition: sel}
---
title: m365
id: m
logsource: {product: m365, service: audit}
detection: {sel: {Operation: X}, condition: sel}
)");
  VectorAlertSink sink;
  EXPECT_EQ(CountAlerts(rs, {R"({"eventName":"X","Operation":"X"})"}, {"aws", "cloudtrail", ""}, &sink), 1u);
  EXPECT_EQ(sink.alerts[0].rule_id, "a");
  EXPECT_EQ(CountAlerts(rs, {R"({"eventName":"X","Operation":"X","CreationTime":"2023-01-01T00:00:00"})"},
                        {"m365", "", ""}, &sink),
            1u);
  EXPECT_EQ(sink.alerts[0].rule_id, "m");
  // No hint: every rule may apply.
  EXPECT_EQ(CountAlerts(rs, {R"({"eventName":"X","Operation":"X","CreationTime":"2023-01-01T00:00:00"})"},
                        {"", "", ""}),
            2u);
}

TEST(MappingTest, M365ServiceConditionsAndFieldRenames) {
  RuleSet rs = MustLoad(R"(title: federated domain
id: fed
logsource: {product: m365, service: exchange}
detection:
  selection:
    eventSource: Exchange
    eventName: 'Add-FederatedDomain'
  condition: selection
)");
  std::string exch = R"({"CreationTime":"2023-06-16T09:41:00","Workload":"Exchange","Operation":"Add-FederatedDomain","ResultStatus":"Succeeded"})";
  std::string aad = R"({"CreationTime":"2023-06-16T09:41:00","Workload":"AzureActiveDirectory","Operation":"Add-FederatedDomain"})";
  EXPECT_EQ(CountAlerts(rs, {exch, aad}, {"m365", "audit", ""}), 1u);
  EXPECT_EQ(CountAlerts(rs, {exch}, {"m365", "", ""}), 1u);
}

TEST(MappingTest, WindowsEvtxDumpShape) {
  RuleSet rs = MustLoad(R"(title: logon
id: w
logsource: {product: windows, service: security}
detection:
  selection:
    EventID: 4624
    LogonType: 10
    TargetUserName|startswith: adm
  condition: selection
)");
  std::string ev = R"({"Event":{"#attributes":{"xmlns":"x"},"System":{"Provider":{"#attributes":{"Name":"Microsoft-Windows-Security-Auditing"}},"EventID":4624,"Channel":"Security","Computer":"dc1","TimeCreated":{"#attributes":{"SystemTime":"2023-06-16T09:41:00.123456Z"}}},"EventData":{"TargetUserName":"admin","LogonType":10}}})";
  VectorAlertSink sink;
  EXPECT_EQ(CountAlerts(rs, {ev}, {"windows", "", ""}, &sink), 1u);
  EXPECT_EQ(sink.alerts[0].time_ms, *ParseIsoTime("2023-06-16T09:41:00.123Z"));
  std::string sysmon = ev;
  sysmon.replace(sysmon.find("\"Security\""), 10, "\"System\"");
  EXPECT_EQ(CountAlerts(rs, {sysmon}, {"windows", "", ""}), 0u);
}

TEST(MappingTest, AzurePropertiesPrefixAndCaseFallback) {
  RuleSet rs = MustLoad(R"(title: signin
id: s
logsource: {product: azure, service: signinlogs}
detection:
  selection:
    ResultType: 50126
    AuthenticationRequirement: singleFactorAuthentication
  condition: selection
)");
  std::string diag = R"({"time":"2023-06-16T09:41:00Z","category":"SignInLogs","operationName":"Sign-in activity","resultType":"50126","properties":{"authenticationRequirement":"singleFactorAuthentication"}})";
  std::string sentinel = R"({"TimeGenerated":"2023-06-16T09:41:00Z","Type":"SigninLogs","ResultType":"50126","AuthenticationRequirement":"singleFactorAuthentication"})";
  std::string audit = R"({"time":"2023-06-16T09:41:00Z","category":"AuditLogs","resultType":"50126","properties":{"authenticationRequirement":"singleFactorAuthentication"}})";
  EXPECT_EQ(CountAlerts(rs, {diag, sentinel, audit}, {"azure", "", ""}), 2u);
}

TEST(MappingTest, CustomMappingFile) {
  std::string path = ::testing::TempDir() + "/kw_detect_mapping.yml";
  {
    FILE* f = fopen(path.c_str(), "w");
    ASSERT_NE(f, nullptr);
    fputs("mappings:\n  - logsource: {product: acme}\n    timestamp: {field: ts, format: epoch_millis}\n"
          "    fieldmappings:\n      User: [actor.name]\n", f);
    fclose(f);
  }
  LoadOptions opts;
  opts.mapping_files = {path};
  RuleSet rs = MustLoad("title: t\nid: x\nlogsource: {product: acme}\ndetection: {s: {User: bob}, condition: s}\n",
                        opts);
  VectorAlertSink sink;
  EXPECT_EQ(CountAlerts(rs, {R"({"ts":1686908460000,"actor":{"name":"Bob"}})"}, {"acme", "", ""}, &sink), 1u);
  EXPECT_EQ(sink.alerts[0].time_ms, 1686908460000);
  opts.mapping_files = {"/nonexistent.yml"};
  LoadReport report;
  EXPECT_FALSE(RuleSet::LoadFromStrings({}, opts, &report).ok());
}

TEST(FilterTest, GlobalFilterSuppressesNamedRules) {
  RuleSet rs = MustLoad(R"(title: rar
id: 6f3e2987-db24-4c78-a860-b4f4095a7095
logsource: {category: process_creation, product: windows}
detection:
  sel: {Image|endswith: '\rar.exe'}
  condition: sel
---
title: other
id: other
logsource: {category: process_creation, product: windows}
detection:
  sel: {Image|endswith: '\rar.exe'}
  condition: sel
---
title: Filter Administrator account
description: The valid administrator account start with adm_
logsource:
    category: process_creation
    product: windows
filter:
    rules:
        - 6f3e2987-db24-4c78-a860-b4f4095a7095 # Data Compressed - rar.exe
        - df0841c0-9846-4e9f-ad8a-7df91571771b # Login on jump host
    selection:
        User|startswith: 'adm_'
    condition: selection
)");
  EXPECT_EQ(rs.filter_count(), 1u);
  VectorAlertSink sink;
  LogSource hint{"windows", "", "process_creation"};
  EXPECT_EQ(CountAlerts(rs, {R"({"Image":"C:\\rar.exe","User":"adm_bob"})"}, hint, &sink), 1u);
  EXPECT_EQ(sink.alerts[0].rule_id, "other");
  EXPECT_EQ(CountAlerts(rs, {R"({"Image":"C:\\rar.exe","User":"bob"})"}, hint), 2u);
}

TEST(TimeTest, ParseIso) {
  EXPECT_EQ(*ParseIsoTime("1970-01-01T00:00:00Z"), 0);
  EXPECT_EQ(*ParseIsoTime("2023-06-16T09:41:00Z"), 1686908460000);
  EXPECT_EQ(*ParseIsoTime("2023-06-16T09:41:00"), 1686908460000);
  EXPECT_EQ(*ParseIsoTime("2023-06-16T11:41:00+02:00"), 1686908460000);
  EXPECT_EQ(*ParseIsoTime("2023-06-16T09:41:00.5Z"), 1686908460500);
  EXPECT_EQ(*ParseIsoTime("2023-06-16 09:41:00.1234567Z"), 1686908460123);
  EXPECT_EQ(*ParseIsoTime("2023-06-16"), 1686873600000);
  EXPECT_FALSE(ParseIsoTime("16/06/2023").ok());
  EXPECT_FALSE(ParseIsoTime("2023-06-16T09:41:00Zjunk").ok());
  EXPECT_EQ(FormatIsoTime(1686908460123), "2023-06-16T09:41:00.123Z");
}

// Untrusted YAML of every shape must give a report, never a crash.
TEST(RobustnessTest, GarbageYamlNeverCrashes) {
  const char* inputs[] = {
      "", "---", "--- !!binary foo", "&a [*a]", "a: *unknown", "{", "detection: 5",
      "title: x\ndetection: {condition: [1, {a: b}]}", "title: x\ndetection: {sel: {? [a]: 1}, condition: sel}",
      "title: x\ndetection: {sel: {A: {b: c}}, condition: sel}", "correlation: 5",
      "correlation: {type: temporal, rules: [], timespan: 1m}", "filter: {rules: 5}",
      "title: x\ndetection: {sel: null, condition: sel}", "\xff\xfe\x00garbage",
      "title: x\ndetection: {sel: {A|re: '\\\\'}, condition: 'sel and ((((sel'}",
      "title: x\nlogsource: [1]\ndetection: {sel: {A: 1}, condition: sel}",
      // yaml-cpp 0.7's LoadAll loops forever on these (jbeder/yaml-cpp#1040).
      ",", " ,", " ,a", "title: x\n---\n ,\n---\n,", "%YAML 1.2\n---\n ,\n...\n",
  };
  for (const char* in : inputs) {
    LoadReport report;
    auto rs = RuleSet::LoadFromStrings({{"g.yml", in}}, {}, &report);
    EXPECT_TRUE(rs.ok()) << in;
  }
  std::string deep(100000, '[');
  LoadReport report;
  EXPECT_TRUE(RuleSet::LoadFromStrings({{"deep.yml", deep}}, {}, &report).ok());
  EXPECT_EQ(report.rejected.size(), 1u);
}

}  // namespace
}  // namespace kw::detect
