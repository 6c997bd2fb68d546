#include "detect/loader.h"

#include <algorithm>
#include <functional>
#include <set>
#include <sstream>

#include <yaml-cpp/yaml.h>

#include "core/ascii.h"

namespace kw::detect::internal {
namespace {

// A failure with the YAML position it concerns.
struct LoadError {
  YAML::Mark mark;
  std::string message;
};

LoadError Err(const YAML::Node& n, std::string msg) {
  YAML::Mark m;
  try {
    m = n.Mark();
  } catch (...) {
    m = YAML::Mark::null_mark();
  }
  return {m, std::move(msg)};
}

// Result-like holder for LoadError (Status has no position).
template <typename T>
struct Fallible {
  std::optional<T> value;
  std::optional<LoadError> error;
};

#define KW_LOAD_CHECK(expr)            \
  do {                                 \
    auto kw_le_ = (expr);              \
    if (kw_le_) return kw_le_;         \
  } while (0)

using MaybeError = std::optional<LoadError>;

std::string Scalar(const YAML::Node& n) {
  if (n && n.IsScalar()) return n.Scalar();
  return "";
}

std::vector<std::string> StringList(const YAML::Node& n) {
  std::vector<std::string> out;
  if (!n) return out;
  if (n.IsScalar()) {
    out.push_back(n.Scalar());
  } else if (n.IsSequence()) {
    for (const auto& x : n) {
      if (x.IsScalar()) out.push_back(x.Scalar());
    }
  }
  return out;
}

std::string Join(const std::vector<std::string>& v, std::string_view sep) {
  std::string out;
  for (size_t i = 0; i < v.size(); ++i) {
    if (i) out += sep;
    out += v[i];
  }
  return out;
}

bool Truthy(const YAML::Node& n) {
  std::string s = AsciiLowerCopy(Scalar(n));
  return s == "true" || s == "yes" || s == "1";
}

struct Modifiers {
  bool contains = false, startswith = false, endswith = false, all = false, exists = false,
       cased = false, neq = false, windash = false, re = false, re_i = false, re_m = false,
       re_s = false, base64 = false, base64offset = false, utf16le = false, utf16be = false,
       utf16 = false, cidr = false, expand = false, fieldref = false;
  bool has_cmp = false;
  CompareOp cmp = CompareOp::kEq;
  TimePart time_part = TimePart::kNone;
};

MaybeError ParseModifiers(const YAML::Node& key, const std::vector<std::string>& names,
                          Modifiers* m) {
  for (const std::string& raw : names) {
    std::string n = AsciiLowerCopy(raw);
    if (n == "contains") m->contains = true;
    else if (n == "startswith") m->startswith = true;
    else if (n == "endswith") m->endswith = true;
    else if (n == "all") m->all = true;
    else if (n == "exists") m->exists = true;
    else if (n == "cased") m->cased = true;
    else if (n == "neq") m->neq = true;
    else if (n == "windash") m->windash = true;
    else if (n == "re") m->re = true;
    else if (n == "i") m->re_i = true;
    else if (n == "m") m->re_m = true;
    else if (n == "s") m->re_s = true;
    else if (n == "base64") m->base64 = true;
    else if (n == "base64offset") m->base64offset = true;
    else if (n == "utf16le" || n == "wide") m->utf16le = true;
    else if (n == "utf16be") m->utf16be = true;
    else if (n == "utf16") m->utf16 = true;
    else if (n == "cidr") m->cidr = true;
    else if (n == "expand") m->expand = true;
    else if (n == "fieldref") m->fieldref = true;
    else if (n == "lt" || n == "lte" || n == "gt" || n == "gte") {
      if (m->has_cmp) return Err(key, "more than one comparison modifier");
      m->has_cmp = true;
      m->cmp = n == "lt" ? CompareOp::kLt : n == "lte" ? CompareOp::kLte
               : n == "gt" ? CompareOp::kGt : CompareOp::kGte;
    } else if (n == "minute") m->time_part = TimePart::kMinute;
    else if (n == "hour") m->time_part = TimePart::kHour;
    else if (n == "day") m->time_part = TimePart::kDay;
    else if (n == "week") m->time_part = TimePart::kWeek;
    else if (n == "month") m->time_part = TimePart::kMonth;
    else if (n == "year") m->time_part = TimePart::kYear;
    else return Err(key, "unknown modifier '" + raw + "'");
  }
  int pos = m->contains + m->startswith + m->endswith;
  if (pos > 1) return Err(key, "contains, startswith and endswith exclude each other");
  if ((m->re_i || m->re_m || m->re_s) && !m->re) {
    return Err(key, "modifiers i, m and s only apply to re");
  }
  int kinds = m->re + m->cidr + m->exists + m->fieldref + (m->has_cmp || m->time_part != TimePart::kNone);
  if (kinds > 1) return Err(key, "modifiers re, cidr, exists, fieldref and numeric comparisons exclude each other");
  if ((m->re || m->cidr || m->exists || m->has_cmp) && pos) {
    return Err(key, "contains/startswith/endswith cannot be combined with re, cidr, exists or comparisons");
  }
  int enc = m->utf16le + m->utf16be + m->utf16;
  if (enc > 1) return Err(key, "only one of utf16le, utf16be, utf16 and wide");
  if (m->base64 && m->base64offset) return Err(key, "base64 and base64offset exclude each other");
  if ((enc || m->base64 || m->base64offset || m->windash) && (m->re || m->cidr || m->exists || m->has_cmp || m->fieldref)) {
    return Err(key, "encoding and windash modifiers apply to plain strings only");
  }
  return std::nullopt;
}

}  // namespace

struct Loader::Impl {
  const LoadOptions& options;
  LoadReport* report;
  std::shared_ptr<RuleSetData> data = std::make_shared<RuleSetData>();
  struct PendingCorrelation {
    CorrelationRule rule;
    YAML::Mark mark;
  };
  std::vector<PendingCorrelation> correlations;
  // Line of the current document's first line in its file, minus one (documents are parsed one
  // by one; yaml-cpp's marks are relative to the document).
  int line_offset_ = 0;
  // The field and log source being compiled (for value_mappings).
  std::string current_field_;
  const LogSourceKey* current_ls_ = nullptr;

  Impl(const LoadOptions& o, LoadReport* r) : options(o), report(r) {}

