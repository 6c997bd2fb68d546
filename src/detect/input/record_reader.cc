#include "detect/input/record_reader.h"

#include <fmt/format.h>
#include <glob.h>
#include <simdjson.h>

#include <algorithm>
#include <cctype>
#include <cstring>
#include <deque>
#include <filesystem>
#include <set>
#include <system_error>

#include "core/ascii.h"
#include "detect/input/byte_source.h"
#include "detect/input/framer.h"
#include "detect/input/normalize.h"

namespace kw::detect {

static_assert(kRecordPadding == simdjson::SIMDJSON_PADDING);
static_assert(internal::Window::kWindowPadding >= simdjson::SIMDJSON_PADDING);

namespace {

struct FormatName {
  LogFormat format;
  std::string_view name;
};

constexpr FormatName kFormatNames[] = {
    {LogFormat::kAuto, "auto"},
    {LogFormat::kJsonLines, "jsonl"},
    {LogFormat::kJsonArray, "json-array"},
    {LogFormat::kUalCsv, "ual-csv"},
    {LogFormat::kUalJson, "ual-json"},
    {LogFormat::kSentinelOfficeActivity, "sentinel-officeactivity"},
    {LogFormat::kEntraSignIn, "entra"},
    {LogFormat::kEvtxJson, "evtx-json"},
    {LogFormat::kKeywardAudit, "keyward-audit"},
    // aliases
    {LogFormat::kJsonLines, "json"},
    {LogFormat::kJsonLines, "ndjson"},
    {LogFormat::kUalCsv, "csv"},
    {LogFormat::kUalJson, "ual"},
    {LogFormat::kSentinelOfficeActivity, "sentinel"},
    {LogFormat::kEntraSignIn, "signin"},
    {LogFormat::kEvtxJson, "evtx"},
    {LogFormat::kKeywardAudit, "keyward"},
};


bool EndsWith(std::string_view s, std::string_view suffix) {
  return s.size() >= suffix.size() && s.substr(s.size() - suffix.size()) == suffix;
}

}  // namespace

std::string_view LogFormatName(LogFormat format) {
  for (const FormatName& f : kFormatNames) {
    if (f.format == format) return f.name;
  }
  return "unknown";
}

Result<LogFormat> ParseLogFormat(std::string_view name) {
  std::string lower = AsciiLowerCopy(name);
  for (const FormatName& f : kFormatNames) {
    if (f.name == lower) return f.format;
  }
  return InvalidArgumentError(fmt::format(
      "unknown log format '{}': expected one of auto, jsonl, json-array, ual-csv, ual-json, "
      "sentinel-officeactivity, entra, evtx-json, keyward-audit",
      name));
}

// ---------------------------------------------------------------------------------------------
// RecordBatch

RecordBatch::RecordBatch() = default;
RecordBatch::~RecordBatch() = default;
RecordBatch::RecordBatch(RecordBatch&&) noexcept = default;
RecordBatch& RecordBatch::operator=(RecordBatch&&) noexcept = default;

Record RecordBatch::operator[](size_t i) const {
  const Entry& e = entries_[i];
  Record r;
  r.json = std::string_view((e.in_window ? window_.get() : buf_.get()) + e.offset, e.length);
  r.file = file_ ? std::string_view(*file_) : std::string_view();
  r.line = e.line;
  r.source = internal::SourceHintAt(e.source);
  return r;
}

void RecordBatch::Clear() {
  entries_.clear();
  used_ = 0;
  payload_bytes_ = 0;
}

// Appends records to a batch: a record that is unchanged text of the read window `w` is kept as
// a view into it (the window goes to the batch at the end: RecordReader::Impl::HandOver);
// others are copied, keeping kRecordPadding zero bytes after the last one.
class BatchBuilder : public internal::RecordSink {
 public:
  BatchBuilder(RecordBatch* b, std::shared_ptr<const std::string> file, const internal::Window* w,
               size_t reserve)
      : b_(b), w_(w) {
    b_->Clear();
    b_->file_ = std::move(file);
    Reserve(reserve);
  }
  void set_line(uint64_t line) { line_ = line; }
  // Records that view the window: it must not move until the batch takes it.
  size_t window_records() const { return window_records_; }
  // The window buffer the batch held from its previous use (its capacity in *cap).
  static std::unique_ptr<char[]> TakeOldWindow(RecordBatch* b, size_t* cap) {
    *cap = b->window_cap_;
    b->window_cap_ = 0;
    return std::move(b->window_);
  }
  void GiveWindow(std::unique_ptr<char[]> window, size_t cap) {
    b_->window_ = std::move(window);
    b_->window_cap_ = cap;
  }
  void Add(std::string_view json, uint16_t source) override {
    const char* wb = w_ ? w_->data.get() : nullptr;
    if (wb && json.data() >= wb && json.data() + json.size() <= wb + w_->end) {
      b_->entries_.push_back({static_cast<uint64_t>(json.data() - wb), line_,
                              static_cast<uint32_t>(json.size()), source, true});
      b_->payload_bytes_ += json.size();
      ++window_records_;
      return;
    }
    Reserve(b_->used_ + json.size());
    std::memcpy(b_->buf_.get() + b_->used_, json.data(), json.size());
    b_->entries_.push_back({b_->used_, line_, static_cast<uint32_t>(json.size()), source, false});
    b_->used_ += json.size();
    b_->payload_bytes_ += json.size();
    std::memset(b_->buf_.get() + b_->used_, 0, kRecordPadding);
  }

