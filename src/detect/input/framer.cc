// Framers. What each accepts:
//
// Lines: records separated by "\n" (a "\r" before it is dropped); blank lines are skipped; the
//   last line may lack its "\n". Record::line is the 1-based line number. A line longer than
//   max_record_bytes is a bad record and is skipped up to its "\n".
//
// JSON stream: a sequence of top-level JSON values separated by whitespace. A top-level array's
//   elements are the records; a top-level object is one record, unless its first member is
//   "records" (Azure Monitor) or its first members are "@odata.*" followed by "value" (Graph API
//   pages) holding an array: then that array's elements are the records and the other members
//   are skipped. A line "Record <n>" between values (evtx_dump without
//   --dont-show-record-number) is skipped. Record::line is the 1-based index of the record in
//   the file. Values are delimited by a scanner that tracks strings (with escapes) and a bracket
//   stack (at most 1024 deep); it does not validate numbers or literals, which the parser
//   downstream does. After a structural error (a mismatched bracket, text where a value or a
//   separator should be) the framer reports a bad record and resumes at the next line. An
//   element longer than max_record_bytes is a bad record and is skipped.
//
// CSV (RFC 4180): rows end with "\n" or "\r\n" outside quotes; fields are separated by ","; a
//   field is either unquoted (no '"' inside) or quoted, with '"' written as '""', and may then
//   hold newlines and commas. An optional first line "#TYPE …" (Windows PowerShell Export-Csv)
//   precedes the header; the header's "AuditData" column (case-insensitive, quoted or not) is the
//   record. Record::line is the physical line where the row starts (the header is line 1, or 2
//   after a #TYPE line). Bad quoting, a short row or an unterminated quote at the end of the file
//   is a bad record; a row longer than max_record_bytes is a bad record, skipped to its end (quotes
//   still tracked, so an unterminated quote skips to the end of the file).
#include "detect/input/framer.h"

#include <fmt/format.h>

#include <algorithm>
#include <cctype>
#include <cstring>
#include <vector>

#include "core/ascii.h"

namespace kw::detect::internal {
namespace {

constexpr size_t kMaxDepth = 1024;

bool IsSpace(char c) { return c == ' ' || c == '\t' || c == '\r' || c == '\n'; }

bool IsBlank(std::string_view s) {
  for (char c : s) {
    if (!IsSpace(c)) return false;
  }
  return true;
}

const char* FindByte(const char* p, const char* end, char c) {
  return static_cast<const char*>(std::memchr(p, c, static_cast<size_t>(end - p)));
}

uint64_t CountNewlines(std::string_view s) {
  return static_cast<uint64_t>(std::count(s.begin(), s.end(), '\n'));
}

std::string Oversize(size_t max) {
  return fmt::format("record longer than the limit of {} bytes", max);
}

class LineFramer : public Framer {
 public:
  explicit LineFramer(size_t max) : max_(max) {}

  FrameStatus Next(Window* w, Frame* f) override {
    for (;;) {
      const char* base = w->data.get();
      const char* b = base + w->begin;
      const char* e = base + w->end;
      if (skipping_) {
        const char* nl = FindByte(b, e, '\n');
        if (nl == nullptr) {
          w->begin = w->end;
          if (w->eof) return FrameStatus::kEnd;
          return FrameStatus::kNeedMore;
        }
        w->begin = static_cast<size_t>(nl + 1 - base);
        skipping_ = false;
        continue;
      }
      if (b == e) return w->eof ? FrameStatus::kEnd : FrameStatus::kNeedMore;
      const char* nl = FindByte(b + scanned_, e, '\n');
      size_t len;
      if (nl == nullptr) {
        if (!w->eof) {
          if (static_cast<size_t>(e - b) > max_) {
            ++line_;
            f->line = line_;
            f->reason = Oversize(max_);
            skipping_ = true;
            scanned_ = 0;
            w->begin = w->end;
            return FrameStatus::kBad;
          }
          scanned_ = static_cast<size_t>(e - b);
          return FrameStatus::kNeedMore;
        }
        len = static_cast<size_t>(e - b);
        w->begin = w->end;
      } else {
        len = static_cast<size_t>(nl - b);
        w->begin = static_cast<size_t>(nl + 1 - base);
      }
      scanned_ = 0;
      ++line_;
      std::string_view text(b, len);
      if (!text.empty() && text.back() == '\r') text.remove_suffix(1);
      if (text.size() > max_) {
        f->line = line_;
        f->reason = Oversize(max_);
        return FrameStatus::kBad;
      }
      if (IsBlank(text)) continue;
      f->text = text;
      f->line = line_;
      return FrameStatus::kRecord;
    }
  }

