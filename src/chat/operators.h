// Python/Jinja semantics of the expression operators: arithmetic (int64 with overflow checks,
// Python floor division and modulo), str/list concatenation and repetition, `in`, attribute
// and item lookup (Jinja's getattr/getitem fallbacks to Undefined), slicing and iteration.
#pragma once

#include <string>
#include <string_view>
#include <vector>

#include "chat/limits.h"
#include "chat/value.h"

namespace exq::chat {

// op is one of + - * / // % **.
Value binary_op(std::string_view op, const Value& a, const Value& b, Budget& budget);
Value negate(const Value& v);
Value unary_plus(const Value& v);
// Python `item in container`.
bool contains(const Value& container, const Value& item);
// Jinja `obj.name` (attribute first, then item) and `obj[key]` (item first, then attribute).
Value get_attr(const Value& obj, const std::string& name);
Value get_item(const Value& obj, const Value& key);
// obj[start:stop:step]; None bounds mean "omitted".
Value slice(const Value& obj, const Value& start, const Value& stop, const Value& step, Budget& budget);
// Elements of a for loop / filter input: list items, dict keys, string code points; Undefined
// iterates as empty.
std::vector<Value> iterate(const Value& v, Budget& budget);

}  // namespace exq::chat
