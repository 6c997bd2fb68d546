// libFuzzer target: arbitrary bytes through the MIME parser and the header decoders (mail/mime.h).
//
// Invariants (a violation aborts, which libFuzzer reports as a crash with the input saved):
//  - ParseMessage never crashes; a refusal has a message.
//  - Every string it produces is valid UTF-8: the JSON of the headers, the body structure, the
//    text/html/attachment lists and the body values serializes and parses back strictly (which
//    also checks that no object has a duplicate member), and so do the address lists.
//  - Every leaf part's blob id is BlobIdFor(its content), and the preview is at most 256 code
//    points.
//  - The header-value decoders (asText, asAddresses, asMessageIds, asDate) accept any input.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>
#include <string_view>

#include "mail/json_value.h"
#include "mail/mime.h"

namespace {

void Check(bool ok) {
  if (!ok) std::abort();
}

void CheckJson(const kw::mail::Value& v) {
  auto back = kw::mail::ParseJson(v.Serialize());
  Check(back.ok());
  Check(*back == v);
}

size_t CodePoints(std::string_view s) {
  size_t n = 0;
  for (unsigned char c : s) n += (c & 0xC0) != 0x80;
  return n;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string_view in(reinterpret_cast<const char*>(data), size);
  kw::mail::ParseLimits limits;
  limits.max_bytes = 1 << 20;
  limits.max_parts = 200;
  auto e = kw::mail::ParseMessage(in, limits);
  if (!e.ok()) {
    Check(!e.status().message().empty());
  } else {
    for (const auto* v : {&e->headers, &e->body_structure, &e->text_body, &e->html_body,
                          &e->attachments, &e->body_values, &e->from, &e->to, &e->cc, &e->bcc,
                          &e->reply_to, &e->sender}) {
      CheckJson(*v);
    }
    Check(kw::mail::SanitizeUtf8(e->subject) == e->subject);
    Check(kw::mail::SanitizeUtf8(e->preview) == e->preview);
    Check(CodePoints(e->preview) <= 256);
    for (const auto& [id, bytes] : e->blobs) Check(id == kw::mail::BlobIdFor(bytes));
  }
  std::string_view header = in.substr(0, 4096);
  std::string text = kw::mail::DecodeHeaderText(header);
  Check(kw::mail::SanitizeUtf8(text) == text);
  CheckJson(kw::mail::ParseAddressList(header));
  CheckJson(kw::mail::ParseMessageIds(header));
  int64_t t;
  (void)kw::mail::ParseDate(header, &t);
  (void)kw::mail::ParseUtcDate(header, &t);
  return 0;
}
