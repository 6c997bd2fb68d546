// Router: maps a method and a path to a handler.
//
// Patterns are exact paths whose segments are literals or "{name}" parameters:
//
//   pattern = "/" / 1*( "/" segment )
//   segment = literal / "{" name "}"
//   literal = 1*( ALPHA / DIGIT / "-" / "." / "_" / "~" / "!" / "$" / "&" / "'" / "(" / ")" / "*"
//                 / "+" / "," / ";" / "=" / ":" / "@" )      ; but not "." or ".."
//   name    = 1*( ALPHA / DIGIT / "_" )
//
// e.g. "/healthz", "/{tenant}/v2.0/token". A request path is split at "/" and each segment is
// percent-decoded (no "+" to space in paths) before matching, so "/t%31/v2.0/token" gives
// tenant "t1". A parameter matches one non-empty segment. There is no prefix matching and no
// trailing-slash folding: "/healthz/" does not match "/healthz".
//
// When several routes match a path, the most specific wins: comparing segment by segment, the
// first position where one route has a literal and the other a parameter decides for the literal
// ("/common/v2.0/token" beats "/{tenant}/v2.0/token").
//
// Dispatch outcomes, all as ErrorResponse JSON bodies:
//   400 invalid_request      the path has bad percent-encoding, an encoded "/" or NUL, invalid
//                            UTF-8, or a "." or ".." segment (refused rather than normalized)
//   404 not_found            no route matches the path
//   405 method_not_allowed   routes match the path but none for this method; Allow lists theirs
//   500 server_error         the handler threw; the client sees a generic message, the exception
//                            text goes to the log with the request id
// A HEAD request without a HEAD route runs the GET route (the server sends no body).
//
// Thread safety: Add() is not thread-safe and must finish before the first Dispatch(); Dispatch()
// is const and may run on many threads at once. Handlers run on the calling thread.
#pragma once

#include <functional>
#include <string>
#include <string_view>
#include <vector>

#include "core/status.h"
#include "http/message.h"

namespace kw::http {

// A handler may throw (the router turns it into a 500) but should return error responses instead.
using Handler = std::function<Response(const Request&)>;

class Router {
 public:
  // Registers `handler` for `method` (an HTTP token such as "GET", matched case-sensitively) and
  // `pattern` (grammar above). Errors: InvalidArgument for a bad method, a bad pattern or a
  // parameter name used twice in one pattern; AlreadyExists if a route with the same method and
  // the same shape (same literals, parameters at the same positions, whatever their names)
  // exists. REQUIRES: `handler` is not empty.
  Status Add(std::string_view method, std::string_view pattern, Handler handler);

  // Routes `request` by its method and path, sets request->path_params and runs the handler.
  // Never throws; see above for the error responses.
  Response Dispatch(Request* request) const;

  // Adds every route of `other` (services built separately, served on one port). Stops at the
  // first conflict (AlreadyExists naming the route); routes added before it stay.
  Status Merge(const Router& other);

  size_t size() const { return routes_.size(); }

 private:
  struct Segment {
    bool is_param = false;
    std::string text;  // the literal, or the parameter name
  };
  struct Route {
    std::string method;
    std::string pattern;
    std::vector<Segment> segments;
    Handler handler;
  };

  static bool Matches(const Route& route, const std::vector<std::string>& segments);
  // True if `a` is more specific than `b`; both match the same path.
  static bool MoreSpecific(const Route& a, const Route& b);

  std::vector<Route> routes_;
};

}  // namespace kw::http
