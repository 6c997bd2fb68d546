#include "mail/mime.h"

#include <gmime/gmime.h>

#include <ctime>
#include <memory>
#include <mutex>

#include <fmt/format.h>

#include "core/base64url.h"
#include "crypto/crypto.h"

namespace kw::mail {
namespace {

void InitGMime() {
  static std::once_flag once;
  std::call_once(once, [] { g_mime_init(); });
}

struct GFree {
  void operator()(void* p) const { g_free(p); }
};
using GStr = std::unique_ptr<char, GFree>;

struct Unref {
  void operator()(void* p) const {
    if (p) g_object_unref(p);
  }
};
template <typename T>
using GPtr = std::unique_ptr<T, Unref>;

// Parser options shared by every parse: loose RFC 2047 and address parsing (real mail breaks
// both), and fallback charsets for undeclared 8-bit header text.
GMimeParserOptions* Options() {
  static GMimeParserOptions* options = [] {
    InitGMime();
    GMimeParserOptions* o = g_mime_parser_options_new();
    static const char* kFallback[] = {"utf-8", "windows-1252", nullptr};
    g_mime_parser_options_set_fallback_charsets(o, kFallback);
    g_mime_parser_options_set_rfc2047_compliance_mode(o, GMIME_RFC_COMPLIANCE_LOOSE);
    g_mime_parser_options_set_address_compliance_mode(o, GMIME_RFC_COMPLIANCE_LOOSE);
    g_mime_parser_options_set_parameter_compliance_mode(o, GMIME_RFC_COMPLIANCE_LOOSE);
    return o;
  }();
  return options;
}

std::string Str(const char* s) { return s ? SanitizeUtf8(s) : std::string(); }

std::string Trim(std::string_view s) {
  size_t b = 0, e = s.size();
  while (b < e && (s[b] == ' ' || s[b] == '\t' || s[b] == '\r' || s[b] == '\n')) ++b;
  while (e > b && (s[e - 1] == ' ' || s[e - 1] == '\t' || s[e - 1] == '\r' || s[e - 1] == '\n')) --e;
  return std::string(s.substr(b, e - b));
}

void AppendAddresses(InternetAddressList* list, Value* out, int depth) {
  if (!list || depth > 4) return;
  int n = internet_address_list_length(list);
  for (int i = 0; i < n && out->as_array().size() < 10000; ++i) {
    InternetAddress* ia = internet_address_list_get_address(list, i);
    if (INTERNET_ADDRESS_IS_MAILBOX(ia)) {
      Value a = Value::MakeObject();
      const char* name = internet_address_get_name(ia);
      std::string nm = Str(name);
      a.Add("name", nm.empty() ? Value() : Value(nm));
      a.Add("email", Str(internet_address_mailbox_get_addr(INTERNET_ADDRESS_MAILBOX(ia))));
      out->Push(std::move(a));
    } else if (INTERNET_ADDRESS_IS_GROUP(ia)) {
      AppendAddresses(internet_address_group_get_members(INTERNET_ADDRESS_GROUP(ia)), out, depth + 1);
    }
  }
}

Value AddressesOf(GMimeMessage* msg, GMimeAddressType type, const char* header) {
  GMimeHeaderList* hl = g_mime_object_get_header_list(GMIME_OBJECT(msg));
  if (!g_mime_header_list_contains(hl, header)) return Value();
  Value out = Value::MakeArray();
  AppendAddresses(g_mime_message_get_addresses(msg, type), &out, 0);
  return out;
}

std::vector<std::string> ReferencesOf(const char* value) {
  std::vector<std::string> out;
  if (!value) return out;
  GMimeReferences* refs = g_mime_references_parse(Options(), value);
  if (!refs) return out;
  int n = g_mime_references_length(refs);
  for (int i = 0; i < n && i < 1000; ++i) out.push_back(Str(g_mime_references_get_message_id(refs, i)));
  g_mime_references_free(refs);
  return out;
}

Value HeadersOf(GMimeObject* obj, size_t max_headers, size_t* count) {
  Value out = Value::MakeArray();
  GMimeHeaderList* hl = g_mime_object_get_header_list(obj);
  int n = hl ? g_mime_header_list_get_count(hl) : 0;
  for (int i = 0; i < n; ++i) {
    if (++*count > max_headers) break;
    GMimeHeader* h = g_mime_header_list_get_header_at(hl, i);
    Value e = Value::MakeObject();
    e.Add("name", Str(g_mime_header_get_name(h)));
    std::string raw = Str(g_mime_header_get_raw_value(h));
    // JMAP's raw value runs from just after the colon to before the final CRLF.
    while (!raw.empty() && (raw.back() == '\n' || raw.back() == '\r')) raw.pop_back();
    e.Add("value", std::move(raw));
    out.Push(std::move(e));
  }
  return out;
}

std::string StreamBytes(GMimeStream* stream) {
  GByteArray* arr = g_mime_stream_mem_get_byte_array(GMIME_STREAM_MEM(stream));
  if (!arr) return std::string();
  return std::string(reinterpret_cast<const char*>(arr->data), arr->len);
}

std::string HtmlToText(std::string_view html) {
  std::string out;
  out.reserve(html.size());
  size_t i = 0;
  while (i < html.size()) {
    char c = html[i];
    if (c == '<') {
      size_t end = html.find('>', i);
      if (end == std::string_view::npos) break;
      std::string_view tag = html.substr(i + 1, end - i - 1);
      auto starts = [&](std::string_view name) {
        if (tag.size() < name.size()) return false;
        for (size_t k = 0; k < name.size(); ++k) {
          if (std::tolower(static_cast<unsigned char>(tag[k])) != name[k]) return false;
        }
        return true;
      };
      i = end + 1;
      for (std::string_view skip : {"style", "script"}) {
        if (starts(skip)) {
          std::string close = fmt::format("</{}", skip);
          size_t j = i;
          while (j < html.size()) {
            size_t lt = html.find('<', j);
            if (lt == std::string_view::npos) { j = html.size(); break; }
            bool match = lt + close.size() <= html.size();
            for (size_t k = 0; match && k < close.size(); ++k) {
              if (std::tolower(static_cast<unsigned char>(html[lt + k])) != close[k]) match = false;
            }
            if (match) { j = lt; break; }
            j = lt + 1;
          }
          i = j;
        }
      }
      out.push_back(' ');
    } else if (c == '&') {
      size_t semi = html.find(';', i);
      if (semi != std::string_view::npos && semi - i <= 8) {
        std::string_view ent = html.substr(i + 1, semi - i - 1);
        const char* rep = nullptr;
        if (ent == "amp") rep = "&";
        else if (ent == "lt") rep = "<";
        else if (ent == "gt") rep = ">";
        else if (ent == "quot") rep = "\"";
        else if (ent == "apos" || ent == "#39") rep = "'";
        else if (ent == "nbsp") rep = " ";
        if (rep) {
          out += rep;
          i = semi + 1;
          continue;
        }
      }
      out.push_back(c);
      ++i;
    } else {
      out.push_back(c);
      ++i;
    }
  }
  return SanitizeUtf8(out);
}

// Collapses whitespace and cuts at 256 code points (RFC 8621 §4.1.4 preview).
std::string MakePreview(std::string_view text) {
  std::string out;
  size_t chars = 0;
  bool space = false;
  for (size_t i = 0; i < text.size() && chars < 256; ++i) {
    unsigned char c = static_cast<unsigned char>(text[i]);
    if (c == ' ' || c == '\t' || c == '\r' || c == '\n' || c == '\f' || c == '\v') {
      space = !out.empty();
      continue;
    }
    if (space) {
      out.push_back(' ');
      ++chars;
      space = false;
      if (chars >= 256) break;
    }
    out.push_back(static_cast<char>(c));
    if ((c & 0xC0) != 0x80) ++chars;
    // Keep a whole multibyte sequence together.
    while (i + 1 < text.size() && (static_cast<unsigned char>(text[i + 1]) & 0xC0) == 0x80) {
      out.push_back(text[++i]);
    }
  }
  return out;
}

struct Builder {
  const ParseLimits& limits;
  ParsedEmail* email;
  size_t parts = 0;
  size_t headers = 0;
  int next_part_id = 1;
  bool too_many = false;

