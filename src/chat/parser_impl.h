// The chat-template parser's internal state, shared by parser.cpp (statements and the token
// stream) and parse_expr.cpp (expressions). Include only from those two files.
#pragma once

#include <algorithm>
#include <initializer_list>
#include <string>
#include <string_view>
#include <vector>

#include "chat/ast.h"
#include "chat/lexer.h"
#include "chat/limits.h"

namespace exq::chat::detail {

// How a token reads in an error message: "'for'", "end of template", ...
std::string describe(const Token& t);

class Parser {
 public:
  explicit Parser(std::vector<Token> tokens) : toks_(std::move(tokens)) {}
  ast::Program run();

 private:
  // ---- token stream ----
  const Token& cur() const { return toks_[i_]; }
  const Token& peek(size_t k = 1) const { return toks_[std::min(i_ + k, toks_.size() - 1)]; }
  bool is_op(std::string_view op) const { return cur().kind == TokenKind::Op && cur().text == op; }
  bool is_name(std::string_view n) const { return cur().kind == TokenKind::Name && cur().text == n; }
  [[noreturn]] void fail(const Token& at, const std::string& msg) const;
  const Token& next();
  bool skip_op(std::string_view op);
  bool skip_name(std::string_view n);
  void expect_op(std::string_view op);
  const Token& expect_name();
  void expect(TokenKind kind);

  // Bounds parser recursion (parentheses, 'not not ...', nested blocks).
  struct DepthGuard {
    DepthGuard(Parser& p, const Token& at) : p_(p) {
      if (++p_.depth_ > kMaxSyntaxDepth) p_.fail(at, "template nested too deeply");
    }
    ~DepthGuard() { --p_.depth_; }
    Parser& p_;
  };

  // ---- syntax tree nodes ----
  ast::ExprPtr node(ast::ExprKind kind, const Token& at);
  // Computes the subtree height once the children are in place.
  ast::ExprPtr finish(ast::ExprPtr e);
  ast::ExprPtr unary(ast::ExprKind kind, const Token& at, ast::ExprPtr a);
  ast::ExprPtr binary(ast::ExprKind kind, const Token& at, std::string op, ast::ExprPtr a, ast::ExprPtr b);
  ast::StmtPtr stmt(ast::StmtKind kind, const Token& at);

  // ---- statements (parser.cpp) ----
  ast::Body subparse(std::initializer_list<std::string_view> end_names);
  // Parses "%}" body up to one of end_names; the stream is left at the end tag's name.
  ast::Body block_body(const Token& open, std::initializer_list<std::string_view> end_names);
  ast::StmtPtr parse_statement();
  std::vector<std::string> parse_targets();
  ast::StmtPtr parse_for();
  ast::StmtPtr parse_if();
  ast::StmtPtr parse_set();
  ast::StmtPtr parse_macro();
  ast::StmtPtr parse_filter_block();
  ast::StmtPtr parse_scope();

  // ---- expressions, jinja2 precedence loosest first (parse_expr.cpp) ----
  bool is_tuple_end() const;
  ast::ExprPtr parse_tuple(bool with_condexpr, bool explicit_parens);
  ast::ExprPtr parse_expression(bool with_condexpr);
  ast::ExprPtr parse_or();
  ast::ExprPtr parse_and();
  ast::ExprPtr parse_not();
  ast::ExprPtr parse_compare();
  ast::ExprPtr parse_math1();
  ast::ExprPtr parse_concat();
  ast::ExprPtr parse_math2();
  ast::ExprPtr parse_pow();
  ast::ExprPtr parse_unary(bool with_filter);
  ast::ExprPtr parse_primary();
  ast::ExprPtr parse_container(const Token& open);
  ast::ExprPtr parse_postfix(ast::ExprPtr e);
  ast::ExprPtr parse_filter_expr(ast::ExprPtr e);
  ast::ExprPtr parse_subscript(ast::ExprPtr obj);
  ast::ExprPtr parse_subscribed();
  // Fills e->args (after any operand already there) and e->kwargs from "(...)".
  void parse_call_args(ast::Expr& e);
  ast::ExprPtr parse_call(ast::ExprPtr callee);
  // "| name(args) | name ..."; start_inline: the first filter has no leading '|'.
  ast::ExprPtr parse_filters(ast::ExprPtr operand, bool start_inline);
  ast::ExprPtr parse_test(ast::ExprPtr operand);

  std::vector<Token> toks_;
  size_t i_ = 0;
  int depth_ = 0;
  int loop_depth_ = 0;
  std::vector<std::string> open_blocks_;  // what each enclosing block waits for, innermost last
};

}  // namespace exq::chat::detail
