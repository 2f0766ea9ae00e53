// Recursive-descent parser from lexer tokens to the syntax tree, following jinja2's grammar and
// operator precedence. Unsupported tags and syntax errors throw exq::Error naming the line and
// column; nesting is bounded (kMaxSyntaxDepth) so hostile input cannot overflow the stack.
#pragma once

#include <string_view>

#include "chat/ast.h"

namespace exq::chat {

ast::Program parse_template(std::string_view source);

}  // namespace exq::chat
