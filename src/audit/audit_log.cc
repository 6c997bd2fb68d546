#include "audit/audit_log.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <condition_variable>
#include <cstring>
#include <deque>
#include <map>
#include <mutex>
#include <thread>

#include <fmt/format.h>

#include "audit/log_format.h"
#include "core/file.h"
#include "core/log.h"

namespace kw::audit {

using internal::Anchor;
using internal::Checkpoint;
using internal::SegmentReader;

namespace {

// Encoded records waiting for the writer; a producer that would pass this waits (unless the
// queue is empty, so that one large batch still goes through).
constexpr size_t kMaxPendingBytes = 16u << 20;
// The writer issues a write(2) and hands the records to the sync thread every this many bytes
// (at a submission boundary), so a large backlog is fsync'ed in pieces while the rest is encoded.
constexpr size_t kWriteChunkBytes = 1u << 20;
// Fixed part of a line besides the body: seq, prev_hash, batch_last and the hash suffix.
constexpr size_t kLineOverhead = 200;

Status ErrnoStatus(std::string_view what, const std::string& path, int e) {
  return UnavailableError(fmt::format("cannot {} {}: {}", what, path, std::strerror(e)));
}

Status FsyncDir(const std::string& dir) {
  int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) return ErrnoStatus("open directory", dir, errno);
  int rc = ::fsync(fd);
  int e = errno;
  ::close(fd);
  if (rc != 0) return ErrnoStatus("fsync directory", dir, e);
  return Status::Ok();
}

Status WriteAll(int fd, std::string_view data, const std::string& path) {
  while (!data.empty()) {
    ssize_t n = ::write(fd, data.data(), data.size());
    if (n < 0) {
      if (errno == EINTR) continue;
      return ErrnoStatus("write", path, errno);
    }
    data.remove_prefix(static_cast<size_t>(n));
  }
  return Status::Ok();
}

}  // namespace

namespace internal {

// Segment indexes present in `dir`, ascending.
Result<std::vector<uint64_t>> ListSegments(const std::string& dir) {
  DIR* d = ::opendir(dir.c_str());
  if (!d) {
    int e = errno;
    auto msg = fmt::format("cannot read directory {}: {}", dir, std::strerror(e));
    return e == ENOENT ? NotFoundError(msg) : UnavailableError(msg);
  }
  std::vector<uint64_t> out;
  while (dirent* ent = ::readdir(d)) {
    if (auto idx = ParseSegmentName(ent->d_name)) out.push_back(*idx);
  }
  ::closedir(d);
  std::sort(out.begin(), out.end());
  return out;
}

// The last complete record of a segment file, which must end with a newline.
Result<ParsedLine> ReadLastRecord(const std::string& path) {
  struct stat st;
  if (::stat(path.c_str(), &st) != 0) return ErrnoStatus("stat", path, errno);
  uint64_t size = static_cast<uint64_t>(st.st_size);
  uint64_t start = size > 2 * (kMaxRecordBytes + 1) ? size - 2 * (kMaxRecordBytes + 1) : 0;
  SegmentReader reader;
  KW_RETURN_IF_ERROR(reader.Open(path, start));
  SegmentReader::Line line;
  std::string last;
  bool first = true;
  uint64_t last_offset = 0;
  while (true) {
    KW_ASSIGN_OR_RETURN(bool more, reader.Next(&line));
    if (!more) break;
    if (first && start > 0) {  // may begin inside a record
      first = false;
      continue;
    }
    first = false;
    last.assign(line.text);
    last_offset = line.offset;
  }
  if (reader.pending_bytes() > 0 || last.empty()) {
    return DataLossError(fmt::format("{} does not end with a complete record", path));
  }
  auto p = ParseLine(last);
  if (!p.ok() || !p->hash_ok) {
    return DataLossError(fmt::format("the last record of {} (offset {}) is damaged", path,
                                     last_offset));
  }
  return p;
}

}  // namespace internal

namespace {

// Records submitted and not yet written, in sequence order: the producers append to one of
// these under Impl::mu, the writer thread swaps it for an empty one and works on it unlocked.
// Both keep their capacity, so a warm log allocates nothing per record here.
struct Pending {
  struct Rec {
    size_t body_end = 0;      // end of this record's body in `bodies`
    uint64_t batch_last = 0;  // 0 for a single record
    int64_t time_ms = 0;
    bool first = false;       // first record of its submission (a batch is never split)
    bool kept = false;        // its AuditRecord is in `records` (for the subscription ring)
  };
  std::string bodies;      // encoded bodies back to back (EncodeBodyTo)
  std::vector<Rec> recs;
  std::vector<AuditRecord> records;  // the kept ones, in order
  void Clear() {
    bodies.clear();
    recs.clear();
    records.clear();
  }
};

// A thread blocked in WaitDurable (on its own stack), woken only once its seq is durable or the
// log has failed: with one condition variable for all, every fsync would wake every waiter.
struct Waiter {
  uint64_t seq = 0;
  bool woken = false;
  std::condition_variable cv;
};
bool WaiterAfter(const Waiter* a, const Waiter* b) { return a->seq > b->seq; }

// What one producer thread encodes into before taking the lock.
struct EncodeScratch {
  std::string bodies;
  std::vector<size_t> ends;
  std::string detail;
};

// An open segment file, shared by the leader that writes it and the groups still fsyncing it.
struct SegFile {
  int fd = -1;
  explicit SegFile(int f) : fd(f) {}
  ~SegFile() {
    if (fd >= 0) ::close(fd);
  }
  SegFile(const SegFile&) = delete;
  SegFile& operator=(const SegFile&) = delete;
};

struct SegmentInfo {
  uint64_t index = 0;
  uint64_t first_seq = 0;
  int64_t max_time_ms = -1;  // -1: not known yet (read on demand by retention)
};

struct Subscription {
  uint64_t id = 0;
  uint64_t next = 1;
  AuditLog::Subscriber fn;
  std::thread thread;
  bool stop = false;  // guarded by Impl::sub_mu
};

// Reads records from the segment files for a subscriber that is behind the in-memory buffer.
struct DiskCursor {
  SegmentReader reader;
  uint64_t segment = 0;  // 0: not positioned
  uint64_t next_seq = 0;
};

}  // namespace

