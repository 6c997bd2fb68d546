// The compiled form of Sigma documents: detection rules, correlation rules, filters and the
// log-source mapping, as held by an immutable RuleSet. Internal to kw_detect.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "detect/condition.h"
#include "detect/engine.h"
#include "detect/field_db.h"
#include "core/string_map.h"
#include "detect/pattern.h"

namespace kw::detect::internal {

using kw::StringMap;

// Where to find one Sigma field in an event: candidate paths, tried in order.
struct FieldSpec {
  std::string sigma_name;
  std::vector<std::string> paths;  // dotted paths
};

// Interned field specs; a field id indexes `specs`.
struct FieldTable {
  std::vector<FieldSpec> specs;
  StringMap<int> index;  // key: paths joined by '\n'
  int Intern(std::string sigma_name, std::vector<std::string> paths);
};

enum class CompareOp : uint8_t { kEq, kNeq, kLt, kLte, kGt, kGte };
bool Compare(double a, CompareOp op, double b);
enum class TimePart : uint8_t { kNone, kMinute, kHour, kDay, kWeek, kMonth, kYear };

struct ValueTest {
  enum class Kind : uint8_t {
    kString,    // any of `patterns` matches the value's text
    kRegex,     // regex matches the raw text
    kCidr,      // the text is an IP inside `cidr`
    kCompare,   // numeric comparison (also time parts)
    kNull,      // field missing or JSON null
    kExists,    // field present (== exists)
    kFieldRef,  // value relates to another field's value by `ref_kind`
    kNever,     // an expanded placeholder with no values
  };
  Kind kind = Kind::kString;
  std::vector<StringPattern> patterns;
  std::shared_ptr<const Regex> regex;
  std::shared_ptr<const Cidr> cidr;
  CompareOp op = CompareOp::kEq;
  TimePart time_part = TimePart::kNone;
  double number = 0;
  bool exists = true;
  int ref_field = -1;
  StringPattern::Kind ref_kind = StringPattern::Kind::kExact;
  bool ref_cased = false;
  // kString on a field with a Hyperscan database: the id all of `patterns` report (-1: match
  // `patterns` one by one).
  int hs_id = -1;
};

// One "Field|modifiers: values" entry (or a keyword list when field < 0).
struct FieldTest {
  int field = -1;
  std::vector<ValueTest> values;
  bool all = false;  // AND over values instead of OR
  bool neq = false;  // field present and no value matches
};

// A search identifier: OR over groups, AND within a group.
struct Selection {
  std::string name;
  std::vector<std::vector<FieldTest>> groups;
};

struct Detection {
  std::vector<Selection> selections;
  Condition condition;
  std::vector<int> roots;  // condition list: OR of these roots
};

struct LogSourceKey {
  std::string product, service, category;
  bool operator==(const LogSourceKey&) const = default;
  // Every attribute set in *this equals the one in `other`.
  bool SubsetOf(const LogSourceKey& other) const;
};

struct DetectionRule {
  RuleInfo info;
  LogSourceKey logsource;
  Detection detection;
  int group = -1;
  std::vector<int> filters;       // filter indices that apply
  std::vector<int> correlations;  // correlations that reference this rule
  bool emit = true;               // stand-alone alerts (false when only a correlation uses it)
};

enum class CorrelationType : uint8_t {
  kEventCount,
  kValueCount,
  kTemporal,
  kTemporalOrdered,
  kValueSum,
  kValueAvg,
  kValueMedian,
  kValuePercentile,  // the share (%) of the window's events that carry each value of the field
};

// A rule reference: a detection rule or a correlation.
struct RuleRef {
  bool correlation = false;
  int index = -1;
};

struct CorrelationRule {
  RuleInfo info;
  CorrelationType type = CorrelationType::kEventCount;
  std::vector<std::string> rule_names;  // as written
  std::vector<RuleRef> refs;            // resolved
  std::vector<std::string> group_by;
  StringMap<StringMap<std::string>> aliases;  // alias -> rule name -> field
  int64_t timespan_ms = 0;
  std::vector<std::pair<CompareOp, double>> conditions;  // all must hold (AND); empty = default
  std::string field;                                      // value_count/sum/avg/median
  bool generate = false;
  bool emit = true;
  std::vector<int> parents;  // correlations that reference this one
  // Per referenced rule (parallel to refs): field ids of group-by fields and `field` when the
  // referenced rule is a detection rule (resolved with that rule's log-source mapping).
  std::vector<std::vector<int>> group_fields;
  std::vector<int> value_field;
};

struct FilterRule {
  RuleInfo info;
  LogSourceKey logsource;
  std::vector<std::string> rules;  // ids or names; empty = every rule of the log source
  Detection detection;
};

enum class TimeFormat : uint8_t { kAuto, kIso, kEpochSeconds, kEpochMillis };

// One entry of a log-source mapping file.
struct MappingEntry {
  LogSourceKey logsource;
  std::vector<std::pair<std::string, std::vector<std::string>>> fieldmappings;
  std::vector<std::string> field_prefixes;
  // Sigma field -> rule value -> values written in the event (e.g. status: success ->
  // Succeeded), compared ignoring ASCII case.
  std::vector<std::pair<std::string, std::vector<std::pair<std::string, std::vector<std::string>>>>>
      value_mappings;
  std::string timestamp_field;
  int timestamp_field_id = -1;
  TimeFormat timestamp_format = TimeFormat::kAuto;
  bool has_conditions = false;
  Detection conditions;  // compiled with this entry's own fields
  std::string source;    // file it came from
};

// A set of rules sharing one log source, with their index.
struct RuleGroup {
  LogSourceKey logsource;
  std::vector<int> rules;      // all rules of the group
  std::vector<int> unindexed;  // rules evaluated for every event of the group
  struct IndexedField {
    int field = -1;
    StringMap<std::vector<int>> by_value;  // lower-cased exact value -> rules
  };
  std::vector<IndexedField> index;
  // Fields whose Hyperscan matches select rules of this group (RuleSetData::prefilter_rule).
  std::vector<int> hs_fields;
};

struct RuleSetData {
  FieldTable fields;
  std::vector<MappingEntry> mappings;
  std::vector<DetectionRule> rules;
  std::vector<CorrelationRule> correlations;
  std::vector<FilterRule> filters;
  std::vector<RuleGroup> groups;
  std::vector<int> default_time_fields;
  size_t max_selections = 0;
  // Hyperscan: one database per field id (null: none), the number of value ids, what each
  // pattern id stands for, and for each value id the rule it pre-selects (-1: none), i.e. the
  // rule can only match if that value matched.
  std::vector<std::unique_ptr<FieldDb>> field_dbs;
  uint32_t hs_ids = 0;
  std::vector<HsPattern> hs_patterns;  // by Hyperscan pattern id
  std::vector<int> prefilter_rule;
};

}  // namespace kw::detect::internal