  void Reject(const std::string& file, const YAML::Mark& mark, const std::string& id,
              const std::string& title, std::string reason) {
    LoadIssue issue;
    issue.file = file;
    if (!mark.is_null()) {
      issue.line = mark.line + 1 + line_offset_;
      issue.column = mark.column + 1;
    }
    issue.rule_id = id;
    issue.title = title;
    issue.reason = std::move(reason);
    report->rejected.push_back(std::move(issue));
  }

  void Warn(const std::string& file, const YAML::Mark& mark, const std::string& id,
            std::string reason) {
    LoadIssue issue;
    issue.file = file;
    if (!mark.is_null()) {
      issue.line = mark.line + 1 + line_offset_;
      issue.column = mark.column + 1;
    }
    issue.rule_id = id;
    issue.reason = std::move(reason);
    report->warnings.push_back(std::move(issue));
  }

  // ---- fields ----

  std::vector<std::string> PathsFor(const LogSourceKey& ls, const std::string& name) {
    std::vector<std::string> targets{name};
    std::vector<std::string> prefixes;
    for (const MappingEntry& e : data->mappings) {
      if (!e.logsource.SubsetOf(ls)) continue;
      for (const auto& [from, to] : e.fieldmappings) {
        if (AsciiEqualsIgnoreCase(from, name)) targets = to;
      }
      for (const auto& p : e.field_prefixes) {
        if (std::find(prefixes.begin(), prefixes.end(), p) == prefixes.end()) prefixes.push_back(p);
      }
    }
    std::vector<std::string> paths = targets;
    for (const auto& p : prefixes) {
      for (const auto& t : targets) paths.push_back(p + t);
    }
    return paths;
  }

  int FieldId(const LogSourceKey& ls, const std::string& name) {
    return data->fields.Intern(name, PathsFor(ls, name));
  }

  // ---- values ----

  // Expands %placeholders% in `raw`; returns the list of resulting raw strings.
  MaybeError ExpandPlaceholders(const YAML::Node& at, const std::string& raw,
                                std::vector<std::string>* out, bool* any) {
    out->clear();
    out->push_back("");
    size_t i = 0;
    while (i < raw.size()) {
      if (raw[i] == '\\' && i + 1 < raw.size() && raw[i + 1] == '%') {
        for (auto& s : *out) s += '%';
        i += 2;
        continue;
      }
      if (raw[i] == '%') {
        size_t end = raw.find('%', i + 1);
        if (end != std::string::npos && end > i + 1) {
          std::string name = raw.substr(i + 1, end - i - 1);
          auto it = options.placeholders.find(name);
          if (it == options.placeholders.end()) {
            if (!options.unknown_placeholder_matches_anything) {
              return Err(at, "placeholder %" + name + "% has no value (LoadOptions::placeholders)");
            }
            *any = true;
            for (auto& s : *out) s += '*';
          } else {
            std::vector<std::string> next;
            for (const auto& s : *out) {
              for (const auto& v : it->second) next.push_back(s + v);
            }
            if (next.size() > 4096) return Err(at, "placeholder expansion too large");
            *out = std::move(next);
          }
          i = end + 1;
          continue;
        }
      }
      for (auto& s : *out) s += raw[i];
      ++i;
    }
    return std::nullopt;
  }

  // The event's spellings of a rule value, per the mapping's value_mappings.
  std::vector<std::string> MappedValues(const LogSourceKey& ls, const std::string& field,
                                        const std::string& raw) {
    std::vector<std::string> out{raw};
    if (field.empty()) return out;
    for (const MappingEntry& e : data->mappings) {
      if (!e.logsource.SubsetOf(ls)) continue;
      for (const auto& [f, values] : e.value_mappings) {
        if (!AsciiEqualsIgnoreCase(f, field)) continue;
        for (const auto& [from, to] : values) {
          if (AsciiEqualsIgnoreCase(from, raw)) out = to;
        }
      }
    }
    return out;
  }

  MaybeError CompileStringValue(const YAML::Node& at, const Modifiers& m, const std::string& raw,
                                ValueTest* v) {
    v->kind = ValueTest::Kind::kString;
    std::vector<std::string> raws =
        m.expand ? std::vector<std::string>{raw} : MappedValues(*current_ls_, current_field_, raw);
    if (m.expand) {
      bool any = false;
      KW_LOAD_CHECK(ExpandPlaceholders(at, raw, &raws, &any));
      if (raws.empty()) {
        v->kind = ValueTest::Kind::kNever;
        return std::nullopt;
      }
    }
    bool encoded = m.base64 || m.base64offset;
    bool utf = m.utf16le || m.utf16be || m.utf16;
    for (const std::string& r : raws) {
      std::vector<SigmaString> variants{ParseSigmaString(r)};
      if (m.windash) {
        auto w = WindashVariants(variants[0]);
        if (!w.ok()) return Err(at, w.status().message());
        variants = std::move(*w);
      }
      if (utf || encoded) {
        std::vector<SigmaString> enc;
        for (const auto& s : variants) {
          if (HasWildcard(s)) return Err(at, "encoding modifiers need a value without wildcards");
          std::string bytes = LiteralBytes(s);
          if (m.utf16le) bytes = Utf16Le(bytes);
          if (m.utf16be) bytes = Utf16Be(bytes);
          if (m.utf16) bytes = Utf16WithBom(bytes);
          if (m.base64) {
            enc.push_back(LiteralSigmaString(Base64Encode(bytes)));
          } else if (m.base64offset) {
            for (auto& x : Base64OffsetVariants(bytes)) enc.push_back(LiteralSigmaString(x));
          } else {
            enc.push_back(LiteralSigmaString(bytes));
          }
        }
        variants = std::move(enc);
      }
      for (SigmaString& s : variants) {
        if (m.contains || m.endswith) s.insert(s.begin(), {SigmaChar::Kind::kStar, 0});
        if (m.contains || m.startswith) s.push_back({SigmaChar::Kind::kStar, 0});
        // Base64 text is case-sensitive by nature.
        v->patterns.push_back(StringPattern::Compile(s, m.cased || encoded));
      }
    }
    return std::nullopt;
  }

