// Sigma condition grammar (rules specification, "Condition"), as accepted here:
//
//   condition  := or_expr EOF
//   or_expr    := and_expr ( "or" and_expr )*
//   and_expr   := not_expr ( "and" not_expr )*
//   not_expr   := "not" not_expr | primary
//   primary    := "(" or_expr ")"
//               | quantity "of" target
//               | IDENTIFIER
//   quantity   := "1" | "any" | "all"
//   target     := "them"                 -- every identifier not starting with "_"
//               | PATTERN                -- identifier with "*" wildcards ("selection_*")
//   IDENTIFIER := [A-Za-z0-9_.-]+  (a search identifier of the detection section)
//   PATTERN    := [A-Za-z0-9_.*-]+
//
// Keywords are case-insensitive; precedence is not > and > or. `x of` over no identifier is an
// error. The deprecated aggregation syntax ("... | count() by x > 5") and "near" are rejected with
// a pointer to correlation rules. A detection's condition may also be a list of conditions; the
// caller ORs them.
#include "detect/condition.h"

#include <cctype>

#include "detect/pattern.h"

namespace kw::detect {
namespace {

struct Token {
  enum class Kind { kWord, kLParen, kRParen, kEnd, kPipe } kind;
  std::string_view text;
  size_t pos;
};

bool IsWordChar(char c) {
  return std::isalnum(static_cast<unsigned char>(c)) || c == '_' || c == '*' || c == '-' ||
         c == '.' || c == '?' || c == '@' || c == '$';
}

class Parser {
 public:
  Parser(std::string_view text, const std::vector<std::string>& ids, Condition* out)
      : text_(text), ids_(ids), out_(out) {}

  Result<int> Parse() {
    KW_RETURN_IF_ERROR(Tokenize());
    KW_ASSIGN_OR_RETURN(int root, OrExpr());
    if (Peek().kind != Token::Kind::kEnd) return Error("unexpected '" + std::string(Peek().text) + "'");
    return root;
  }

 private:
  Status Tokenize() {
    size_t i = 0;
    while (i < text_.size()) {
      char c = text_[i];
      if (std::isspace(static_cast<unsigned char>(c))) {
        ++i;
      } else if (c == '(') {
        toks_.push_back({Token::Kind::kLParen, text_.substr(i, 1), i});
        ++i;
      } else if (c == ')') {
        toks_.push_back({Token::Kind::kRParen, text_.substr(i, 1), i});
        ++i;
      } else if (c == '|') {
        return InvalidArgumentError(
            "condition: aggregation expressions ('| count() ...') are deprecated and not "
            "supported; use a correlation rule");
      } else if (IsWordChar(c)) {
        size_t j = i;
        while (j < text_.size() && IsWordChar(text_[j])) ++j;
        toks_.push_back({Token::Kind::kWord, text_.substr(i, j - i), i});
        i = j;
      } else {
        return InvalidArgumentError("condition: unexpected character '" + std::string(1, c) +
                                    "' at offset " + std::to_string(i));
      }
    }
    toks_.push_back({Token::Kind::kEnd, "", text_.size()});
    return Status::Ok();
  }

  const Token& Peek() const { return toks_[pos_]; }
  bool IsKeyword(const Token& t, std::string_view kw) const {
    return t.kind == Token::Kind::kWord && AsciiEqualsIgnoreCase(t.text, kw);
  }
  Status Error(std::string what) const {
    return InvalidArgumentError("condition: " + what + " at offset " +
                                std::to_string(Peek().pos) + " in '" + std::string(text_) + "'");
  }

  int Add(CondNode n) {
    out_->nodes.push_back(std::move(n));
    return static_cast<int>(out_->nodes.size() - 1);
  }

  Result<int> OrExpr() {
    if (++depth_ > 64) return Error("nesting too deep");
    KW_ASSIGN_OR_RETURN(int first, AndExpr());
    std::vector<int> kids{first};
    while (IsKeyword(Peek(), "or")) {
      ++pos_;
      KW_ASSIGN_OR_RETURN(int next, AndExpr());
      kids.push_back(next);
    }
    --depth_;
    if (kids.size() == 1) return first;
    return Add({CondNode::Kind::kOr, -1, std::move(kids)});
  }

