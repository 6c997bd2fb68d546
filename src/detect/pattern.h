// Compiled value tests of Sigma detections: string patterns (exact, prefix, suffix, contains,
// glob with `*` and `?`), regular expressions (RE2), CIDR ranges, numeric comparisons, and the
// value transformations of the modifiers (windash, base64, base64offset, utf16*).
//
// Internal to kw_detect. All objects here are immutable after construction and safe to share
// between threads.
#pragma once

#include <array>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "core/ascii.h"
#include "core/status.h"

namespace re2 {
class RE2;
}

namespace kw::detect {

// Sigma's case-insensitivity is applied to ASCII letters only (core/ascii.h): other bytes, UTF-8
// sequences included, compare exactly.

// One element of a Sigma string after unescaping: a literal byte or a wildcard.
struct SigmaChar {
  enum class Kind : uint8_t { kLiteral, kStar, kQuestion };
  Kind kind;
  char c;  // for kLiteral
};
using SigmaString = std::vector<SigmaChar>;

// Parses a Sigma string value: `*` and `?` are wildcards; `\` escapes `*`, `?` and `\`; a `\`
// before any other character is a plain backslash (rules spec, "Escape Character").
SigmaString ParseSigmaString(std::string_view raw);
// A plain literal (no wildcard interpretation), e.g. after `re` or for encoded values.
SigmaString LiteralSigmaString(std::string_view bytes);
// True if `s` contains a wildcard.
bool HasWildcard(const SigmaString& s);
// The literal bytes of `s`; REQUIRES !HasWildcard(s).
std::string LiteralBytes(const SigmaString& s);

// A compiled string pattern. Case-insensitive patterns are stored lower-cased and must be matched
// against a lower-cased subject; `cased()` tells the caller which form of the subject to pass.
class StringPattern {
 public:
  enum class Kind : uint8_t { kExact, kPrefix, kSuffix, kContains, kGlob, kAny };

  // Classifies `s` (wildcards at the ends become prefix/suffix/contains; wildcards inside make a
  // glob). `cased` keeps case; otherwise literals are lower-cased.
  static StringPattern Compile(const SigmaString& s, bool cased);

  // REQUIRES: `subject` lower-cased if !cased().
  bool Match(std::string_view subject) const;

  Kind kind() const { return kind_; }
  bool cased() const { return cased_; }
  // The literal for kExact/kPrefix/kSuffix/kContains.
  const std::string& literal() const { return literal_; }
  // The (lower-cased unless cased) pattern for kGlob.
  const SigmaString& glob() const { return glob_; }

 private:
  bool GlobMatch(std::string_view subject) const;
  Kind kind_ = Kind::kExact;
  bool cased_ = false;
  std::string literal_;
  SigmaString glob_;
};

// A regular expression (RE2 syntax, a superset of Sigma's required PCRE subset except
// lookaround and back-references, which are rejected at load time). Unanchored search.
class Regex {
 public:
  // flags: any of 'i', 'm', 's'.
  static Result<std::shared_ptr<const Regex>> Compile(std::string_view pattern, bool i, bool m,
                                                      bool s);
  bool Match(std::string_view subject) const;
  ~Regex();

 private:
  Regex() = default;
  std::unique_ptr<re2::RE2> re_;
};

// An IPv4 or IPv6 network. IPv4 addresses never match IPv6 networks (no mapped-address games).
class Cidr {
 public:
  static Result<Cidr> Parse(std::string_view text);
  bool Contains(std::string_view address) const;

 private:
  bool v6_ = false;
  std::array<uint8_t, 16> net_{};
  int prefix_ = 0;
};

// Parses an IPv4 or IPv6 address into 16 bytes; returns false if it is neither.
bool ParseIp(std::string_view text, std::array<uint8_t, 16>* out, bool* v6);

// Value transformations of the encoding modifiers, applied to the unescaped bytes.
std::string Base64Encode(std::string_view bytes);
// The three substrings that appear in base64 text when `bytes` sits at offsets 0, 1 and 2
// (pySigma's base64offset).
std::vector<std::string> Base64OffsetVariants(std::string_view bytes);
std::string Utf16Le(std::string_view utf8);
std::string Utf16Be(std::string_view utf8);
// BOM FF FE followed by UTF-16LE.
std::string Utf16WithBom(std::string_view utf8);

// windash: every `-`, `/`, en dash, em dash or horizontal bar in `s` stands for any of them.
// Returns the variants (bounded: at most `max_variants`, else an error).
Result<std::vector<SigmaString>> WindashVariants(const SigmaString& s, size_t max_variants = 4096);

// Parses a decimal number (integer or floating) exactly as written; nullopt if `s` is not one.
std::optional<double> ParseNumber(std::string_view s);

}  // namespace kw::detect