 private:
  void Reserve(size_t n) {
    if (n + kRecordPadding <= b_->cap_) return;
    size_t cap = std::max(n + kRecordPadding, b_->cap_ * 2);
    std::unique_ptr<char[]> fresh(new char[cap]);
    if (b_->used_ > 0) std::memcpy(fresh.get(), b_->buf_.get(), b_->used_);
    b_->buf_ = std::move(fresh);
    b_->cap_ = cap;
  }
  RecordBatch* b_;
  const internal::Window* w_;
  uint64_t line_ = 0;
  size_t window_records_ = 0;
};

// ---------------------------------------------------------------------------------------------
// RecordReader

namespace {

enum class Container { kLines, kStream, kCsv };

constexpr size_t kReadChunk = 1u << 20;

}  // namespace

class RecordReader::Impl {
 public:
  Impl(std::string name, std::unique_ptr<internal::ByteSource> src, LogFormat format,
       ReaderOptions options)
      : file_(std::make_shared<const std::string>(std::move(name))),
        src_(std::move(src)),
        format_(format),
        options_(options) {
    // Record lengths are kept in 32 bits; no log record comes near 1 GiB.
    options_.max_record_bytes = std::clamp<size_t>(options_.max_record_bytes, 64, 1u << 30);
    options_.batch_bytes = std::max<size_t>(options_.batch_bytes, 1);
    w_.cap = std::min(std::max<size_t>(options_.batch_bytes, size_t{64} << 10), kReadChunk);
    w_.data.reset(new char[w_.cap + internal::Window::kWindowPadding]);
    std::memset(w_.data.get(), 0, w_.cap + internal::Window::kWindowPadding);
  }

  Status Init();
  Result<bool> NextBatch(RecordBatch* out);

  LogFormat format() const { return format_; }
  uint64_t bytes_read() const { return src_->bytes_consumed(); }
  uint64_t total_bytes() const { return src_->total_bytes(); }
  uint64_t records_read() const { return records_; }
  const BadRecordStats& bad() const { return bad_; }