 private:
  size_t max_;
  uint64_t line_ = 0;
  size_t scanned_ = 0;  // bytes after begin already known to hold no newline
  bool skipping_ = false;
};

// Finds where a JSON value starting at text[0] ends, resumably.
class ValueScanner {
 public:
  enum class Result { kDone, kIncomplete, kError };

  void Reset() {
    off_ = 0;
    stack_.clear();
    in_string_ = false;
    scalar_ = false;
    started_ = false;
  }
  // Resets to scan the rest of an object whose '{' has already been consumed.
  void ResetInsideObject() {
    Reset();
    stack_.push_back('{');
    started_ = true;
  }
  size_t offset() const { return off_; }
  // Forgets the first n bytes (discarded by the caller) while keeping the state.
  void Discard(size_t n) { off_ = off_ >= n ? off_ - n : 0; }

  // On kDone, *len is the value's length. On kError, *error says why and *len is where.
  Result Scan(std::string_view text, size_t* len, std::string* error) {
    const char* base = text.data();
    const char* p = base + off_;
    const char* e = base + text.size();
    if (!started_) {
      if (p == e) return Result::kIncomplete;
      started_ = true;
      char c = *p;
      if (c == '{' || c == '[') {
        stack_.push_back(c);
        ++p;
      } else if (c == '"') {
        in_string_ = true;
        ++p;
      } else {
        scalar_ = true;
      }
    }
    while (p < e) {
      if (in_string_) {
        const char* q = FindByte(p, e, '"');
        if (q == nullptr) {
          // Keep a trailing run of backslashes unscanned: its parity decides the next quote.
          p = e;
          while (p > base + off_ && p[-1] == '\\') --p;
          break;
        }
        size_t backslashes = 0;
        for (const char* r = q; r > base && r[-1] == '\\'; --r) ++backslashes;
        p = q + 1;
        if (backslashes % 2 == 1) continue;
        in_string_ = false;
        if (stack_.empty()) {
          *len = static_cast<size_t>(p - base);
          return Result::kDone;
        }
        continue;
      }
      char c = *p;
      if (scalar_) {
        if (IsSpace(c) || c == ',' || c == ']' || c == '}' || c == '{' || c == '[') {
          *len = static_cast<size_t>(p - base);
          if (*len == 0) {
            *error = fmt::format("unexpected '{}' in JSON", c);
            return Result::kError;
          }
          return Result::kDone;
        }
        ++p;
        continue;
      }
      switch (c) {
        case '"':
          in_string_ = true;
          break;
        case '{':
        case '[':
          if (stack_.size() >= kMaxDepth) {
            *error = fmt::format("JSON nested deeper than {} levels", kMaxDepth);
            *len = static_cast<size_t>(p - base);
            return Result::kError;
          }
          stack_.push_back(c);
          break;
        case '}':
        case ']':
          if (stack_.empty() || (c == '}') != (stack_.back() == '{')) {
            *error = fmt::format("unexpected '{}' in JSON", c);
            *len = static_cast<size_t>(p - base);
            return Result::kError;
          }
          stack_.pop_back();
          if (stack_.empty()) {
            *len = static_cast<size_t>(p + 1 - base);
            return Result::kDone;
          }
          break;
        default:
          break;
      }
      ++p;
    }
    off_ = static_cast<size_t>(p - base);
    return Result::kIncomplete;
  }

  // At the end of input: a scalar ends there; anything else is truncated.
  bool CompleteAtEnd() const { return scalar_ && !in_string_; }