struct AuditLog::Impl {
  AuditLogOptions opt;
  int lock_fd = -1;

  // ---- submission, hand-over to the sync thread and failure state, guarded by mu ----
  std::mutex mu;
  Pending pending;
  uint64_t next_assign = 1;    // the seq the next submitted record gets
  Status broken;               // first write or fsync failure: nothing is accepted after it
  Checkpoint durable;          // newest durable record (seq, hash)
  uint64_t written_seq = 0;    // newest record written (not yet necessarily durable)
  std::string written_hash;
  std::shared_ptr<SegFile> written_file;  // the segment that holds written_seq
  uint64_t written_index = 0;
  bool stop_writer = false;    // set at close: the writer drains `pending` and exits
  bool writer_done = false;    // the writer exited: the sync thread exits once caught up
  std::condition_variable writer_cv;   // pending non-empty, or stop_writer
  std::condition_variable space_cv;    // pending drained (producers over kMaxPendingBytes)
  std::condition_variable sync_cv;     // written_seq moved, or writer_done
  std::thread writer_thread, sync_thread;
  std::atomic<uint64_t> assigned_seq{0};  // next_assign - 1, for WaitDurable's check

  // ---- threads in WaitDurable, guarded by wait_mu (taken after mu when both are held) ----
  std::mutex wait_mu;
  std::vector<Waiter*> waiters;  // a min-heap by seq
  bool failed = false;           // broken is set (its value is read under mu)

  // ---- state owned by the writer thread (and by Recover before it starts) ----
  std::shared_ptr<SegFile> seg;
  uint64_t seg_index = 0;
  uint64_t seg_size = 0;
  int64_t seg_max_time = -1;
  uint64_t next_seq = 1;
  std::string last_hash;

  std::atomic<uint64_t> durable_seq{0};

  // ---- segments, guarded by seg_mu ----
  mutable std::mutex seg_mu;
  std::vector<SegmentInfo> segments;
  uint64_t first_seq = 1;
  std::mutex retention_mu;

  // ---- subscriptions, guarded by sub_mu ----
  std::mutex sub_mu;
  std::condition_variable sub_cv;
  std::deque<std::shared_ptr<const AuditRecord>> ring;
  std::map<uint64_t, std::shared_ptr<Subscription>> subs;
  std::vector<std::thread> finished_threads;
  uint64_t next_sub_id = 1;
  std::atomic<int> sub_count{0};

  // ---- checkpoint thread ----
  std::mutex cp_mu;
  std::condition_variable cp_cv;
  bool stopping = false;
  std::thread cp_thread;
  std::mutex cp_write_mu;
  uint64_t cp_written_seq = ~0ull;

  std::string Path(std::string_view name) const { return opt.dir + "/" + std::string(name); }
  std::string SegPath(uint64_t index) const { return Path(internal::SegmentName(index)); }

  Status Recover();
  Result<uint64_t> Submit(AuditRecord* records, size_t n);
  Status WaitDurable(uint64_t seq);
  void SetBroken(const Status& s);  // REQUIRES: mu held
  void PublishDurable(uint64_t seq);
  void WriterLoop();
  void SyncLoop();
  Status WriteGroup(Pending& group, std::string& out);
  Status FlushWritten(std::string& out);
  Status OpenNextSegment();
  void PushToRing(Pending& group);
  Status WriteCheckpointNow(bool only_if_changed);
  void CheckpointLoop();
  void RunSubscription(std::shared_ptr<Subscription> s);
  Status ReadFromDisk(DiskCursor* c, uint64_t* next, uint64_t upto, size_t max,
                      std::vector<AuditRecord>* out);
  Result<int64_t> SegmentMaxTime(uint64_t index);
};

// ---------------------------------------------------------------------------------------------
// Open and recovery

