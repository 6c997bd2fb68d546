#include "core/json.h"

#include <algorithm>
#include <cmath>

#include <fmt/format.h>

namespace kw::json {

StrictParser::StrictParser(size_t max_bytes, size_t max_depth)
    : max_bytes_(max_bytes), max_depth_(max_depth) {
  // Capacity grows on demand; depth is fixed here and enforced by simdjson's stage 2.
  // A failed allocation resurfaces as MEMALLOC from the first Parse(), which reports it.
  simdjson::error_code ignored = parser_.allocate(std::min<size_t>(max_bytes, 64 * 1024), max_depth);
  (void)ignored;
}

Result<Element> StrictParser::Finish(simdjson::simdjson_result<Element> r) {
  last_error_ = r.error();
  if (r.error() == simdjson::DEPTH_ERROR) {
    return InvalidArgumentError(fmt::format("JSON nested deeper than {} levels", max_depth_));
  }
  if (r.error()) {
    return InvalidArgumentError(fmt::format("invalid JSON: {}", simdjson::error_message(r.error())));
  }
  Element e = r.value_unsafe();
  KW_RETURN_IF_ERROR(CheckNoDuplicateMembers(e));
  return e;
}

Result<Element> StrictParser::Parse(std::string_view text) {
  if (text.size() > max_bytes_) {
    return ResourceExhaustedError(fmt::format("JSON document of {} bytes exceeds the limit of {}",
                                              text.size(), max_bytes_));
  }
  return Finish(parser_.parse(text.data(), text.size(), /*realloc_if_needed=*/true));
}

Result<Element> StrictParser::ParsePadded(const std::string& buf) {
  if (buf.size() > max_bytes_) {
    return ResourceExhaustedError(fmt::format("JSON document of {} bytes exceeds the limit of {}",
                                              buf.size(), max_bytes_));
  }
  return Finish(parser_.parse(buf.data(), buf.size(), /*realloc_if_needed=*/false));
}

namespace {

Status CheckNoDuplicatesRec(Element e) {
  using simdjson::dom::element_type;
  switch (e.type()) {
    case element_type::OBJECT: {
      Object o = e.get_object().value_unsafe();
      // Objects in tokens and keys are small: a linear scan beats sorting up to a few dozen
      // members, and the sorted path bounds the cost for large ones.
      size_t n = o.size();
      if (n <= 16) {
        std::string_view keys[16];
        size_t i = 0;
        for (auto field : o) {
          for (size_t j = 0; j < i; ++j) {
            if (keys[j] == field.key) {
              return InvalidArgumentError(
                  fmt::format("duplicate member name '{}' in a JSON object", field.key));
            }
          }
          keys[i++] = field.key;
          KW_RETURN_IF_ERROR(CheckNoDuplicatesRec(field.value));
        }
      } else {
        std::vector<std::string_view> keys;
        keys.reserve(n);
        for (auto field : o) {
          keys.push_back(field.key);
          KW_RETURN_IF_ERROR(CheckNoDuplicatesRec(field.value));
        }
        std::sort(keys.begin(), keys.end());
        auto it = std::adjacent_find(keys.begin(), keys.end());
        if (it != keys.end()) {
          return InvalidArgumentError(
              fmt::format("duplicate member name '{}' in a JSON object", *it));
        }
      }
      return Status::Ok();
    }
    case element_type::ARRAY: {
      Array a = e.get_array().value_unsafe();
      for (Element child : a) {
        KW_RETURN_IF_ERROR(CheckNoDuplicatesRec(child));
      }
      return Status::Ok();
    }
    default:
      return Status::Ok();
  }
}

}  // namespace

Status CheckNoDuplicateMembers(Element e) { return CheckNoDuplicatesRec(e); }

Result<std::string_view> GetString(Object o, std::string_view key) {
  auto r = o.at_key(key);
  if (r.error()) return InvalidArgumentError(fmt::format("member '{}' is missing", key));
  auto s = r.value_unsafe().get_string();
  if (s.error()) return InvalidArgumentError(fmt::format("member '{}' must be a string", key));
  return s.value_unsafe();
}

Result<Array> GetArray(Object o, std::string_view key) {
  auto r = o.at_key(key).get_array();
  if (r.error()) return InvalidArgumentError(fmt::format("member '{}' must be an array", key));
  return r.value_unsafe();
}

Result<Object> GetObject(Object o, std::string_view key) {
  auto r = o.at_key(key).get_object();
  if (r.error()) return InvalidArgumentError(fmt::format("member '{}' must be an object", key));
  return r.value_unsafe();
}

Result<int64_t> GetInt64(Object o, std::string_view key) {
  auto r = o.at_key(key).get_int64();
  if (r.error()) return InvalidArgumentError(fmt::format("member '{}' must be an integer", key));
  return r.value_unsafe();
}

std::optional<std::string_view> FindString(Object o, std::string_view key) {
  auto r = o.at_key(key);
  if (r.error()) return std::nullopt;
  auto s = r.value_unsafe().get_string();
  if (s.error()) return std::nullopt;
  return s.value_unsafe();
}

bool Has(Object o, std::string_view key) { return !o.at_key(key).error(); }

void AppendQuoted(std::string* out, std::string_view s) {
  out->push_back('"');
  for (unsigned char c : s) {
    switch (c) {
      case '"': *out += "\\\""; break;
      case '\\': *out += "\\\\"; break;
      case '\n': *out += "\\n"; break;
      case '\r': *out += "\\r"; break;
      case '\t': *out += "\\t"; break;
      case '\b': *out += "\\b"; break;
      case '\f': *out += "\\f"; break;
      default:
        if (c < 0x20) {
          *out += fmt::format("\\u{:04x}", c);
        } else {
          out->push_back(static_cast<char>(c));
        }
    }
  }
  out->push_back('"');
}

std::string Minify(Element e) { return simdjson::minify(e); }

namespace {
void PrettyRec(Element e, int indent, std::string* out) {
  using simdjson::dom::element_type;
  auto pad = [&](int n) { out->append(static_cast<size_t>(n) * 2, ' '); };
  switch (e.type()) {
    case element_type::OBJECT: {
      Object o = e.get_object().value_unsafe();
      if (o.size() == 0) { *out += "{}"; return; }
      *out += "{\n";
      bool first = true;
      for (auto f : o) {
        if (!first) *out += ",\n";
        first = false;
        pad(indent + 1);
        AppendQuoted(out, f.key);
        *out += ": ";
        PrettyRec(f.value, indent + 1, out);
      }
      *out += '\n';
      pad(indent);
      *out += '}';
      return;
    }
    case element_type::ARRAY: {
      Array a = e.get_array().value_unsafe();
      if (a.size() == 0) { *out += "[]"; return; }
      *out += "[\n";
      bool first = true;
      for (Element c : a) {
        if (!first) *out += ",\n";
        first = false;
        pad(indent + 1);
        PrettyRec(c, indent + 1, out);
      }
      *out += '\n';
      pad(indent);
      *out += ']';
      return;
    }
    default:
      *out += simdjson::minify(e);
  }
}
}  // namespace

std::string Pretty(Element e) {
  std::string out;
  PrettyRec(e, 0, &out);
  return out;
}

void Writer::Comma() {
  if (after_key_) {
    after_key_ = false;
    return;
  }
  if (!first_.empty()) {
    if (!first_.back()) out_ += ',';
    first_.back() = false;
  }
}

Writer& Writer::BeginObject() { Comma(); out_ += '{'; first_.push_back(true); return *this; }
Writer& Writer::EndObject() { out_ += '}'; first_.pop_back(); return *this; }
Writer& Writer::BeginArray() { Comma(); out_ += '['; first_.push_back(true); return *this; }
Writer& Writer::EndArray() { out_ += ']'; first_.pop_back(); return *this; }
Writer& Writer::Key(std::string_view k) {
  Comma();
  AppendQuoted(&out_, k);
  out_ += ':';
  after_key_ = true;
  return *this;
}
Writer& Writer::String(std::string_view v) { Comma(); AppendQuoted(&out_, v); return *this; }
Writer& Writer::Int(int64_t v) { Comma(); out_ += fmt::format("{}", v); return *this; }
Writer& Writer::Uint(uint64_t v) { Comma(); out_ += fmt::format("{}", v); return *this; }
Writer& Writer::Double(double v) {
  Comma();
  out_ += std::isfinite(v) ? fmt::format("{}", v) : "null";
  return *this;
}
Writer& Writer::Bool(bool v) { Comma(); out_ += v ? "true" : "false"; return *this; }
Writer& Writer::Null() { Comma(); out_ += "null"; return *this; }
Writer& Writer::Raw(std::string_view json) { Comma(); out_ += json; return *this; }

}  // namespace kw::json