 private:
  size_t off_ = 0;
  std::string stack_;
  bool in_string_ = false;
  bool scalar_ = false;
  bool started_ = false;
};

// Reads a JSON string starting at s[i] == '"'; returns the index after its closing quote and
// the raw (still escaped) content, or npos if incomplete.
size_t ReadString(std::string_view s, size_t i, std::string_view* content) {
  size_t j = i + 1;
  while (j < s.size()) {
    if (s[j] == '\\') {
      j += 2;
      continue;
    }
    if (s[j] == '"') {
      *content = s.substr(i + 1, j - i - 1);
      return j + 1;
    }
    ++j;
  }
  return std::string_view::npos;
}

size_t SkipSpace(std::string_view s, size_t i) {
  while (i < s.size() && IsSpace(s[i])) ++i;
  return i;
}

enum class Wrapper { kNo, kYes, kIncomplete };

// s starts with '{'. On kYes, *array_start is the index just after the wrapped array's '['.
Wrapper DetectWrapper(std::string_view s, size_t* array_start) {
  size_t i = 1;
  bool first = true;
  for (int members = 0; members < 16; ++members) {
    i = SkipSpace(s, i);
    if (i >= s.size()) return Wrapper::kIncomplete;
    if (!first) {
      if (s[i] != ',') return Wrapper::kNo;
      i = SkipSpace(s, i + 1);
      if (i >= s.size()) return Wrapper::kIncomplete;
    }
    first = false;
    if (s[i] != '"') return Wrapper::kNo;
    std::string_view key;
    size_t after = ReadString(s, i, &key);
    if (after == std::string_view::npos) return Wrapper::kIncomplete;
    i = SkipSpace(s, after);
    if (i >= s.size()) return Wrapper::kIncomplete;
    if (s[i] != ':') return Wrapper::kNo;
    i = SkipSpace(s, i + 1);
    if (i >= s.size()) return Wrapper::kIncomplete;
    if (key == "records" || (key == "value" && members > 0)) {
      if (s[i] != '[') return Wrapper::kNo;
      *array_start = i + 1;
      return Wrapper::kYes;
    }
    if (!key.starts_with("@odata.")) return Wrapper::kNo;
    if (s[i] != '"') return Wrapper::kNo;  // @odata members hold strings
    std::string_view ignored;
    i = ReadString(s, i, &ignored);
    if (i == std::string_view::npos) return Wrapper::kIncomplete;
  }
  return Wrapper::kNo;
}

class JsonStreamFramer : public Framer {
 public:
  explicit JsonStreamFramer(size_t max) : max_(max) {}

