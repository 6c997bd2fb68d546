// MIME: turns raw RFC 5322 bytes into what JMAP serves (RFC 8621 §4), with GMime 3.
//
// Best effort, never a crash: GMime recovers from most damage (bad folding, missing boundaries,
// unknown charsets); what it cannot make sense of is refused with InvalidArgument naming the
// problem. Every string produced is valid UTF-8: RFC 2047 words and text parts are converted from
// their declared charset (ISO-8859-1, Shift_JIS, ...); undeclared 8-bit header bytes are read as
// UTF-8 when they are, else as Windows-1252; raw values keep invalid bytes as U+FFFD.
//
// Limits (untrusted input): message size (ParseLimits), at most max_parts leaf and multipart
// parts and max_depth levels of multipart nesting (deeper content is one opaque attachment).
//
// Thread safety: ParseMessage is reentrant (g_mime_init runs once, on first use).
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "core/status.h"
#include "mail/json_value.h"

namespace kw::mail {

struct ParseLimits {
  size_t max_bytes = 50ull << 20;
  size_t max_parts = 1000;
  size_t max_depth = 10;  // multipart levels; the stored JSON must stay within the parser's depth
  size_t max_headers = 2000;
};

struct ParsedEmail {
  size_t size = 0;                  // raw octets
  std::string message_id;           // first Message-ID, without "<>" ("" if none)
  std::vector<std::string> in_reply_to, references;  // ids without "<>"
  std::string subject;              // decoded ("" if none)
  int64_t sent_at = 0;              // Date header, Unix seconds (0 if none or unparsable)
  bool has_sent_at = false;
  // Address lists as JMAP EmailAddress arrays ([{"name","email"}]), null when the header is absent.
  Value from, to, cc, bcc, reply_to, sender;
  Value headers;         // [{"name","value"}] raw values, in order
  Value body_structure;  // EmailBodyPart tree (partId, blobId, size, headers, name, type,
                         // charset, disposition, cid, language, location, subParts)
  Value text_body, html_body, attachments;  // EmailBodyPart arrays (RFC 8621 §4.1.4)
  Value body_values;     // {partId: decoded UTF-8 text} for every text/* leaf part
  std::string preview;   // up to 256 characters of plain text
  bool has_attachment = false;
  std::string search_text;  // plain text of the text bodies, for full-text search
  // Content of every leaf part (decoded transfer encoding), by blob id.
  std::vector<std::pair<std::string, std::string>> blobs;
};

// Parses `raw`. Errors: InvalidArgument ("message is empty", "message larger than ...",
// "no header section", ...).
Result<ParsedEmail> ParseMessage(std::string_view raw, const ParseLimits& limits = {});

// The content-addressed blob id of `bytes`: "B" + the first 40 hex digits of SHA-256.
std::string BlobIdFor(std::string_view bytes);

// `s` with every invalid UTF-8 sequence replaced by U+FFFD and NUL removed.
std::string SanitizeUtf8(std::string_view s);

// Decodes an RFC 2047 header value (JMAP's asText form); invalid bytes become U+FFFD.
std::string DecodeHeaderText(std::string_view raw);
// Parses an address-list header value into a JMAP EmailAddress array (asAddresses).
Value ParseAddressList(std::string_view raw);
// Parses a message-id list (asMessageIds); null when none.
Value ParseMessageIds(std::string_view raw);
// Parses an RFC 5322 date (asDate) into Unix seconds; false when unparsable.
bool ParseDate(std::string_view raw, int64_t* unix_seconds);

// RFC 2047-encodes `text` for a header when it is not plain ASCII.
std::string EncodeHeaderText(std::string_view text);
// "Name <email>" rendered for a header, the name encoded when needed.
std::string FormatAddress(std::string_view name, std::string_view email);

// Formats Unix seconds as RFC 3339 UTC ("2023-06-16T09:00:00Z"), and parses that form (also with
// fractional seconds or a numeric offset).
std::string FormatUtcDate(int64_t unix_seconds);
bool ParseUtcDate(std::string_view s, int64_t* unix_seconds);

}  // namespace kw::mail