  Value Leaf(GMimeObject* obj, std::string content, const std::string& type) {
    Value p = Value::MakeObject();
    p.Add("partId", std::to_string(next_part_id++));
    std::string blob_id = BlobIdFor(content);
    p.Add("blobId", blob_id);
    p.Add("size", static_cast<int64_t>(content.size()));
    p.Add("headers", HeadersOf(obj, limits.max_headers, &headers));
    const char* filename = GMIME_IS_PART(obj) ? g_mime_part_get_filename(GMIME_PART(obj)) : nullptr;
    p.Add("name", filename ? Value(Str(filename)) : Value());
    p.Add("type", type);
    GMimeContentType* ct = g_mime_object_get_content_type(obj);
    const char* charset = ct ? g_mime_content_type_get_parameter(ct, "charset") : nullptr;
    if (charset) {
      p.Add("charset", Str(charset));
    } else if (type.rfind("text/", 0) == 0) {
      p.Add("charset", "us-ascii");
    } else {
      p.Add("charset", Value());
    }
    const char* disp = g_mime_object_get_disposition(obj);
    p.Add("disposition", disp ? Value(Str(disp)) : Value());
    const char* cid = g_mime_object_get_content_id(obj);
    p.Add("cid", cid ? Value(Str(cid)) : Value());
    p.Add("language", Value());
    GMimeHeaderList* hl = g_mime_object_get_header_list(obj);
    const char* loc = hl ? g_mime_header_list_get_header(hl, "Content-Location") ? g_mime_header_get_value(g_mime_header_list_get_header(hl, "Content-Location")) : nullptr : nullptr;
    p.Add("location", loc ? Value(Str(loc)) : Value());
    email->blobs.emplace_back(std::move(blob_id), std::move(content));
    return p;
  }