  FrameStatus Next(Window* w, Frame* f) override {
    for (;;) {
      std::string_view v = w->view();
      if (skipping_value_) {
        size_t len = 0;
        std::string err;
        ValueScanner::Result r = scanner_.Scan(v, &len, &err);
        if (r == ValueScanner::Result::kIncomplete) {
          scanner_.Discard(v.size());
          w->begin = w->end;
          if (w->eof) return FrameStatus::kEnd;
          return FrameStatus::kNeedMore;
        }
        skipping_value_ = false;
        if (r == ValueScanner::Result::kError) {
          w->begin += len + 1;
          ResyncToNewline();
          continue;
        }
        w->begin += len;
        if (state_ == State::kWrapperRest) state_ = State::kTop;
        continue;
      }
      if (resync_) {
        size_t nl = v.find('\n');
        if (nl == std::string_view::npos) {
          w->begin = w->end;
          if (w->eof) return FrameStatus::kEnd;
          return FrameStatus::kNeedMore;
        }
        w->begin += nl + 1;
        resync_ = false;
        continue;
      }
      size_t i = in_value_ ? 0 : SkipSpace(v, 0);
      w->begin += i;
      v.remove_prefix(i);
      if (v.empty()) {
        if (!w->eof) return FrameStatus::kNeedMore;
        if (state_ != State::kTop && !reported_end_) {
          reported_end_ = true;
          f->line = index_ + 1;
          f->reason = state_ == State::kArray ? "truncated: the JSON array is not closed"
                                              : "truncated: the wrapper object is not closed";
          return FrameStatus::kBad;
        }
        return FrameStatus::kEnd;
      }
      char c = v[0];
      switch (state_) {
        case State::kTop: {
          if (c == '[') {
            ++w->begin;
            state_ = State::kArray;
            wrapped_ = false;
            continue;
          }
          if (c == '{' && !in_value_) {
            size_t start = 0;
            Wrapper wr = DetectWrapper(v, &start);
            if (wr == Wrapper::kIncomplete && !w->eof && v.size() < 65536) {
              return FrameStatus::kNeedMore;
            }
            if (wr == Wrapper::kYes) {
              w->begin += start;
              state_ = State::kArray;
              wrapped_ = true;
              continue;
            }
          }
          if (c == 'R' && !in_value_) {
            size_t nl = v.find('\n');
            if (nl == std::string_view::npos && !w->eof && v.size() < 256) {
              return FrameStatus::kNeedMore;
            }
            std::string_view line = v.substr(0, nl);
            if (line.starts_with("Record ") && line.size() < 64) {
              w->begin += nl == std::string_view::npos ? v.size() : nl + 1;
              continue;
            }
          }
          if (c != '{') {
            f->line = index_ + 1;
            f->reason =
                fmt::format("unexpected '{}' at the top level of the JSON text", Printable(c));
            ++w->begin;
            ResyncToNewline();
            return FrameStatus::kBad;
          }
          return Value(w, f);
        }
        case State::kArray: {
          if (!in_value_) {
            if (c == ']') {
              ++w->begin;
              if (wrapped_) {
                state_ = State::kWrapperRest;
                scanner_.ResetInsideObject();
                skipping_value_ = true;
              } else {
                state_ = State::kTop;
              }
              continue;
            }
            if (c == ',') {
              ++w->begin;
              continue;
            }
          }
          return Value(w, f);
        }
        case State::kWrapperRest:
          state_ = State::kTop;
          continue;
      }
    }
  }

 private:
  enum class State { kTop, kArray, kWrapperRest };

  static char Printable(char c) { return std::isprint(static_cast<unsigned char>(c)) ? c : '?'; }

  void ResyncToNewline() {
    resync_ = true;
    in_value_ = false;
  }

  // Frames the value at w->begin (an array element or a top-level object).
  FrameStatus Value(Window* w, Frame* f) {
    if (!in_value_) {
      scanner_.Reset();
      in_value_ = true;
    }
    std::string_view v = w->view();
    size_t len = 0;
    std::string err;
    ValueScanner::Result r = scanner_.Scan(v, &len, &err);
    if (r == ValueScanner::Result::kIncomplete) {
      if (w->eof) {
        in_value_ = false;
        ++index_;
        f->line = index_;
        if (scanner_.CompleteAtEnd()) {
          f->text = v;
          w->begin = w->end;
          return FrameStatus::kRecord;
        }
        f->reason = "truncated: the file ends inside a JSON value";
        w->begin = w->end;
        reported_end_ = true;
        return FrameStatus::kBad;
      }
      if (v.size() > max_) {
        in_value_ = false;
        ++index_;
        f->line = index_;
        f->reason = Oversize(max_);
        scanner_.Discard(v.size());
        skipping_value_ = true;
        w->begin = w->end;
        return FrameStatus::kBad;
      }
      return FrameStatus::kNeedMore;
    }
    in_value_ = false;
    ++index_;
    f->line = index_;
    if (r == ValueScanner::Result::kError) {
      f->reason = err;
      w->begin += len + 1;
      ResyncToNewline();
      return FrameStatus::kBad;
    }
    f->text = v.substr(0, len);
    w->begin += len;
    if (len > max_) {
      f->reason = Oversize(max_);
      return FrameStatus::kBad;
    }
    return FrameStatus::kRecord;
  }

