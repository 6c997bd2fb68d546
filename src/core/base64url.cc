#include "core/base64url.h"

#include <array>

#include <fmt/format.h>

namespace kw {
namespace {

constexpr char kAlphabet[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

constexpr std::array<int8_t, 256> MakeDecodeTable() {
  std::array<int8_t, 256> t{};
  for (auto& v : t) v = -1;
  for (int i = 0; i < 64; ++i) t[static_cast<unsigned char>(kAlphabet[i])] = static_cast<int8_t>(i);
  return t;
}
constexpr std::array<int8_t, 256> kDecode = MakeDecodeTable();

}  // namespace

std::string Base64UrlEncode(std::string_view bytes) {
  std::string out;
  out.reserve((bytes.size() * 4 + 2) / 3);
  const auto* p = reinterpret_cast<const unsigned char*>(bytes.data());
  size_t n = bytes.size(), i = 0;
  for (; i + 3 <= n; i += 3) {
    uint32_t v = (uint32_t{p[i]} << 16) | (uint32_t{p[i + 1]} << 8) | p[i + 2];
    out += kAlphabet[v >> 18];
    out += kAlphabet[(v >> 12) & 63];
    out += kAlphabet[(v >> 6) & 63];
    out += kAlphabet[v & 63];
  }
  if (n - i == 1) {
    uint32_t v = uint32_t{p[i]} << 16;
    out += kAlphabet[v >> 18];
    out += kAlphabet[(v >> 12) & 63];
  } else if (n - i == 2) {
    uint32_t v = (uint32_t{p[i]} << 16) | (uint32_t{p[i + 1]} << 8);
    out += kAlphabet[v >> 18];
    out += kAlphabet[(v >> 12) & 63];
    out += kAlphabet[(v >> 6) & 63];
  }
  return out;
}

bool Base64UrlDecodeInto(std::string_view in, std::string* out) {
  out->clear();
  const size_t n = in.size();
  if (n % 4 == 1) return false;
  out->resize(n / 4 * 3 + (n % 4 == 0 ? 0 : n % 4 - 1));
  auto* o = reinterpret_cast<unsigned char*>(out->data());
  const auto* p = reinterpret_cast<const unsigned char*>(in.data());
  size_t i = 0;
  for (; i + 4 <= n; i += 4) {
    int a = kDecode[p[i]], b = kDecode[p[i + 1]], c = kDecode[p[i + 2]], d = kDecode[p[i + 3]];
    if ((a | b | c | d) < 0) return false;
    uint32_t v = (uint32_t(a) << 18) | (uint32_t(b) << 12) | (uint32_t(c) << 6) | uint32_t(d);
    *o++ = static_cast<unsigned char>(v >> 16);
    *o++ = static_cast<unsigned char>(v >> 8);
    *o++ = static_cast<unsigned char>(v);
  }
  size_t rest = n - i;
  if (rest == 2) {
    int a = kDecode[p[i]], b = kDecode[p[i + 1]];
    if ((a | b) < 0 || (b & 0x0f) != 0) return false;  // 4 spare bits must be zero
    *o++ = static_cast<unsigned char>((a << 2) | (b >> 4));
  } else if (rest == 3) {
    int a = kDecode[p[i]], b = kDecode[p[i + 1]], c = kDecode[p[i + 2]];
    if ((a | b | c) < 0 || (c & 0x03) != 0) return false;  // 2 spare bits must be zero
    uint32_t v = (uint32_t(a) << 18) | (uint32_t(b) << 12) | (uint32_t(c) << 6);
    *o++ = static_cast<unsigned char>(v >> 16);
    *o++ = static_cast<unsigned char>(v >> 8);
  }
  return true;
}

Result<std::string> Base64UrlDecode(std::string_view in) {
  std::string out;
  if (Base64UrlDecodeInto(in, &out)) return out;
  if (in.size() % 4 == 1) {
    return InvalidArgumentError(fmt::format("base64url: impossible length {}", in.size()));
  }
  for (size_t i = 0; i < in.size(); ++i) {
    if (kDecode[static_cast<unsigned char>(in[i])] < 0) {
      unsigned char c = static_cast<unsigned char>(in[i]);
      return InvalidArgumentError(fmt::format(
          "base64url: character {} at offset {} is not in the URL-safe alphabet{}",
          (c >= 0x21 && c < 0x7f) ? fmt::format("'{}'", char(c)) : fmt::format("0x{:02x}", c), i,
          c == '=' ? " (padding is not allowed)" : ""));
    }
  }
  return InvalidArgumentError("base64url: non-zero spare bits in the last character");
}

std::string HexEncode(std::string_view bytes) {
  static constexpr char kHex[] = "0123456789abcdef";
  std::string out;
  out.reserve(bytes.size() * 2);
  for (unsigned char c : bytes) {
    out += kHex[c >> 4];
    out += kHex[c & 15];
  }
  return out;
}

Result<std::string> HexDecode(std::string_view hex) {
  if (hex.size() % 2) return InvalidArgumentError("hex: odd length");
  auto nib = [](char c) -> int {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
  };
  std::string out(hex.size() / 2, '\0');
  for (size_t i = 0; i < out.size(); ++i) {
    int hi = nib(hex[2 * i]), lo = nib(hex[2 * i + 1]);
    if (hi < 0 || lo < 0) return InvalidArgumentError(fmt::format("hex: bad digit at {}", 2 * i));
    out[i] = static_cast<char>((hi << 4) | lo);
  }
  return out;
}

}  // namespace kw
