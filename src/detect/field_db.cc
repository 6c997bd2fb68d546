#include "detect/field_db.h"

#include <hs/hs.h>

namespace kw::detect::internal {
namespace {

void AppendEscaped(std::string* out, std::string_view lit) {
  static const char kHex[] = "0123456789abcdef";
  for (char c : lit) {
    unsigned char u = static_cast<unsigned char>(c);
    if ((u >= 'a' && u <= 'z') || (u >= 'A' && u <= 'Z') || (u >= '0' && u <= '9')) {
      out->push_back(c);
    } else {
      *out += "\\x";
      out->push_back(kHex[u >> 4]);
      out->push_back(kHex[u & 15]);
    }
  }
}

}  // namespace

bool HsEligible(const StringPattern& p) {
  if (p.kind() == StringPattern::Kind::kAny) return false;
  if (p.kind() == StringPattern::Kind::kGlob) return true;
  return !p.literal().empty();
}

FieldDb::Expr FieldDb::ToExpr(const StringPattern& p, unsigned id) {
  Expr e;
  e.id = id;
  unsigned caseless = p.cased() ? 0 : HS_FLAG_CASELESS;
  switch (p.kind()) {
    case StringPattern::Kind::kExact:
    case StringPattern::Kind::kPrefix:
    case StringPattern::Kind::kSuffix:
      // Every occurrence is reported; HsAccept keeps the one at the right offset.
      e.flags = caseless;
      AppendEscaped(&e.regex, p.literal());
      break;
    case StringPattern::Kind::kContains:
      e.flags = caseless | HS_FLAG_SINGLEMATCH;
      AppendEscaped(&e.regex, p.literal());
      break;
    case StringPattern::Kind::kGlob: {
      e.flags = caseless | HS_FLAG_SINGLEMATCH | HS_FLAG_DOTALL;
      e.regex = "\\A";
      for (const SigmaChar& c : p.glob()) {
        if (c.kind == SigmaChar::Kind::kStar) {
          e.regex += ".*";
        } else if (c.kind == SigmaChar::Kind::kQuestion) {
          // One UTF-8 code point, without HS_FLAG_UTF8 (whose behaviour on invalid input is
          // undefined, and event text is untrusted).
          e.regex += "(?:[\\x00-\\x7f]|[\\xc0-\\xff][\\x80-\\xbf]*|[\\x80-\\xbf])";
        } else {
          AppendEscaped(&e.regex, std::string_view(&c.c, 1));
        }
      }
      e.regex += "\\z";
      break;
    }
    case StringPattern::Kind::kAny:
      break;
  }
  return e;
}

Result<std::unique_ptr<FieldDb>> FieldDb::Compile(const std::vector<Expr>& exprs) {
  std::vector<const char*> res;
  std::vector<unsigned> flags, ids;
  for (const Expr& e : exprs) {
    res.push_back(e.regex.c_str());
    flags.push_back(e.flags);
    ids.push_back(e.id);
  }
  std::unique_ptr<FieldDb> out(new FieldDb());
  hs_compile_error_t* err = nullptr;
  if (hs_compile_multi(res.data(), flags.data(), ids.data(), static_cast<unsigned>(res.size()),
                       HS_MODE_BLOCK, nullptr, &out->db_, &err) != HS_SUCCESS) {
    std::string msg = err ? err->message : "unknown error";
    if (err && err->expression >= 0 && static_cast<size_t>(err->expression) < exprs.size()) {
      msg += " in /" + exprs[err->expression].regex + "/";
    }
    hs_free_compile_error(err);
    return InternalError("hyperscan: " + msg);
  }
  return out;
}

FieldDb::~FieldDb() { hs_free_database(db_); }

HsScratch::~HsScratch() { hs_free_scratch(s_); }

Status HsScratch::Fit(const FieldDb& db) {
  if (hs_alloc_scratch(db.db(), &s_) != HS_SUCCESS) return ResourceExhaustedError("hyperscan scratch");
  return Status::Ok();
}

bool HsScan(const FieldDb& db, HsScratch& scratch, std::string_view text,
            int (*on_match)(unsigned, unsigned long long, unsigned long long, unsigned, void*),
            void* ctx) {
  return hs_scan(db.db(), text.data(), static_cast<unsigned>(text.size()), 0, scratch.get(),
                 on_match, ctx) == HS_SUCCESS;
}

}  // namespace kw::detect::internal
