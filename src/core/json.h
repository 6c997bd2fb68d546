// Strict JSON reading (over simdjson's DOM) and a small JSON writer.
//
// Security-relevant JSON (token headers and claims, keys, trust stores) must mean one thing only,
// so the strict profile rejects what RFC 8259 leaves undefined: duplicate member names (at every
// level, compared after unescaping), nesting deeper than a fixed limit, and invalid UTF-8.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <simdjson.h>

#include "core/status.h"

namespace kw::json {

using Element = simdjson::dom::element;
using Object = simdjson::dom::object;
using Array = simdjson::dom::array;

// One parser, reusable; not thread-safe (give each thread its own, e.g. thread_local).
// The Element returned by Parse() lives until the next Parse() on the same parser.
class StrictParser {
 public:
  // Documents larger than max_bytes or nested deeper than max_depth are rejected.
  explicit StrictParser(size_t max_bytes = 1 << 20, size_t max_depth = 32);

  // `text` needs no padding; it is copied if it lacks simdjson's padding.
  Result<Element> Parse(std::string_view text);

  // Fast path: REQUIRES buf->capacity() >= buf->size() + simdjson::SIMDJSON_PADDING.
  Result<Element> ParsePadded(const std::string& buf);

  size_t max_depth() const { return max_depth_; }
  // The simdjson error of the last failed Parse (SUCCESS after a good one).
  simdjson::error_code last_error() const { return last_error_; }

 private:
  Result<Element> Finish(simdjson::simdjson_result<Element> r);
  simdjson::dom::parser parser_;
  size_t max_bytes_;
  size_t max_depth_;
  simdjson::error_code last_error_ = simdjson::SUCCESS;
};

// Ok if no object anywhere below `e` has two members of the same (unescaped) name; otherwise
// InvalidArgument naming the member.
Status CheckNoDuplicateMembers(Element e);

// Typed accessors for objects that return clear errors ("member 'kty' must be a string").
Result<std::string_view> GetString(Object o, std::string_view key);
std::optional<std::string_view> FindString(Object o, std::string_view key);  // absent or not string
Result<Array> GetArray(Object o, std::string_view key);
Result<Object> GetObject(Object o, std::string_view key);
Result<int64_t> GetInt64(Object o, std::string_view key);
bool Has(Object o, std::string_view key);

// Appends `s` as a JSON string literal (quoted, escaped) to `out`.
void AppendQuoted(std::string* out, std::string_view s);

// Serializes a DOM element compactly.
std::string Minify(Element e);
// Serializes a DOM element with two-space indentation.
std::string Pretty(Element e);

// Builds JSON text in one string. Misuse (a value where a key is expected) is a programming error;
// the writer inserts commas itself.
class Writer {
 public:
  Writer& BeginObject();
  Writer& EndObject();
  Writer& BeginArray();
  Writer& EndArray();
  Writer& Key(std::string_view k);
  Writer& String(std::string_view v);
  Writer& Int(int64_t v);
  Writer& Uint(uint64_t v);
  Writer& Double(double v);
  Writer& Bool(bool v);
  Writer& Null();
  // Inserts already-serialized JSON as a value.
  Writer& Raw(std::string_view json);

  const std::string& str() const { return out_; }
  std::string Take() { return std::move(out_); }

 private:
  void Comma();
  std::string out_;
  std::vector<bool> first_;  // per open container: no element written yet
  bool after_key_ = false;
};

}  // namespace kw::json
