// URL-encoded text: strict percent-decoding, query strings and application/x-www-form-urlencoded
// bodies (the format OAuth 2.0 uses for both, RFC 6749 Appendix B).
//
// Grammar accepted (stricter than the WHATWG URL standard, which repairs what it cannot parse):
//
//   params  = "" / param *( "&" param )
//   param   = name [ "=" value ]          ; no "=": the value is ""
//   name    = 1*pchar                     ; non-empty after decoding
//   value   = *( pchar / "=" )            ; split at the first "="
//   pchar   = any byte 0x21-0x7E except "&", "=" (in names) and "%" / pct-enc / "+"
//   pct-enc = "%" HEXDIG HEXDIG           ; any other "%" is an error
//   "+"     = a space
//
// Refused, with InvalidArgument naming the parameter: an empty param (a stray "&"), an empty name,
// a raw byte outside 0x21-0x7E (space, control, non-ASCII), bad percent-encoding, a decoded name
// or value that is not UTF-8 or contains NUL, and a name given twice (OAuth forbids repeating a
// parameter, RFC 6749 §3.1, and picking one of two values is how parameter pollution starts).
// Names in messages are quoted with non-printable bytes escaped, so a message can be shown to the
// client as it is.
//
// All functions are pure and thread-safe.
#pragma once

#include <cstddef>
#include <string>
#include <string_view>

#include "core/status.h"
#include "http/message.h"

namespace kw::http {

inline constexpr size_t kDefaultMaxFormBytes = 64 * 1024;

// Decodes %XX escapes (and "+" as a space when `plus_is_space`). InvalidArgument on a "%" not
// followed by two hex digits. Does not check the decoded bytes.
Result<std::string> PercentDecode(std::string_view text, bool plus_is_space);

// Parses a query string (the part after "?", without it) per the grammar above.
Result<Params> ParseQuery(std::string_view query);

// Parses an application/x-www-form-urlencoded body per the grammar above. A body larger than
// `max_bytes` is ResourceExhausted.
Result<Params> ParseFormBody(std::string_view body, size_t max_bytes = kDefaultMaxFormBytes);

// ParseFormBody on a request whose Content-Type must be application/x-www-form-urlencoded
// (parameters allowed; a charset, if given, must be UTF-8). InvalidArgument otherwise.
Result<Params> ParseFormRequest(const Request& request, size_t max_bytes = kDefaultMaxFormBytes);

// `s` made safe to quote in an error message or a log line: bytes outside 0x21-0x7E, quotes and
// backslashes as \xHH, cut at `max_len` bytes of input with "..." appended.
std::string PrintableForMessage(std::string_view s, size_t max_len = 64);

}  // namespace kw::http
