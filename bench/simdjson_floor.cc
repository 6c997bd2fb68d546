// The floor for `keyward hunt`: the least work any JSON-lines detector must do, on the same file
// and the same number of threads as the hunt (bench/hunt_bench.sh runs both).
//
// One reader thread reads the file in 4 MiB chunks (as hunt's reader does, never the whole file),
// cuts each chunk at its last newline, and hands chunks to N parser threads through a bounded
// queue. Each parser thread parses every line on its own with simdjson On-Demand and reads the
// three fields every hunt needs to route and index an event (Operation, OrganizationId,
// CreationTime), so the parse is not skipped as dead work. Nothing else: no rule, no copy.
//
// Usage: simdjson_floor FILE [THREADS]   (THREADS default 1)
// Prints "events=N matched=M threads=T seconds=S cpu_seconds=C"; matched counts
// MailItemsAccessed records, a check that the parse really happened.
#include <simdjson.h>

#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <cstring>
#include <ctime>
#include <deque>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

namespace {

constexpr size_t kChunk = 4u << 20;
constexpr size_t kMaxLine = 16u << 20;  // as hunt's default max_record_bytes

struct Chunk {
  std::unique_ptr<char[]> data;  // text, then SIMDJSON_PADDING spare bytes
  size_t size = 0;
};

class Queue {
 public:
  void Push(Chunk c) {
    std::unique_lock lock(mu_);
    not_full_.wait(lock, [&] { return q_.size() < 4; });
    q_.push_back(std::move(c));
    not_empty_.notify_one();
  }
  bool Pop(Chunk* c) {
    std::unique_lock lock(mu_);
    not_empty_.wait(lock, [&] { return !q_.empty() || done_; });
    if (q_.empty()) return false;
    *c = std::move(q_.front());
    q_.pop_front();
    not_full_.notify_one();
    return true;
  }
  // Buffers of parsed chunks, reused by the reader (no fresh pages per chunk).
  void Recycle(std::unique_ptr<char[]> buf) {
    std::lock_guard lock(mu_);
    spare_.push_back(std::move(buf));
  }
  std::unique_ptr<char[]> TakeSpare() {
    std::lock_guard lock(mu_);
    if (spare_.empty()) return nullptr;
    auto b = std::move(spare_.back());
    spare_.pop_back();
    return b;
  }
  void Finish() {
    std::lock_guard lock(mu_);
    done_ = true;
    not_empty_.notify_all();
  }

 private:
  std::mutex mu_;
  std::condition_variable not_empty_, not_full_;
  std::deque<Chunk> q_;
  std::vector<std::unique_ptr<char[]>> spare_;
  bool done_ = false;
};

struct Counts {
  size_t events = 0, matched = 0, errors = 0;
  uint64_t checksum = 0;
};

void ParseChunk(simdjson::ondemand::parser& parser, const Chunk& c, Counts* n) {
  const char* p = c.data.get();
  const char* end = p + c.size;
  while (p < end) {
    const char* nl = static_cast<const char*>(std::memchr(p, '\n', static_cast<size_t>(end - p)));
    const char* line_end = nl ? nl : end;
    size_t len = static_cast<size_t>(line_end - p);
    if (len > 0) {
      // The bytes after the line are the next line or the chunk's padding: readable, as
      // On-Demand requires (SIMDJSON_PADDING).
      simdjson::padded_string_view view(p, len, len + static_cast<size_t>(end - line_end) +
                                                    simdjson::SIMDJSON_PADDING);
      simdjson::ondemand::document doc;
      std::string_view op, tenant, time;
      if (parser.iterate(view).get(doc) ||
          doc["Operation"].get_string().get(op) ||
          doc["OrganizationId"].get_string().get(tenant) ||
          doc["CreationTime"].get_string().get(time)) {
        // Fields in another order than asked: find them in any order.
        simdjson::ondemand::object obj;
        if (parser.iterate(view).get(doc) || doc.get_object().get(obj)) {
          ++n->errors;
        } else {
          // A record without one of them still counts: only a parse failure is an error.
          if (obj.find_field_unordered("Operation").get_string().get(op)) op = {};
          if (obj.find_field_unordered("OrganizationId").get_string().get(tenant)) tenant = {};
          if (obj.find_field_unordered("CreationTime").get_string().get(time)) time = {};
        }
      }
      ++n->events;
      if (op == "MailItemsAccessed") ++n->matched;
      n->checksum += tenant.size() + time.size();
    }
    p = line_end + 1;
  }
}

double CpuSeconds() {
  timespec ts;
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
  return static_cast<double>(ts.tv_sec) + static_cast<double>(ts.tv_nsec) / 1e9;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 2 && argc != 3) {
    std::fprintf(stderr, "usage: simdjson_floor FILE.jsonl [THREADS]\n");
    return 2;
  }
  int threads = argc == 3 ? std::atoi(argv[2]) : 1;
  if (threads < 1 || threads > 256) {
    std::fprintf(stderr, "simdjson_floor: THREADS must be 1..256\n");
    return 2;
  }
  std::FILE* f = std::fopen(argv[1], "rb");
  if (!f) {
    std::fprintf(stderr, "simdjson_floor: cannot read %s\n", argv[1]);
    return 1;
  }
  const auto start = std::chrono::steady_clock::now();
  const double cpu_start = CpuSeconds();
  Queue queue;
  std::vector<Counts> counts(static_cast<size_t>(threads));
  std::vector<std::thread> pool;
  for (int i = 0; i < threads; ++i) {
    pool.emplace_back([&, i] {
      simdjson::ondemand::parser parser;
      Chunk c;
      while (queue.Pop(&c)) {
        ParseChunk(parser, c, &counts[static_cast<size_t>(i)]);
        queue.Recycle(std::move(c.data));
      }
    });
  }
  std::string carry;  // the partial line at the end of the previous read
  while (true) {
    if (carry.size() > kMaxLine) {
      std::fprintf(stderr, "simdjson_floor: a line is longer than %zu bytes\n", kMaxLine);
      return 1;
    }
    Chunk c;
    c.data = queue.TakeSpare();
    if (!c.data) c.data.reset(new char[kMaxLine + kChunk + simdjson::SIMDJSON_PADDING]);
    std::memcpy(c.data.get(), carry.data(), carry.size());
    size_t got = std::fread(c.data.get() + carry.size(), 1, kChunk, f);
    size_t total = carry.size() + got;
    carry.clear();
    if (got == 0) {
      c.size = total;  // a last line without a newline
    } else {
      const char* last = static_cast<const char*>(memrchr(c.data.get(), '\n', total));
      size_t cut = last ? static_cast<size_t>(last - c.data.get()) + 1 : 0;
      carry.assign(c.data.get() + cut, total - cut);
      c.size = cut;
    }
    std::memset(c.data.get() + c.size, 0, simdjson::SIMDJSON_PADDING);
    if (c.size > 0) queue.Push(std::move(c));
    if (got == 0) break;
  }
  std::fclose(f);
  queue.Finish();
  for (auto& t : pool) t.join();
  double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  Counts all;
  for (const auto& n : counts) {
    all.events += n.events;
    all.matched += n.matched;
    all.errors += n.errors;
    all.checksum += n.checksum;
  }
  std::printf("events=%zu matched=%zu errors=%zu checksum=%llu threads=%d seconds=%.3f cpu_seconds=%.3f\n",
              all.events, all.matched, all.errors, static_cast<unsigned long long>(all.checksum),
              threads, s, CpuSeconds() - cpu_start);
  return 0;
}
