#include "chat/parser.h"

#include <fmt/format.h>

#include <algorithm>

#include "chat/filters.h"
#include "chat/parser_impl.h"
#include "core/error.h"

namespace exq::chat::detail {

using ast::Body;
using ast::Expr;
using ast::ExprKind;
using ast::ExprPtr;
using ast::Stmt;
using ast::StmtKind;
using ast::StmtPtr;

std::string describe(const Token& t) {
  switch (t.kind) {
    case TokenKind::Text: return "template data";
    case TokenKind::VarBegin: return "'{{'";
    case TokenKind::VarEnd: return "end of print statement '}}'";
    case TokenKind::BlockBegin: return "'{%'";
    case TokenKind::BlockEnd: return "end of statement block '%}'";
    case TokenKind::Name: return "'" + t.text + "'";
    case TokenKind::String: return "string literal";
    case TokenKind::Int: return "integer";
    case TokenKind::Float: return "float";
    case TokenKind::Op: return "'" + t.text + "'";
    case TokenKind::Eof: return "end of template";
  }
  return "token";
}

void Parser::fail(const Token& at, const std::string& msg) const {
  throw Error(location(at.line, at.col) + ": " + msg);
}

ast::Program Parser::run() {
  ast::Program p;
  p.body = subparse({});
  if (cur().kind != TokenKind::Eof) {
    const std::string& name = cur().text;
    fail(cur(), fmt::format("unexpected '{}' tag: no open block it could close", name));
  }
  return p;
}

const Token& Parser::next() {
  const Token& t = toks_[i_];
  if (i_ + 1 < toks_.size()) ++i_;
  return t;
}

bool Parser::skip_op(std::string_view op) {
  if (!is_op(op)) return false;
  next();
  return true;
}

bool Parser::skip_name(std::string_view n) {
  if (!is_name(n)) return false;
  next();
  return true;
}

void Parser::expect_op(std::string_view op) {
  if (!skip_op(op)) fail(cur(), fmt::format("expected '{}', got {}", op, describe(cur())));
}

const Token& Parser::expect_name() {
  if (cur().kind != TokenKind::Name) fail(cur(), fmt::format("expected a name, got {}", describe(cur())));
  return next();
}

void Parser::expect(TokenKind kind) {
  if (cur().kind != kind) {
    Token want;
    want.kind = kind;
    fail(cur(), fmt::format("expected {}, got {}", describe(want), describe(cur())));
  }
  next();
}

ExprPtr Parser::node(ExprKind kind, const Token& at) {
  auto e = std::make_unique<Expr>();
  e->kind = kind;
  e->line = at.line;
  e->col = at.col;
  return e;
}

// Computes the subtree height once the children are in place.
ExprPtr Parser::finish(ExprPtr e) {
  int d = 0;
  for (const auto& a : e->args)
    if (a) d = std::max(d, a->depth);
  for (const auto& k : e->kwargs) d = std::max(d, k.value->depth);
  e->depth = d + 1;
  if (e->depth > kMaxSyntaxDepth) throw Error(location(e->line, e->col) + ": expression nested too deeply");
  return e;
}

ExprPtr Parser::unary(ExprKind kind, const Token& at, ExprPtr a) {
  auto e = node(kind, at);
  e->args.push_back(std::move(a));
  return finish(std::move(e));
}

ExprPtr Parser::binary(ExprKind kind, const Token& at, std::string op, ExprPtr a, ExprPtr b) {
  auto e = node(kind, at);
  e->name = std::move(op);
  e->args.push_back(std::move(a));
  e->args.push_back(std::move(b));
  return finish(std::move(e));
}

Body Parser::subparse(std::initializer_list<std::string_view> end_names) {
  Body body;
  while (true) {
    const Token& t = cur();
    if (t.kind == TokenKind::Eof) return body;
    if (t.kind == TokenKind::Text) {
      auto s = stmt(StmtKind::Text, t);
      s->text = t.text;
      body.push_back(std::move(s));
      next();
    } else if (t.kind == TokenKind::VarBegin) {
      next();
      auto s = stmt(StmtKind::Output, t);
      s->expr = parse_tuple(true, false);
      expect(TokenKind::VarEnd);
      body.push_back(std::move(s));
    } else if (t.kind == TokenKind::BlockBegin) {
      const Token& name = peek();
      if (name.kind == TokenKind::Name &&
          std::find(end_names.begin(), end_names.end(), name.text) != end_names.end()) {
        next();  // leave the stream at the end tag's name
        return body;
      }
      next();
      body.push_back(parse_statement());
      expect(TokenKind::BlockEnd);
    } else {
      fail(t, fmt::format("unexpected {}", describe(t)));
    }
  }
}

StmtPtr Parser::stmt(StmtKind kind, const Token& at) {
  auto s = std::make_unique<Stmt>();
  s->kind = kind;
  s->line = at.line;
  s->col = at.col;
  return s;
}

// Parses "%}" body up to one of end_names; the stream is left at the end tag's name.
Body Parser::block_body(const Token& open, std::initializer_list<std::string_view> end_names) {
  skip_op(":");
  expect(TokenKind::BlockEnd);
  DepthGuard guard(*this, open);
  std::string names;
  for (std::string_view n : end_names) names += (names.empty() ? "'" : " or '") + std::string(n) + "'";
  // The "{%" of the opening tag is the token before its name.
  const Token& tag_start = toks_[static_cast<size_t>(&open - toks_.data()) - 1];
  open_blocks_.push_back(fmt::format("expected {} to close the '{}' block opened at line {}, column {}",
                                     names, open.text, tag_start.line, tag_start.col));
  Body body = subparse(end_names);
  open_blocks_.pop_back();
  if (cur().kind == TokenKind::Eof)
    fail(tag_start, fmt::format("unclosed '{}' block: expected {} before the end of the template",
                                open.text, names));
  return body;
}

StmtPtr Parser::parse_statement() {
  if (cur().kind != TokenKind::Name) fail(cur(), "tag name expected");
  const Token& tag = cur();
  const std::string& n = tag.text;
  if (n == "for") return parse_for();
  if (n == "if") return parse_if();
  if (n == "set") return parse_set();
  if (n == "macro") return parse_macro();
  if (n == "filter") return parse_filter_block();
  if (n == "with" || n == "generation") return parse_scope();
  if (n == "break" || n == "continue") {
    if (loop_depth_ == 0) fail(tag, fmt::format("'{}' outside of a loop", n));
    next();
    return stmt(n == "break" ? StmtKind::Break : StmtKind::Continue, tag);
  }
  static constexpr std::string_view kUnsupported[] = {
      "call", "include", "import", "from", "extends", "block", "autoescape", "do"};
  if (std::find(std::begin(kUnsupported), std::end(kUnsupported), n) != std::end(kUnsupported))
    fail(tag, fmt::format("unsupported tag '{}'", n));
  if (n.rfind("end", 0) == 0 || n == "else" || n == "elif")
    fail(tag, fmt::format("unexpected '{}' tag: {}", n,
                          open_blocks_.empty() ? "no open block it could close" : open_blocks_.back()));
  fail(tag, fmt::format("unknown tag '{}'", n));
}

std::vector<std::string> Parser::parse_targets() {
  std::vector<std::string> names;
  const bool paren = skip_op("(");
  do {
    if (paren && is_op(")")) break;
    names.push_back(expect_name().text);
  } while (skip_op(","));
  if (paren) expect_op(")");
  return names;
}

StmtPtr Parser::parse_for() {
  const Token& tag = next();
  auto s = stmt(StmtKind::For, tag);
  s->targets = parse_targets();
  if (!skip_name("in")) fail(cur(), fmt::format("expected 'in', got {}", describe(cur())));
  s->expr = parse_tuple(false, false);
  if (skip_name("if")) s->cond = parse_expression(true);
  if (is_name("recursive")) fail(cur(), "recursive for loops are not supported");
  ++loop_depth_;
  s->body = block_body(tag, {"endfor", "else"});
  --loop_depth_;
  if (next().text == "else") {
    s->else_body = block_body(tag, {"endfor"});
    next();
  }
  return s;
}

StmtPtr Parser::parse_if() {
  const Token& tag = next();
  auto s = stmt(StmtKind::If, tag);
  while (true) {
    ast::IfBranch br;
    br.cond = parse_tuple(false, false);
    br.body = block_body(tag, {"elif", "else", "endif"});
    s->branches.push_back(std::move(br));
    const Token& end = next();
    if (end.text == "elif") continue;
    if (end.text == "else") {
      ast::IfBranch el;
      el.body = block_body(tag, {"endif"});
      next();
      s->branches.push_back(std::move(el));
    }
    return s;
  }
}

StmtPtr Parser::parse_set() {
  const Token& tag = next();
  if (cur().kind == TokenKind::Name && peek().kind == TokenKind::Op && peek().text == ".") {
    auto s = stmt(StmtKind::Set, tag);
    s->targets.push_back(next().text);
    next();
    s->attr = expect_name().text;
    expect_op("=");
    s->expr = parse_tuple(true, false);
    return s;
  }
  std::vector<std::string> targets = parse_targets();
  if (skip_op("=")) {
    auto s = stmt(StmtKind::Set, tag);
    s->targets = std::move(targets);
    s->expr = parse_tuple(true, false);
    return s;
  }
  if (targets.size() != 1) fail(tag, "a {% set %} block assigns one name");
  auto s = stmt(StmtKind::SetBlock, tag);
  s->targets = std::move(targets);
  if (is_op("|")) s->expr = parse_filters(nullptr, false);
  s->body = block_body(tag, {"endset"});
  next();
  return s;
}

StmtPtr Parser::parse_macro() {
  const Token& tag = next();
  auto s = stmt(StmtKind::Macro, tag);
  s->text = expect_name().text;
  expect_op("(");
  while (!is_op(")")) {
    if (!s->params.empty()) expect_op(",");
    if (is_op(")")) break;
    ast::Param p;
    p.name = expect_name().text;
    if (skip_op("=")) p.value = parse_expression(true);
    else if (!s->params.empty() && s->params.back().value)
      fail(cur(), "non-default argument follows default argument");
    s->params.push_back(std::move(p));
  }
  expect_op(")");
  const int saved = loop_depth_;
  loop_depth_ = 0;
  s->body = block_body(tag, {"endmacro"});
  loop_depth_ = saved;
  next();
  return s;
}

StmtPtr Parser::parse_filter_block() {
  const Token& tag = next();
  auto s = stmt(StmtKind::FilterBlock, tag);
  s->expr = parse_filters(nullptr, true);
  s->body = block_body(tag, {"endfilter"});
  next();
  return s;
}

StmtPtr Parser::parse_scope() {
  const Token& tag = next();
  auto s = stmt(StmtKind::Scope, tag);
  const std::string end = tag.text == "with" ? "endwith" : "endgeneration";
  while (tag.text == "with" && cur().kind != TokenKind::BlockEnd) {
    if (!s->params.empty()) expect_op(",");
    ast::Param p;
    p.name = expect_name().text;
    expect_op("=");
    p.value = parse_expression(true);
    s->params.push_back(std::move(p));
  }
  s->body = block_body(tag, {end});
  next();
  return s;
}

// Unknown filters and tests are syntax errors, except (as in jinja2) inside {% if %} blocks and
// inline if-expressions, where they fail only if evaluated: a template may guard a filter that
// an older renderer lacks behind a condition.
void check_names(const Expr& e, bool soft) {
  const bool is_filter = e.kind == ExprKind::Filter;
  if ((is_filter || e.kind == ExprKind::Test) && !soft &&
      !(is_filter ? has_filter(e.name) : has_test(e.name)))
    throw Error(location(e.line, e.col) +
                fmt::format(": unknown {} '{}'", is_filter ? "filter" : "test", e.name));
  const bool inner_soft = soft || e.kind == ExprKind::Cond;
  for (const auto& a : e.args)
    if (a) check_names(*a, inner_soft);
  for (const auto& k : e.kwargs) check_names(*k.value, inner_soft);
}

void check_names(const Body& body, bool soft) {
  for (const auto& s : body) {
    if (s->expr) check_names(*s->expr, soft && s->kind != StmtKind::SetBlock && s->kind != StmtKind::FilterBlock);
    if (s->cond) check_names(*s->cond, false);
    for (const auto& p : s->params)
      if (p.value) check_names(*p.value, soft && s->kind == StmtKind::Scope);
    for (const auto& br : s->branches) {
      if (br.cond) check_names(*br.cond, true);
      check_names(br.body, true);
    }
    check_names(s->body, false);
    check_names(s->else_body, false);
  }
}

}  // namespace exq::chat::detail

namespace exq::chat {

ast::Program parse_template(std::string_view source) {
  ast::Program program = detail::Parser(tokenize(source)).run();
  detail::check_names(program.body, false);
  return program;
}

}  // namespace exq::chat