Status AuditLog::Impl::Recover() {
  Anchor anchor;
  auto anchor_text = ReadFile(Path(internal::kAnchorFile), 4096);
  if (anchor_text.ok()) {
    auto a = internal::DecodeAnchor(*anchor_text);
    if (!a.ok()) return DataLossError(fmt::format("{}: {}", Path("anchor"), a.status().message()));
    anchor = std::move(a).value();
  } else if (anchor_text.status().code() != StatusCode::kNotFound) {
    return anchor_text.status();
  }

  KW_ASSIGN_OR_RETURN(std::vector<uint64_t> idx, internal::ListSegments(opt.dir));
  // Segments older than the anchor are what an interrupted retention did not delete yet.
  size_t stale = 0;
  while (stale < idx.size() && idx[stale] < anchor.first_segment) {
    if (::unlink(SegPath(idx[stale]).c_str()) != 0 && errno != ENOENT) {
      return ErrnoStatus("remove", SegPath(idx[stale]), errno);
    }
    Log(LogLevel::kInfo, "audit log {}: removed {} (older than the retention anchor)", opt.dir,
        internal::SegmentName(idx[stale]));
    ++stale;
  }
  idx.erase(idx.begin(), idx.begin() + static_cast<ptrdiff_t>(stale));
  if (stale > 0 && opt.fsync) KW_RETURN_IF_ERROR(FsyncDir(opt.dir));

  auto damaged = [&](std::string what) {
    return DataLossError(fmt::format("audit log {}: {}; run VerifyLog to locate the damage; "
                                     "the log refuses to append",
                                     opt.dir, what));
  };
  if (!idx.empty() && idx.front() != anchor.first_segment) {
    return damaged(fmt::format("the first segment is {}, expected {}",
                               internal::SegmentName(idx.front()),
                               internal::SegmentName(anchor.first_segment)));
  }
  for (size_t i = 1; i < idx.size(); ++i) {
    if (idx[i] != idx[i - 1] + 1) {
      return damaged(fmt::format("segment {} is missing", internal::SegmentName(idx[i - 1] + 1)));
    }
  }

  // Every segment but the newest: its first record (for the seq index).
  for (size_t i = 0; i + 1 < idx.size(); ++i) {
    SegmentReader r;
    KW_RETURN_IF_ERROR(r.Open(SegPath(idx[i])));
    SegmentReader::Line line;
    KW_ASSIGN_OR_RETURN(bool have, r.Next(&line));
    auto p = have && !line.oversize ? internal::ParseLine(line.text)
                                    : Result<internal::ParsedLine>(InvalidArgumentError("empty"));
    if (!p.ok() || !p->hash_ok) {
      return damaged(fmt::format("the first record of {} is missing or damaged",
                                 internal::SegmentName(idx[i])));
    }
    if (i == 0 && (p->record.seq != anchor.first_seq || p->record.prev_hash != anchor.prev_hash)) {
      return damaged(fmt::format("{} does not start at the anchor (seq {})",
                                 internal::SegmentName(idx[i]), anchor.first_seq));
    }
    segments.push_back({idx[i], p->record.seq, -1});
  }

  next_seq = anchor.first_seq;
  last_hash = anchor.prev_hash;
  if (idx.size() >= 2) {
    auto last = internal::ReadLastRecord(SegPath(idx[idx.size() - 2]));
    if (!last.ok()) return damaged(std::string(last.status().message()));
    next_seq = last->record.seq + 1;
    last_hash = last->record.hash;
  }

  std::optional<Checkpoint> checkpoint;
  auto cp_text = ReadFile(Path(internal::kCheckpointFile), 4096);
  if (cp_text.ok()) {
    auto c = internal::DecodeCheckpoint(*cp_text);
    if (!c.ok()) return damaged(fmt::format("checkpoint: {}", c.status().message()));
    checkpoint = std::move(c).value();
  } else if (cp_text.status().code() != StatusCode::kNotFound) {
    return cp_text.status();
  }

  if (idx.empty()) {
    seg_index = anchor.first_segment - 1;
  } else {
    // The newest segment: check every record; cut a torn tail.
    seg_index = idx.back();
    std::string path = SegPath(seg_index);
    SegmentReader r;
    KW_RETURN_IF_ERROR(r.Open(path));
    SegmentReader::Line line;
    uint64_t good_end = 0;
    std::optional<uint64_t> bad_at;
    // An unfinished batch is cut back to its start.
    std::optional<uint64_t> batch_start;
    uint64_t batch_seq = 0;
    std::string batch_prev;
    uint64_t seg_first = next_seq;
    while (true) {
      KW_ASSIGN_OR_RETURN(bool more, r.Next(&line));
      if (!more) break;
      auto p = line.oversize ? Result<internal::ParsedLine>(InvalidArgumentError("oversize"))
                             : internal::ParseLine(line.text);
      if (bad_at) {
        if (p.ok() && p->hash_ok) {
          return damaged(fmt::format(
              "{} offset {} is damaged but complete records follow it at offset {}",
              internal::SegmentName(seg_index), *bad_at, line.offset));
        }
        continue;
      }
      if (!p.ok() || !p->hash_ok) {
        bad_at = line.offset;
        continue;
      }
      const AuditRecord& rec = p->record;
      if (rec.seq != next_seq || rec.prev_hash != last_hash) {
        return damaged(fmt::format("{} offset {}: record seq {} does not continue the chain "
                                   "(expected seq {})",
                                   internal::SegmentName(seg_index), line.offset, rec.seq,
                                   next_seq));
      }
      if (p->batch_last > rec.seq && !batch_start) {
        batch_start = line.offset;
        batch_seq = next_seq;
        batch_prev = last_hash;
      }
      if (p->batch_last != 0 && p->batch_last == rec.seq) batch_start.reset();
      if (checkpoint && checkpoint->seq == rec.seq && checkpoint->hash != rec.hash) {
        return damaged(fmt::format("record seq {} does not match the checkpoint", rec.seq));
      }
      next_seq = rec.seq + 1;
      last_hash = rec.hash;
      seg_max_time = std::max(seg_max_time, rec.time_ms);
      good_end = line.offset + line.text.size() + 1;
    }
    uint64_t end = r.end_offset() + r.pending_bytes();
    uint64_t cut = bad_at ? *bad_at : good_end;
    if (batch_start) {
      cut = *batch_start;
      next_seq = batch_seq;
      last_hash = batch_prev;
    }
    if (cut < end) {
      int fd = ::open(path.c_str(), O_WRONLY | O_CLOEXEC);
      if (fd < 0) return ErrnoStatus("open", path, errno);
      if (::ftruncate(fd, static_cast<off_t>(cut)) != 0 || ::fsync(fd) != 0) {
        int e = errno;
        ::close(fd);
        return ErrnoStatus("truncate", path, e);
      }
      ::close(fd);
      Log(LogLevel::kWarning,
          "audit log {}: cut a torn tail of {} bytes at {} offset {} (records from seq {} were "
          "never acknowledged)",
          opt.dir, end - cut, internal::SegmentName(seg_index), cut, next_seq);
    }
    seg_size = cut;
    segments.push_back({seg_index, seg_first, -1});
    int fd = ::open(path.c_str(), O_WRONLY | O_APPEND | O_CLOEXEC);
    if (fd < 0) return ErrnoStatus("open", path, errno);
    seg = std::make_shared<SegFile>(fd);
  }

  if (checkpoint && checkpoint->seq >= next_seq) {
    return damaged(fmt::format("the log ends at seq {} but its checkpoint names seq {}: "
                               "acknowledged records are missing",
                               next_seq - 1, checkpoint->seq));
  }
  first_seq = segments.empty() ? next_seq : segments.front().first_seq;
  durable_seq.store(next_seq - 1);
  durable = {next_seq - 1, last_hash, 0};
  next_assign = next_seq;
  assigned_seq.store(next_seq - 1);
  written_seq = next_seq - 1;
  if (checkpoint) cp_written_seq = checkpoint->seq;
  return Status::Ok();
}

