#include "detect/matcher.h"

#include <charconv>
#include <cmath>
#include <cstring>

namespace kw::detect::internal {

using simdjson::dom::element;
using simdjson::dom::element_type;

namespace {
// Nested arrays and #text wrappers deeper than this are ignored (the parser already bounds
// document depth; this bounds our own recursion independently).
constexpr int kMaxDepth = 64;
}  // namespace

bool Compare(double a, CompareOp op, double b) {
  switch (op) {
    case CompareOp::kEq: return a == b;
    case CompareOp::kNeq: return a != b;
    case CompareOp::kLt: return a < b;
    case CompareOp::kLte: return a <= b;
    case CompareOp::kGt: return a > b;
    case CompareOp::kGte: return a >= b;
  }
  return false;
}

int FieldTable::Intern(std::string sigma_name, std::vector<std::string> paths) {
  std::string key;
  for (const auto& p : paths) {
    key += p;
    key += '\n';
  }
  auto it = index.find(key);
  if (it != index.end()) return it->second;
  int id = static_cast<int>(specs.size());
  specs.push_back({std::move(sigma_name), std::move(paths)});
  index.emplace(std::move(key), id);
  return id;
}

EventView::EventView(const RuleSetData* d, HsScratch* scratch)
    : fields_(&d->fields), data_(d), scratch_hs_(scratch) {
  field_gen_.assign(fields_->specs.size(), 0);
  field_span_.assign(fields_->specs.size(), Span{});
  id_gen_.assign(d->hs_ids, 0);
  scan_gen_.assign(fields_->specs.size(), 0);
  scan_span_.assign(fields_->specs.size(), Span{});
  matched_.reserve(256);
  values_.reserve(256);
  arena_.reserve(16 << 10);
}

void EventView::Reset(element root) {
  root_ = root;
  ++generation_;
  values_.clear();
  arena_.clear();
  matched_.clear();
}

int EventView::OnHsMatch(unsigned pattern, unsigned long long, unsigned long long to, unsigned,
                         void* ctx) {
  auto* self = static_cast<EventView*>(ctx);
  const HsPattern& p = self->data_->hs_patterns[pattern];
  if (!HsAccept(p, to, self->scan_len_)) return 0;
  uint32_t id = p.value_id;
  if (self->id_gen_[id] != self->generation_) {
    self->id_gen_[id] = self->generation_;
    self->matched_.push_back(id);
  }
  return 0;
}

EventView::Span EventView::ScanField(int id) {
  if (scan_gen_[id] == generation_) return scan_span_[id];
  Span values = Resolve(id);
  Span out;
  out.begin = static_cast<uint32_t>(matched_.size());
  const FieldDb& db = *data_->field_dbs[id];
  for (uint32_t i = values.begin; i < values.begin + values.count; ++i) {
    std::string_view text;
    if (!Raw(i, &text)) continue;
    if (text.empty()) text = std::string_view("", 0);
    scan_len_ = text.size();
    HsScan(db, *scratch_hs_, text, &EventView::OnHsMatch, this);
  }
  out.count = static_cast<uint32_t>(matched_.size()) - out.begin;
  scan_gen_[id] = generation_;
  scan_span_[id] = out;
  return out;
}

void EventView::AddValue(element e, int depth) {
  if (depth > kMaxDepth) return;
  element_type t = e.type();
  if (t == element_type::ARRAY) {
    simdjson::dom::array arr(e);
    for (element x : arr) AddValue(x, depth + 1);
    return;
  }
  if (t == element_type::OBJECT) {
    auto text = e.get_object().value_unsafe().at_key("#text");
    if (text.error() == simdjson::SUCCESS) {
      AddValue(text.value_unsafe(), depth + 1);
      return;
    }
  }
  Value v;
  v.el = e;
  v.type = t;
  char buf[32];
  std::string_view text;
  switch (t) {
    case element_type::INT64: {
      auto r = std::to_chars(buf, buf + sizeof buf, e.get_int64().value_unsafe());
      text = std::string_view(buf, r.ptr - buf);
      break;
    }
    case element_type::UINT64: {
      auto r = std::to_chars(buf, buf + sizeof buf, e.get_uint64().value_unsafe());
      text = std::string_view(buf, r.ptr - buf);
      break;
    }
    case element_type::DOUBLE: {
      auto r = std::to_chars(buf, buf + sizeof buf, e.get_double().value_unsafe());
      text = std::string_view(buf, r.ptr - buf);
      break;
    }
    case element_type::BOOL:
      text = e.get_bool().value_unsafe() ? "true" : "false";
      break;
    default:
      break;
  }
  if (!text.empty()) {
    v.raw_in_arena = true;
    v.raw_off = static_cast<uint32_t>(arena_.size());
    v.raw_len = static_cast<uint32_t>(text.size());
    arena_.append(text);
  }
  values_.push_back(v);
}

static bool FindMember(simdjson::dom::object o, std::string_view key, element* out) {
  auto r = o.at_key(key);
  if (r.error() == simdjson::SUCCESS) {
    *out = r.value_unsafe();
    return true;
  }
  for (auto field : o) {
    if (AsciiEqualsIgnoreCase(field.key, key)) {
      *out = field.value;
      return true;
    }
  }
  return false;
}

void EventView::Collect(element e, std::string_view path, int depth) {
  if (depth > kMaxDepth) return;
  if (path.empty()) {
    AddValue(e, depth);
    return;
  }
  element_type t = e.type();
  if (t == element_type::ARRAY) {
    simdjson::dom::array arr(e);
    for (element x : arr) Collect(x, path, depth + 1);
    return;
  }
  if (t != element_type::OBJECT) return;
  simdjson::dom::object o = e.get_object().value_unsafe();
  size_t dot = path.find('.');
  std::string_view seg = path.substr(0, dot);
  std::string_view rest = dot == std::string_view::npos ? std::string_view() : path.substr(dot + 1);
  element child;
  if (FindMember(o, seg, &child)) Collect(child, rest, depth + 1);
}

EventView::Span EventView::Resolve(int id) {
  if (field_gen_[id] == generation_) return field_span_[id];
  Span s;
  s.begin = static_cast<uint32_t>(values_.size());
  if (root_.type() == element_type::OBJECT) {
    simdjson::dom::object o = root_.get_object().value_unsafe();
    for (const std::string& path : fields_->specs[id].paths) {
      element child;
      if (path.find('.') != std::string::npos && FindMember(o, path, &child)) {
        AddValue(child, 1);
      } else {
        Collect(root_, path, 0);
      }
      if (values_.size() > s.begin) break;
    }
  }
  s.count = static_cast<uint32_t>(values_.size()) - s.begin;
  field_gen_[id] = generation_;
  field_span_[id] = s;
  return s;
}

bool EventView::Raw(uint32_t i, std::string_view* out) {
  const Value& v = values_[i];
  if (v.raw_in_arena) {
    *out = std::string_view(arena_.data() + v.raw_off, v.raw_len);
    return true;
  }
  if (v.type == element_type::STRING) {
    *out = v.el.get_string().value_unsafe();
    return true;
  }
  return false;
}

bool EventView::Lower(uint32_t i, std::string_view* out) {
  Value& v = values_[i];
  if (!v.low_done) {
    std::string_view raw;
    if (!Raw(i, &raw)) return false;
    // raw may point into arena_, which the resize below can move: keep its offset then.
    const bool in_arena = raw.data() >= arena_.data() && raw.data() < arena_.data() + arena_.size();
    const size_t raw_off = in_arena ? static_cast<size_t>(raw.data() - arena_.data()) : 0;
    const size_t off = arena_.size();
    arena_.resize(off + raw.size());
    const char* src = in_arena ? arena_.data() + raw_off : raw.data();
    char* dst = arena_.data() + off;
    for (size_t k = 0; k < raw.size(); ++k) dst[k] = AsciiLower(src[k]);
    v.low_off = static_cast<uint32_t>(off);
    v.low_len = static_cast<uint32_t>(raw.size());
    v.low_done = true;
  }
  *out = std::string_view(arena_.data() + v.low_off, v.low_len);
  return true;
}

bool EventView::FirstText(int field_id, std::string* out) {
  Span s = Resolve(field_id);
  for (uint32_t i = s.begin; i < s.begin + s.count; ++i) {
    std::string_view t;
    if (Raw(i, &t)) {
      out->assign(t);
      return true;
    }
  }
  return false;
}

static bool IsLeap(int y) { return (y % 4 == 0 && y % 100 != 0) || y % 400 == 0; }

static int DayOfYear(int y, int m, int d) {
  static const int kCum[] = {0, 31, 59, 90, 120, 151, 181, 212, 243, 273, 304, 334};
  return kCum[m - 1] + d + (m > 2 && IsLeap(y) ? 1 : 0);
}

// 0 = Monday.
static int Weekday(int y, int m, int d) {
  static const int t[] = {0, 3, 2, 5, 0, 3, 5, 1, 4, 6, 2, 4};
  if (m < 3) y -= 1;
  int w = (y + y / 4 - y / 100 + y / 400 + t[m - 1] + d) % 7;  // 0 = Sunday
  return (w + 6) % 7;
}

static int IsoWeek(int y, int m, int d) {
  int wd = Weekday(y, m, d);
  int week = (DayOfYear(y, m, d) - wd + 9) / 7;
  if (week < 1) {
    int py = y - 1;
    int dec31 = Weekday(py, 12, 31);
    int pdoy = IsLeap(py) ? 366 : 365;
    return (pdoy - dec31 + 9) / 7;
  }
  if (week == 53) {
    // Week 53 exists only if Dec 31 falls on Thursday or later in the week.
    int dec31 = Weekday(y, 12, 31);
    if (dec31 < 3) return 1;
  }
  return week;
}

bool ExtractTimePart(std::string_view s, TimePart part, double* out) {
  auto num = [&](size_t pos, size_t len, int* v) {
    if (pos + len > s.size()) return false;
    auto r = std::from_chars(s.data() + pos, s.data() + pos + len, *v);
    return r.ec == std::errc() && r.ptr == s.data() + pos + len;
  };
  int y, mo, d, h = 0, mi = 0;
  if (!num(0, 4, &y) || s.size() < 10 || s[4] != '-' || !num(5, 2, &mo) || s[7] != '-' ||
      !num(8, 2, &d) || mo < 1 || mo > 12 || d < 1 || d > 31) {
    return false;
  }
  bool has_time = s.size() >= 16 && (s[10] == 'T' || s[10] == ' ' || s[10] == 't') &&
                  num(11, 2, &h) && s[13] == ':' && num(14, 2, &mi);
  switch (part) {
    case TimePart::kMinute: if (!has_time) return false; *out = mi; return true;
    case TimePart::kHour: if (!has_time) return false; *out = h; return true;
    case TimePart::kDay: *out = d; return true;
    case TimePart::kWeek: *out = IsoWeek(y, mo, d); return true;
    case TimePart::kMonth: *out = mo; return true;
    case TimePart::kYear: *out = y; return true;
    case TimePart::kNone: return false;
  }
  return false;
}

bool EventView::MatchValueOn(const ValueTest& v, uint32_t i) {
  switch (v.kind) {
    case ValueTest::Kind::kString: {
      for (const StringPattern& p : v.patterns) {
        std::string_view subject;
        if (!(p.cased() ? Raw(i, &subject) : Lower(i, &subject))) return false;
        if (p.Match(subject)) return true;
      }
      return false;
    }
    case ValueTest::Kind::kRegex: {
      std::string_view raw;
      return Raw(i, &raw) && v.regex->Match(raw);
    }
    case ValueTest::Kind::kCidr: {
      std::string_view raw;
      return Raw(i, &raw) && v.cidr->Contains(raw);
    }
    case ValueTest::Kind::kCompare: {
      const Value& val = values_[i];
      double x;
      if (v.time_part != TimePart::kNone) {
        std::string_view raw;
        if (!Raw(i, &raw) || !ExtractTimePart(raw, v.time_part, &x)) return false;
      } else if (val.type == element_type::INT64) {
        x = static_cast<double>(val.el.get_int64().value_unsafe());
      } else if (val.type == element_type::UINT64) {
        x = static_cast<double>(val.el.get_uint64().value_unsafe());
      } else if (val.type == element_type::DOUBLE) {
        x = val.el.get_double().value_unsafe();
      } else if (val.type == element_type::STRING) {
        auto n = ParseNumber(val.el.get_string().value_unsafe());
        if (!n) return false;
        x = *n;
      } else {
        return false;
      }
      return Compare(x, v.op, v.number);
    }
    case ValueTest::Kind::kFieldRef: {
      Span other = Resolve(v.ref_field);
      for (uint32_t j = other.begin; j < other.begin + other.count; ++j) {
        std::string_view a, b;
        // Materialise both lower-cased forms before taking views: arena_ may grow.
        if (!v.ref_cased) {
          if (!Lower(i, &a) || !Lower(j, &b)) continue;
          Lower(i, &a);
        } else if (!Raw(i, &a) || !Raw(j, &b)) {
          continue;
        }
        bool ok = false;
        switch (v.ref_kind) {
          case StringPattern::Kind::kContains: ok = a.find(b) != std::string_view::npos; break;
          case StringPattern::Kind::kPrefix: ok = a.starts_with(b); break;
          case StringPattern::Kind::kSuffix: ok = a.ends_with(b); break;
          default: ok = a == b; break;
        }
        if (ok) return true;
      }
      return false;
    }
    default:
      return false;
  }
}

bool EventView::MatchValue(const ValueTest& v, Span s, int field) {
  if (v.hs_id >= 0) {
    ScanField(field);
    return id_gen_[v.hs_id] == generation_;
  }
  switch (v.kind) {
    case ValueTest::Kind::kNull:
      for (uint32_t i = s.begin; i < s.begin + s.count; ++i) {
        if (values_[i].type != element_type::NULL_VALUE) return false;
      }
      return true;
    case ValueTest::Kind::kExists:
      return (s.count > 0) == v.exists;
    case ValueTest::Kind::kNever:
      return false;
    default:
      for (uint32_t i = s.begin; i < s.begin + s.count; ++i) {
        if (MatchValueOn(v, i)) return true;
      }
      return false;
  }
}

void EventView::CollectScalars(element e, int depth) {
  if (depth > kMaxDepth) return;
  switch (e.type()) {
    case element_type::ARRAY: {
      simdjson::dom::array arr(e);
      for (element x : arr) CollectScalars(x, depth + 1);
      return;
    }
    case element_type::OBJECT: {
      simdjson::dom::object obj(e);
      for (auto f : obj) CollectScalars(f.value, depth + 1);
      return;
    }
    case element_type::NULL_VALUE:
      return;
    default:
      AddValue(e, depth);
  }
}

EventView::Span EventView::AllScalars() {
  if (scalars_gen_ == generation_) return scalars_;
  scalars_.begin = static_cast<uint32_t>(values_.size());
  CollectScalars(root_, 0);
  scalars_.count = static_cast<uint32_t>(values_.size()) - scalars_.begin;
  scalars_gen_ = generation_;
  return scalars_;
}

bool EventView::MatchKeyword(const FieldTest& t) {
  Span all = AllScalars();
  for (const ValueTest& v : t.values) {
    bool found = MatchValue(v, all, -1);
    if (t.all && !found) return false;
    if (!t.all && found) return true;
  }
  return t.all;
}

bool EventView::MatchFieldTest(const FieldTest& t) {
  if (t.field < 0) return MatchKeyword(t);
  Span s = Resolve(t.field);
  if (t.neq) {
    if (s.count == 0) return false;
    for (const ValueTest& v : t.values) {
      if (MatchValue(v, s, t.field)) return false;
    }
    return true;
  }
  if (t.all) {
    for (const ValueTest& v : t.values) {
      if (!MatchValue(v, s, t.field)) return false;
    }
    return true;
  }
  for (const ValueTest& v : t.values) {
    if (MatchValue(v, s, t.field)) return true;
  }
  return false;
}

bool EventView::MatchSelection(const Selection& s) {
  for (const auto& group : s.groups) {
    bool all = true;
    for (const FieldTest& t : group) {
      if (!MatchFieldTest(t)) {
        all = false;
        break;
      }
    }
    if (all) return true;
  }
  return false;
}

bool EventView::EvalNode(const Detection& d, int node) {
  const CondNode& n = d.condition.nodes[node];
  switch (n.kind) {
    case CondNode::Kind::kRef: {
      int8_t& m = memo_[n.ref];
      if (m < 0) m = MatchSelection(d.selections[n.ref]) ? 1 : 0;
      return m == 1;
    }
    case CondNode::Kind::kAnd:
      for (int k : n.children) {
        if (!EvalNode(d, k)) return false;
      }
      return true;
    case CondNode::Kind::kOr:
      for (int k : n.children) {
        if (EvalNode(d, k)) return true;
      }
      return false;
    case CondNode::Kind::kNot:
      return !EvalNode(d, n.children[0]);
    case CondNode::Kind::kConst:
      return n.ref == 1;
  }
  return false;
}

bool EventView::MatchDetection(const Detection& d) {
  memo_.assign(d.selections.size(), -1);
  for (int root : d.roots) {
    if (EvalNode(d, root)) return true;
  }
  return false;
}

}  // namespace kw::detect::internal
