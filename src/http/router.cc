#include "http/router.h"

#include <fmt/format.h>
#include <simdjson.h>

#include <algorithm>
#include <exception>
#include <set>
#include <utility>

#include "core/log.h"
#include "http/form.h"

namespace kw::http {
namespace {

bool IsTokenChar(char c) {
  if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9')) return true;
  return std::string_view("!#$%&'*+-.^_`|~").find(c) != std::string_view::npos;
}

bool IsLiteralChar(char c) {
  if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9')) return true;
  return std::string_view("-._~!$&'()*+,;=:@").find(c) != std::string_view::npos;
}

bool IsParamNameChar(char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_';
}

// Splits "/a/b" into {"a", "b"} and "/" into {}. REQUIRES: path starts with '/'.
std::vector<std::string_view> SplitPath(std::string_view path) {
  std::vector<std::string_view> out;
  if (path == "/") return out;
  path.remove_prefix(1);
  while (true) {
    size_t slash = path.find('/');
    out.push_back(path.substr(0, slash));
    if (slash == std::string_view::npos) break;
    path.remove_prefix(slash + 1);
  }
  return out;
}

// Decodes the segments of a request path, or explains why the path is refused.
Result<std::vector<std::string>> DecodePath(std::string_view path) {
  if (path.empty() || path.front() != '/') return InvalidArgumentError("path must start with '/'");
  std::vector<std::string> segments;
  for (std::string_view raw : SplitPath(path)) {
    KW_ASSIGN_OR_RETURN(std::string s, PercentDecode(raw, /*plus_is_space=*/false));
    if (s == "." || s == "..") return InvalidArgumentError("path has a '.' or '..' segment");
    // An encoded '/' would let one parameter span two segments; NUL and invalid UTF-8 have no
    // business in an identifier and break whatever the value is handed to next.
    if (s.find('/') != std::string::npos || s.find('\0') != std::string::npos) {
      return InvalidArgumentError("path has an encoded '/' or NUL");
    }
    if (!simdjson::validate_utf8(s.data(), s.size())) {
      return InvalidArgumentError("path is not valid UTF-8");
    }
    segments.push_back(std::move(s));
  }
  return segments;
}

}  // namespace

Status Router::Merge(const Router& other) {
  for (const Route& r : other.routes_) KW_RETURN_IF_ERROR(Add(r.method, r.pattern, r.handler));
  return Status::Ok();
}

Status Router::Add(std::string_view method, std::string_view pattern, Handler handler) {
  if (method.empty() || !std::all_of(method.begin(), method.end(), IsTokenChar)) {
    return InvalidArgumentError(
        fmt::format("route method '{}' is not an HTTP token", PrintableForMessage(method)));
  }
  auto bad_pattern = [&](std::string_view why) {
    return InvalidArgumentError(
        fmt::format("route pattern '{}': {}", PrintableForMessage(pattern, 256), why));
  };
  if (pattern.empty() || pattern.front() != '/') return bad_pattern("must start with '/'");
  if (!handler) return bad_pattern("empty handler");
  Route route;
  route.method = std::string(method);
  route.pattern = std::string(pattern);
  std::set<std::string, std::less<>> names;
  for (std::string_view seg : SplitPath(pattern)) {
    if (seg.empty()) return bad_pattern("empty segment");
    Segment s;
    if (seg.front() == '{') {
      if (seg.size() < 3 || seg.back() != '}') return bad_pattern("unclosed or empty {parameter}");
      std::string_view name = seg.substr(1, seg.size() - 2);
      if (!std::all_of(name.begin(), name.end(), IsParamNameChar)) {
        return bad_pattern("parameter names are letters, digits and '_'");
      }
      if (!names.emplace(name).second) {
        return bad_pattern(fmt::format("parameter '{}' appears twice", name));
      }
      s.is_param = true;
      s.text = std::string(name);
    } else {
      if (!std::all_of(seg.begin(), seg.end(), IsLiteralChar)) {
        return bad_pattern("literal segments take unreserved characters, sub-delims, ':' and '@'");
      }
      if (seg == "." || seg == "..") return bad_pattern("'.' and '..' segments never match");
      s.text = std::string(seg);
    }
    route.segments.push_back(std::move(s));
  }
  for (const Route& r : routes_) {
    if (r.method != route.method || r.segments.size() != route.segments.size()) continue;
    bool same_shape = true;
    for (size_t i = 0; i < r.segments.size() && same_shape; ++i) {
      const Segment& a = r.segments[i];
      const Segment& b = route.segments[i];
      same_shape = a.is_param == b.is_param && (a.is_param || a.text == b.text);
    }
    if (same_shape) {
      return AlreadyExistsError(fmt::format("route {} {} conflicts with {} {}", method,
                                            route.pattern, r.method, r.pattern));
    }
  }
  route.handler = std::move(handler);
  routes_.push_back(std::move(route));
  return Status::Ok();
}

bool Router::Matches(const Route& route, const std::vector<std::string>& segments) {
  if (route.segments.size() != segments.size()) return false;
  for (size_t i = 0; i < segments.size(); ++i) {
    const Segment& s = route.segments[i];
    if (s.is_param ? segments[i].empty() : s.text != segments[i]) return false;
  }
  return true;
}

bool Router::MoreSpecific(const Route& a, const Route& b) {
  for (size_t i = 0; i < a.segments.size(); ++i) {
    if (a.segments[i].is_param != b.segments[i].is_param) return !a.segments[i].is_param;
  }
  return false;
}

Response Router::Dispatch(Request* request) const {
  auto segments = DecodePath(request->path);
  if (!segments.ok()) return ErrorResponse(400, "invalid_request", segments.status().message());

  const Route* best = nullptr;
  const Route* best_get = nullptr;  // fallback for HEAD
  std::set<std::string> allowed;
  for (const Route& r : routes_) {
    if (!Matches(r, *segments)) continue;
    allowed.insert(r.method);
    if (r.method == request->method) {
      if (best == nullptr || MoreSpecific(r, *best)) best = &r;
    } else if (request->method == "HEAD" && r.method == "GET") {
      if (best_get == nullptr || MoreSpecific(r, *best_get)) best_get = &r;
    }
  }
  if (best == nullptr) best = best_get;
  if (best == nullptr) {
    if (allowed.empty()) return ErrorResponse(404, "not_found", "no resource at this path");
    if (allowed.count("GET") != 0) allowed.insert("HEAD");
    std::string allow;
    for (const std::string& m : allowed) {
      if (!allow.empty()) allow += ", ";
      allow += m;
    }
    Response r = ErrorResponse(405, "method_not_allowed", "method not allowed at this path");
    r.SetHeader("Allow", std::move(allow));
    return r;
  }

  request->path_params.clear();
  for (size_t i = 0; i < best->segments.size(); ++i) {
    if (best->segments[i].is_param) {
      request->path_params[best->segments[i].text] = std::move((*segments)[i]);
    }
  }
  try {
    return best->handler(*request);
  } catch (const std::exception& e) {
    Log(LogLevel::kError, "http handler for {} {} threw (request id {}): {}", best->method,
        best->pattern, request->request_id, e.what());
  } catch (...) {
    Log(LogLevel::kError, "http handler for {} {} threw a non-standard exception (request id {})",
        best->method, best->pattern, request->request_id);
  }
  return ErrorResponse(500, "server_error", "internal server error");
}

}  // namespace kw::http