  MaybeError CompileValue(const YAML::Node& item, const Modifiers& m, const LogSourceKey& ls,
                          FieldTest* ft) {
    ValueTest v;
    if (!item.IsScalar() && !item.IsNull()) {
      return Err(item, "a value must be a scalar or a list of scalars");
    }
    bool is_null = item.IsNull() || (item.Tag() == "?" && item.Scalar().empty());
    if (m.exists) {
      std::string s = AsciiLowerCopy(Scalar(item));
      if (s != "true" && s != "false") return Err(item, "exists takes true or false");
      v.kind = ValueTest::Kind::kExists;
      v.exists = s == "true";
      ft->values.push_back(std::move(v));
      return std::nullopt;
    }
    if (is_null) {
      if (m.re || m.cidr || m.has_cmp || m.fieldref || m.time_part != TimePart::kNone) {
        return Err(item, "null cannot be used with this modifier");
      }
      v.kind = ValueTest::Kind::kNull;
      ft->values.push_back(std::move(v));
      return std::nullopt;
    }
    const std::string& raw = item.Scalar();
    if (m.has_cmp || m.time_part != TimePart::kNone) {
      auto n = ParseNumber(raw);
      if (!n) return Err(item, "'" + raw + "' is not a number");
      v.kind = ValueTest::Kind::kCompare;
      v.op = m.has_cmp ? m.cmp : CompareOp::kEq;
      v.time_part = m.time_part;
      v.number = *n;
    } else if (m.cidr) {
      std::vector<std::string> raws{raw};
      bool any = false;
      if (m.expand) KW_LOAD_CHECK(ExpandPlaceholders(item, raw, &raws, &any));
      if (any) return Err(item, "cidr placeholder has no value");
      // Several networks (from an expanded placeholder) become several values of the test.
      for (size_t i = 0; i < raws.size(); ++i) {
        auto c = Cidr::Parse(raws[i]);
        if (!c.ok()) return Err(item, c.status().message());
        ValueTest cv;
        cv.kind = ValueTest::Kind::kCidr;
        cv.cidr = std::make_shared<Cidr>(*c);
        if (i + 1 < raws.size()) ft->values.push_back(std::move(cv));
        else v = std::move(cv);
      }
      if (raws.empty()) v.kind = ValueTest::Kind::kNever;
    } else if (m.re) {
      auto re = Regex::Compile(raw, m.re_i, m.re_m, m.re_s);
      if (!re.ok()) return Err(item, re.status().message());
      v.kind = ValueTest::Kind::kRegex;
      v.regex = *re;
    } else if (m.fieldref) {
      v.kind = ValueTest::Kind::kFieldRef;
      v.ref_field = FieldId(ls, raw);
      v.ref_cased = m.cased;
      v.ref_kind = m.contains     ? StringPattern::Kind::kContains
                   : m.startswith ? StringPattern::Kind::kPrefix
                   : m.endswith   ? StringPattern::Kind::kSuffix
                                  : StringPattern::Kind::kExact;
    } else {
      KW_LOAD_CHECK(CompileStringValue(item, m, raw, &v));
    }
    ft->values.push_back(std::move(v));
    return std::nullopt;
  }

  MaybeError CompileFieldTest(const YAML::Node& key, const YAML::Node& value,
                              const LogSourceKey& ls, FieldTest* ft) {
    std::string spec = Scalar(key);
    std::vector<std::string> parts;
    size_t start = 0;
    while (true) {
      size_t bar = spec.find('|', start);
      parts.push_back(spec.substr(start, bar - start));
      if (bar == std::string::npos) break;
      start = bar + 1;
    }
    Modifiers m;
    KW_LOAD_CHECK(ParseModifiers(key, std::vector<std::string>(parts.begin() + 1, parts.end()), &m));
    current_field_ = parts[0];
    current_ls_ = &ls;
    if (parts[0].empty()) {
      if (m.exists || m.fieldref || m.neq) return Err(key, "keyword search cannot use exists, fieldref or neq");
      // Keywords are full-text searches: a value anywhere in a field.
      if (!m.startswith && !m.endswith && !m.re && !m.cidr && !m.has_cmp) m.contains = true;
      ft->field = -1;
    } else {
      ft->field = FieldId(ls, parts[0]);
    }
    ft->all = m.all;
    ft->neq = m.neq;
    if (value.IsSequence()) {
      if (value.size() == 0) return Err(value, "empty list of values");
      for (const auto& item : value) KW_LOAD_CHECK(CompileValue(item, m, ls, ft));
    } else {
      KW_LOAD_CHECK(CompileValue(value, m, ls, ft));
    }
    if (m.all && ft->values.size() < 2 && !value.IsSequence()) {
      // The specification forbids `all` on a single value; it means the same as without.
      ft->all = false;
    }
    return std::nullopt;
  }

  MaybeError CompileKeywords(const std::vector<YAML::Node>& items, const LogSourceKey& ls,
                             std::vector<FieldTest>* group) {
    FieldTest ft;
    ft.field = -1;
    Modifiers m;
    m.contains = true;
    current_field_.clear();
    current_ls_ = &ls;
    for (const auto& item : items) KW_LOAD_CHECK(CompileValue(item, m, ls, &ft));
    group->push_back(std::move(ft));
    return std::nullopt;
  }

  MaybeError CompileMap(const YAML::Node& map, const LogSourceKey& ls,
                        std::vector<FieldTest>* group) {
    if (map.size() == 0) return Err(map, "empty map");
    for (const auto& kv : map) {
      if (!kv.first.IsScalar()) return Err(kv.first, "field name must be a string");
      FieldTest ft;
      KW_LOAD_CHECK(CompileFieldTest(kv.first, kv.second, ls, &ft));
      group->push_back(std::move(ft));
    }
    return std::nullopt;
  }

  MaybeError CompileSearch(const YAML::Node& n, const LogSourceKey& ls, Selection* sel) {
    if (n.IsMap()) {
      sel->groups.emplace_back();
      return CompileMap(n, ls, &sel->groups.back());
    }
    if (n.IsSequence()) {
      if (n.size() == 0) return Err(n, "search identifier '" + sel->name + "' is an empty list");
      std::vector<YAML::Node> keywords;
      for (const auto& item : n) {
        if (item.IsMap()) {
          sel->groups.emplace_back();
          KW_LOAD_CHECK(CompileMap(item, ls, &sel->groups.back()));
        } else if (item.IsScalar()) {
          keywords.push_back(item);
        } else {
          return Err(item, "search identifier list items must be maps or strings");
        }
      }
      if (!keywords.empty()) {
        sel->groups.emplace_back();
        KW_LOAD_CHECK(CompileKeywords(keywords, ls, &sel->groups.back()));
      }
      return std::nullopt;
    }
    if (n.IsScalar()) {
      sel->groups.emplace_back();
      return CompileKeywords({n}, ls, &sel->groups.back());
    }
    return Err(n, "search identifier '" + sel->name + "' is empty");
  }