Result<std::unique_ptr<AuditLog>> AuditLog::Open(AuditLogOptions options) {
  if (options.dir.empty()) return InvalidArgumentError("AuditLogOptions.dir is empty");
  if (options.segment_bytes < 4096 || options.segment_bytes > (4ull << 30)) {
    return InvalidArgumentError(fmt::format(
        "AuditLogOptions.segment_bytes ({}) must be between 4096 and 4 GiB", options.segment_bytes));
  }
  if (options.retention_days < 0 || options.retention_days > 365 * 100) {
    return InvalidArgumentError(fmt::format(
        "AuditLogOptions.retention_days ({}) must be 0 (keep forever) or 1..36500",
        options.retention_days));
  }
  if (options.clock == nullptr) return InvalidArgumentError("AuditLogOptions.clock is null");
  if (options.checkpoint_interval_ms < 0) {
    return InvalidArgumentError("AuditLogOptions.checkpoint_interval_ms is negative");
  }
  if (options.subscription_buffer == 0) {
    return InvalidArgumentError("AuditLogOptions.subscription_buffer must be at least 1");
  }
  while (options.dir.size() > 1 && options.dir.back() == '/') options.dir.pop_back();

  if (::mkdir(options.dir.c_str(), 0700) == 0) {
    if (options.fsync) {
      size_t slash = options.dir.rfind('/');
      std::string parent = slash == std::string::npos ? "."
                           : slash == 0               ? "/"
                                                      : options.dir.substr(0, slash);
      KW_RETURN_IF_ERROR(FsyncDir(parent));
    }
  } else if (errno != EEXIST) {
    return ErrnoStatus("create directory", options.dir, errno);
  }
  struct stat st;
  if (::stat(options.dir.c_str(), &st) != 0) return ErrnoStatus("stat", options.dir, errno);
  if (!S_ISDIR(st.st_mode)) {
    return UnavailableError(fmt::format("{} is not a directory", options.dir));
  }

  auto impl = std::make_unique<Impl>();
  impl->opt = std::move(options);
  std::string lock_path = impl->Path(internal::kLockFile);
  impl->lock_fd = ::open(lock_path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600);
  if (impl->lock_fd < 0) return ErrnoStatus("open", lock_path, errno);
  if (::flock(impl->lock_fd, LOCK_EX | LOCK_NB) != 0) {
    int e = errno;
    ::close(impl->lock_fd);
    impl->lock_fd = -1;
    if (e == EWOULDBLOCK) {
      return FailedPreconditionError(
          fmt::format("audit log {} is already open for appending (LOCK is held)", impl->opt.dir));
    }
    return ErrnoStatus("lock", lock_path, e);
  }
  Status s = impl->Recover();
  if (!s.ok()) {
    impl->seg.reset();
    ::close(impl->lock_fd);
    impl->lock_fd = -1;
    return s;
  }
  Impl* raw = impl.get();
  raw->writer_thread = std::thread([raw] { raw->WriterLoop(); });
  if (raw->opt.fsync) raw->sync_thread = std::thread([raw] { raw->SyncLoop(); });
  raw->cp_thread = std::thread([raw] { raw->CheckpointLoop(); });
  return std::unique_ptr<AuditLog>(new AuditLog(std::move(impl)));
}

