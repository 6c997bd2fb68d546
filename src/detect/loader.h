// Turns Sigma YAML (rules, correlations, filters) and log-source mapping YAML into a
// RuleSetData. Internal to kw_detect; used by RuleSet::Load.
#pragma once

#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "detect/engine.h"
#include "detect/rule.h"

namespace kw::detect::internal {

class Loader {
 public:
  Loader(const LoadOptions& options, LoadReport* report);
  ~Loader();

  // A log-source mapping document (format in docs/sigma.md). Must come before any rule.
  // Errors name source:line:col.
  Status AddMapping(std::string_view yaml, const std::string& source);

  // One rule file's text. Problems go to the report; never fails as a whole.
  void AddRules(std::string_view yaml, const std::string& file);

  // Links correlations and filters to their rules, builds the log-source groups and the index.
  std::shared_ptr<RuleSetData> Finish();

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// The built-in mappings (src/detect/mappings/*.yml, compiled in): pairs of name and YAML text.
const std::vector<std::pair<std::string, std::string>>& BuiltinMappings();

}  // namespace kw::detect::internal