  // Compiles a detection section (or a filter section); `skip` names keys that are not search
  // identifiers besides `condition`.
  MaybeError CompileDetection(const YAML::Node& det, const LogSourceKey& ls, Detection* out,
                              std::initializer_list<std::string_view> skip) {
    if (!det.IsMap()) return Err(det, "detection must be a map");
    YAML::Node cond;
    bool has_cond = false;
    std::vector<std::string> names;
    for (const auto& kv : det) {
      std::string k = Scalar(kv.first);
      if (k == "condition") {
        cond = kv.second;
        has_cond = true;
        continue;
      }
      if (k == "timeframe") {
        return Err(kv.first, "detection 'timeframe' (Sigma 1 aggregations) is not supported; use a correlation rule");
      }
      if (std::find(skip.begin(), skip.end(), k) != skip.end()) continue;
      Selection sel;
      sel.name = k;
      KW_LOAD_CHECK(CompileSearch(kv.second, ls, &sel));
      names.push_back(k);
      out->selections.push_back(std::move(sel));
    }
    if (!has_cond) return Err(det, "detection has no condition");
    std::vector<YAML::Node> conds;
    if (cond.IsSequence()) {
      for (const auto& c : cond) conds.push_back(c);
    } else {
      conds.push_back(cond);
    }
    if (conds.empty()) return Err(cond, "empty condition list");
    for (const auto& c : conds) {
      if (!c.IsScalar()) return Err(c, "condition must be a string");
      auto root = ParseCondition(c.Scalar(), names, &out->condition);
      if (!root.ok()) return Err(c, root.status().message());
      out->roots.push_back(*root);
    }
    data->max_selections = std::max(data->max_selections, out->selections.size());
    return std::nullopt;
  }

  // ---- documents ----

  static LogSourceKey ParseLogSource(const YAML::Node& n) {
    LogSourceKey k;
    if (n && n.IsMap()) {
      k.product = AsciiLowerCopy(Scalar(n["product"]));
      k.service = AsciiLowerCopy(Scalar(n["service"]));
      k.category = AsciiLowerCopy(Scalar(n["category"]));
    }
    return k;
  }

  void FillInfo(const YAML::Node& doc, const std::string& file, RuleInfo* info) {
    info->id = Scalar(doc["id"]);
    info->name = Scalar(doc["name"]);
    info->title = Scalar(doc["title"]);
    info->level = AsciiLowerCopy(Scalar(doc["level"]));
    info->status = AsciiLowerCopy(Scalar(doc["status"]));
    info->description = Scalar(doc["description"]);
    info->author = doc["author"] && doc["author"].IsSequence() ? Join(StringList(doc["author"]), ", ")
                                                               : Scalar(doc["author"]);
    info->tags = StringList(doc["tags"]);
    for (const auto& t : info->tags) {
      if (t.rfind("attack.", 0) == 0) info->attack.push_back(t);
    }
    info->references = StringList(doc["references"]);
    info->falsepositives = StringList(doc["falsepositives"]);
    info->file = file;
    info->line = doc.Mark().line + 1 + line_offset_;
  }

  MaybeError LoadDetectionRule(const YAML::Node& doc, const std::string& file) {
    DetectionRule r;
    FillInfo(doc, file, &r.info);
    r.logsource = ParseLogSource(doc["logsource"]);
    r.info.product = r.logsource.product;
    r.info.service = r.logsource.service;
    r.info.category = r.logsource.category;
    if (r.info.title.empty()) Warn(file, doc.Mark(), r.info.id, "rule has no title");
    KW_LOAD_CHECK(CompileDetection(doc["detection"], r.logsource, &r.detection, {}));
    data->rules.push_back(std::move(r));
    ++report->rules;
    return std::nullopt;
  }

  static Fallible<int64_t> ParseTimespan(const YAML::Node& n) {
    std::string s = Scalar(n);
    Fallible<int64_t> out;
    if (s.size() < 2) {
      out.error = Err(n, "timespan must be a number and a unit (s, m, h, d, w), e.g. 15m");
      return out;
    }
    char unit = s.back();
    auto num = ParseNumber(std::string_view(s).substr(0, s.size() - 1));
    int64_t mult = unit == 's' ? 1000 : unit == 'm' ? 60000 : unit == 'h' ? 3600000
                 : unit == 'd' ? 86400000 : unit == 'w' ? 7 * 86400000LL : 0;
    if (!num || mult == 0 || *num <= 0 || *num > 1e6 || *num != static_cast<int64_t>(*num)) {
      out.error = Err(n, "timespan '" + s + "' must be a positive integer and a unit (s, m, h, d, w)");
      return out;
    }
    out.value = static_cast<int64_t>(*num) * mult;
    return out;
  }