AuditLog::AuditLog(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

AuditLog::~AuditLog() {
  std::vector<uint64_t> ids;
  {
    std::lock_guard l(impl_->sub_mu);
    for (auto& [id, s] : impl_->subs) ids.push_back(id);
  }
  for (uint64_t id : ids) Unsubscribe(id);
  {
    std::lock_guard l(impl_->sub_mu);
    for (auto& t : impl_->finished_threads) {
      if (t.joinable()) t.join();
    }
  }
  // Whatever was submitted is written and synced before the log closes.
  {
    std::lock_guard l(impl_->mu);
    impl_->stop_writer = true;
  }
  impl_->writer_cv.notify_all();
  if (impl_->writer_thread.joinable()) impl_->writer_thread.join();
  if (impl_->sync_thread.joinable()) impl_->sync_thread.join();
  {
    std::lock_guard l(impl_->cp_mu);
    impl_->stopping = true;
  }
  impl_->cp_cv.notify_all();
  if (impl_->cp_thread.joinable()) impl_->cp_thread.join();
  bool ok;
  {
    std::lock_guard l(impl_->mu);
    ok = impl_->broken.ok();
  }
  if (ok) {
    Status s = impl_->WriteCheckpointNow(/*only_if_changed=*/true);
    if (!s.ok()) Log(LogLevel::kError, "audit log {}: {}", impl_->opt.dir, s.ToString());
  }
  impl_->seg.reset();
  if (impl_->lock_fd >= 0) ::close(impl_->lock_fd);
}

const std::string& AuditLog::dir() const { return impl_->opt.dir; }
uint64_t AuditLog::last_seq() const { return impl_->durable_seq.load(); }
uint64_t AuditLog::first_seq() const {
  std::lock_guard l(impl_->seg_mu);
  return impl_->segments.empty() ? impl_->durable_seq.load() + 1 : impl_->first_seq;
}

// ---------------------------------------------------------------------------------------------
// Appending: group commit with a pipeline of three stages.
//
//   producers    validate and encode their records (in their own threads, in parallel), then,
//                under mu, take the next sequence numbers and append the encoded bodies to
//                `pending`; Append and AppendBatch then wait for durable_seq to reach their seq
//   writer       swaps `pending` for an empty buffer, chains and hashes each line into one
//                output buffer, write(2)s it (one call per kWriteChunkBytes) and publishes the
//                newest written seq to the sync thread
//   sync thread  fdatasyncs the segment that holds the newest written seq, then publishes
//                durable_seq and wakes the waiters (with fsync off there is no sync thread:
//                the writer publishes what it wrote)
//
// While the sync thread waits for the disk, the writer forms and writes the next group, so a
// group is whatever arrived during the previous fsync. Acknowledgement is by sequence number: a
// record is durable once durable_seq >= its seq, and fdatasync makes everything written to the
// file before the call durable. Only the sync thread calls fdatasync on a segment, one call at a
// time (the writer closing a segment waits for it): the kernel reports a writeback error to one
// of several concurrent callers only, so a success beside another caller would prove nothing.
// Once an fsync fails, nothing after it is acknowledged.

Result<uint64_t> AuditLog::Append(AuditRecord record) {
  KW_ASSIGN_OR_RETURN(uint64_t seq, impl_->Submit(&record, 1));
  KW_RETURN_IF_ERROR(impl_->WaitDurable(seq));
  return seq;
}

Result<uint64_t> AuditLog::AppendBatch(std::vector<AuditRecord> records) {
  if (records.empty()) return InvalidArgumentError("AppendBatch: the batch is empty");
  KW_ASSIGN_OR_RETURN(uint64_t seq, impl_->Submit(records.data(), records.size()));
  KW_RETURN_IF_ERROR(impl_->WaitDurable(seq));
  return seq;
}

Result<uint64_t> AuditLog::AppendAsync(AuditRecord record) { return impl_->Submit(&record, 1); }

Result<uint64_t> AuditLog::AppendBatchAsync(std::vector<AuditRecord> records) {
  if (records.empty()) return InvalidArgumentError("AppendBatchAsync: the batch is empty");
  return impl_->Submit(records.data(), records.size());
}

Status AuditLog::WaitDurable(uint64_t seq) { return impl_->WaitDurable(seq); }

Result<uint64_t> AuditLog::Impl::Submit(AuditRecord* records, size_t n) {
  thread_local EncodeScratch scratch;
  scratch.bodies.clear();
  scratch.ends.clear();
  int64_t now = 0;
  for (size_t i = 0; i < n; ++i) {
    AuditRecord& r = records[i];
    if (r.time_ms == 0) {
      if (now == 0) now = opt.clock->NowMillis();
      r.time_ms = now;
    }
    Status st = internal::EncodeBodyTo(r, &scratch.bodies, &scratch.detail);
    if (!st.ok()) {
      if (n > 1) return st.WithContext(fmt::format("AppendBatch records[{}]", i));
      return st;
    }
    if (r.detail != scratch.detail) r.detail = scratch.detail;
    scratch.ends.push_back(scratch.bodies.size());
  }
  // The records themselves are kept only for live subscribers; one that subscribes later reads
  // them back from disk.
  const bool keep = sub_count.load() > 0;

  std::unique_lock l(mu);
  space_cv.wait(l, [&] {
    return !broken.ok() || pending.bodies.empty() ||
           pending.bodies.size() + scratch.bodies.size() <= kMaxPendingBytes;
  });
  if (!broken.ok()) return broken;
  const uint64_t first = next_assign;
  next_assign += n;
  assigned_seq.store(next_assign - 1, std::memory_order_relaxed);
  const size_t base = pending.bodies.size();
  pending.bodies.append(scratch.bodies);
  const uint64_t batch_last = n > 1 ? first + n - 1 : 0;
  for (size_t i = 0; i < n; ++i) {
    pending.recs.push_back({base + scratch.ends[i], batch_last, records[i].time_ms, i == 0, keep});
  }
  if (keep) {
    for (size_t i = 0; i < n; ++i) pending.records.push_back(std::move(records[i]));
  }
  l.unlock();
  writer_cv.notify_one();
  // A thread that once submitted a huge batch does not keep its buffer.
  if (scratch.bodies.capacity() > kMaxPendingBytes) std::string().swap(scratch.bodies);
  return first + n - 1;
}

Status AuditLog::Impl::WaitDurable(uint64_t seq) {
  if (seq <= durable_seq.load(std::memory_order_acquire)) return Status::Ok();
  if (seq > assigned_seq.load(std::memory_order_relaxed)) {
    return InvalidArgumentError(
        fmt::format("WaitDurable: seq {} has not been assigned (the newest is {})", seq,
                    assigned_seq.load()));
  }
  {
    std::unique_lock l(wait_mu);
    if (seq > durable_seq.load() && !failed) {
      Waiter w;
      w.seq = seq;
      waiters.push_back(&w);
      std::push_heap(waiters.begin(), waiters.end(), WaiterAfter);
      w.cv.wait(l, [&] { return w.woken; });
    }
    if (seq <= durable_seq.load()) return Status::Ok();
  }
  std::lock_guard l(mu);
  return broken;
}

// Wakes the waiters that `seq` covers.
void AuditLog::Impl::PublishDurable(uint64_t seq) {
  {
    std::lock_guard sl(sub_mu);
    durable_seq.store(seq, std::memory_order_release);
  }
  sub_cv.notify_all();
  std::lock_guard l(wait_mu);
  while (!waiters.empty() && waiters.front()->seq <= seq) {
    Waiter* w = waiters.front();
    std::pop_heap(waiters.begin(), waiters.end(), WaiterAfter);
    waiters.pop_back();
    w->woken = true;
    w->cv.notify_one();  // under wait_mu: the Waiter lives on a stack that may unwind after it
  }
}

void AuditLog::Impl::SetBroken(const Status& s) {
  if (!broken.ok()) return;
  broken = s;
  Log(LogLevel::kError, "audit log {}: {}; no further record is accepted", opt.dir, s.ToString());
  space_cv.notify_all();
  std::lock_guard l(wait_mu);
  failed = true;
  for (Waiter* w : waiters) {
    w->woken = true;
    w->cv.notify_one();
  }
  waiters.clear();
}

void AuditLog::Impl::WriterLoop() {
  Pending group;
  std::string out;
  while (true) {
    {
      std::unique_lock l(mu);
      writer_cv.wait(l, [&] { return !pending.recs.empty() || stop_writer || !broken.ok(); });
      if (!broken.ok() || pending.recs.empty()) break;
      std::swap(pending, group);
    }
    space_cv.notify_all();
    Status s = WriteGroup(group, out);
    group.Clear();
    if (group.bodies.capacity() > kMaxPendingBytes) {  // after a batch larger than the limit
      group = Pending();
      std::string().swap(out);
    }
    if (!s.ok()) {
      std::lock_guard l(mu);
      SetBroken(s);
      break;
    }
  }
  std::lock_guard l(mu);
  writer_done = true;
  sync_cv.notify_one();
}

void AuditLog::Impl::SyncLoop() {
  std::unique_lock l(mu);
  uint64_t synced = durable_seq.load();
  while (true) {
    sync_cv.wait(l, [&] { return written_seq > synced || writer_done; });
    if (written_seq <= synced) break;  // the writer has exited and everything is synced
    const uint64_t seq = written_seq;
    const std::string hash = written_hash;
    std::shared_ptr<SegFile> file = written_file;
    const uint64_t index = written_index;
    l.unlock();
    Status st;
    if (::fdatasync(file->fd) != 0) st = ErrnoStatus("fsync", SegPath(index), errno);
    file.reset();
    l.lock();
    if (!st.ok()) {
      SetBroken(st);
      break;
    }
    synced = seq;
    durable = {seq, hash, 0};
    l.unlock();
    PublishDurable(seq);
    l.lock();
  }
}

// REQUIRES: the writer thread, with everything written to the current segment handed over
// (FlushWritten).
Status AuditLog::Impl::OpenNextSegment() {
  if (seg) {
    // The sync thread makes the closing segment durable; the writer does not fdatasync it
    // itself, because of two concurrent callers only one would learn of a writeback error.
    KW_RETURN_IF_ERROR(WaitDurable(next_seq - 1));
    seg.reset();
    std::lock_guard l(seg_mu);
    if (!segments.empty() && segments.back().index == seg_index) {
      segments.back().max_time_ms = seg_max_time;
    }
  }
  uint64_t index = seg_index + 1;
  std::string path = SegPath(index);
  int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_APPEND | O_CLOEXEC, 0600);
  if (fd < 0) return ErrnoStatus("create", path, errno);
  if (opt.fsync) KW_RETURN_IF_ERROR(FsyncDir(opt.dir));
  seg = std::make_shared<SegFile>(fd);
  seg_index = index;
  seg_size = 0;
  seg_max_time = -1;
  std::lock_guard l(seg_mu);
  if (segments.empty()) first_seq = next_seq;
  segments.push_back({index, next_seq, -1});
  return Status::Ok();
}

