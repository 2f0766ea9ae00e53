// Tree-walking evaluator: renders a parsed template against a context. One Renderer per
// render() call; it owns the scopes, the output buffer and the Budget that bounds the work.
#pragma once

#include <string>

#include "chat/ast.h"
#include "chat/limits.h"
#include "chat/value.h"

namespace exq::chat {

// context must be a Dict value (its items become template variables).
std::string render_program(const ast::Program& program, const Value& context, const Limits& limits);

}  // namespace exq::chat