  MaybeError LoadCorrelation(const YAML::Node& doc, const std::string& file) {
    CorrelationRule c;
    FillInfo(doc, file, &c.info);
    c.info.is_correlation = true;
    const YAML::Node corr = doc["correlation"];
    if (!corr.IsMap()) return Err(corr, "correlation must be a map");
    std::string type = AsciiLowerCopy(Scalar(corr["type"]));
    c.info.correlation_type = type;
    if (type == "event_count") c.type = CorrelationType::kEventCount;
    else if (type == "value_count") c.type = CorrelationType::kValueCount;
    else if (type == "temporal") c.type = CorrelationType::kTemporal;
    else if (type == "temporal_ordered") c.type = CorrelationType::kTemporalOrdered;
    else if (type == "value_sum") c.type = CorrelationType::kValueSum;
    else if (type == "value_avg") c.type = CorrelationType::kValueAvg;
    else if (type == "value_median") c.type = CorrelationType::kValueMedian;
    else if (type == "value_percentile") c.type = CorrelationType::kValuePercentile;
    else {
      return Err(corr["type"] ? corr["type"] : corr, "unknown correlation type '" + type + "'");
    }
    c.rule_names = StringList(corr["rules"]);
    if (c.rule_names.empty()) return Err(corr, "correlation names no rules");
    c.group_by = StringList(corr["group-by"]);
    auto ts = ParseTimespan(corr["timespan"] ? corr["timespan"] : corr["timeframe"]);
    if (ts.error) return ts.error;
    c.timespan_ms = *ts.value;
    const YAML::Node cond = corr["condition"];
    bool temporal = c.type == CorrelationType::kTemporal || c.type == CorrelationType::kTemporalOrdered;
    if (cond) {
      if (!cond.IsMap()) return Err(cond, "correlation condition must be a map");
      for (const auto& kv : cond) {
        std::string k = AsciiLowerCopy(Scalar(kv.first));
        if (k == "field") {
          c.field = Scalar(kv.second);
          continue;
        }
        CompareOp op;
        if (k == "gt") op = CompareOp::kGt;
        else if (k == "gte") op = CompareOp::kGte;
        else if (k == "lt") op = CompareOp::kLt;
        else if (k == "lte") op = CompareOp::kLte;
        else if (k == "eq") op = CompareOp::kEq;
        else if (k == "neq") op = CompareOp::kNeq;
        else return Err(kv.first, "unknown correlation condition '" + k + "'");
        auto n = ParseNumber(Scalar(kv.second));
        if (!n) return Err(kv.second, "correlation condition value must be a number");
        c.conditions.push_back({op, *n});
      }
    } else if (!temporal) {
      return Err(corr, "correlation needs a condition");
    }
    if (!temporal && c.conditions.empty()) return Err(cond, "correlation condition needs gt, gte, lt, lte, eq or neq");
    bool needs_field = c.type == CorrelationType::kValueCount || c.type == CorrelationType::kValueSum ||
                       c.type == CorrelationType::kValueAvg || c.type == CorrelationType::kValueMedian ||
                       c.type == CorrelationType::kValuePercentile;
    if (needs_field && c.field.empty()) return Err(cond, type + " needs condition.field");
    const YAML::Node aliases = corr["aliases"];
    if (aliases) {
      if (!aliases.IsMap()) return Err(aliases, "aliases must be a map");
      for (const auto& a : aliases) {
        if (!a.second.IsMap()) return Err(a.second, "an alias maps rule names to fields");
        auto& m = c.aliases[Scalar(a.first)];
        for (const auto& rf : a.second) m[Scalar(rf.first)] = Scalar(rf.second);
      }
    }
    c.generate = Truthy(corr["generate"]) || Truthy(doc["generate"]);
    YAML::Mark mark = doc.Mark();
    mark.line += line_offset_;  // linking happens after all files: keep the absolute line
    for (const auto& g : c.group_by) {
      if (!c.aliases.count(g)) c.info.group_by.push_back(g);
    }
    correlations.push_back({std::move(c), mark});
    return std::nullopt;
  }

  MaybeError LoadFilter(const YAML::Node& doc, const std::string& file) {
    FilterRule f;
    FillInfo(doc, file, &f.info);
    f.logsource = ParseLogSource(doc["logsource"]);
    const YAML::Node filter = doc["filter"];
    if (!filter.IsMap()) return Err(filter, "filter must be a map");
    f.rules = StringList(filter["rules"]);
    KW_LOAD_CHECK(CompileDetection(filter, f.logsource, &f.detection, {"rules"}));
    data->filters.push_back(std::move(f));
    ++report->filters;
    return std::nullopt;
  }

  void LoadDocument(const YAML::Node& doc, const std::string& file) {
    if (!doc || doc.IsNull()) return;  // an empty document (e.g. a trailing ---)
    ++report->documents;
    std::string id, title;
    try {
      if (!doc.IsMap()) {
        Reject(file, doc.Mark(), "", "", "document is not a map");
        return;
      }
      id = Scalar(doc["id"]);
      title = Scalar(doc["title"]);
      std::string status = AsciiLowerCopy(Scalar(doc["status"]));
      for (const auto& s : options.skip_statuses) {
        if (!status.empty() && AsciiEqualsIgnoreCase(s, status)) {
          ++report->skipped;
          return;
        }
      }
      MaybeError e;
      if (doc["action"]) {
        e = Err(doc["action"], "Sigma 1 rule collections ('action: global/reset/repeat') are not supported");
      } else if (doc["correlation"]) {
        e = LoadCorrelation(doc, file);
      } else if (doc["filter"]) {
        e = LoadFilter(doc, file);
      } else if (doc["detection"]) {
        e = LoadDetectionRule(doc, file);
      } else {
        e = Err(doc, "document has no detection, correlation or filter section");
      }
      if (e) Reject(file, e->mark, id, title, e->message);
    } catch (const YAML::Exception& ex) {
      Reject(file, ex.mark, id, title, ex.msg);
    } catch (const std::exception& ex) {
      Reject(file, YAML::Mark::null_mark(), id, title, ex.what());
    }
  }

  // ---- mappings ----

  MaybeError ParseMappingEntry(const YAML::Node& n, const std::string& source) {
    if (!n.IsMap()) return Err(n, "mapping entry must be a map");
    MappingEntry e;
    e.source = source;
    e.logsource = ParseLogSource(n["logsource"]);
    const YAML::Node fm = n["fieldmappings"];
    if (fm) {
      if (!fm.IsMap()) return Err(fm, "fieldmappings must be a map");
      for (const auto& kv : fm) {
        auto to = StringList(kv.second);
        if (to.empty()) return Err(kv.second, "fieldmapping target must be a string or list");
        e.fieldmappings.push_back({Scalar(kv.first), to});
      }
    }
    e.field_prefixes = StringList(n["field_prefixes"]);
    const YAML::Node vm = n["value_mappings"];
    if (vm) {
      if (!vm.IsMap()) return Err(vm, "value_mappings must be a map of field to a map of values");
      for (const auto& fv : vm) {
        if (!fv.second.IsMap()) return Err(fv.second, "value_mappings of a field must be a map");
        std::vector<std::pair<std::string, std::vector<std::string>>> values;
        for (const auto& kv : fv.second) values.push_back({Scalar(kv.first), StringList(kv.second)});
        e.value_mappings.push_back({Scalar(fv.first), std::move(values)});
      }
    }
    const YAML::Node ts = n["timestamp"];
    if (ts) {
      if (ts.IsScalar()) {
        e.timestamp_field = ts.Scalar();
      } else if (ts.IsMap()) {
        e.timestamp_field = Scalar(ts["field"]);
        std::string f = AsciiLowerCopy(Scalar(ts["format"]));
        if (f.empty() || f == "auto") e.timestamp_format = TimeFormat::kAuto;
        else if (f == "iso8601") e.timestamp_format = TimeFormat::kIso;
        else if (f == "epoch" || f == "epoch_seconds") e.timestamp_format = TimeFormat::kEpochSeconds;
        else if (f == "epoch_millis" || f == "epoch_ms") e.timestamp_format = TimeFormat::kEpochMillis;
        else return Err(ts["format"], "unknown timestamp format '" + f + "'");
      } else {
        return Err(ts, "timestamp must be a field name or a map");
      }
    }
    data->mappings.push_back(std::move(e));
    const YAML::Node cond = n["conditions"];
    if (cond) {
      MappingEntry& added = data->mappings.back();
      added.has_conditions = true;
      // The conditions are a Sigma selection (map, or list of maps) over the raw event, resolved
      // with the mapping's own field renames.
      YAML::Node det;
      det["selection"] = cond;
      det["condition"] = "selection";
      Detection d;
      KW_LOAD_CHECK(CompileDetection(det, added.logsource, &d, {}));
      data->mappings.back().conditions = std::move(d);
    }
    return std::nullopt;
  }

