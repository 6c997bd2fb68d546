// Helpers shared by the kw_detect_input tests.
#pragma once

#include <gtest/gtest.h>
#include <simdjson.h>
#include <stdlib.h>
#include <zlib.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "core/test_util.h"
#include "detect/input/record_reader.h"

namespace kw::detect::testing {

using kw::test::TempDir;

inline std::string Gzip(std::string_view data) {
  z_stream z{};
  deflateInit2(&z, 6, Z_DEFLATED, 16 + MAX_WBITS, 8, Z_DEFAULT_STRATEGY);
  std::string out(deflateBound(&z, data.size()) + 64, '\0');
  z.next_in = reinterpret_cast<Bytef*>(const_cast<char*>(data.data()));
  z.avail_in = static_cast<uInt>(data.size());
  z.next_out = reinterpret_cast<Bytef*>(out.data());
  z.avail_out = static_cast<uInt>(out.size());
  deflate(&z, Z_FINISH);
  out.resize(z.total_out);
  deflateEnd(&z);
  return out;
}

struct ReadRecord {
  std::string json;
  uint64_t line;
  std::string product;
  std::string service;
};

struct ReadResult {
  Status status;
  LogFormat format = LogFormat::kAuto;
  std::vector<ReadRecord> records;
  BadRecordStats bad;
  uint64_t batches = 0;
};

inline ReadResult ReadAllFrom(Result<std::unique_ptr<RecordReader>> opened) {
  ReadResult r;
  if (!opened.ok()) {
    r.status = opened.status();
    return r;
  }
  RecordReader& reader = **opened;
  r.format = reader.format();
  RecordBatch batch;
  for (;;) {
    Result<bool> more = reader.NextBatch(&batch);
    if (!more.ok()) {
      r.status = more.status();
      break;
    }
    if (!*more) break;
    ++r.batches;
    for (size_t i = 0; i < batch.size(); ++i) {
      Record rec = batch[i];
      r.records.push_back({std::string(rec.json), rec.line, std::string(rec.source.product),
                           std::string(rec.source.service)});
    }
  }
  r.bad = reader.bad_records();
  return r;
}

inline ReadResult ReadAll(const std::string& path, LogFormat format = LogFormat::kAuto,
                          ReaderOptions options = {}) {
  return ReadAllFrom(RecordReader::Open(path, format, options));
}

// JSON text with object members sorted by name, recursively: equal for equal documents.
inline void CanonicalRec(simdjson::dom::element e, std::string* out) {
  using simdjson::dom::element_type;
  if (e.type() == element_type::OBJECT) {
    std::vector<std::pair<std::string_view, simdjson::dom::element>> members;
    for (auto f : simdjson::dom::object(e)) members.emplace_back(f.key, f.value);
    std::sort(members.begin(), members.end(),
              [](const auto& a, const auto& b) { return a.first < b.first; });
    out->push_back('{');
    for (size_t i = 0; i < members.size(); ++i) {
      if (i > 0) out->push_back(',');
      *out += "\"" + std::string(members[i].first) + "\":";
      CanonicalRec(members[i].second, out);
    }
    out->push_back('}');
  } else if (e.type() == element_type::ARRAY) {
    out->push_back('[');
    bool first = true;
    for (auto v : simdjson::dom::array(e)) {
      if (!first) out->push_back(',');
      first = false;
      CanonicalRec(v, out);
    }
    out->push_back(']');
  } else {
    *out += simdjson::minify(e);
  }
}

inline std::string Canonical(std::string_view json) {
  simdjson::dom::parser p;
  simdjson::dom::element e;
  if (p.parse(json.data(), json.size(), true).get(e))
    return "<invalid JSON: " + std::string(json) + ">";
  std::string out;
  CanonicalRec(e, &out);
  return out;
}

}  // namespace kw::detect::testing
