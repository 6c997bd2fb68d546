// Request and Response: what a handler receives and returns, and helpers for the usual responses.
//
// Both are plain value types with no Boost in sight; the server converts to and from the wire.
// Handlers must not assume anything about the thread they run on (see server.h).
#pragma once

#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

namespace kw::http {

class StreamBody;  // stream.h

// ASCII case-insensitive ordering, for header names. Transparent: lookups take a string_view.
struct CaseInsensitiveLess {
  using is_transparent = void;
  bool operator()(std::string_view a, std::string_view b) const;
};

// Header fields by name, compared case-insensitively. A name may occur more than once (in arrival
// order); use count() where a repeated header must be refused (e.g. Authorization).
using Headers = std::multimap<std::string, std::string, CaseInsensitiveLess>;

// Decoded parameters (query, form body, path) by name. Names are unique: the parsers refuse
// duplicates rather than pick one.
using Params = std::map<std::string, std::string, std::less<>>;

struct Request {
  std::string method;  // as received, e.g. "GET" (case-sensitive, per RFC 9110)
  // The request-target exactly as received, e.g. "/t1/v2.0/authorize?code=...". The query may carry
  // secrets: never log it (the server's access log records `path` only).
  std::string target;
  std::string path;  // `target` up to the first '?', still percent-encoded
  Params query;      // the query string, decoded strictly (ParseQuery in form.h)
  Headers headers;
  std::string body;            // complete (chunked bodies are reassembled), at most max_body_bytes
  std::string remote_address;  // peer "ip:port" ("[ip]:port" for IPv6)
  Params path_params;          // decoded values of the matched route's {name} segments
  std::string request_id;      // assigned by the server, also sent back as X-Request-Id

  // First value of header `name` (case-insensitive), or nullopt.
  std::optional<std::string_view> Header(std::string_view name) const;
  // Value of path parameter `name`, or "" if the route has no such parameter.
  std::string_view PathParam(std::string_view name) const;
  // Value of query parameter `name`, or nullopt.
  std::optional<std::string_view> QueryParam(std::string_view name) const;
  // The peer's IP address: remote_address without the port (and without IPv6 brackets), as
  // audit records want it.
  std::string ClientIp() const;
};

struct Response {
  int status = 200;
  std::string content_type;  // sent as Content-Type when not empty
  // Extra header fields. The server owns Content-Length, Transfer-Encoding, Connection and Date and
  // ignores them here; it adds X-Request-Id and X-Content-Type-Options: nosniff, and
  // Cache-Control: no-store on 4xx/5xx responses unless a Cache-Control is given. A name or value
  // that could split the header (CR, LF, NUL, non-token name) turns the response into a 500.
  Headers headers;
  std::string body;  // not sent for HEAD requests, nor with 204 and 304
  // When set (and the status is 200), the body is sent as the producer writes it (stream.h) and
  // `body` is ignored; the connection closes when the stream ends. HEAD gets the head only.
  std::shared_ptr<StreamBody> stream;

  // Replaces every field named `name` by one with `value`.
  void SetHeader(std::string_view name, std::string value);
};

// A response with Content-Type: application/json and `json_text` as its body (not validated).
Response JsonResponse(int status, std::string json_text);

// {"error":"<code>","error_description":"<description>"}, the error shape of RFC 6749 §5.2, used
// for every error Keyward's services return, with Cache-Control: no-store. `description` is shown
// to the client: it must not contain secrets or internal details.
Response ErrorResponse(int status, std::string_view code, std::string_view description);

}  // namespace kw::http
