// HTML escaping for the few pages Keyward renders itself (the login form, the simulator's report,
// search snippets).
#pragma once

#include <string>
#include <string_view>

namespace kw {

// `s` with & < > " ' replaced by entities: safe as element text and inside a quoted attribute.
std::string HtmlEscape(std::string_view s);

}  // namespace kw
