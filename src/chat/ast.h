// Syntax tree of a parsed chat template: expressions (Expr) and statements (Stmt). Built once by
// the parser, read-only afterwards, so one Template can render from several threads.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "chat/value.h"

namespace exq::chat::ast {

struct Expr;
using ExprPtr = std::unique_ptr<Expr>;

enum class ExprKind : uint8_t {
  Const,    // value
  Name,     // name
  List,     // args: items
  Tuple,    // args: items
  Dict,     // args: key0, value0, key1, value1, ...
  Attr,     // args[0].name
  Item,     // args[0][args[1]]; args[1] may be a Slice
  Slice,    // args: start, stop, step (each may be null)
  Call,     // args[0](args[1..], kwargs)
  Filter,   // args[0] | name(args[1..], kwargs); args[0] null inside {% filter %} / {% set %} blocks
  Test,     // args[0] is [not] name(args[1..], kwargs); negated
  Not,      // not args[0]
  Neg,      // -args[0]
  Pos,      // +args[0]
  Binary,   // args[0] name args[1], name in + - * / // % **
  And,      // args[0] and args[1]
  Or,       // args[0] or args[1]
  Compare,  // args[0] ops[0] args[1] ops[1] args[2] ... (chained), ops in == != < > <= >= in notin
  Concat,   // args[0] ~ args[1] ~ ...
  Cond,     // args[0] if args[1] else args[2] (args[2] may be null)
};

struct Keyword {
  std::string name;
  ExprPtr value;
};

struct Expr {
  ExprKind kind = ExprKind::Const;
  int line = 0;
  int col = 0;
  int depth = 1;  // height of this subtree, bounded by kMaxSyntaxDepth
  bool negated = false;
  Value value;
  std::string name;
  std::vector<ExprPtr> args;
  std::vector<Keyword> kwargs;
  std::vector<std::string> ops;
};

struct Stmt;
using StmtPtr = std::unique_ptr<Stmt>;
using Body = std::vector<StmtPtr>;

enum class StmtKind : uint8_t {
  Text,      // text
  Output,    // {{ expr }}
  If,        // branches (the else branch has a null cond)
  For,       // for targets in expr [if cond]: body [else: else_body]
  Set,       // set targets = expr, or set targets[0].attr = expr (attr non-empty)
  SetBlock,  // set targets[0] [| filter expr]: body
  Macro,     // macro text(params): body
  Break,
  Continue,
  FilterBlock,  // filter expr: body
  Scope,        // with params: body; also {% generation %}
};

struct IfBranch {
  ExprPtr cond;
  Body body;
};

struct Param {
  std::string name;
  ExprPtr value;  // default value (macro) or assigned value (with); may be null for macros
};

struct Stmt {
  StmtKind kind = StmtKind::Text;
  int line = 0;
  int col = 0;
  std::string text;
  ExprPtr expr;
  ExprPtr cond;
  std::vector<std::string> targets;
  std::string attr;
  std::vector<IfBranch> branches;
  Body body;
  Body else_body;
  std::vector<Param> params;
};

struct Program {
  Body body;
};

}  // namespace exq::chat::ast