  Value Build(GMimeObject* obj, size_t depth) {
    ++parts;
    std::string type = "text/plain";
    if (GMimeContentType* ct = g_mime_object_get_content_type(obj)) {
      GStr mt(g_mime_content_type_get_mime_type(ct));
      if (mt) {
        type = SanitizeUtf8(mt.get());
        for (char& c : type) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
      }
    }
    if (GMIME_IS_MULTIPART(obj) && depth < limits.max_depth) {
      Value p = Value::MakeObject();
      p.Add("partId", Value());
      p.Add("blobId", Value());
      p.Add("size", 0);
      p.Add("headers", HeadersOf(obj, limits.max_headers, &headers));
      p.Add("name", Value());
      p.Add("type", type);
      p.Add("charset", Value());
      p.Add("disposition", Value());
      p.Add("cid", Value());
      p.Add("language", Value());
      p.Add("location", Value());
      Value subs = Value::MakeArray();
      GMimeMultipart* mp = GMIME_MULTIPART(obj);
      int n = g_mime_multipart_get_count(mp);
      for (int i = 0; i < n; ++i) {
        if (parts >= limits.max_parts) {
          too_many = true;
          break;
        }
        subs.Push(Build(g_mime_multipart_get_part(mp, i), depth + 1));
      }
      p.Add("subParts", std::move(subs));
      return p;
    }
    // A leaf: its content with the transfer encoding removed; text converted to UTF-8.
    GPtr<GMimeStream> mem(g_mime_stream_mem_new());
    std::string text;
    bool is_text = false;
    if (GMIME_IS_PART(obj)) {
      if (GMimeDataWrapper* w = g_mime_part_get_content(GMIME_PART(obj))) {
        g_mime_data_wrapper_write_to_stream(w, mem.get());
      }
      if (GMIME_IS_TEXT_PART(obj)) {
        is_text = true;
        GStr t(g_mime_text_part_get_text(GMIME_TEXT_PART(obj)));
        text = t ? SanitizeUtf8(t.get()) : std::string();
      }
    } else {
      // message/rfc822 or a too-deep multipart: the whole entity is the content.
      g_mime_object_write_content_to_stream(obj, nullptr, mem.get());
    }
    Value p = Leaf(obj, StreamBytes(mem.get()), type);
    if (is_text) {
      email->body_values.Set(p.Find("partId")->as_string(), std::move(text));
    }
    return p;
  }
};

bool IsInlineMedia(const std::string& t) {
  return t.rfind("image/", 0) == 0 || t.rfind("audio/", 0) == 0 || t.rfind("video/", 0) == 0;
}

Value WithoutSubParts(const Value& p) {
  Value out = p;
  out.Erase("subParts");
  return out;
}

// RFC 8621 §4.1.4 parseStructure, transcribed (null lists are nullptr).
void ParseStructure(const Value::Array& parts, const std::string& multipart_type, bool in_alternative,
                    Value::Array* html_body, Value::Array* text_body, Value::Array* attachments) {
  int64_t text_len = text_body ? static_cast<int64_t>(text_body->size()) : -1;
  int64_t html_len = html_body ? static_cast<int64_t>(html_body->size()) : -1;
  for (size_t i = 0; i < parts.size(); ++i) {
    const Value& part = parts[i];
    const std::string& type = part.Find("type")->as_string();
    const Value* disp = part.Find("disposition");
    bool is_attachment_disp = disp && disp->is_string() && disp->as_string() == "attachment";
    bool has_name = part.Find("name") && !part.Find("name")->is_null();
    bool is_multipart = type.rfind("multipart/", 0) == 0 && part.Find("subParts");
    bool is_inline = !is_attachment_disp &&
                     (type == "text/plain" || type == "text/html" || IsInlineMedia(type)) &&
                     (i == 0 || (multipart_type != "related" && (IsInlineMedia(type) || !has_name)));
    if (is_multipart) {
      std::string sub = type.substr(10);
      ParseStructure(part.Find("subParts")->as_array(), sub, in_alternative || sub == "alternative",
                     html_body, text_body, attachments);
    } else if (is_inline) {
      if (multipart_type == "alternative") {
        if (type == "text/plain") {
          if (text_body) text_body->push_back(WithoutSubParts(part));
        } else if (type == "text/html") {
          if (html_body) html_body->push_back(WithoutSubParts(part));
        } else {
          attachments->push_back(WithoutSubParts(part));
        }
        continue;
      } else if (in_alternative) {
        if (type == "text/plain") html_body = nullptr;
        if (type == "text/html") text_body = nullptr;
      }
      if (text_body) text_body->push_back(WithoutSubParts(part));
      if (html_body) html_body->push_back(WithoutSubParts(part));
      if ((!text_body || !html_body) && IsInlineMedia(type)) {
        attachments->push_back(WithoutSubParts(part));
      }
    } else {
      attachments->push_back(WithoutSubParts(part));
    }
  }
  if (multipart_type == "alternative" && text_body && html_body) {
    if (text_len == static_cast<int64_t>(text_body->size()) &&
        html_len != static_cast<int64_t>(html_body->size())) {
      for (size_t i = static_cast<size_t>(html_len); i < html_body->size(); ++i) {
        text_body->push_back((*html_body)[i]);
      }
    }
    if (html_len == static_cast<int64_t>(html_body->size()) &&
        text_len != static_cast<int64_t>(text_body->size())) {
      for (size_t i = static_cast<size_t>(text_len); i < text_body->size(); ++i) {
        html_body->push_back((*text_body)[i]);
      }
    }
  }
}

}  // namespace

std::string BlobIdFor(std::string_view bytes) {
  return "B" + HexEncode(crypto::Sha256(bytes)).substr(0, 40);
}

std::string SanitizeUtf8(std::string_view s) {
  std::string out;
  out.reserve(s.size());
  size_t i = 0;
  const auto* p = reinterpret_cast<const unsigned char*>(s.data());
  while (i < s.size()) {
    unsigned char c = p[i];
    if (c < 0x80) {
      if (c != 0) out.push_back(static_cast<char>(c));
      ++i;
      continue;
    }
    size_t len = 0;
    uint32_t cp = 0;
    if ((c & 0xE0) == 0xC0) { len = 2; cp = c & 0x1F; }
    else if ((c & 0xF0) == 0xE0) { len = 3; cp = c & 0x0F; }
    else if ((c & 0xF8) == 0xF0) { len = 4; cp = c & 0x07; }
    bool ok = len != 0 && i + len <= s.size();
    for (size_t k = 1; ok && k < len; ++k) {
      if ((p[i + k] & 0xC0) != 0x80) ok = false;
      else cp = (cp << 6) | (p[i + k] & 0x3F);
    }
    if (ok) {
      // Overlong forms, surrogates and values past U+10FFFF are invalid too.
      if ((len == 2 && cp < 0x80) || (len == 3 && cp < 0x800) || (len == 4 && cp < 0x10000) ||
          (cp >= 0xD800 && cp <= 0xDFFF) || cp > 0x10FFFF) {
        ok = false;
      }
    }
    if (ok) {
      out.append(s.substr(i, len));
      i += len;
    } else {
      out.append("\xEF\xBF\xBD");
      ++i;
    }
  }
  return out;
}

std::string DecodeHeaderText(std::string_view raw) {
  std::string t = Trim(raw);
  GStr d(g_mime_utils_header_decode_text(Options(), t.c_str()));
  std::string out = d ? SanitizeUtf8(d.get()) : SanitizeUtf8(t);
  // Unfold: JMAP's asText has no CRLF.
  std::string unfolded;
  for (char c : out) {
    if (c == '\r') continue;
    if (c == '\n') continue;
    unfolded.push_back(c);
  }
  return unfolded;
}

Value ParseAddressList(std::string_view raw) {
  std::string t(raw);
  Value out = Value::MakeArray();
  InternetAddressList* list = internet_address_list_parse(Options(), t.c_str());
  if (list) {
    AppendAddresses(list, &out, 0);
    g_object_unref(list);
  }
  return out;
}

Value ParseMessageIds(std::string_view raw) {
  std::string t(raw);
  auto ids = ReferencesOf(t.c_str());
  if (ids.empty()) return Value();
  Value out = Value::MakeArray();
  for (auto& id : ids) out.Push(std::move(id));
  return out;
}

bool ParseDate(std::string_view raw, int64_t* unix_seconds) {
  std::string t = Trim(raw);
  Options();
  GDateTime* dt = g_mime_utils_header_decode_date(t.c_str());
  if (!dt) return false;
  *unix_seconds = g_date_time_to_unix(dt);
  g_date_time_unref(dt);
  return true;
}

std::string EncodeHeaderText(std::string_view text) {
  bool ascii = true;
  for (unsigned char c : text) {
    if (c >= 0x80 || c == '\r' || c == '\n') ascii = false;
  }
  if (ascii) return std::string(text);
  Options();
  std::string t = SanitizeUtf8(text);
  for (char& c : t) {
    if (c == '\r' || c == '\n') c = ' ';
  }
  GStr e(g_mime_utils_header_encode_text(nullptr, t.c_str(), "utf-8"));
  return e ? std::string(e.get()) : t;
}

std::string FormatAddress(std::string_view name, std::string_view email) {
  Options();
  std::string n = SanitizeUtf8(name), e = SanitizeUtf8(email);
  for (std::string* s : {&n, &e}) {
    for (char& c : *s) {
      if (c == '\r' || c == '\n') c = ' ';
    }
  }
  GPtr<InternetAddress> ia(internet_address_mailbox_new(n.empty() ? nullptr : n.c_str(), e.c_str()));
  GStr s(internet_address_to_string(ia.get(), nullptr, TRUE));
  return s ? std::string(s.get()) : e;
}

std::string FormatUtcDate(int64_t unix_seconds) {
  std::time_t t = static_cast<std::time_t>(unix_seconds);
  std::tm tm{};
  gmtime_r(&t, &tm);
  return fmt::format("{:04}-{:02}-{:02}T{:02}:{:02}:{:02}Z", tm.tm_year + 1900, tm.tm_mon + 1,
                     tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec);
}

bool ParseUtcDate(std::string_view s, int64_t* unix_seconds) {
  // YYYY-MM-DDTHH:MM:SS[.fff](Z|+HH:MM|-HH:MM)
  auto num = [&](size_t pos, size_t len, int* out) {
    if (pos + len > s.size()) return false;
    int v = 0;
    for (size_t i = pos; i < pos + len; ++i) {
      if (s[i] < '0' || s[i] > '9') return false;
      v = v * 10 + (s[i] - '0');
    }
    *out = v;
    return true;
  };
  int y, mo, d, h, mi, se;
  if (s.size() < 20 || !num(0, 4, &y) || s[4] != '-' || !num(5, 2, &mo) || s[7] != '-' ||
      !num(8, 2, &d) || (s[10] != 'T' && s[10] != 't') || !num(11, 2, &h) || s[13] != ':' ||
      !num(14, 2, &mi) || s[16] != ':' || !num(17, 2, &se)) {
    return false;
  }
  if (mo < 1 || mo > 12 || d < 1 || d > 31 || h > 23 || mi > 59 || se > 60) return false;
  size_t i = 19;
  if (i < s.size() && s[i] == '.') {
    ++i;
    size_t start = i;
    while (i < s.size() && s[i] >= '0' && s[i] <= '9') ++i;
    if (i == start) return false;
  }
  int offset = 0;
  if (i < s.size() && (s[i] == 'Z' || s[i] == 'z') && i + 1 == s.size()) {
  } else if (i + 6 == s.size() && (s[i] == '+' || s[i] == '-') && s[i + 3] == ':') {
    int oh, om;
    if (!num(i + 1, 2, &oh) || !num(i + 4, 2, &om)) return false;
    offset = (oh * 60 + om) * 60 * (s[i] == '-' ? -1 : 1);
  } else {
    return false;
  }
  std::tm tm{};
  tm.tm_year = y - 1900;
  tm.tm_mon = mo - 1;
  tm.tm_mday = d;
  tm.tm_hour = h;
  tm.tm_min = mi;
  tm.tm_sec = se;
  *unix_seconds = static_cast<int64_t>(timegm(&tm)) - offset;
  return true;
}

Result<ParsedEmail> ParseMessage(std::string_view raw, const ParseLimits& limits) {
  if (raw.empty()) return InvalidArgumentError("message is empty");
  if (raw.size() > limits.max_bytes) {
    return InvalidArgumentError(
        fmt::format("message of {} bytes is larger than the limit of {}", raw.size(), limits.max_bytes));
  }
  GMimeParserOptions* options = Options();
  GPtr<GMimeStream> stream(g_mime_stream_mem_new_with_buffer(raw.data(), raw.size()));
  GPtr<GMimeParser> parser(g_mime_parser_new_with_stream(stream.get()));
  g_mime_parser_set_format(parser.get(), GMIME_FORMAT_MESSAGE);
  GPtr<GMimeMessage> msg(g_mime_parser_construct_message(parser.get(), options));
  if (!msg) return InvalidArgumentError("not an RFC 5322 message: no header section could be read");
  GMimeHeaderList* hl = g_mime_object_get_header_list(GMIME_OBJECT(msg.get()));
  if (!hl || g_mime_header_list_get_count(hl) == 0) {
    return InvalidArgumentError("not an RFC 5322 message: no header fields");
  }

  ParsedEmail e;
  e.size = raw.size();
  e.body_values = Value::MakeObject();
  Builder b{limits, &e};
  e.headers = HeadersOf(GMIME_OBJECT(msg.get()), limits.max_headers, &b.headers);
  e.message_id = Str(g_mime_message_get_message_id(msg.get()));
  auto header_value = [&](const char* name) -> const char* {
    GMimeHeader* h = g_mime_header_list_get_header(hl, name);
    return h ? g_mime_header_get_raw_value(h) : nullptr;
  };
  e.in_reply_to = ReferencesOf(header_value("In-Reply-To"));
  e.references = ReferencesOf(header_value("References"));
  e.subject = Str(g_mime_message_get_subject(msg.get()));
  if (GDateTime* dt = g_mime_message_get_date(msg.get())) {
    e.sent_at = g_date_time_to_unix(dt);
    e.has_sent_at = true;
  }
  e.from = AddressesOf(msg.get(), GMIME_ADDRESS_TYPE_FROM, "From");
  e.to = AddressesOf(msg.get(), GMIME_ADDRESS_TYPE_TO, "To");
  e.cc = AddressesOf(msg.get(), GMIME_ADDRESS_TYPE_CC, "Cc");
  e.bcc = AddressesOf(msg.get(), GMIME_ADDRESS_TYPE_BCC, "Bcc");
  e.reply_to = AddressesOf(msg.get(), GMIME_ADDRESS_TYPE_REPLY_TO, "Reply-To");
  e.sender = AddressesOf(msg.get(), GMIME_ADDRESS_TYPE_SENDER, "Sender");

  GMimeObject* body = g_mime_message_get_mime_part(msg.get());
  if (body) {
    e.body_structure = b.Build(body, 0);
  } else {
    // Headers only: an empty text/plain body.
    e.body_structure = Value::MakeObject();
    e.body_structure.Add("partId", "1");
    e.body_structure.Add("blobId", BlobIdFor(""));
    e.body_structure.Add("size", 0);
    e.body_structure.Add("headers", Value::MakeArray());
    e.body_structure.Add("name", Value());
    e.body_structure.Add("type", "text/plain");
    e.body_structure.Add("charset", "us-ascii");
    e.body_structure.Add("disposition", Value());
    e.body_structure.Add("cid", Value());
    e.body_structure.Add("language", Value());
    e.body_structure.Add("location", Value());
    e.body_values.Set("1", "");
    e.blobs.emplace_back(BlobIdFor(""), "");
  }
  if (b.too_many) {
    return InvalidArgumentError(fmt::format("message has more than {} MIME parts", limits.max_parts));
  }

  Value::Array html, text, att;
  ParseStructure(Value::Array{e.body_structure}, "mixed", false, &html, &text, &att);
  e.has_attachment = !att.empty();
  std::string search;
  for (const auto& p : text) {
    const Value* id = p.Find("partId");
    const Value* v = id && id->is_string() ? e.body_values.Find(id->as_string()) : nullptr;
    if (!v) continue;
    std::string t = p.Find("type")->as_string() == "text/html" ? HtmlToText(v->as_string())
                                                               : v->as_string();
    if (!search.empty()) search.push_back('\n');
    search += t;
  }
  e.preview = MakePreview(search);
  e.search_text = std::move(search);
  e.text_body = Value(std::move(text));
  e.html_body = Value(std::move(html));
  e.attachments = Value(std::move(att));
  return e;
}

}  // namespace kw::mail
