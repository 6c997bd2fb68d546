// The floor for `keyward hunt`: parse every record of a JSON-lines file with simdjson and touch
// one field, nothing else (bench/hunt_bench.sh runs it on the same file as the hunt).
// Usage: simdjson_floor FILE   prints "events=N seconds=S"
#include <simdjson.h>

#include <chrono>
#include <cstdio>
#include <string_view>

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: simdjson_floor FILE.jsonl\n");
    return 2;
  }
  auto start = std::chrono::steady_clock::now();
  simdjson::padded_string text;
  if (simdjson::padded_string::load(argv[1]).get(text)) {
    std::fprintf(stderr, "simdjson_floor: cannot read %s\n", argv[1]);
    return 1;
  }
  simdjson::ondemand::parser parser;
  simdjson::ondemand::document_stream docs;
  if (parser.iterate_many(text, 1 << 20).get(docs)) return 1;
  size_t events = 0, matched = 0;
  for (auto doc : docs) {
    std::string_view op;
    if (!doc["Operation"].get_string().get(op) && op == "MailItemsAccessed") ++matched;
    ++events;
  }
  double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  std::printf("events=%zu matched=%zu seconds=%.3f\n", events, matched, s);
  return 0;
}
