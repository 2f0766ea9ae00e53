// Expression half of the parser (see parser_impl.h): jinja2's grammar and operator precedence.
#include <fmt/format.h>

#include "chat/parser_impl.h"
#include "core/error.h"

namespace exq::chat::detail {

using ast::Expr;
using ast::ExprKind;
using ast::ExprPtr;

bool Parser::is_tuple_end() const {
  return cur().kind == TokenKind::VarEnd || cur().kind == TokenKind::BlockEnd || is_op(")") ||
         cur().kind == TokenKind::Eof;
}

ExprPtr Parser::parse_tuple(bool with_condexpr, bool explicit_parens) {
  const Token& start = cur();
  std::vector<ExprPtr> items;
  bool is_tuple = false;
  while (true) {
    if (!items.empty()) expect_op(",");
    if (is_tuple_end()) break;
    items.push_back(parse_expression(with_condexpr));
    if (!is_op(",")) break;
    is_tuple = true;
  }
  if (!is_tuple) {
    if (!items.empty()) return std::move(items[0]);
    if (!explicit_parens) fail(cur(), fmt::format("expected an expression, got {}", describe(cur())));
  }
  auto e = node(ExprKind::Tuple, start);
  e->args = std::move(items);
  return finish(std::move(e));
}

ExprPtr Parser::parse_expression(bool with_condexpr) {
  DepthGuard guard(*this, cur());
  if (!with_condexpr) return parse_or();
  const Token& start = cur();
  ExprPtr e = parse_or();
  while (skip_name("if")) {
    auto c = node(ExprKind::Cond, start);
    ExprPtr test = parse_or();
    ExprPtr other = skip_name("else") ? parse_expression(true) : nullptr;
    c->args.push_back(std::move(e));
    c->args.push_back(std::move(test));
    c->args.push_back(std::move(other));
    e = finish(std::move(c));
  }
  return e;
}

ExprPtr Parser::parse_or() {
  ExprPtr left = parse_and();
  while (is_name("or")) {
    const Token& op = next();
    left = binary(ExprKind::Or, op, "or", std::move(left), parse_and());
  }
  return left;
}

ExprPtr Parser::parse_and() {
  ExprPtr left = parse_not();
  while (is_name("and")) {
    const Token& op = next();
    left = binary(ExprKind::And, op, "and", std::move(left), parse_not());
  }
  return left;
}

ExprPtr Parser::parse_not() {
  if (is_name("not")) {
    const Token& op = next();
    DepthGuard guard(*this, op);
    return unary(ExprKind::Not, op, parse_not());
  }
  return parse_compare();
}

ExprPtr Parser::parse_compare() {
  const Token& start = cur();
  ExprPtr first = parse_math1();
  auto e = node(ExprKind::Compare, start);
  e->args.push_back(std::move(first));
  while (true) {
    const Token& t = cur();
    if (t.kind == TokenKind::Op && (t.text == "==" || t.text == "!=" || t.text == "<" ||
                                    t.text == ">" || t.text == "<=" || t.text == ">=")) {
      e->ops.push_back(next().text);
    } else if (is_name("in")) {
      next();
      e->ops.push_back("in");
    } else if (is_name("not") && peek().kind == TokenKind::Name && peek().text == "in") {
      next(), next();
      e->ops.push_back("notin");
    } else {
      break;
    }
    e->args.push_back(parse_math1());
  }
  if (e->ops.empty()) return std::move(e->args[0]);
  return finish(std::move(e));
}

ExprPtr Parser::parse_math1() {
  ExprPtr left = parse_concat();
  while (is_op("+") || is_op("-")) {
    const Token& op = next();
    left = binary(ExprKind::Binary, op, op.text, std::move(left), parse_concat());
  }
  return left;
}

ExprPtr Parser::parse_concat() {
  const Token& start = cur();
  ExprPtr first = parse_math2();
  if (!is_op("~")) return first;
  auto e = node(ExprKind::Concat, start);
  e->args.push_back(std::move(first));
  while (skip_op("~")) e->args.push_back(parse_math2());
  return finish(std::move(e));
}

ExprPtr Parser::parse_math2() {
  ExprPtr left = parse_pow();
  while (is_op("*") || is_op("/") || is_op("//") || is_op("%")) {
    const Token& op = next();
    left = binary(ExprKind::Binary, op, op.text, std::move(left), parse_pow());
  }
  return left;
}

ExprPtr Parser::parse_pow() {
  ExprPtr left = parse_unary(true);
  while (is_op("**")) {
    const Token& op = next();
    left = binary(ExprKind::Binary, op, "**", std::move(left), parse_unary(true));
  }
  return left;
}

ExprPtr Parser::parse_unary(bool with_filter) {
  ExprPtr e;
  if (is_op("-") || is_op("+")) {
    const Token& op = next();
    DepthGuard guard(*this, op);
    e = unary(op.text == "-" ? ExprKind::Neg : ExprKind::Pos, op, parse_unary(false));
  } else {
    e = parse_primary();
  }
  e = parse_postfix(std::move(e));
  if (with_filter) e = parse_filter_expr(std::move(e));
  return e;
}

ExprPtr Parser::parse_primary() {
  const Token& t = cur();
  switch (t.kind) {
    case TokenKind::Name: {
      next();
      auto e = node(ExprKind::Const, t);
      if (t.text == "true" || t.text == "True") e->value = Value(true);
      else if (t.text == "false" || t.text == "False") e->value = Value(false);
      else if (t.text == "none" || t.text == "None") e->value = Value::none();
      else e->kind = ExprKind::Name, e->name = t.text;
      return finish(std::move(e));
    }
    case TokenKind::String: {
      std::string s;
      while (cur().kind == TokenKind::String) s += next().text;
      auto e = node(ExprKind::Const, t);
      e->value = Value(std::move(s));
      return finish(std::move(e));
    }
    case TokenKind::Int:
    case TokenKind::Float: {
      next();
      auto e = node(ExprKind::Const, t);
      e->value = t.kind == TokenKind::Int ? Value(t.int_value) : Value(t.float_value);
      return finish(std::move(e));
    }
    case TokenKind::Op:
      if (t.text == "(") {
        next();
        ExprPtr e = parse_tuple(true, true);
        expect_op(")");
        return e;
      }
      if (t.text == "[" || t.text == "{") return parse_container(t);
      break;
    default:
      break;
  }
  fail(t, fmt::format("unexpected {}", describe(t)));
}

ExprPtr Parser::parse_container(const Token& open) {
  const bool is_list = open.text == "[";
  const std::string close = is_list ? "]" : "}";
  next();
  auto e = node(is_list ? ExprKind::List : ExprKind::Dict, open);
  while (!is_op(close)) {
    if (!e->args.empty()) expect_op(",");
    if (is_op(close)) break;
    e->args.push_back(parse_expression(true));
    if (!is_list) {
      expect_op(":");
      e->args.push_back(parse_expression(true));
    }
  }
  expect_op(close);
  return finish(std::move(e));
}

ExprPtr Parser::parse_postfix(ExprPtr e) {
  while (true) {
    if (is_op(".") || is_op("[")) e = parse_subscript(std::move(e));
    else if (is_op("(")) e = parse_call(std::move(e));
    else return e;
  }
}

ExprPtr Parser::parse_filter_expr(ExprPtr e) {
  while (true) {
    if (is_op("|")) e = parse_filters(std::move(e), false);
    else if (is_name("is")) e = parse_test(std::move(e));
    else if (is_op("(")) e = parse_call(std::move(e));
    else return e;
  }
}

ExprPtr Parser::parse_subscript(ExprPtr obj) {
  const Token& t = next();
  if (t.text == ".") {
    const Token& attr = next();
    if (attr.kind == TokenKind::Name) {
      auto e = node(ExprKind::Attr, t);
      e->name = attr.text;
      e->args.push_back(std::move(obj));
      return finish(std::move(e));
    }
    if (attr.kind != TokenKind::Int) fail(attr, "expected name or number after '.'");
    auto idx = node(ExprKind::Const, attr);
    idx->value = Value(attr.int_value);
    auto e = node(ExprKind::Item, t);
    e->args.push_back(std::move(obj));
    e->args.push_back(finish(std::move(idx)));
    return finish(std::move(e));
  }
  std::vector<ExprPtr> keys;
  while (!is_op("]")) {
    if (!keys.empty()) expect_op(",");
    keys.push_back(parse_subscribed());
  }
  expect_op("]");
  if (keys.empty()) fail(t, "expected a subscript expression");
  ExprPtr key;
  if (keys.size() == 1) {
    key = std::move(keys[0]);
  } else {
    key = node(ExprKind::Tuple, t);
    key->args = std::move(keys);
    key = finish(std::move(key));
  }
  auto e = node(ExprKind::Item, t);
  e->args.push_back(std::move(obj));
  e->args.push_back(std::move(key));
  return finish(std::move(e));
}

ExprPtr Parser::parse_subscribed() {
  const Token& start = cur();
  ExprPtr first;
  if (!is_op(":")) {
    first = parse_expression(true);
    if (!is_op(":")) return first;
  }
  next();  // ':'
  auto s = node(ExprKind::Slice, start);
  s->args.push_back(std::move(first));
  s->args.push_back(is_op(":") || is_op("]") || is_op(",") ? nullptr : parse_expression(true));
  ExprPtr step;
  if (skip_op(":") && !is_op("]") && !is_op(",")) step = parse_expression(true);
  s->args.push_back(std::move(step));
  return finish(std::move(s));
}

// Fills e->args (after any operand already there) and e->kwargs from "(...)".
void Parser::parse_call_args(Expr& e) {
  expect_op("(");
  bool need_comma = false;
  while (!is_op(")")) {
    if (need_comma) {
      expect_op(",");
      if (is_op(")")) break;
    }
    if (is_op("*") || is_op("**")) fail(cur(), "*args and **kwargs in calls are not supported");
    if (cur().kind == TokenKind::Name && peek().kind == TokenKind::Op && peek().text == "=") {
      ast::Keyword k;
      k.name = next().text;
      next();
      k.value = parse_expression(true);
      e.kwargs.push_back(std::move(k));
    } else {
      if (!e.kwargs.empty()) fail(cur(), "positional argument follows keyword argument");
      e.args.push_back(parse_expression(true));
    }
    need_comma = true;
  }
  expect_op(")");
}

ExprPtr Parser::parse_call(ExprPtr callee) {
  auto e = node(ExprKind::Call, cur());
  e->args.push_back(std::move(callee));
  parse_call_args(*e);
  return finish(std::move(e));
}

// "| name(args) | name ..."; start_inline: the first filter has no leading '|'.
ExprPtr Parser::parse_filters(ExprPtr operand, bool start_inline) {
  while (is_op("|") || start_inline) {
    if (!start_inline) next();
    start_inline = false;
    const Token& name = expect_name();
    auto e = node(ExprKind::Filter, name);
    e->name = name.text;
    while (skip_op(".")) e->name += "." + expect_name().text;
    e->args.push_back(std::move(operand));
    if (is_op("(")) parse_call_args(*e);
    operand = finish(std::move(e));
  }
  return operand;
}

ExprPtr Parser::parse_test(ExprPtr operand) {
  auto e = node(ExprKind::Test, next());
  e->negated = skip_name("not");
  const Token& name = expect_name();
  e->name = name.text;
  e->line = name.line;  // errors point at the test's name
  e->col = name.col;
  while (skip_op(".")) e->name += "." + expect_name().text;
  e->args.push_back(std::move(operand));
  const Token& t = cur();
  if (is_op("(")) {
    parse_call_args(*e);
  } else if ((t.kind == TokenKind::Name || t.kind == TokenKind::String || t.kind == TokenKind::Int ||
              t.kind == TokenKind::Float || is_op("[") || is_op("{")) &&
             !is_name("else") && !is_name("or") && !is_name("and")) {
    if (is_name("is")) fail(t, "you cannot chain multiple tests with 'is'");
    e->args.push_back(parse_postfix(parse_primary()));
  }
  return finish(std::move(e));
}

}  // namespace exq::chat::detail
