#include "mail/json_value.h"

#include <charconv>

#include <fmt/format.h>

#include "core/json.h"

namespace kw::mail {

const Value* Value::Find(std::string_view key) const {
  if (!is_object()) return nullptr;
  for (const auto& [k, v] : as_object()) {
    if (k == key) return &v;
  }
  return nullptr;
}

Value* Value::Find(std::string_view key) {
  return const_cast<Value*>(static_cast<const Value*>(this)->Find(key));
}

Value& Value::Set(std::string_view key, Value v) {
  if (Value* existing = Find(key)) {
    *existing = std::move(v);
    return *existing;
  }
  return Add(std::string(key), std::move(v));
}

Value& Value::Add(std::string key, Value v) {
  auto& o = as_object();
  o.emplace_back(std::move(key), std::move(v));
  return o.back().second;
}

Value& Value::Push(Value v) {
  auto& a = as_array();
  a.push_back(std::move(v));
  return a.back();
}

bool Value::Erase(std::string_view key) {
  if (!is_object()) return false;
  auto& o = as_object();
  for (auto it = o.begin(); it != o.end(); ++it) {
    if (it->first == key) {
      o.erase(it);
      return true;
    }
  }
  return false;
}

void Value::AppendTo(std::string* out) const {
  switch (type()) {
    case Type::kNull:
      out->append("null");
      break;
    case Type::kBool:
      out->append(as_bool() ? "true" : "false");
      break;
    case Type::kInt: {
      char buf[24];
      auto r = std::to_chars(buf, buf + sizeof(buf), as_int());
      out->append(buf, r.ptr);
      break;
    }
    case Type::kDouble:
      out->append(fmt::format("{}", std::get<double>(v_)));
      break;
    case Type::kString:
      json::AppendQuoted(out, as_string());
      break;
    case Type::kArray: {
      out->push_back('[');
      bool first = true;
      for (const auto& e : as_array()) {
        if (!first) out->push_back(',');
        first = false;
        e.AppendTo(out);
      }
      out->push_back(']');
      break;
    }
    case Type::kObject: {
      out->push_back('{');
      bool first = true;
      for (const auto& [k, v] : as_object()) {
        if (!first) out->push_back(',');
        first = false;
        json::AppendQuoted(out, k);
        out->push_back(':');
        v.AppendTo(out);
      }
      out->push_back('}');
      break;
    }
  }
}

std::string Value::Serialize() const {
  std::string out;
  AppendTo(&out);
  return out;
}

namespace {

Value FromDom(json::Element e) {
  switch (e.type()) {
    case simdjson::dom::element_type::ARRAY: {
      Value::Array a;
      json::Array arr = e.get_array().value_unsafe();
      for (json::Element c : arr) a.push_back(FromDom(c));
      return Value(std::move(a));
    }
    case simdjson::dom::element_type::OBJECT: {
      Value::Object o;
      json::Object obj = e.get_object().value_unsafe();
      for (auto field : obj) {
        o.emplace_back(std::string(field.key), FromDom(field.value));
      }
      return Value(std::move(o));
    }
    case simdjson::dom::element_type::INT64:
      return Value(e.get_int64().value_unsafe());
    case simdjson::dom::element_type::UINT64:
      // Above INT64_MAX: JMAP's UnsignedInt is at most 2^53-1, so keep it as a double, which
      // argument checks then refuse as "not an integer".
      return Value(static_cast<double>(e.get_uint64().value_unsafe()));
    case simdjson::dom::element_type::DOUBLE:
      return Value(e.get_double().value_unsafe());
    case simdjson::dom::element_type::STRING:
      return Value(std::string(e.get_string().value_unsafe()));
    case simdjson::dom::element_type::BOOL:
      return Value(e.get_bool().value_unsafe());
    case simdjson::dom::element_type::NULL_VALUE:
      return Value();
  }
  return Value();
}

}  // namespace

Result<Value> ParseJson(std::string_view text, size_t max_bytes) {
  // Depth 64: JMAP filters nest operators; deeper than that is refused rather than recursed.
  thread_local json::StrictParser parser(10 << 20, 64);
  if (text.size() > max_bytes) {
    return InvalidArgumentError(fmt::format("JSON text of {} bytes exceeds {}", text.size(), max_bytes));
  }
  KW_ASSIGN_OR_RETURN(json::Element root, parser.Parse(text));
  return FromDom(root);
}

namespace {

Status Walk(const Value& v, std::string_view rest, Value::Array* out, bool* star_seen) {
  if (rest.empty()) {
    out->push_back(v);
    return Status::Ok();
  }
  if (rest.front() != '/') return InvalidArgumentError("JSON pointer must start with '/'");
  rest.remove_prefix(1);
  size_t slash = rest.find('/');
  std::string_view raw = rest.substr(0, slash);
  std::string_view next = slash == std::string_view::npos ? std::string_view() : rest.substr(slash);
  std::string token;
  for (size_t i = 0; i < raw.size(); ++i) {
    if (raw[i] == '~' && i + 1 < raw.size() && (raw[i + 1] == '0' || raw[i + 1] == '1')) {
      token.push_back(raw[i + 1] == '0' ? '~' : '/');
      ++i;
    } else if (raw[i] == '~') {
      return InvalidArgumentError("bad '~' escape in JSON pointer");
    } else {
      token.push_back(raw[i]);
    }
  }
  if (v.is_object()) {
    const Value* c = v.Find(token);
    if (!c) return InvalidArgumentError(fmt::format("no member '{}'", token));
    return Walk(*c, next, out, star_seen);
  }
  if (v.is_array()) {
    if (token == "*") {
      *star_seen = true;
      for (const auto& e : v.as_array()) {
        Value::Array sub;
        bool inner_star = false;
        KW_RETURN_IF_ERROR(Walk(e, next, &sub, &inner_star));
        for (auto& s : sub) {
          if (s.is_array()) {
            for (auto& x : s.as_array()) out->push_back(std::move(x));
          } else {
            out->push_back(std::move(s));
          }
        }
      }
      return Status::Ok();
    }
    if (token.empty() || token.size() > 9 || (token.size() > 1 && token[0] == '0')) {
      return InvalidArgumentError(fmt::format("bad array index '{}'", token));
    }
    size_t idx = 0;
    for (char ch : token) {
      if (ch < '0' || ch > '9') return InvalidArgumentError(fmt::format("bad array index '{}'", token));
      idx = idx * 10 + static_cast<size_t>(ch - '0');
    }
    if (idx >= v.as_array().size()) return InvalidArgumentError("array index out of range");
    return Walk(v.as_array()[idx], next, out, star_seen);
  }
  return InvalidArgumentError(fmt::format("cannot descend into a scalar at '{}'", token));
}

}  // namespace

Result<Value> EvaluatePointer(const Value& root, std::string_view pointer) {
  Value::Array out;
  bool star = false;
  KW_RETURN_IF_ERROR(Walk(root, pointer, &out, &star));
  if (star) return Value(std::move(out));
  if (out.size() != 1) return InvalidArgumentError("JSON pointer did not select one value");
  return std::move(out.front());
}

}  // namespace kw::mail