  Result<int> AndExpr() {
    KW_ASSIGN_OR_RETURN(int first, NotExpr());
    std::vector<int> kids{first};
    while (IsKeyword(Peek(), "and")) {
      ++pos_;
      KW_ASSIGN_OR_RETURN(int next, NotExpr());
      kids.push_back(next);
    }
    if (kids.size() == 1) return first;
    return Add({CondNode::Kind::kAnd, -1, std::move(kids)});
  }

  Result<int> NotExpr() {
    if (IsKeyword(Peek(), "not")) {
      ++pos_;
      if (++depth_ > 64) return Error("nesting too deep");
      KW_ASSIGN_OR_RETURN(int inner, NotExpr());
      --depth_;
      return Add({CondNode::Kind::kNot, -1, {inner}});
    }
    return Primary();
  }

  static bool GlobMatchName(std::string_view pat, std::string_view name) {
    StringPattern p = StringPattern::Compile(ParseSigmaString(pat), /*cased=*/true);
    return p.Match(name);
  }

  Result<int> Primary() {
    const Token& t = Peek();
    if (t.kind == Token::Kind::kLParen) {
      ++pos_;
      KW_ASSIGN_OR_RETURN(int inner, OrExpr());
      if (Peek().kind != Token::Kind::kRParen) return Error("expected ')'");
      ++pos_;
      return inner;
    }
    if (t.kind != Token::Kind::kWord) return Error("expected a search identifier");
    if (IsKeyword(t, "and") || IsKeyword(t, "or")) return Error("unexpected '" + std::string(t.text) + "'");
    if (IsKeyword(t, "near")) {
      return InvalidArgumentError("condition: 'near' is deprecated; use a temporal correlation rule");
    }
    const Token& next = toks_[pos_ + 1];
    if (IsKeyword(next, "of")) {
      bool all;
      if (t.text == "1" || IsKeyword(t, "any")) {
        all = false;
      } else if (IsKeyword(t, "all")) {
        all = true;
      } else {
        return Error("quantifier must be '1' or 'all', not '" + std::string(t.text) + "'");
      }
      pos_ += 2;
      const Token& target = Peek();
      if (target.kind != Token::Kind::kWord) return Error("expected 'them' or a pattern after 'of'");
      ++pos_;
      std::vector<int> kids;
      bool them = IsKeyword(target, "them");
      for (size_t i = 0; i < ids_.size(); ++i) {
        if (them ? (!ids_[i].empty() && ids_[i][0] != '_') : GlobMatchName(target.text, ids_[i])) {
          kids.push_back(Add({CondNode::Kind::kRef, static_cast<int>(i), {}}));
        }
      }
      if (kids.empty()) {
        return InvalidArgumentError("condition: '" + std::string(target.text) +
                                    "' matches no search identifier");
      }
      if (kids.size() == 1) return kids[0];
      return Add({all ? CondNode::Kind::kAnd : CondNode::Kind::kOr, -1, std::move(kids)});
    }
    ++pos_;
    for (size_t i = 0; i < ids_.size(); ++i) {
      if (ids_[i] == t.text) return Add({CondNode::Kind::kRef, static_cast<int>(i), {}});
    }
    return InvalidArgumentError("condition: unknown search identifier '" + std::string(t.text) +
                                "'");
  }

  std::string_view text_;
  const std::vector<std::string>& ids_;
  Condition* out_;
  std::vector<Token> toks_;
  size_t pos_ = 0;
  int depth_ = 0;
};

void CollectRequired(const Condition& c, int node, std::vector<int>* out) {
  const CondNode& n = c.nodes[node];
  if (n.kind == CondNode::Kind::kRef) {
    out->push_back(n.ref);
  } else if (n.kind == CondNode::Kind::kAnd) {
    for (int k : n.children) CollectRequired(c, k, out);
  }
}

}  // namespace

Result<int> ParseCondition(std::string_view text, const std::vector<std::string>& identifiers,
                           Condition* out) {
  Parser p(text, identifiers, out);
  return p.Parse();
}

std::vector<int> RequiredRefs(const Condition& c, int root) {
  std::vector<int> out;
  if (root >= 0) CollectRequired(c, root, &out);
  return out;
}

}  // namespace kw::detect