 private:
  // Reads more into the window. may_move: the window may be compacted or grown first (no record
  // of the batch being built views it); otherwise bytes are only appended, up to its capacity.
  Status Fill(bool may_move = true);
  // Gives the window to `out` (whose records view it) and continues in a fresh buffer holding
  // the unframed rest; `spare` is the window `out` held last time, reused when it fits.
  void HandOver(BatchBuilder* out, std::unique_ptr<char[]> spare, size_t spare_cap);
  void AddBad(uint64_t line, std::string reason) {
    ++bad_.count;
    if (bad_.first.size() < options_.max_bad_records_kept) {
      bad_.first.push_back({*file_, line, std::move(reason)});
    }
  }
  // Fills until the window holds a newline after the first non-blank byte, or limit bytes.
  Status FillFirstLine(size_t limit);
  void Process(const internal::Frame& f, BatchBuilder* b);

  std::shared_ptr<const std::string> file_;
  std::unique_ptr<internal::ByteSource> src_;
  LogFormat format_;
  ReaderOptions options_;
  internal::Window w_;
  std::unique_ptr<internal::Framer> framer_;
  std::unique_ptr<internal::Normalizer> normalizer_;
  // Frames taken while detecting the format, delivered first (views into w_, which is not
  // refilled until they are gone). A bad frame has a reason.
  std::deque<internal::Frame> pending_;
  bool done_ = false;
  bool damage_reported_ = false;
  uint64_t records_ = 0;
  BadRecordStats bad_;
};

Status RecordReader::Impl::Fill(bool may_move) {
  if (w_.eof) return Status::Ok();
  if (may_move && w_.begin > 0) {
    std::memmove(w_.data.get(), w_.data.get() + w_.begin, w_.end - w_.begin);
    w_.end -= w_.begin;
    w_.begin = 0;
  }
  if (may_move && w_.end == w_.cap) {
    // One record fills the window: grow it, up to the longest record allowed plus a read.
    size_t limit = options_.max_record_bytes + kReadChunk;
    size_t cap = std::min(w_.cap * 2, limit);
    if (cap <= w_.cap) cap = w_.cap + kReadChunk;
    std::unique_ptr<char[]> fresh(new char[cap + internal::Window::kWindowPadding]);
    std::memcpy(fresh.get(), w_.data.get(), w_.end);
    std::memset(fresh.get() + cap, 0, internal::Window::kWindowPadding);
    w_.data = std::move(fresh);
    w_.cap = cap;
  }
  while (w_.end < w_.cap) {
    KW_ASSIGN_OR_RETURN(size_t got, src_->Read(w_.data.get() + w_.end, w_.cap - w_.end));
    if (got == 0) {
      w_.eof = true;
      break;
    }
    w_.end += got;
    if (may_move && w_.end - w_.begin >= kReadChunk) break;
  }
  std::memset(w_.data.get() + w_.end, 0, internal::Window::kWindowPadding);
  if (w_.eof && !damage_reported_) {
    damage_reported_ = true;
    std::string damage = src_->damage();
    if (!damage.empty()) AddBad(0, damage);
  }
  return Status::Ok();
}

Status RecordReader::Impl::FillFirstLine(size_t limit) {
  for (;;) {
    std::string_view v = w_.view();
    size_t start = 0;
    while (start < v.size() && std::isspace(static_cast<unsigned char>(v[start]))) ++start;
    if (start < v.size() && v.find('\n', start) != std::string_view::npos) return Status::Ok();
    if (w_.eof || v.size() >= limit) return Status::Ok();
    KW_RETURN_IF_ERROR(Fill());
  }
}

Status RecordReader::Impl::Init() {
  KW_RETURN_IF_ERROR(FillFirstLine(1 << 16));
  std::string_view v = w_.view();
  if (v.starts_with("\xFF\xFE") || v.starts_with("\xFE\xFF")) {
    // Windows PowerShell's Out-File and > write UTF-16; every reader here expects UTF-8.
    return InvalidArgumentError(fmt::format(
        "{}: UTF-16 text; convert it to UTF-8 first (iconv -f UTF-16 -t UTF-8)", *file_));
  }
  if (v.starts_with("\xEF\xBB\xBF")) {
    w_.begin += 3;
    v.remove_prefix(3);
  }
  std::string lower_name = AsciiLowerCopy(*file_);
  if (EndsWith(lower_name, ".gz")) lower_name.resize(lower_name.size() - 3);
  size_t first = 0;
  while (first < v.size() && std::isspace(static_cast<unsigned char>(v[first]))) ++first;
  char c = first < v.size() ? v[first] : '\0';
  std::string_view first_line = v.substr(first, v.find('\n', first) - first);

  Container container;
  bool json_like =
      c == '{' || c == '[' || first_line.starts_with("Record ") || (c == '\0' && v.size() == first);
  if (format_ == LogFormat::kUalCsv) {
    container = Container::kCsv;
  } else if (format_ == LogFormat::kAuto && !json_like) {
    if (!EndsWith(lower_name, ".csv") && first_line.find("AuditData") == std::string_view::npos &&
        !first_line.starts_with("#TYPE")) {
      if (EndsWith(lower_name, ".evtx")) {
        return InvalidArgumentError(fmt::format(
            "{}: binary .evtx is not read directly; convert it with evtx_dump -o jsonl", *file_));
      }
      return InvalidArgumentError(fmt::format(
          "{}: not a recognised log format (expected JSON lines, a JSON array, or a CSV with "
          "an AuditData column)",
          *file_));
    }
    container = Container::kCsv;
    format_ = LogFormat::kUalCsv;
  } else if (c == '[' || format_ == LogFormat::kJsonArray || first_line.starts_with("Record ")) {
    container = Container::kStream;
  } else if (c == '{' && format_ != LogFormat::kJsonLines) {
    // JSON lines unless the first object spans lines (pretty-printed, or a wrapper).
    KW_RETURN_IF_ERROR(FillFirstLine(options_.max_record_bytes));
    v = w_.view();
    first_line = v.substr(first, v.find('\n', first) - first);
    container = internal::IsCompleteJsonValue(first_line) ? Container::kLines : Container::kStream;
  } else {
    // JSON lines, or a forced format over text that is not JSON: every line is then a bad record.
    container = Container::kLines;
  }

  switch (container) {
    case Container::kLines:
      framer_ = internal::NewLineFramer(options_.max_record_bytes);
      break;
    case Container::kStream:
      framer_ = internal::NewJsonStreamFramer(options_.max_record_bytes);
      break;
    case Container::kCsv:
      framer_ = internal::NewCsvFramer(options_.max_record_bytes);
      break;
  }

  if (format_ == LogFormat::kAuto) {
    // The first record that parses decides; look at a few in case the first ones are damaged.
    LogFormat detected = LogFormat::kJsonLines;
    simdjson::dom::parser parser;
    for (int i = 0; i < 16; ++i) {
      internal::Frame f;
      internal::FrameStatus st = framer_->Next(&w_, &f);
      if (st == internal::FrameStatus::kNeedMore || st == internal::FrameStatus::kEnd) break;
      if (st == internal::FrameStatus::kBad) {
        pending_.push_back(std::move(f));
        continue;
      }
      pending_.push_back(f);
      simdjson::dom::element e;
      if (parser.parse(f.text.data(), f.text.size(), false).get(e) == simdjson::SUCCESS &&
          e.is_object()) {
        detected = internal::ClassifyFirstRecord(e);
        break;
      }
    }
    if (detected == LogFormat::kJsonLines && container == Container::kStream) {
      detected = LogFormat::kJsonArray;
    }
    format_ = detected;
  }
  normalizer_ = std::make_unique<internal::Normalizer>(format_, options_.validate_json);
  return Status::Ok();
}

void RecordReader::Impl::Process(const internal::Frame& f, BatchBuilder* b) {
  if (!f.reason.empty()) {
    AddBad(f.line, f.reason);
    return;
  }
  b->set_line(f.line);
  std::string reason = normalizer_->Normalize(f.text, b);
  if (!reason.empty()) AddBad(f.line, std::move(reason));
}

void RecordReader::Impl::HandOver(BatchBuilder* out, std::unique_ptr<char[]> spare,
                                  size_t spare_cap) {
  const size_t rest = w_.end - w_.begin;
  std::unique_ptr<char[]> fresh =
      spare && spare_cap == w_.cap ? std::move(spare)
                                   : std::unique_ptr<char[]>(new char[w_.cap + internal::Window::kWindowPadding]);
  std::memcpy(fresh.get(), w_.data.get() + w_.begin, rest);
  std::memset(fresh.get() + rest, 0, internal::Window::kWindowPadding);
  out->GiveWindow(std::move(w_.data), w_.cap);
  w_.data = std::move(fresh);
  w_.begin = 0;
  w_.end = rest;
}

Result<bool> RecordReader::Impl::NextBatch(RecordBatch* out) {
  size_t spare_cap = 0;
  std::unique_ptr<char[]> spare = BatchBuilder::TakeOldWindow(out, &spare_cap);
  BatchBuilder builder(out, file_, &w_, options_.batch_bytes + (64u << 10));
  while (!pending_.empty()) {
    Process(pending_.front(), &builder);
    pending_.pop_front();
  }
  // Unchanged records stay in the window they were read into (no copy): while some do, the
  // window only takes appended bytes, and once it is full the batch ends and takes it.
  constexpr size_t kMinAppend = 64u << 10;
  bool window_full = false;
  while (!done_ && !window_full && out->payload_bytes() < options_.batch_bytes) {
    internal::Frame f;
    switch (framer_->Next(&w_, &f)) {
      case internal::FrameStatus::kRecord:
        Process(f, &builder);
        break;
      case internal::FrameStatus::kBad:
        AddBad(f.line, std::move(f.reason));
        break;
      case internal::FrameStatus::kNeedMore:
        if (builder.window_records() == 0) {
          KW_RETURN_IF_ERROR(Fill());
        } else if (w_.cap - w_.end >= kMinAppend) {
          KW_RETURN_IF_ERROR(Fill(/*may_move=*/false));
        } else {
          window_full = true;
        }
        break;
      case internal::FrameStatus::kEnd:
        done_ = true;
        break;
    }
  }
  if (builder.window_records() > 0) HandOver(&builder, std::move(spare), spare_cap);
  records_ += out->size();
  return !out->empty();
}

RecordReader::RecordReader(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
RecordReader::~RecordReader() = default;

namespace {

Result<std::unique_ptr<RecordReader::Impl>> MakeImpl(std::string name,
                                                     std::unique_ptr<internal::ByteSource> raw,
                                                     LogFormat format, ReaderOptions options) {
  std::string head(2, '\0');
  size_t have = 0;
  while (have < 2) {
    KW_ASSIGN_OR_RETURN(size_t got, raw->Read(head.data() + have, 2 - have));
    if (got == 0) break;
    have += got;
  }
  head.resize(have);
  bool gz = internal::HasGzipMagic(head);
  std::unique_ptr<internal::ByteSource> src =
      internal::PrefixSource(std::move(head), std::move(raw));
  if (gz) src = internal::GzipSource(std::move(src));
  auto impl =
      std::make_unique<RecordReader::Impl>(std::move(name), std::move(src), format, options);
  KW_RETURN_IF_ERROR(impl->Init());
  return impl;
}

}  // namespace

Result<std::unique_ptr<RecordReader>> RecordReader::Open(const std::string& path, LogFormat format,
                                                         ReaderOptions options) {
  KW_ASSIGN_OR_RETURN(auto raw, internal::OpenFileSource(path));
  KW_ASSIGN_OR_RETURN(auto impl, MakeImpl(path, std::move(raw), format, options));
  return std::unique_ptr<RecordReader>(new RecordReader(std::move(impl)));
}

Result<std::unique_ptr<RecordReader>> RecordReader::OpenBuffer(std::string_view data,
                                                               std::string name, LogFormat format,
                                                               ReaderOptions options) {
  KW_ASSIGN_OR_RETURN(auto impl,
                      MakeImpl(std::move(name), internal::MemorySource(data), format, options));
  return std::unique_ptr<RecordReader>(new RecordReader(std::move(impl)));
}

Result<bool> RecordReader::NextBatch(RecordBatch* out) { return impl_->NextBatch(out); }
LogFormat RecordReader::format() const { return impl_->format(); }
uint64_t RecordReader::bytes_read() const { return impl_->bytes_read(); }
uint64_t RecordReader::total_bytes() const { return impl_->total_bytes(); }
uint64_t RecordReader::records_read() const { return impl_->records_read(); }
const BadRecordStats& RecordReader::bad_records() const { return impl_->bad(); }

// ---------------------------------------------------------------------------------------------
// ExpandInputs

namespace {

namespace fs = std::filesystem;

bool IsHidden(const fs::path& p) {
  std::string name = p.filename().string();
  return !name.empty() && name[0] == '.';
}

Status ExpandOne(const std::string& arg, std::vector<std::string>* out) {
  std::error_code ec;
  fs::file_status st = fs::status(arg, ec);
  if (ec || !fs::exists(st)) {
    return NotFoundError(fmt::format("{}: no such file or directory", arg));
  }
  if (!fs::is_directory(st)) {
    out->push_back(arg);
    return Status::Ok();
  }
  std::vector<std::string> files;
  fs::recursive_directory_iterator it(arg, fs::directory_options::skip_permission_denied, ec);
  if (ec) return PermissionDeniedError(fmt::format("{}: {}", arg, ec.message()));
  for (fs::recursive_directory_iterator end; it != end; it.increment(ec)) {
    if (ec) return UnavailableError(fmt::format("{}: {}", arg, ec.message()));
    if (IsHidden(it->path())) {
      if (it->is_directory(ec)) it.disable_recursion_pending();
      continue;
    }
    if (it->is_regular_file(ec)) files.push_back(it->path().string());
  }
  std::sort(files.begin(), files.end());
  out->insert(out->end(), files.begin(), files.end());
  return Status::Ok();
}

}  // namespace

Result<std::vector<std::string>> ExpandInputs(const std::vector<std::string>& args) {
  std::vector<std::string> files;
  for (const std::string& arg : args) {
    std::vector<std::string> these;
    if (arg.find_first_of("*?[") != std::string::npos) {
      glob_t g;
      std::memset(&g, 0, sizeof g);
      int rc = ::glob(arg.c_str(), 0, nullptr, &g);
      if (rc == GLOB_NOMATCH) {
        globfree(&g);
        return NotFoundError(fmt::format("{}: the pattern matches no file", arg));
      }
      if (rc != 0) {
        globfree(&g);
        return InvalidArgumentError(fmt::format("{}: cannot expand the pattern", arg));
      }
      std::vector<std::string> matches(g.gl_pathv, g.gl_pathv + g.gl_pathc);
      globfree(&g);
      for (const std::string& m : matches) KW_RETURN_IF_ERROR(ExpandOne(m, &these));
    } else {
      KW_RETURN_IF_ERROR(ExpandOne(arg, &these));
    }
    files.insert(files.end(), these.begin(), these.end());
  }
  std::vector<std::string> unique;
  std::set<std::string> seen;
  for (std::string& f : files) {
    if (seen.insert(f).second) unique.push_back(std::move(f));
  }
  if (unique.empty()) return InvalidArgumentError("no input files");
  return unique;
}

}  // namespace kw::detect
