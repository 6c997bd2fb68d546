// Base64url (RFC 4648 §5) as JOSE uses it: no padding.
//
// Decoding is strict, because two different strings that decode to the same bytes are a way to
// slip past caches, deny-lists and signature checks: only the URL-safe alphabet, no '=' padding,
// no whitespace, no length of 1 mod 4, and the unused low bits of the last character must be zero
// (so every byte string has exactly one accepted encoding).
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

#include "core/status.h"

namespace kw {

std::string Base64UrlEncode(std::string_view bytes);

// Decodes `in` into `out` (replacing its contents). Returns false on any non-canonical input.
// Fast path for the verifier: no allocation beyond `out`'s growth.
bool Base64UrlDecodeInto(std::string_view in, std::string* out);

// As above, with an error naming the first offending position.
Result<std::string> Base64UrlDecode(std::string_view in);

// Lower-case hex, and its strict inverse (even length, [0-9a-fA-F] only).
std::string HexEncode(std::string_view bytes);
Result<std::string> HexDecode(std::string_view hex);

}  // namespace kw
