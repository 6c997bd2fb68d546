#include "http/form.h"

#include <fmt/format.h>
#include <simdjson.h>

#include <utility>

namespace kw::http {
namespace {

int HexValue(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

bool IsRawAllowed(char c) { return c >= 0x21 && c <= 0x7E; }

std::string Quoted(std::string_view s) { return "'" + PrintableForMessage(s) + "'"; }

// Decodes one name or value; `raw_name` is the name as received, for messages.
Result<std::string> DecodeComponent(std::string_view raw, std::string_view raw_name) {
  for (char c : raw) {
    if (!IsRawAllowed(c)) {
      return InvalidArgumentError(fmt::format("invalid character 0x{:02x} in parameter {}",
                                              static_cast<unsigned char>(c), Quoted(raw_name)));
    }
  }
  auto decoded = PercentDecode(raw, /*plus_is_space=*/true);
  if (!decoded.ok()) {
    return InvalidArgumentError(
        fmt::format("bad percent-encoding in parameter {}", Quoted(raw_name)));
  }
  const std::string& s = *decoded;
  if (s.find('\0') != std::string::npos) {
    return InvalidArgumentError(fmt::format("parameter {} contains a NUL byte", Quoted(raw_name)));
  }
  if (!simdjson::validate_utf8(s.data(), s.size())) {
    return InvalidArgumentError(fmt::format("parameter {} is not valid UTF-8", Quoted(raw_name)));
  }
  return decoded;
}

Result<Params> ParseUrlEncoded(std::string_view text) {
  Params params;
  if (text.empty()) return params;
  size_t pos = 0;
  while (true) {
    size_t amp = text.find('&', pos);
    std::string_view param =
        text.substr(pos, amp == std::string_view::npos ? std::string_view::npos : amp - pos);
    if (param.empty()) {
      return InvalidArgumentError(fmt::format("empty parameter at offset {} (a stray '&')", pos));
    }
    size_t eq = param.find('=');
    std::string_view raw_name = param.substr(0, eq);
    std::string_view raw_value =
        eq == std::string_view::npos ? std::string_view() : param.substr(eq + 1);
    if (raw_name.empty()) {
      return InvalidArgumentError(fmt::format("parameter with an empty name at offset {}", pos));
    }
    KW_ASSIGN_OR_RETURN(std::string name, DecodeComponent(raw_name, raw_name));
    if (name.empty()) {
      return InvalidArgumentError(fmt::format("parameter with an empty name at offset {}", pos));
    }
    KW_ASSIGN_OR_RETURN(std::string value, DecodeComponent(raw_value, raw_name));
    if (params.count(name) != 0) {
      return InvalidArgumentError(fmt::format("duplicate parameter {}", Quoted(name)));
    }
    params.emplace(std::move(name), std::move(value));
    if (amp == std::string_view::npos) break;
    pos = amp + 1;
  }
  return params;
}

std::string_view TrimSpaces(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t')) s.remove_suffix(1);
  return s;
}

bool EqualsIgnoreCase(std::string_view a, std::string_view b) {
  return !CaseInsensitiveLess()(a, b) && !CaseInsensitiveLess()(b, a);
}

}  // namespace

Result<std::string> PercentDecode(std::string_view text, bool plus_is_space) {
  std::string out;
  out.reserve(text.size());
  for (size_t i = 0; i < text.size(); ++i) {
    char c = text[i];
    if (c == '%') {
      if (i + 2 >= text.size()) {
        return InvalidArgumentError("truncated percent-encoding");
      }
      int hi = HexValue(text[i + 1]);
      int lo = HexValue(text[i + 2]);
      if (hi < 0 || lo < 0) return InvalidArgumentError("bad percent-encoding");
      out.push_back(static_cast<char>(hi * 16 + lo));
      i += 2;
    } else if (c == '+' && plus_is_space) {
      out.push_back(' ');
    } else {
      out.push_back(c);
    }
  }
  return out;
}

Result<Params> ParseQuery(std::string_view query) {
  auto params = ParseUrlEncoded(query);
  if (!params.ok()) return params.status().WithContext("query");
  return params;
}

Result<Params> ParseFormBody(std::string_view body, size_t max_bytes) {
  if (body.size() > max_bytes) {
    return ResourceExhaustedError(
        fmt::format("form body of {} bytes exceeds the limit of {}", body.size(), max_bytes));
  }
  auto params = ParseUrlEncoded(body);
  if (!params.ok()) return params.status().WithContext("form body");
  return params;
}

Result<Params> ParseFormRequest(const Request& request, size_t max_bytes) {
  constexpr std::string_view kFormType = "application/x-www-form-urlencoded";
  auto content_type = request.Header("Content-Type");
  if (!content_type || request.headers.count("Content-Type") != 1) {
    return InvalidArgumentError(fmt::format("Content-Type must be {}", kFormType));
  }
  std::string_view ct = *content_type;
  size_t semi = ct.find(';');
  if (!EqualsIgnoreCase(TrimSpaces(ct.substr(0, semi)), kFormType)) {
    return InvalidArgumentError(fmt::format("Content-Type must be {}", kFormType));
  }
  std::string_view params =
      semi == std::string_view::npos ? std::string_view() : ct.substr(semi + 1);
  while (!params.empty()) {
    size_t next = params.find(';');
    std::string_view param = TrimSpaces(params.substr(0, next));
    params = next == std::string_view::npos ? std::string_view() : params.substr(next + 1);
    size_t eq = param.find('=');
    if (eq == std::string_view::npos ||
        !EqualsIgnoreCase(TrimSpaces(param.substr(0, eq)), "charset")) {
      continue;
    }
    std::string_view charset = TrimSpaces(param.substr(eq + 1));
    if (charset.size() >= 2 && charset.front() == '"' && charset.back() == '"') {
      charset = charset.substr(1, charset.size() - 2);
    }
    if (!EqualsIgnoreCase(charset, "utf-8")) {
      return InvalidArgumentError("form body charset must be UTF-8");
    }
  }
  return ParseFormBody(request.body, max_bytes);
}

std::string PrintableForMessage(std::string_view s, size_t max_len) {
  std::string out;
  bool cut = s.size() > max_len;
  if (cut) s = s.substr(0, max_len);
  for (unsigned char c : s) {
    if (c < 0x21 || c > 0x7E || c == '\'' || c == '"' || c == '\\') {
      out += fmt::format("\\x{:02x}", c);
    } else {
      out.push_back(static_cast<char>(c));
    }
  }
  if (cut) out += "...";
  return out;
}

}  // namespace kw::http
