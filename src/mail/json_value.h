// A small mutable JSON value for the JMAP processor.
//
// JMAP needs what simdjson's read-only DOM cannot give: arguments rewritten after result
// references are resolved (RFC 8620 §3.7), JSON Pointers with "*" evaluated against earlier
// responses, and responses built piece by piece. Objects keep member order (a vector of pairs;
// JMAP objects are small, so lookups are linear).
//
// Parsing goes through core/json's strict profile (duplicate members refused at every level,
// depth and size bounded, UTF-8 checked), so a request means one thing only.
//
// Thread safety: values are plain data; ParseJson uses a thread-local parser.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <utility>
#include <variant>
#include <vector>

#include "core/status.h"

namespace kw::mail {

class Value {
 public:
  using Array = std::vector<Value>;
  using Object = std::vector<std::pair<std::string, Value>>;
  enum class Type { kNull, kBool, kInt, kDouble, kString, kArray, kObject };

  Value() = default;
  Value(std::nullptr_t) {}                         // NOLINT
  Value(bool b) : v_(b) {}                         // NOLINT
  Value(int v) : v_(int64_t{v}) {}                 // NOLINT
  Value(int64_t v) : v_(v) {}                      // NOLINT
  Value(uint64_t v) : v_(static_cast<int64_t>(v)) {}  // NOLINT
  Value(double v) : v_(v) {}                       // NOLINT
  Value(const char* s) : v_(std::string(s)) {}     // NOLINT
  Value(std::string s) : v_(std::move(s)) {}      // NOLINT
  Value(std::string_view s) : v_(std::string(s)) {}  // NOLINT
  Value(Array a) : v_(std::move(a)) {}             // NOLINT
  Value(Object o) : v_(std::move(o)) {}            // NOLINT

  static Value MakeObject() { return Value(Object{}); }
  static Value MakeArray() { return Value(Array{}); }

  Type type() const { return static_cast<Type>(v_.index()); }
  bool is_null() const { return type() == Type::kNull; }
  bool is_bool() const { return type() == Type::kBool; }
  bool is_int() const { return type() == Type::kInt; }
  bool is_number() const { return is_int() || type() == Type::kDouble; }
  bool is_string() const { return type() == Type::kString; }
  bool is_array() const { return type() == Type::kArray; }
  bool is_object() const { return type() == Type::kObject; }

  // REQUIRES: the matching type.
  bool as_bool() const { return std::get<bool>(v_); }
  int64_t as_int() const { return std::get<int64_t>(v_); }
  double as_double() const {
    return is_int() ? static_cast<double>(as_int()) : std::get<double>(v_);
  }
  const std::string& as_string() const { return std::get<std::string>(v_); }
  std::string& as_string() { return std::get<std::string>(v_); }
  const Array& as_array() const { return std::get<Array>(v_); }
  Array& as_array() { return std::get<Array>(v_); }
  const Object& as_object() const { return std::get<Object>(v_); }
  Object& as_object() { return std::get<Object>(v_); }

  // Object member lookup: null when absent or not an object.
  const Value* Find(std::string_view key) const;
  Value* Find(std::string_view key);
  // Sets (replacing) a member. REQUIRES: is_object().
  Value& Set(std::string_view key, Value v);
  // Appends a member without checking for an existing one (building fresh objects).
  Value& Add(std::string key, Value v);
  // Appends to an array. REQUIRES: is_array().
  Value& Push(Value v);
  bool Erase(std::string_view key);

  // Compact serialization (strings escaped as JSON requires).
  void AppendTo(std::string* out) const;
  std::string Serialize() const;

  bool operator==(const Value& o) const { return v_ == o.v_; }

 private:
  std::variant<std::nullptr_t, bool, int64_t, double, std::string, Array, Object> v_;
};

// Parses `text` strictly (see the file comment). Errors: InvalidArgument naming the problem.
Result<Value> ParseJson(std::string_view text, size_t max_bytes = 10 << 20);

// Evaluates an RFC 6901 JSON Pointer with JMAP's "*" extension (RFC 8620 §3.7): "*" over an
// array applies the rest of the pointer to each element and flattens arrays among the results.
// InvalidArgument when the path does not exist.
Result<Value> EvaluatePointer(const Value& root, std::string_view pointer);

}  // namespace kw::mail