  size_t max_;
  State state_ = State::kTop;
  bool wrapped_ = false;
  bool in_value_ = false;
  bool skipping_value_ = false;
  bool resync_ = false;
  bool reported_end_ = false;
  uint64_t index_ = 0;
  ValueScanner scanner_;
};


class CsvFramer : public Framer {
 public:
  explicit CsvFramer(size_t max) : max_(max) {}

  FrameStatus Next(Window* w, Frame* f) override {
    for (;;) {
      if (failed_) {
        w->begin = w->end;
        return w->eof ? FrameStatus::kEnd : FrameStatus::kNeedMore;
      }
      std::string_view v = w->view();
      if (v.empty()) {
        if (!w->eof) return FrameStatus::kNeedMore;
        if (!header_done_ && !header_reported_) {
          header_reported_ = true;
          if (line_ > 0) {
            f->line = 1;
            f->reason = "CSV file has no header row";
            return FrameStatus::kBad;
          }
        }
        return FrameStatus::kEnd;
      }
      // Find the end of the row: a newline outside quotes. Quote parity is enough here ("" toggles
      // twice); the strict field parser below judges the quoting.
      const char* base = v.data();
      const char* p = base + scanned_;
      const char* e = base + v.size();
      const char* row_end = nullptr;
      // Plain loops: quotes come every few bytes in AuditData, too often for memchr to pay.
      while (p < e) {
        if (in_quotes_) {
          while (p < e && *p != '"') ++p;
          if (p == e) break;
          in_quotes_ = false;
          ++p;
          continue;
        }
        while (p < e && *p != '"' && *p != '\n') ++p;
        if (p == e) break;
        if (*p == '"') {
          in_quotes_ = true;
          ++p;
          continue;
        }
        row_end = p;
        break;
      }
      std::string_view row;
      size_t consumed;
      if (row_end == nullptr) {
        if (!w->eof) {
          if (skip_to_newline_) {
            // Still inside a row already reported as too long: drop what was scanned (the
            // quote state carries on) instead of letting the window fill up again.
            line_ += CountNewlines(v);
            scanned_ = 0;
            w->begin = w->end;
            return FrameStatus::kNeedMore;
          }
          if (v.size() > max_) {
            // Skip the rest of this row, still tracking quotes so that the row's end is found
            // where a well-formed file has it.
            f->line = line_ + 1;
            f->reason = Oversize(max_);
            line_ += CountNewlines(v);
            scanned_ = 0;
            skip_to_newline_ = true;
            w->begin = w->end;
            return FrameStatus::kBad;
          }
          scanned_ = static_cast<size_t>(p - base);
          return FrameStatus::kNeedMore;
        }
        row = v;
        consumed = v.size();
      } else {
        row = v.substr(0, static_cast<size_t>(row_end - base));
        consumed = row.size() + 1;
      }
      uint64_t start_line = line_ + 1;
      line_ += CountNewlines(row) + 1;
      w->begin += consumed;
      scanned_ = 0;
      bool unterminated = in_quotes_;
      in_quotes_ = false;
      if (skip_to_newline_) {
        skip_to_newline_ = false;
        continue;
      }
      if (!row.empty() && row.back() == '\r') row.remove_suffix(1);
      if (row.empty()) continue;
      if (unterminated) {
        f->line = start_line;
        f->reason = "truncated: a quoted CSV field is not closed before the end of the file";
        return FrameStatus::kBad;
      }
      if (!header_done_) {
        if (start_line == 1 && row.starts_with("#TYPE")) continue;
        if (start_line == 1 && row.starts_with("\xEF\xBB\xBF")) row.remove_prefix(3);
        std::string reason = ParseHeader(row);
        if (!reason.empty()) {
          failed_ = true;
          f->line = start_line;
          f->reason = reason;
          return FrameStatus::kBad;
        }
        header_done_ = true;
        continue;
      }
      if (row.size() > max_) {  // a whole row in the window can be too long too
        f->line = start_line;
        f->reason = Oversize(max_);
        return FrameStatus::kBad;
      }
      std::string reason = ExtractColumn(row);
      f->line = start_line;
      if (!reason.empty()) {
        f->reason = reason;
        return FrameStatus::kBad;
      }
      f->text = field_;
      return FrameStatus::kRecord;
    }
  }