  Status AddMapping(std::string_view yaml, const std::string& source) {
    try {
      YAML::Node root = YAML::Load(std::string(yaml));
      YAML::Node list = root.IsMap() ? root["mappings"] : root;
      if (!list || !list.IsSequence()) {
        return InvalidArgumentError(source + ": a mapping file holds a 'mappings' list");
      }
      for (const auto& n : list) {
        auto e = ParseMappingEntry(n, source);
        if (e) {
          return InvalidArgumentError(source + ":" + std::to_string(e->mark.line + 1) + ":" +
                                      std::to_string(e->mark.column + 1) + ": " + e->message);
        }
      }
    } catch (const YAML::Exception& ex) {
      return InvalidArgumentError(source + ":" + std::to_string(ex.mark.line + 1) + ":" +
                                  std::to_string(ex.mark.column + 1) + ": " + ex.msg);
    }
    return Status::Ok();
  }

  // Splits a YAML stream into documents at "---" lines (and after "..." lines), keeping each
  // document's first line number. yaml-cpp 0.7's LoadAll loops forever, allocating, on some
  // malformed streams (e.g. " ,": jbeder/yaml-cpp#1040, fixed upstream by #1319), while Load of
  // one document always returns, so documents are handed to Load one at a time.
  static std::vector<std::pair<int, std::string_view>> SplitDocuments(std::string_view text) {
    std::vector<std::pair<int, std::string_view>> docs;
    size_t start = 0, pos = 0;
    int line = 0, start_line = 0;
    bool skipping = false;  // after "...": until the next "---"
    auto flush = [&](size_t end) {
      if (skipping || end <= start) return;
      std::string_view d = text.substr(start, end - start);
      // A chunk of only directives (%YAML before "---"), comments and blanks holds no document.
      bool content = false;
      for (size_t p = 0; p < d.size() && !content;) {
        size_t e = d.find('\n', p);
        if (e == std::string_view::npos) e = d.size();
        std::string_view l = d.substr(p, e - p);
        size_t f = l.find_first_not_of(" \t\r");
        if (f != std::string_view::npos && l[f] != '#' && !(f == 0 && l[0] == '%')) content = true;
        p = e + 1;
      }
      if (content) docs.push_back({start_line, d});
    };
    while (pos <= text.size()) {
      size_t eol = text.find('\n', pos);
      if (eol == std::string_view::npos) eol = text.size();
      std::string_view l = text.substr(pos, eol - pos);
      auto marker = [&](std::string_view m) {
        return l.substr(0, 3) == m && (l.size() == 3 || l[3] == ' ' || l[3] == '\t' || l[3] == '\r');
      };
      if (marker("---")) {
        flush(pos);
        skipping = false;
        // The rest of the line (e.g. "--- # comment") stays in the new document.
        start = pos + 3;
        start_line = line;
      } else if (marker("...")) {
        flush(pos);
        skipping = true;
        start = eol + 1;
        start_line = line + 1;
      }
      if (eol == text.size()) break;
      pos = eol + 1;
      ++line;
    }
    if (start < text.size()) flush(text.size());
    return docs;
  }

  void AddRules(std::string_view yaml, const std::string& file) {
    ++report->files;
    for (const auto& [first_line, text] : SplitDocuments(yaml)) {
      line_offset_ = first_line;
      YAML::Node doc;
      try {
        doc = YAML::Load(std::string(text));
      } catch (const YAML::Exception& ex) {
        Reject(file, ex.mark, "", "", "YAML: " + ex.msg);
        continue;
      } catch (const std::exception& ex) {
        Reject(file, YAML::Mark::null_mark(), "", "", std::string("YAML: ") + ex.what());
        continue;
      }
      LoadDocument(doc, file);
    }
    line_offset_ = 0;
  }

  // ---- linking ----

