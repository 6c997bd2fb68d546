// libFuzzer target: arbitrary bytes as an audit log segment (format: src/audit/log_format.cc).
//
// The input is read through SegmentReader (from a memfd, so refills and the incomplete tail are
// reached) and every line goes through ParseLine; the whole input also goes through FromJson.
//
// Invariants (a violation aborts, which libFuzzer reports as a crash with the input saved):
//  - SegmentReader returns lines in order, at increasing offsets, never containing a newline,
//    and the offsets plus lengths plus the pending tail account for every byte of the input.
//  - ParseLine and FromJson never crash; a line ParseLine accepts with a matching hash yields a
//    record whose hash is the SHA-256 of the line before its 75-byte suffix.
//  - A record ParseLine accepts (outside a batch) survives ToJson -> FromJson unchanged.

#include <sys/mman.h>
#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>
#include <string_view>

#include "audit/audit_log.h"
#include "audit/log_format.h"

namespace {

void Check(bool ok) {
  if (!ok) std::abort();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace kw::audit;
  std::string_view input(reinterpret_cast<const char*>(data), size);

  auto whole = FromJson(input);
  (void)whole.ok();

  int fd = ::memfd_create("segment", 0);
  if (fd < 0) return 0;
  if (::write(fd, data, size) != static_cast<ssize_t>(size)) {
    ::close(fd);
    return 0;
  }
  std::string path = "/proc/self/fd/" + std::to_string(fd);
  internal::SegmentReader reader;
  if (!reader.Open(path).ok()) {
    ::close(fd);
    return 0;
  }
  internal::SegmentReader::Line line;
  uint64_t expect_offset = 0;
  while (true) {
    auto more = reader.Next(&line);
    Check(more.ok());
    if (!*more) break;
    Check(line.offset == expect_offset);
    if (line.oversize) {
      size_t nl = input.find('\n', line.offset);
      Check(nl != std::string_view::npos);
      expect_offset = nl + 1;
      continue;
    }
    Check(line.text.find('\n') == std::string_view::npos);
    Check(input.substr(line.offset, line.text.size()) == line.text);
    expect_offset = line.offset + line.text.size() + 1;

    auto p = internal::ParseLine(line.text);
    if (!p.ok()) continue;
    if (p->hash_ok) {
      Check(p->record.hash ==
            internal::Sha256Hex(line.text.substr(0, line.text.size() - internal::kHashSuffixBytes)));
    }
    if (p->batch_last == 0) {
      auto again = FromJson(ToJson(p->record));
      Check(again.ok());
      Check(*again == p->record);
    }
  }
  Check(reader.end_offset() == expect_offset);
  Check(expect_offset + reader.pending_bytes() == size);
  ::close(fd);
  return 0;
}