// Writes `out` to the current segment and hands what it holds to the sync thread.
Status AuditLog::Impl::FlushWritten(std::string& out) {
  if (out.empty()) return Status::Ok();
  KW_RETURN_IF_ERROR(WriteAll(seg->fd, out, SegPath(seg_index)));
  seg_size += out.size();
  out.clear();
  std::unique_lock l(mu);
  if (!opt.fsync) {  // no sync thread: written is as durable as this log gets
    durable = {next_seq - 1, last_hash, 0};
    l.unlock();
    PublishDurable(next_seq - 1);
    return Status::Ok();
  }
  written_seq = next_seq - 1;
  written_hash = last_hash;
  written_file = seg;
  written_index = seg_index;
  sync_cv.notify_one();
  return Status::Ok();
}

Status AuditLog::Impl::WriteGroup(Pending& group, std::string& out) {
  out.clear();
  size_t body_start = 0;
  size_t kept = 0;
  for (size_t i = 0; i < group.recs.size(); ++i) {
    const Pending::Rec& rec = group.recs[i];
    if (rec.first) {
      // A submission (a batch) is never split across segments or hand-overs.
      const uint64_t n = rec.batch_last == 0 ? 1 : rec.batch_last - next_seq + 1;
      const size_t bytes = group.recs[i + n - 1].body_end - body_start + n * kLineOverhead;
      if (out.size() >= kWriteChunkBytes) KW_RETURN_IF_ERROR(FlushWritten(out));
      if (!seg || (seg_size + out.size() > 0 &&
                   seg_size + out.size() + bytes > opt.segment_bytes)) {
        KW_RETURN_IF_ERROR(FlushWritten(out));
        KW_RETURN_IF_ERROR(OpenNextSegment());
      }
    }
    std::string_view body(group.bodies.data() + body_start, rec.body_end - body_start);
    body_start = rec.body_end;
    const uint64_t seq = next_seq++;
    const size_t at = internal::AppendLineTo(seq, last_hash, rec.batch_last, body, &out);
    if (rec.kept) {
      AuditRecord& r = group.records[kept++];
      r.seq = seq;
      r.prev_hash = last_hash;
      r.hash.assign(out, at, 64);
    }
    last_hash.assign(out, at, 64);
    seg_max_time = std::max(seg_max_time, rec.time_ms);
  }
  PushToRing(group);
  return FlushWritten(out);
}