  void LinkCorrelations() {
    StringMap<RuleRef> by_key;  // id and name
    for (size_t i = 0; i < data->rules.size(); ++i) {
      const RuleInfo& info = data->rules[i].info;
      RuleRef ref{false, static_cast<int>(i)};
      if (!info.id.empty()) by_key.emplace(info.id, ref);
      if (!info.name.empty()) by_key.emplace(info.name, ref);
    }
    // Correlations may refer to correlations; reject unresolved ones until nothing changes.
    std::vector<bool> alive(correlations.size(), true);
    bool changed = true;
    std::vector<std::string> reasons(correlations.size());
    while (changed) {
      changed = false;
      StringMap<int> corr_key;
      for (size_t i = 0; i < correlations.size(); ++i) {
        if (!alive[i]) continue;
        const RuleInfo& info = correlations[i].rule.info;
        if (!info.id.empty()) corr_key.emplace(info.id, static_cast<int>(i));
        if (!info.name.empty()) corr_key.emplace(info.name, static_cast<int>(i));
      }
      for (size_t i = 0; i < correlations.size(); ++i) {
        if (!alive[i]) continue;
        for (const std::string& n : correlations[i].rule.rule_names) {
          if (by_key.count(n) == 0 && corr_key.count(n) == 0) {
            alive[i] = false;
            reasons[i] = "correlation refers to unknown rule '" + n + "'";
            changed = true;
            break;
          }
        }
      }
    }
    std::vector<int> new_index(correlations.size(), -1);
    int next = 0;
    for (size_t i = 0; i < correlations.size(); ++i) {
      if (alive[i]) new_index[i] = next++;
    }
    StringMap<int> corr_key;
    for (size_t i = 0; i < correlations.size(); ++i) {
      if (!alive[i]) continue;
      const RuleInfo& info = correlations[i].rule.info;
      if (!info.id.empty()) corr_key.emplace(info.id, new_index[i]);
      if (!info.name.empty()) corr_key.emplace(info.name, new_index[i]);
    }
    for (size_t i = 0; i < correlations.size(); ++i) {
      auto& pc = correlations[i];
      if (!alive[i]) {
        Reject(pc.rule.info.file, pc.mark, pc.rule.info.id, pc.rule.info.title, reasons[i]);
        continue;
      }
      for (const std::string& n : pc.rule.rule_names) {
        auto it = by_key.find(n);
        pc.rule.refs.push_back(it != by_key.end() ? it->second : RuleRef{true, corr_key.at(n)});
      }
      data->correlations.push_back(std::move(pc.rule));
      ++report->correlations;
    }
    // Cycles (a correlation reaching itself) cannot be evaluated: drop them.
    size_t n = data->correlations.size();
    std::vector<int> state(n, 0);  // 0 new, 1 on stack, 2 done
    std::vector<bool> cyclic(n, false);
    std::function<bool(int)> dfs = [&](int c) -> bool {
      if (state[c] == 1) return true;
      if (state[c] == 2) return cyclic[c];
      state[c] = 1;
      bool cyc = false;
      for (const RuleRef& r : data->correlations[c].refs) {
        if (r.correlation && dfs(r.index)) cyc = true;
      }
      state[c] = 2;
      cyclic[c] = cyc;
      return cyc;
    };
    for (size_t c = 0; c < n; ++c) dfs(static_cast<int>(c));
    for (size_t c = 0; c < n; ++c) {
      if (cyclic[c]) {
        // Keep indices stable: neutralise instead of erasing.
        auto& cr = data->correlations[c];
        Reject(cr.info.file, YAML::Mark::null_mark(), cr.info.id, cr.info.title,
               "correlation chain is cyclic");
        --report->correlations;
        cr.refs.clear();
      }
    }
    for (size_t c = 0; c < n; ++c) {
      CorrelationRule& cr = data->correlations[c];
      for (const RuleRef& r : cr.refs) {
        std::vector<int> gf;
        int vf = -1;
        if (!r.correlation) {
          DetectionRule& dr = data->rules[r.index];
          dr.correlations.push_back(static_cast<int>(c));
          auto field_for = [&](const std::string& name) {
            auto a = cr.aliases.find(name);
            if (a != cr.aliases.end()) {
              auto f = a->second.find(dr.info.name);
              if (f == a->second.end()) f = a->second.find(dr.info.id);
              if (f != a->second.end()) return FieldId(dr.logsource, f->second);
            }
            return FieldId(dr.logsource, name);
          };
          for (const auto& g : cr.group_by) gf.push_back(field_for(g));
          if (!cr.field.empty()) vf = field_for(cr.field);
        } else {
          data->correlations[r.index].parents.push_back(static_cast<int>(c));
        }
        cr.group_fields.push_back(std::move(gf));
        cr.value_field.push_back(vf);
      }
    }
    // A referenced rule alerts on its own only if some referencing correlation says `generate`.
    for (auto& r : data->rules) {
      if (r.correlations.empty()) continue;
      r.emit = false;
      for (int c : r.correlations) {
        if (data->correlations[c].generate) r.emit = true;
      }
    }
    for (auto& c : data->correlations) {
      if (c.parents.empty()) continue;
      c.emit = false;
      for (int p : c.parents) {
        if (data->correlations[p].generate) c.emit = true;
      }
    }
  }

  void LinkFilters() {
    for (size_t f = 0; f < data->filters.size(); ++f) {
      const FilterRule& fr = data->filters[f];
      for (auto& r : data->rules) {
        if (!fr.logsource.SubsetOf(r.logsource)) continue;
        bool named = fr.rules.empty();
        for (const auto& n : fr.rules) {
          if ((!r.info.id.empty() && n == r.info.id) || (!r.info.name.empty() && n == r.info.name)) {
            named = true;
          }
        }
        if (named) r.filters.push_back(static_cast<int>(f));
      }
    }
  }

  // Chooses, for a rule, a field whose exact values are necessary for a match.
  bool IndexKey(const DetectionRule& r, int* field, std::vector<std::string>* values) {
    if (r.detection.roots.size() != 1) return false;
    int best_field = -1;
    size_t best_count = SIZE_MAX;
    std::vector<std::string> best_values;
    for (int ref : RequiredRefs(r.detection.condition, r.detection.roots[0])) {
      const Selection& s = r.detection.selections[ref];
      if (s.groups.size() != 1) continue;
      for (const FieldTest& t : s.groups[0]) {
        if (t.field < 0 || t.all || t.neq) continue;
        std::vector<std::string> vals;
        bool ok = true;
        for (const ValueTest& v : t.values) {
          if (v.kind != ValueTest::Kind::kString) { ok = false; break; }
          for (const StringPattern& p : v.patterns) {
            if (p.kind() != StringPattern::Kind::kExact) { ok = false; break; }
            vals.push_back(AsciiLowerCopy(p.literal()));
          }
          if (!ok) break;
        }
        if (!ok || vals.empty()) continue;
        if (vals.size() < best_count) {
          best_count = vals.size();
          best_field = t.field;
          best_values = std::move(vals);
        }
      }
    }
    if (best_field < 0) return false;
    *field = best_field;
    *values = std::move(best_values);
    return true;
  }

  // Gives every Hyperscan-able string test an id and compiles one database per field.
  void BuildFieldDbs() {
    std::vector<std::vector<FieldDb::Expr>> per_field(data->fields.specs.size());
    std::vector<std::vector<ValueTest*>> tests(data->fields.specs.size());
    uint32_t next_id = 0;
    auto visit = [&](Detection& d) {
      for (Selection& s : d.selections) {
        for (auto& group : s.groups) {
          for (FieldTest& t : group) {
            if (t.field < 0) continue;
            for (ValueTest& v : t.values) {
              if (v.kind != ValueTest::Kind::kString || v.patterns.empty()) continue;
              bool ok = true;
              for (const StringPattern& p : v.patterns) ok = ok && HsEligible(p);
              if (!ok) continue;
              v.hs_id = static_cast<int>(next_id++);
              for (const StringPattern& p : v.patterns) {
                unsigned pid = static_cast<unsigned>(data->hs_patterns.size());
                data->hs_patterns.push_back({static_cast<uint32_t>(v.hs_id),
                                             static_cast<uint32_t>(p.literal().size()), p.kind()});
                per_field[t.field].push_back(FieldDb::ToExpr(p, pid));
              }
              tests[t.field].push_back(&v);
            }
          }
        }
      }
    };
    for (auto& r : data->rules) visit(r.detection);
    for (auto& f : data->filters) visit(f.detection);
    for (auto& m : data->mappings) visit(m.conditions);
    data->field_dbs.resize(data->fields.specs.size());
    for (size_t f = 0; f < per_field.size(); ++f) {
      if (per_field[f].empty()) continue;
      auto db = FieldDb::Compile(per_field[f]);
      if (!db.ok()) {
        // Matching stays correct without the database (pattern by pattern), only slower.
        Warn("(engine)", YAML::Mark::null_mark(), "",
             "field '" + data->fields.specs[f].sigma_name + "': " + db.status().message());
        for (ValueTest* v : tests[f]) v->hs_id = -1;
        continue;
      }
      data->field_dbs[f] = std::move(*db);
    }
    data->hs_ids = next_id;
    data->prefilter_rule.assign(next_id, -1);
  }

