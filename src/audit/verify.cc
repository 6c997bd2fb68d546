// VerifyLog and QueryLog: readers of a log directory (format: log_format.cc). Both only read, so
// they run beside a process that appends; a record becomes visible to them once its line is
// complete.

#include <fmt/format.h>

#include <optional>

#include "audit/audit_log.h"
#include "audit/log_format.h"
#include "core/file.h"

namespace kw::audit {

namespace {

using internal::Anchor;
using internal::Checkpoint;
using internal::SegmentName;
using internal::SegmentReader;

// Seqs missing where a record with a higher seq was found. Those that show up later were
// reordered; the rest were removed.
struct Gap {
  uint64_t from = 0, to = 0;  // inclusive
  std::string segment;
  uint64_t offset = 0;
  uint64_t found = 0;
  bool reorder_reported = false;
};

}  // namespace

Result<VerifyReport> VerifyLog(const std::string& dir) {
  return VerifyLog(dir, dir + "/" + std::string(internal::kCheckpointFile));
}

Result<VerifyReport> VerifyLog(const std::string& dir, const std::string& checkpoint_path) {
  VerifyReport report;
  auto problem = [&](std::string segment, uint64_t offset, uint64_t seq, std::string what,
                     std::string message) {
    report.problems.push_back(
        {std::move(segment), offset, seq, std::move(what), std::move(message)});
  };

  Anchor anchor;
  auto anchor_text = ReadFile(dir + "/" + std::string(internal::kAnchorFile), 4096);
  if (anchor_text.ok()) {
    auto a = internal::DecodeAnchor(*anchor_text);
    if (a.ok()) {
      anchor = std::move(a).value();
    } else {
      problem("anchor", 0, 0, "malformed", std::string(a.status().message()));
    }
  } else if (anchor_text.status().code() != StatusCode::kNotFound) {
    return anchor_text.status();
  }

  std::optional<Checkpoint> checkpoint;
  auto cp_text = ReadFile(checkpoint_path, 4096);
  if (cp_text.ok()) {
    auto c = internal::DecodeCheckpoint(*cp_text);
    if (c.ok()) {
      checkpoint = std::move(c).value();
    } else {
      problem("checkpoint", 0, 0, "malformed", std::string(c.status().message()));
    }
  } else if (cp_text.status().code() != StatusCode::kNotFound) {
    return cp_text.status();
  }
  report.checkpoint_checked = checkpoint.has_value();

  KW_ASSIGN_OR_RETURN(std::vector<uint64_t> segments, internal::ListSegments(dir));

  uint64_t expect_seq = anchor.first_seq;
  std::string expect_prev = anchor.prev_hash;
  bool prev_known = true;
  bool resync = false;  // take the next record as the new baseline (after a reported loss)
  uint64_t malformed_run = 0;  // malformed lines since the last record
  std::string alt_prev;        // after an edited record: the hash of its actual bytes
  uint64_t expect_index = anchor.first_segment;
  std::vector<Gap> gaps;
  std::string prev_segment;
  uint64_t prev_segment_end = 0;
  bool prev_segment_cut = false;
  std::optional<std::pair<std::string, uint64_t>> cp_location;
  std::optional<std::string> cp_hash;
  std::string last_segment;
  uint64_t last_segment_end = 0;

  for (size_t si = 0; si < segments.size(); ++si) {
    uint64_t index = segments[si];
    if (index < anchor.first_segment) continue;  // retention removes these next
    std::string name = SegmentName(index);
    bool is_last = si + 1 == segments.size();
    if (index != expect_index) {
      problem(SegmentName(expect_index), 0, expect_seq, "removed",
              expect_index + 1 == index
                  ? fmt::format("segment file {} is missing", SegmentName(expect_index))
                  : fmt::format("segment files {} to {} are missing", SegmentName(expect_index),
                                SegmentName(index - 1)));
      resync = true;
    }
    expect_index = index + 1;

    SegmentReader reader;
    KW_RETURN_IF_ERROR(reader.Open(dir + "/" + name));
    SegmentReader::Line line;
    bool first_in_segment = true;
    bool any_line = false;
    while (true) {
      KW_ASSIGN_OR_RETURN(bool more, reader.Next(&line));
      if (!more) break;
      any_line = true;
      auto p = line.oversize
                   ? Result<internal::ParsedLine>(InvalidArgumentError("longer than a record may be"))
                   : internal::ParseLine(line.text);
      if (!p.ok()) {
        // Either a damaged record or an inserted line: the next record decides (below).
        problem(name, line.offset, expect_seq + malformed_run, "malformed",
                fmt::format("not a record: {}", p.status().message()));
        ++malformed_run;
        prev_known = false;
        continue;
      }
      const AuditRecord& rec = p->record;
      ++report.records;
      if (malformed_run > 0) {
        if (rec.seq > expect_seq && rec.seq - expect_seq <= malformed_run) {
          expect_seq = rec.seq;  // the malformed lines were these records
        }
        malformed_run = 0;
        if (rec.seq == expect_seq) first_in_segment = false;
      }
      if (resync) {
        expect_seq = rec.seq;
        expect_prev = rec.prev_hash;
        prev_known = true;
        resync = false;
      } else if (first_in_segment && si > 0 && rec.seq > expect_seq && !prev_segment.empty()) {
        if (!prev_segment_cut) {
          problem(prev_segment, prev_segment_end, expect_seq, "truncated",
                  fmt::format("{} ends after seq {} but {} starts at seq {}", prev_segment,
                              expect_seq - 1, name, rec.seq));
        }
        expect_seq = rec.seq;
        expect_prev = rec.prev_hash;
        prev_known = true;
      }
      first_in_segment = false;
      if (report.first_seq == 0) report.first_seq = rec.seq;

      if (!p->hash_ok) {
        problem(name, line.offset, expect_seq, "edited",
                fmt::format("record seq {} does not match its own hash", rec.seq));
        ++expect_seq;
        // Either the content changed (the stored hash still chains to the next record) or the
        // stored hash did (the hash of the content does): the next link may match either.
        expect_prev = rec.hash;
        alt_prev = p->computed_hash;
        prev_known = true;
        continue;
      }
      std::string alt = std::move(alt_prev);
      alt_prev.clear();
      if (rec.seq == expect_seq) {
        if (prev_known && rec.prev_hash != expect_prev && rec.prev_hash != alt) {
          problem(name, line.offset, expect_seq, "chain_broken",
                  fmt::format("record seq {} does not chain to its predecessor (a record before "
                              "it was rewritten, or removed and the rest renumbered)",
                              rec.seq));
        }
        ++expect_seq;
        expect_prev = rec.hash;
        prev_known = true;
        if (checkpoint && rec.seq == checkpoint->seq) {
          cp_hash = rec.hash;
          cp_location = {name, line.offset};
        }
        report.last_seq = rec.seq;
      } else if (rec.seq > expect_seq) {
        gaps.push_back({expect_seq, rec.seq - 1, name, line.offset});
        expect_seq = rec.seq + 1;
        expect_prev = rec.hash;
        prev_known = true;
        if (checkpoint && rec.seq == checkpoint->seq) {
          cp_hash = rec.hash;
          cp_location = {name, line.offset};
        }
        report.last_seq = rec.seq;
      } else {
        Gap* gap = nullptr;
        for (Gap& g : gaps) {
          if (g.from <= rec.seq && rec.seq <= g.to) gap = &g;
        }
        if (gap) {
          ++gap->found;
          if (!gap->reorder_reported) {
            gap->reorder_reported = true;
            problem(gap->segment, gap->offset, gap->from, "reordered",
                    fmt::format("record seq {} was found later, at {} offset {}", rec.seq, name,
                                line.offset));
          }
        } else {
          problem(name, line.offset, expect_seq, "duplicated",
                  fmt::format("record seq {} appears again", rec.seq));
        }
      }
    }
    uint64_t end = reader.end_offset();
    prev_segment_cut = false;
    if (reader.pending_bytes() > 0) {
      if (is_last) {
        report.incomplete_tail_bytes = reader.pending_bytes();
      } else {
        problem(name, end, expect_seq, "truncated",
                fmt::format("{} ends inside a record ({} bytes without a newline)", name,
                            reader.pending_bytes()));
        prev_segment_cut = true;
      }
    } else if (!any_line && !is_last) {
      problem(name, 0, expect_seq, "truncated", fmt::format("{} is empty", name));
      prev_segment_cut = true;
    }
    prev_segment = name;
    prev_segment_end = end;
    last_segment = name;
    last_segment_end = end;
  }

  for (const Gap& g : gaps) {
    uint64_t missing = g.to - g.from + 1 - g.found;
    if (missing == 0) continue;
    problem(g.segment, g.offset, g.from, "removed",
            g.from == g.to ? fmt::format("record seq {} is missing", g.from)
                           : fmt::format("{} of the records seq {} to {} are missing", missing,
                                         g.from, g.to));
  }

  if (checkpoint && checkpoint->seq > 0) {
    uint64_t last = expect_seq - 1;
    if (last < checkpoint->seq) {
      problem(last_segment.empty() ? SegmentName(anchor.first_segment) : last_segment,
              last_segment_end, last + 1, "truncated",
              fmt::format("the log ends at seq {} but the checkpoint names seq {}", last,
                          checkpoint->seq));
    } else if (cp_hash && *cp_hash != checkpoint->hash) {
      problem(cp_location->first, cp_location->second, checkpoint->seq, "edited",
              fmt::format("record seq {} does not match the checkpoint's hash", checkpoint->seq));
    }
  }
  return report;
}

Status QueryLog(const std::string& dir, const AuditQuery& query,
                const std::function<bool(const AuditRecord&)>& fn) {
  if (!fn) return InvalidArgumentError("QueryLog: the callback is empty");
  if (query.from_ms != 0 && query.to_ms != 0 && query.to_ms < query.from_ms) {
    return InvalidArgumentError(
        fmt::format("QueryLog: to_ms ({}) is before from_ms ({})", query.to_ms, query.from_ms));
  }
  uint64_t first_segment = 1;
  auto anchor_text = ReadFile(dir + "/" + std::string(internal::kAnchorFile), 4096);
  if (anchor_text.ok()) {
    auto a = internal::DecodeAnchor(*anchor_text);
    if (!a.ok()) return DataLossError(fmt::format("{}/anchor: {}", dir, a.status().message()));
    first_segment = a->first_segment;
  } else if (anchor_text.status().code() != StatusCode::kNotFound) {
    return anchor_text.status();
  }
  KW_ASSIGN_OR_RETURN(std::vector<uint64_t> segments, internal::ListSegments(dir));
  uint64_t matched = 0;
  for (uint64_t index : segments) {
    if (index < first_segment) continue;
    std::string name = SegmentName(index);
    SegmentReader reader;
    Status s = reader.Open(dir + "/" + name);
    if (s.code() == StatusCode::kNotFound) continue;  // dropped by retention meanwhile
    KW_RETURN_IF_ERROR(s);
    SegmentReader::Line line;
    while (true) {
      KW_ASSIGN_OR_RETURN(bool more, reader.Next(&line));
      if (!more) break;
      auto p = line.oversize
                   ? Result<internal::ParsedLine>(InvalidArgumentError("line too long"))
                   : internal::ParseLine(line.text);
      if (!p.ok()) {
        return DataLossError(fmt::format("{}/{} offset {}: {}", dir, name, line.offset,
                                         p.status().message()));
      }
      const AuditRecord& r = p->record;
      if (!query.tenant_id.empty() && r.tenant_id != query.tenant_id) continue;
      if (!query.operation.empty() && r.operation != query.operation) continue;
      if (!query.user.empty() && r.user_id != query.user && r.user_upn != query.user) continue;
      if (query.from_ms != 0 && r.time_ms < query.from_ms) continue;
      if (query.to_ms != 0 && r.time_ms >= query.to_ms) continue;
      if (!fn(r)) return Status::Ok();
      if (query.limit != 0 && ++matched >= query.limit) return Status::Ok();
    }
  }
  return Status::Ok();
}

}  // namespace kw::audit