// Records enter the ring as they are written, in seq order; subscribers read them only once
// durable_seq covers them. A record not kept (nobody subscribed when it was submitted) leaves a
// gap, which clears the ring: a subscriber then reads from disk.
void AuditLog::Impl::PushToRing(Pending& group) {
  std::lock_guard l(sub_mu);
  if (sub_count.load() == 0) {
    ring.clear();
    return;
  }
  for (AuditRecord& r : group.records) {
    if (!ring.empty() && ring.back()->seq + 1 != r.seq) ring.clear();
    ring.push_back(std::make_shared<const AuditRecord>(std::move(r)));
  }
  while (ring.size() > opt.subscription_buffer) ring.pop_front();
}

// ---------------------------------------------------------------------------------------------
// Checkpoint

Status AuditLog::WriteCheckpoint() { return impl_->WriteCheckpointNow(false); }

Status AuditLog::Impl::WriteCheckpointNow(bool only_if_changed) {
  std::lock_guard w(cp_write_mu);
  Checkpoint c;
  {
    std::lock_guard l(mu);
    c = durable;
  }
  if (only_if_changed && c.seq == cp_written_seq) return Status::Ok();
  c.time_ms = opt.clock->NowMillis();
  KW_RETURN_IF_ERROR(
      WriteFileAtomic(Path(internal::kCheckpointFile), internal::EncodeCheckpoint(c), 0600));
  cp_written_seq = c.seq;
  return Status::Ok();
}

void AuditLog::Impl::CheckpointLoop() {
  std::unique_lock l(cp_mu);
  while (!stopping) {
    if (opt.checkpoint_interval_ms == 0) {
      cp_cv.wait(l, [&] { return stopping; });
      break;
    }
    cp_cv.wait_for(l, std::chrono::milliseconds(opt.checkpoint_interval_ms),
                   [&] { return stopping; });
    if (stopping) break;
    l.unlock();
    Status s = WriteCheckpointNow(/*only_if_changed=*/true);
    if (!s.ok()) Log(LogLevel::kWarning, "audit log {}: checkpoint: {}", opt.dir, s.ToString());
    l.lock();
  }
}

// ---------------------------------------------------------------------------------------------
// Retention

Result<int64_t> AuditLog::Impl::SegmentMaxTime(uint64_t index) {
  SegmentReader r;
  KW_RETURN_IF_ERROR(r.Open(SegPath(index)));
  SegmentReader::Line line;
  int64_t max_time = -1;
  while (true) {
    KW_ASSIGN_OR_RETURN(bool more, r.Next(&line));
    if (!more) break;
    auto p = line.oversize ? Result<internal::ParsedLine>(InvalidArgumentError("oversize"))
                           : internal::ParseLine(line.text);
    if (!p.ok()) {
      return DataLossError(fmt::format("{} offset {}: {}", internal::SegmentName(index),
                                       line.offset, p.status().message()));
    }
    max_time = std::max(max_time, p->record.time_ms);
  }
  return max_time;
}

Status AuditLog::ApplyRetention() {
  Impl& m = *impl_;
  if (m.opt.retention_days == 0) return Status::Ok();
  std::lock_guard retention(m.retention_mu);
  int64_t cutoff = m.opt.clock->NowMillis() - m.opt.retention_days * 86'400'000;
  std::vector<SegmentInfo> segs;
  {
    std::lock_guard l(m.seg_mu);
    segs = m.segments;
  }
  // The newest segment is never dropped: it is the one being appended to.
  size_t drop = 0;
  for (; drop + 1 < segs.size(); ++drop) {
    int64_t t = segs[drop].max_time_ms;
    if (t < 0) {
      KW_ASSIGN_OR_RETURN(t, m.SegmentMaxTime(segs[drop].index));
      std::lock_guard l(m.seg_mu);
      for (auto& s : m.segments) {
        if (s.index == segs[drop].index) s.max_time_ms = t;
      }
    }
    if (t >= cutoff) break;
  }
  if (drop == 0) return Status::Ok();

  // The anchor is written (and made durable) before any segment goes, so a crash in between
  // leaves extra old segments that the next Open removes, never a log that does not verify.
  const SegmentInfo& keep = segs[drop];
  SegmentReader r;
  KW_RETURN_IF_ERROR(r.Open(m.SegPath(keep.index)));
  SegmentReader::Line line;
  KW_ASSIGN_OR_RETURN(bool have, r.Next(&line));
  if (!have || line.oversize) {
    return DataLossError(fmt::format("{} has no first record", internal::SegmentName(keep.index)));
  }
  auto first = internal::ParseLine(line.text);
  if (!first.ok() || !first->hash_ok) {
    return DataLossError(
        fmt::format("the first record of {} is damaged", internal::SegmentName(keep.index)));
  }
  Anchor a{keep.index, first->record.seq, first->record.prev_hash, m.opt.clock->NowMillis()};
  KW_RETURN_IF_ERROR(WriteFileAtomic(m.Path(internal::kAnchorFile), internal::EncodeAnchor(a), 0600));
  KW_RETURN_IF_ERROR(FsyncDir(m.opt.dir));
  {
    std::lock_guard l(m.seg_mu);
    m.segments.erase(m.segments.begin(), m.segments.begin() + static_cast<ptrdiff_t>(drop));
    m.first_seq = m.segments.front().first_seq;
  }
  for (size_t i = 0; i < drop; ++i) {
    std::string path = m.SegPath(segs[i].index);
    if (::unlink(path.c_str()) != 0 && errno != ENOENT) return ErrnoStatus("remove", path, errno);
  }
  if (m.opt.fsync) KW_RETURN_IF_ERROR(FsyncDir(m.opt.dir));
  Log(LogLevel::kInfo, "audit log {}: retention dropped {} segment(s) before seq {}", m.opt.dir,
      drop, a.first_seq);
  return Status::Ok();
}