 private:
  // Splits a row into fields, unescaping only column `want` into field_ (all columns into
  // header_ when want is SIZE_MAX). Returns the reason for bad quoting, or empty.
  std::string Split(std::string_view row, size_t want, size_t* columns) {
    size_t col = 0;
    size_t i = 0;
    field_.clear();
    for (;;) {
      bool keep = col == want || want == SIZE_MAX;
      std::string cell;
      std::string* out = want == SIZE_MAX ? &cell : &field_;
      if (i < row.size() && row[i] == '"') {
        ++i;
        for (;;) {
          size_t q = row.find('"', i);
          if (q == std::string_view::npos)
            return fmt::format("column {}: unterminated quoted field", col + 1);
          if (keep) out->append(row.substr(i, q - i));
          if (q + 1 < row.size() && row[q + 1] == '"') {
            if (keep) out->push_back('"');
            i = q + 2;
            continue;
          }
          i = q + 1;
          break;
        }
        if (i < row.size() && row[i] != ',') {
          return fmt::format("column {}: text after the closing quote of a quoted field", col + 1);
        }
      } else {
        size_t c = row.find(',', i);
        size_t stop = c == std::string_view::npos ? row.size() : c;
        std::string_view cellv = row.substr(i, stop - i);
        if (cellv.find('"') != std::string_view::npos) {
          return fmt::format("column {}: quote inside an unquoted field", col + 1);
        }
        if (keep) out->append(cellv);
        i = stop;
      }
      if (want == SIZE_MAX) header_.push_back(std::move(cell));
      ++col;
      if (i >= row.size()) break;
      ++i;  // the comma
    }
    *columns = col;
    return {};
  }

  std::string ParseHeader(std::string_view row) {
    header_.clear();
    size_t columns = 0;
    std::string reason = Split(row, SIZE_MAX, &columns);
    if (!reason.empty()) return "CSV header: " + reason;
    for (size_t i = 0; i < header_.size(); ++i) {
      if (AsciiEqualsIgnoreCase(header_[i], "AuditData")) {
        audit_col_ = i;
        return {};
      }
    }
    return "CSV header has no AuditData column (expected a Search-UnifiedAuditLog export)";
  }

  std::string ExtractColumn(std::string_view row) {
    size_t columns = 0;
    std::string reason = Split(row, audit_col_, &columns);
    if (!reason.empty()) return "bad CSV quoting: " + reason;
    if (columns <= audit_col_) {
      return fmt::format("CSV row has {} columns; AuditData is column {}", columns, audit_col_ + 1);
    }
    field_.reserve(field_.size() + Window::kWindowPadding);
    return {};
  }

  size_t max_;
  uint64_t line_ = 0;
  size_t scanned_ = 0;
  bool in_quotes_ = false;
  bool skip_to_newline_ = false;
  bool header_done_ = false;
  bool header_reported_ = false;
  bool failed_ = false;
  size_t audit_col_ = 0;
  std::vector<std::string> header_;
  std::string field_;
};

}  // namespace

std::unique_ptr<Framer> NewLineFramer(size_t max_record_bytes) {
  return std::make_unique<LineFramer>(max_record_bytes);
}
std::unique_ptr<Framer> NewJsonStreamFramer(size_t max_record_bytes) {
  return std::make_unique<JsonStreamFramer>(max_record_bytes);
}
std::unique_ptr<Framer> NewCsvFramer(size_t max_record_bytes) {
  return std::make_unique<CsvFramer>(max_record_bytes);
}

bool IsCompleteJsonValue(std::string_view line) {
  size_t i = SkipSpace(line, 0);
  if (i >= line.size() || (line[i] != '{' && line[i] != '[')) return false;
  ValueScanner s;
  size_t len = 0;
  std::string err;
  if (s.Scan(line.substr(i), &len, &err) != ValueScanner::Result::kDone) return false;
  return IsBlank(line.substr(i + len));
}

}  // namespace kw::detect::internal
