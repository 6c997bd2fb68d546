// libFuzzer target for the Sigma loader and matcher: the input is a rule file, optionally
// followed by "\n#EVENT\n" and one JSON event. Loading must never crash (every problem is a
// LoadReport entry) and matching any event against whatever loaded must never crash.
// Built and run by fuzz/run.sh (seeds in fuzz/corpus/rule_loader). An input starting with '#'
// also loads the built-in log-source mappings.
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "detect/engine.h"

namespace {

class NullSink : public kw::detect::AlertSink {
 public:
  void OnAlert(const kw::detect::Alert& a) override { (void)a.ToJson(); }
};

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string_view in(reinterpret_cast<const char*>(data), size);
  std::string_view yaml = in, event;
  size_t sep = in.find("\n#EVENT\n");
  if (sep != std::string_view::npos) {
    yaml = in.substr(0, sep);
    event = in.substr(sep + 8);
  }
  kw::detect::LoadOptions opts;
  // Compiling the built-in mappings costs more than the rest of an iteration: only when asked.
  opts.builtin_mappings = !yaml.empty() && yaml[0] == '#';
  opts.placeholders["p"] = {"a*", "10.0.0.0/8"};
  kw::detect::LoadReport report;
  auto rs = kw::detect::RuleSet::LoadFromStrings({{"fuzz.yml", std::string(yaml)}}, opts, &report);
  if (!rs.ok()) return 0;
  for (const auto& r : report.rejected) (void)r.ToString();
  if (event.empty()) return 0;
  kw::detect::Engine engine(*rs);
  NullSink sink;
  for (const char* product : {"", "m365", "windows", "azure"}) {
    engine.Process(event, {product, "", ""}, sink).IgnoreError();
    engine.Process(event, {product, "", ""}, sink).IgnoreError();
  }
  return 0;
}