// ---------------------------------------------------------------------------------------------
// Subscriptions

Result<uint64_t> AuditLog::Subscribe(uint64_t from_seq, Subscriber subscriber) {
  if (!subscriber) return InvalidArgumentError("Subscribe: the subscriber is empty");
  auto s = std::make_shared<Subscription>();
  s->next = std::max<uint64_t>(from_seq, 1);
  s->fn = std::move(subscriber);
  Impl* m = impl_.get();
  std::lock_guard l(m->sub_mu);
  s->id = m->next_sub_id++;
  m->subs[s->id] = s;
  m->sub_count.fetch_add(1);
  s->thread = std::thread([m, s] { m->RunSubscription(s); });
  return s->id;
}

void AuditLog::Unsubscribe(uint64_t id) {
  Impl& m = *impl_;
  std::shared_ptr<Subscription> s;
  {
    std::lock_guard l(m.sub_mu);
    auto it = m.subs.find(id);
    if (it == m.subs.end()) return;
    s = it->second;
    m.subs.erase(it);
    s->stop = true;
    m.sub_count.fetch_sub(1);
  }
  m.sub_cv.notify_all();
  if (s->thread.get_id() == std::this_thread::get_id()) {
    std::lock_guard l(m.sub_mu);
    m.finished_threads.push_back(std::move(s->thread));
  } else if (s->thread.joinable()) {
    s->thread.join();
  }
}

void AuditLog::Impl::RunSubscription(std::shared_ptr<Subscription> s) {
  DiskCursor cursor;
  uint64_t next = s->next;
  std::vector<AuditRecord> batch;
  while (true) {
    std::shared_ptr<const AuditRecord> rec;
    {
      std::unique_lock l(sub_mu);
      sub_cv.wait(l, [&] { return s->stop || next <= durable_seq.load(); });
      if (s->stop) return;
      if (!ring.empty() && ring.front()->seq <= next && next <= ring.back()->seq) {
        rec = ring[next - ring.front()->seq];
      }
    }
    if (rec) {
      s->fn(*rec);
      next = rec->seq + 1;
      continue;
    }
    batch.clear();
    Status st = ReadFromDisk(&cursor, &next, durable_seq.load(), 256, &batch);
    if (!st.ok()) {
      Log(LogLevel::kError, "audit log {}: subscription {} cannot read seq {}: {}", opt.dir, s->id,
          next, st.ToString());
      std::unique_lock l(sub_mu);
      sub_cv.wait_for(l, std::chrono::milliseconds(200), [&] { return s->stop; });
      continue;
    }
    if (batch.empty()) {
      // Nothing readable yet although it is durable: only a concurrent retention or a damaged
      // file does this; do not spin.
      std::unique_lock l(sub_mu);
      sub_cv.wait_for(l, std::chrono::milliseconds(10), [&] { return s->stop; });
      continue;
    }
    for (const AuditRecord& r : batch) {
      {
        std::lock_guard l(sub_mu);
        if (s->stop) return;
      }
      s->fn(r);
      next = r.seq + 1;
    }
  }
}

Status AuditLog::Impl::ReadFromDisk(DiskCursor* c, uint64_t* next, uint64_t upto, size_t max,
                                    std::vector<AuditRecord>* out) {
  if (c->segment == 0 || c->next_seq != *next) {
    uint64_t index = 0;
    {
      std::lock_guard l(seg_mu);
      if (segments.empty()) return Status::Ok();
      if (*next < segments.front().first_seq) {
        Log(LogLevel::kWarning,
            "audit log {}: a subscriber asked for seq {}, but retention kept only seq {} on; "
            "delivering from there",
            opt.dir, *next, segments.front().first_seq);
        *next = segments.front().first_seq;
      }
      for (const SegmentInfo& s : segments) {
        if (s.first_seq <= *next) index = s.index;
      }
    }
    KW_RETURN_IF_ERROR(c->reader.Open(SegPath(index)));
    c->segment = index;
    c->next_seq = *next;
  }
  SegmentReader::Line line;
  while (out->size() < max && c->next_seq <= upto) {
    auto more = c->reader.Next(&line);
    if (!more.ok()) {
      c->segment = 0;
      return more.status();
    }
    if (!*more) {
      bool has_next;
      {
        std::lock_guard l(seg_mu);
        has_next = !segments.empty() && segments.back().index > c->segment;
      }
      if (!has_next) break;
      Status s = c->reader.Open(SegPath(c->segment + 1));
      if (!s.ok()) {
        c->segment = 0;
        return s;
      }
      ++c->segment;
      continue;
    }
    auto p = line.oversize ? Result<internal::ParsedLine>(InvalidArgumentError("oversize line"))
                           : internal::ParseLine(line.text);
    if (!p.ok()) {
      c->segment = 0;
      return DataLossError(fmt::format("{} offset {}: {}", internal::SegmentName(c->segment),
                                       line.offset, p.status().message()));
    }
    if (p->record.seq < c->next_seq) continue;
    if (p->record.seq > c->next_seq) {
      c->segment = 0;
      return DataLossError(fmt::format("{} offset {}: seq {} follows seq {}",
                                       internal::SegmentName(c->segment), line.offset,
                                       p->record.seq, c->next_seq - 1));
    }
    if (!p->hash_ok) {
      Log(LogLevel::kError, "audit log {}: {} offset {}: record seq {} does not match its hash",
          opt.dir, internal::SegmentName(c->segment), line.offset, p->record.seq);
    }
    out->push_back(std::move(p->record));
    c->next_seq = out->back().seq + 1;
  }
  return Status::Ok();
}

}  // namespace kw::audit
