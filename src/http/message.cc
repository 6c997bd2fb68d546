#include "http/message.h"

#include <algorithm>
#include <utility>

#include "core/json.h"

namespace kw::http {
namespace {

char LowerAscii(char c) { return (c >= 'A' && c <= 'Z') ? static_cast<char>(c - 'A' + 'a') : c; }

}  // namespace

bool CaseInsensitiveLess::operator()(std::string_view a, std::string_view b) const {
  return std::lexicographical_compare(a.begin(), a.end(), b.begin(), b.end(), [](char x, char y) {
    return static_cast<unsigned char>(LowerAscii(x)) < static_cast<unsigned char>(LowerAscii(y));
  });
}

std::optional<std::string_view> Request::Header(std::string_view name) const {
  auto it = headers.find(name);
  if (it == headers.end()) return std::nullopt;
  return std::string_view(it->second);
}

std::string Request::ClientIp() const {
  std::string_view remote = remote_address;
  if (!remote.empty() && remote.front() == '[') {
    size_t end = remote.find(']');
    return std::string(remote.substr(1, end == std::string_view::npos ? 0 : end - 1));
  }
  return std::string(remote.substr(0, remote.rfind(':')));
}

std::string_view Request::PathParam(std::string_view name) const {
  auto it = path_params.find(name);
  return it == path_params.end() ? std::string_view() : std::string_view(it->second);
}

std::optional<std::string_view> Request::QueryParam(std::string_view name) const {
  auto it = query.find(name);
  if (it == query.end()) return std::nullopt;
  return std::string_view(it->second);
}

void Response::SetHeader(std::string_view name, std::string value) {
  auto range = headers.equal_range(name);
  headers.erase(range.first, range.second);
  headers.emplace(std::string(name), std::move(value));
}

Response JsonResponse(int status, std::string json_text) {
  Response r;
  r.status = status;
  r.content_type = "application/json";
  r.body = std::move(json_text);
  return r;
}

Response ErrorResponse(int status, std::string_view code, std::string_view description) {
  json::Writer w;
  w.BeginObject()
      .Key("error")
      .String(code)
      .Key("error_description")
      .String(description)
      .EndObject();
  Response r = JsonResponse(status, w.Take());
  r.SetHeader("Cache-Control", "no-store");
  return r;
}

}  // namespace kw::http