  // Hyperscan ids of which at least one must match for the rule to match, with the fields they
  // belong to. Derived from the condition tree: a search identifier qualifies when each of its
  // AND-groups has a string test on a field with a database; AND takes its smallest qualifying
  // child, OR needs every child to qualify (union), NOT never qualifies.
  using IdSet = std::vector<std::pair<int, int>>;  // (hs id, field)

  std::optional<IdSet> SelectionIds(const Selection& s) {
    IdSet out;
    if (s.groups.empty()) return std::nullopt;
    for (const auto& group : s.groups) {
      const FieldTest* best = nullptr;
      for (const FieldTest& t : group) {
        if (t.field < 0 || t.neq || t.values.empty()) continue;
        bool ok = true;
        for (const ValueTest& v : t.values) ok = ok && v.hs_id >= 0;
        if (!ok) continue;
        size_t n = t.all ? 1 : t.values.size();
        if (!best || n < (best->all ? 1 : best->values.size())) best = &t;
      }
      if (!best) return std::nullopt;
      if (best->all) {
        out.push_back({best->values[0].hs_id, best->field});
      } else {
        for (const ValueTest& v : best->values) out.push_back({v.hs_id, best->field});
      }
    }
    return out;
  }

  std::optional<IdSet> NodeIds(const Detection& d, int node, int depth) {
    if (depth > 64) return std::nullopt;
    const CondNode& n = d.condition.nodes[node];
    switch (n.kind) {
      case CondNode::Kind::kRef:
        return SelectionIds(d.selections[n.ref]);
      case CondNode::Kind::kAnd: {
        std::optional<IdSet> best;
        for (int k : n.children) {
          auto ids = NodeIds(d, k, depth + 1);
          if (ids && (!best || ids->size() < best->size())) best = std::move(ids);
        }
        return best;
      }
      case CondNode::Kind::kOr: {
        IdSet all;
        for (int k : n.children) {
          auto ids = NodeIds(d, k, depth + 1);
          if (!ids) return std::nullopt;
          all.insert(all.end(), ids->begin(), ids->end());
        }
        return all;
      }
      default:
        return std::nullopt;
    }
  }

  bool PrefilterKey(const DetectionRule& r, std::vector<int>* ids, std::vector<int>* fields) {
    IdSet all;
    for (int root : r.detection.roots) {
      auto s = NodeIds(r.detection, root, 0);
      if (!s) return false;
      all.insert(all.end(), s->begin(), s->end());
    }
    if (all.empty()) return false;
    for (const auto& [id, field] : all) {
      // An id may only pre-select one rule; ids are per value test, so this never conflicts.
      ids->push_back(id);
      if (std::find(fields->begin(), fields->end(), field) == fields->end()) fields->push_back(field);
    }
    return true;
  }

  void BuildGroups() {
    for (size_t i = 0; i < data->rules.size(); ++i) {
      DetectionRule& r = data->rules[i];
      int g = -1;
      for (size_t k = 0; k < data->groups.size(); ++k) {
        if (data->groups[k].logsource == r.logsource) g = static_cast<int>(k);
      }
      if (g < 0) {
        data->groups.emplace_back();
        data->groups.back().logsource = r.logsource;
        g = static_cast<int>(data->groups.size() - 1);
      }
      r.group = g;
      RuleGroup& group = data->groups[g];
      group.rules.push_back(static_cast<int>(i));
      int field;
      std::vector<std::string> values;
      if (!IndexKey(r, &field, &values)) {
        std::vector<int> ids, fields;
        if (PrefilterKey(r, &ids, &fields)) {
          for (int id : ids) data->prefilter_rule[id] = static_cast<int>(i);
          for (int f : fields) {
            if (std::find(group.hs_fields.begin(), group.hs_fields.end(), f) == group.hs_fields.end()) {
              group.hs_fields.push_back(f);
            }
          }
        } else {
          group.unindexed.push_back(static_cast<int>(i));
        }
        continue;
      }
      RuleGroup::IndexedField* idx = nullptr;
      for (auto& f : group.index) {
        if (f.field == field) idx = &f;
      }
      if (!idx) {
        group.index.emplace_back();
        idx = &group.index.back();
        idx->field = field;
      }
      for (auto& v : values) {
        auto& list = idx->by_value[v];
        if (list.empty() || list.back() != static_cast<int>(i)) list.push_back(static_cast<int>(i));
      }
    }
  }
};

Loader::Loader(const LoadOptions& options, LoadReport* report)
    : impl_(std::make_unique<Impl>(options, report)) {}
Loader::~Loader() = default;

Status Loader::AddMapping(std::string_view yaml, const std::string& source) {
  return impl_->AddMapping(yaml, source);
}

void Loader::AddRules(std::string_view yaml, const std::string& file) {
  impl_->AddRules(yaml, file);
}

std::shared_ptr<RuleSetData> Loader::Finish() {
  impl_->LinkCorrelations();
  impl_->LinkFilters();
  RuleSetData& d = *impl_->data;
  for (const char* f : {"@timestamp", "timestamp", "time", "TimeGenerated", "CreationTime",
                        "Event.System.TimeCreated.#attributes.SystemTime", "eventTime",
                        "published", "createdDateTime", "activityDateTime"}) {
    d.default_time_fields.push_back(d.fields.Intern(f, {f}));
  }
  for (MappingEntry& e : d.mappings) {
    if (!e.timestamp_field.empty()) {
      e.timestamp_field_id = d.fields.Intern(e.timestamp_field, {e.timestamp_field});
    }
  }
  // After this point no field is interned: the databases are indexed by field id.
  impl_->BuildFieldDbs();
  impl_->BuildGroups();
  return impl_->data;
}

bool LogSourceKey::SubsetOf(const LogSourceKey& o) const {
  return (product.empty() || product == o.product) && (service.empty() || service == o.service) &&
         (category.empty() || category == o.category);
}

}  // namespace kw::detect::internal
