#include "detect/pattern.h"

#include <arpa/inet.h>

#include <charconv>
#include <cmath>
#include <cstring>

#include <re2/re2.h>

namespace kw::detect {

SigmaString ParseSigmaString(std::string_view raw) {
  SigmaString out;
  out.reserve(raw.size());
  for (size_t i = 0; i < raw.size(); ++i) {
    char c = raw[i];
    if (c == '\\') {
      if (i + 1 < raw.size() && (raw[i + 1] == '*' || raw[i + 1] == '?' || raw[i + 1] == '\\')) {
        out.push_back({SigmaChar::Kind::kLiteral, raw[i + 1]});
        ++i;
      } else {
        out.push_back({SigmaChar::Kind::kLiteral, '\\'});
      }
    } else if (c == '*') {
      out.push_back({SigmaChar::Kind::kStar, 0});
    } else if (c == '?') {
      out.push_back({SigmaChar::Kind::kQuestion, 0});
    } else {
      out.push_back({SigmaChar::Kind::kLiteral, c});
    }
  }
  return out;
}

SigmaString LiteralSigmaString(std::string_view bytes) {
  SigmaString out;
  out.reserve(bytes.size());
  for (char c : bytes) out.push_back({SigmaChar::Kind::kLiteral, c});
  return out;
}

bool HasWildcard(const SigmaString& s) {
  for (const SigmaChar& c : s) {
    if (c.kind != SigmaChar::Kind::kLiteral) return true;
  }
  return false;
}

std::string LiteralBytes(const SigmaString& s) {
  std::string out;
  out.reserve(s.size());
  for (const SigmaChar& c : s) out.push_back(c.c);
  return out;
}

StringPattern StringPattern::Compile(const SigmaString& s, bool cased) {
  StringPattern p;
  p.cased_ = cased;
  size_t begin = 0, end = s.size();
  bool lead = false, trail = false;
  while (begin < end && s[begin].kind == SigmaChar::Kind::kStar) { lead = true; ++begin; }
  while (end > begin && s[end - 1].kind == SigmaChar::Kind::kStar) { trail = true; --end; }
  bool inner_wild = false;
  for (size_t i = begin; i < end; ++i) {
    if (s[i].kind != SigmaChar::Kind::kLiteral) inner_wild = true;
  }
  if (inner_wild) {
    p.kind_ = Kind::kGlob;
    p.glob_ = s;
    if (!cased) {
      for (SigmaChar& c : p.glob_) c.c = AsciiLower(c.c);
    }
    return p;
  }
  for (size_t i = begin; i < end; ++i) p.literal_.push_back(cased ? s[i].c : AsciiLower(s[i].c));
  if (lead && trail) {
    p.kind_ = p.literal_.empty() ? Kind::kAny : Kind::kContains;
  } else if (lead) {
    p.kind_ = Kind::kSuffix;
  } else if (trail) {
    p.kind_ = Kind::kPrefix;
  } else {
    p.kind_ = Kind::kExact;
  }
  if ((lead || trail) && p.literal_.empty()) p.kind_ = Kind::kAny;
  return p;
}

bool StringPattern::Match(std::string_view subject) const {
  switch (kind_) {
    case Kind::kExact:
      return subject == literal_;
    case Kind::kPrefix:
      return subject.size() >= literal_.size() &&
             std::memcmp(subject.data(), literal_.data(), literal_.size()) == 0;
    case Kind::kSuffix:
      return subject.size() >= literal_.size() &&
             std::memcmp(subject.data() + subject.size() - literal_.size(), literal_.data(),
                         literal_.size()) == 0;
    case Kind::kContains:
      return subject.find(literal_) != std::string_view::npos;
    case Kind::kGlob:
      return GlobMatch(subject);
    case Kind::kAny:
      return true;
  }
  return false;
}

// Iterative wildcard match with backtracking to the last star: O(n*m) worst case, linear for
// the usual patterns. `?` consumes one UTF-8 code point.
bool StringPattern::GlobMatch(std::string_view s) const {
  const SigmaString& p = glob_;
  size_t si = 0, pi = 0;
  size_t star_p = SIZE_MAX, star_s = 0;
  auto cp_len = [&](size_t at) {
    size_t n = 1;
    while (at + n < s.size() && (static_cast<unsigned char>(s[at + n]) & 0xC0) == 0x80) ++n;
    return n;
  };
  while (si < s.size()) {
    if (pi < p.size() && p[pi].kind == SigmaChar::Kind::kStar) {
      star_p = pi++;
      star_s = si;
    } else if (pi < p.size() && p[pi].kind == SigmaChar::Kind::kQuestion) {
      si += cp_len(si);
      ++pi;
    } else if (pi < p.size() && p[pi].c == s[si]) {
      ++si;
      ++pi;
    } else if (star_p != SIZE_MAX) {
      pi = star_p + 1;
      si = ++star_s;
    } else {
      return false;
    }
  }
  while (pi < p.size() && p[pi].kind == SigmaChar::Kind::kStar) ++pi;
  return pi == p.size();
}

Regex::~Regex() = default;

Result<std::shared_ptr<const Regex>> Regex::Compile(std::string_view pattern, bool i, bool m,
                                                    bool s) {
  // RE2 has no lookaround or back-references; say so instead of RE2's terse message.
  for (std::string_view bad : {"(?=", "(?!", "(?<=", "(?<!"}) {
    if (pattern.find(bad) != std::string_view::npos) {
      return UnimplementedError(std::string("regular expression uses lookaround '") +
                                std::string(bad) + "', which RE2 does not support");
    }
  }
  RE2::Options opts;
  opts.set_log_errors(false);
  opts.set_case_sensitive(!i);
  opts.set_dot_nl(s);
  opts.set_max_mem(8 << 20);
  std::string pat(pattern);
  // RE2 supports (?m) as a flag group; Options has no multi-line switch outside posix mode.
  if (m) pat = "(?m)" + pat;
  auto re = std::shared_ptr<Regex>(new Regex());
  re->re_ = std::make_unique<re2::RE2>(pat, opts);
  if (!re->re_->ok()) {
    return InvalidArgumentError("invalid regular expression: " + re->re_->error());
  }
  return std::shared_ptr<const Regex>(std::move(re));
}

bool Regex::Match(std::string_view subject) const {
  return re2::RE2::PartialMatch(re2::StringPiece(subject.data(), subject.size()), *re_);
}

bool ParseIp(std::string_view text, std::array<uint8_t, 16>* out, bool* v6) {
  if (text.empty() || text.size() > 45) return false;
  char buf[64];
  std::memcpy(buf, text.data(), text.size());
  buf[text.size()] = 0;
  // Strip an IPv6 zone id (fe80::1%eth0).
  if (char* pct = std::strchr(buf, '%')) *pct = 0;
  out->fill(0);
  if (inet_pton(AF_INET, buf, out->data()) == 1) {
    *v6 = false;
    return true;
  }
  if (inet_pton(AF_INET6, buf, out->data()) == 1) {
    *v6 = true;
    return true;
  }
  return false;
}

Result<Cidr> Cidr::Parse(std::string_view text) {
  Cidr c;
  size_t slash = text.find('/');
  std::string_view addr = text.substr(0, slash);
  if (!ParseIp(addr, &c.net_, &c.v6_)) {
    return InvalidArgumentError("cidr: '" + std::string(text) + "' is not an IP network");
  }
  int max = c.v6_ ? 128 : 32;
  c.prefix_ = max;
  if (slash != std::string_view::npos) {
    std::string_view len = text.substr(slash + 1);
    int v = -1;
    auto r = std::from_chars(len.data(), len.data() + len.size(), v);
    if (r.ec != std::errc() || r.ptr != len.data() + len.size() || v < 0 || v > max) {
      return InvalidArgumentError("cidr: bad prefix length in '" + std::string(text) + "'");
    }
    c.prefix_ = v;
  }
  // Clear host bits so "10.1.2.3/8" means 10.0.0.0/8.
  for (int bit = c.prefix_; bit < max; ++bit) c.net_[bit / 8] &= ~(0x80 >> (bit % 8));
  return c;
}

bool Cidr::Contains(std::string_view address) const {
  std::array<uint8_t, 16> a;
  bool v6;
  if (!ParseIp(address, &a, &v6) || v6 != v6_) return false;
  int full = prefix_ / 8;
  if (std::memcmp(a.data(), net_.data(), full) != 0) return false;
  int rem = prefix_ % 8;
  if (rem == 0) return true;
  uint8_t mask = static_cast<uint8_t>(0xFF << (8 - rem));
  return (a[full] & mask) == net_[full];
}

std::string Base64Encode(std::string_view in) {
  static constexpr char kAlphabet[] =
      "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  std::string out;
  out.reserve((in.size() + 2) / 3 * 4);
  size_t i = 0;
  for (; i + 2 < in.size(); i += 3) {
    uint32_t v = (uint8_t(in[i]) << 16) | (uint8_t(in[i + 1]) << 8) | uint8_t(in[i + 2]);
    out.push_back(kAlphabet[(v >> 18) & 63]);
    out.push_back(kAlphabet[(v >> 12) & 63]);
    out.push_back(kAlphabet[(v >> 6) & 63]);
    out.push_back(kAlphabet[v & 63]);
  }
  if (i + 1 == in.size()) {
    uint32_t v = uint8_t(in[i]) << 16;
    out.push_back(kAlphabet[(v >> 18) & 63]);
    out.push_back(kAlphabet[(v >> 12) & 63]);
    out += "==";
  } else if (i + 2 == in.size()) {
    uint32_t v = (uint8_t(in[i]) << 16) | (uint8_t(in[i + 1]) << 8);
    out.push_back(kAlphabet[(v >> 18) & 63]);
    out.push_back(kAlphabet[(v >> 12) & 63]);
    out.push_back(kAlphabet[(v >> 6) & 63]);
    out.push_back('=');
  }
  return out;
}

// Same construction as pySigma's SigmaBase64OffsetModifier: encode with 0, 1 and 2 leading
// bytes, then cut the characters that depend on the unknown neighbours.
std::vector<std::string> Base64OffsetVariants(std::string_view bytes) {
  static constexpr size_t kStart[3] = {0, 2, 3};
  static constexpr size_t kEndTrim[3] = {0, 3, 2};
  std::vector<std::string> out;
  for (size_t i = 0; i < 3; ++i) {
    std::string padded(i, ' ');
    padded.append(bytes);
    std::string enc = Base64Encode(padded);
    size_t len = enc.size();
    // pySigma: b64[start[shift] : -end[(len(value)+shift) % 3]] where end = (None, -3, -2).
    size_t trim = kEndTrim[(bytes.size() + i) % 3];
    size_t start = kStart[i];
    if (start + trim >= len) continue;
    std::string v = enc.substr(start, len - start - trim);
    while (!v.empty() && v.back() == '=') v.pop_back();
    if (!v.empty()) out.push_back(std::move(v));
  }
  return out;
}

// Decodes UTF-8 leniently (an invalid byte becomes U+FFFD) and calls f for each code unit.
template <typename F>
static void ForEachUtf16Unit(std::string_view s, F f) {
  size_t i = 0;
  while (i < s.size()) {
    unsigned char c = s[i];
    uint32_t cp = 0xFFFD;
    size_t n = 1;
    if (c < 0x80) {
      cp = c;
    } else if ((c >> 5) == 6 && i + 1 < s.size()) {
      cp = ((c & 0x1F) << 6) | (s[i + 1] & 0x3F);
      n = 2;
    } else if ((c >> 4) == 14 && i + 2 < s.size()) {
      cp = ((c & 0x0F) << 12) | ((s[i + 1] & 0x3F) << 6) | (s[i + 2] & 0x3F);
      n = 3;
    } else if ((c >> 3) == 30 && i + 3 < s.size()) {
      cp = ((c & 0x07) << 18) | ((s[i + 1] & 0x3F) << 12) | ((s[i + 2] & 0x3F) << 6) |
           (s[i + 3] & 0x3F);
      n = 4;
    }
    i += n;
    if (cp >= 0x10000) {
      cp -= 0x10000;
      f(static_cast<uint16_t>(0xD800 + (cp >> 10)));
      f(static_cast<uint16_t>(0xDC00 + (cp & 0x3FF)));
    } else {
      f(static_cast<uint16_t>(cp));
    }
  }
}

std::string Utf16Le(std::string_view utf8) {
  std::string out;
  ForEachUtf16Unit(utf8, [&](uint16_t u) {
    out.push_back(static_cast<char>(u & 0xFF));
    out.push_back(static_cast<char>(u >> 8));
  });
  return out;
}

std::string Utf16Be(std::string_view utf8) {
  std::string out;
  ForEachUtf16Unit(utf8, [&](uint16_t u) {
    out.push_back(static_cast<char>(u >> 8));
    out.push_back(static_cast<char>(u & 0xFF));
  });
  return out;
}

std::string Utf16WithBom(std::string_view utf8) { return "\xFF\xFE" + Utf16Le(utf8); }

Result<std::vector<SigmaString>> WindashVariants(const SigmaString& s, size_t max_variants) {
  static const std::string_view kDashes[] = {"-", "/", "\xE2\x80\x93", "\xE2\x80\x94",
                                             "\xE2\x80\x95"};
  // Split into literal pieces at each dash character (matching multi-byte dashes too).
  std::vector<SigmaString> pieces(1);
  size_t dashes = 0;
  for (size_t i = 0; i < s.size();) {
    bool matched = false;
    if (s[i].kind == SigmaChar::Kind::kLiteral) {
      for (std::string_view d : kDashes) {
        if (i + d.size() > s.size()) continue;
        bool eq = true;
        for (size_t k = 0; k < d.size(); ++k) {
          if (s[i + k].kind != SigmaChar::Kind::kLiteral || s[i + k].c != d[k]) eq = false;
        }
        if (eq) {
          pieces.emplace_back();
          ++dashes;
          i += d.size();
          matched = true;
          break;
        }
      }
    }
    if (!matched) pieces.back().push_back(s[i++]);
  }
  size_t total = 1;
  for (size_t k = 0; k < dashes; ++k) {
    total *= 5;
    if (total > max_variants) {
      return ResourceExhaustedError("windash: value has too many dash characters (" +
                                    std::to_string(dashes) + ")");
    }
  }
  std::vector<SigmaString> out;
  out.reserve(total);
  for (size_t v = 0; v < total; ++v) {
    SigmaString r = pieces[0];
    size_t code = v;
    for (size_t k = 1; k < pieces.size(); ++k) {
      for (char c : kDashes[code % 5]) r.push_back({SigmaChar::Kind::kLiteral, c});
      code /= 5;
      r.insert(r.end(), pieces[k].begin(), pieces[k].end());
    }
    out.push_back(std::move(r));
  }
  return out;
}

std::optional<double> ParseNumber(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t')) s.remove_suffix(1);
  if (s.empty()) return std::nullopt;
  if (s.front() == '+') s.remove_prefix(1);
  double v = 0;
  auto r = std::from_chars(s.data(), s.data() + s.size(), v);
  if (r.ec != std::errc() || r.ptr != s.data() + s.size() || !std::isfinite(v)) {
    return std::nullopt;
  }
  return v;
}

}  // namespace kw::detect
