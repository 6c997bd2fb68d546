// The rules shipped with Keyward (src/detect/rules/**, compiled into the binary): what `keyward
// hunt` and live mode run when no --rules is given. Each entry is ("builtin:rules/...", YAML).
#pragma once

#include <string>
#include <utility>
#include <vector>

namespace kw::detect {

const std::vector<std::pair<std::string, std::string>>& BuiltinRules();

}  // namespace kw::detect
