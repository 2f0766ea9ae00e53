// Jinja tests (`x is defined`, `x is string`, ...), declared in filters.h.
#include <fmt/format.h>

#include <algorithm>

#include "chat/builtins.h"
#include "chat/filters.h"
#include "chat/operators.h"
#include "chat/text.h"

namespace exq::chat {

namespace {

constexpr std::string_view kTests[] = {
    "defined", "undefined", "none", "boolean", "false", "true", "integer", "float", "number",
    "string", "mapping", "iterable", "sequence", "callable", "even", "odd", "divisibleby", "eq",
    "equalto", "==", "ne", "!=", "lt", "lessthan", "<", "le", "<=", "gt", "greaterthan", ">", "ge",
    ">=", "in", "sameas", "lower", "upper"};

const Value& need_arg(const std::vector<std::optional<Value>>& p, std::string_view test) {
  if (!p[0]) throw Error(fmt::format("test '{}' needs an argument", test));
  return *p[0];
}

int64_t need_int(const Value& v, std::string_view test) {
  if (v.is_undefined()) throw_undefined(v);
  if (!v.is_int() && !v.is_bool())
    throw Error(fmt::format("test '{}' needs an integer, got '{}'", test, type_name(v)));
  return v.as_int();
}

// str.islower() / str.isupper(): at least one cased letter and none of the other case.
bool case_test(const std::string& s, bool want_lower) {
  bool cased = false;
  for (size_t pos = 0; pos < s.size();) {
    const char32_t cp = decode_utf8(s, pos);
    const bool lo = upper_cp(cp) != cp;
    const bool up = lower_cp(cp) != cp;
    if ((want_lower && up) || (!want_lower && lo)) return false;
    cased = cased || lo || up;
  }
  return cased;
}

}  // namespace

bool has_test(std::string_view name) {
  return std::find(std::begin(kTests), std::end(kTests), name) != std::end(kTests);
}

bool apply_test(std::string_view name, const Value& v, CallArgs& args, Budget& budget) {
  budget.step();
  if (name == "defined" || name == "undefined" || name == "none" || name == "boolean" ||
      name == "false" || name == "true" || name == "integer" || name == "float" ||
      name == "number" || name == "string" || name == "mapping" || name == "iterable" ||
      name == "sequence" || name == "callable") {
    bind_args(args, name, {});
    if (name == "defined") return !v.is_undefined();
    if (name == "undefined") return v.is_undefined();
    if (name == "none") return v.is_none();
    if (name == "boolean") return v.is_bool();
    if (name == "false") return v.is_bool() && !v.as_bool();
    if (name == "true") return v.is_bool() && v.as_bool();
    if (name == "integer") return v.is_int();
    if (name == "float") return v.is_float();
    if (name == "number") return v.is_number();
    if (name == "string") return v.is_string();
    if (name == "mapping") return v.is_dict();
    if (name == "callable") return v.is_function();
    // iterable / sequence: what Python can iterate (Jinja's Undefined iterates as empty).
    return v.is_string() || v.is_list() || v.is_dict() || v.is_undefined();
  }
  if (name == "even" || name == "odd") {
    bind_args(args, name, {});
    if (v.is_float())  // jinja2: value % 2 == 0 (even), value % 2 == 1 (odd)
      return binary_op("%", v, Value(int64_t{2}), budget).as_double() == (name == "even" ? 0.0 : 1.0);
    const int64_t i = need_int(v, name);
    return (i % 2 == 0) == (name == "even");
  }
  if (name == "lower" || name == "upper") {
    bind_args(args, name, {});
    return case_test(to_str(v), name == "lower");
  }
  auto p = bind_args(args, name, {"other"});
  const Value& other = need_arg(p, name);
  if (name == "divisibleby") {
    const int64_t d = need_int(other, name);
    if (d == 0) throw Error("divisibleby: division by zero");
    return d == -1 || need_int(v, name) % d == 0;
  }
  if (name == "eq" || name == "equalto" || name == "==") return equals(v, other);
  if (name == "ne" || name == "!=") return !equals(v, other);
  if (name == "lt" || name == "lessthan" || name == "<") return less(v, other);
  if (name == "le" || name == "<=") return less(v, other) || equals(v, other);
  if (name == "gt" || name == "greaterthan" || name == ">") return less(other, v);
  if (name == "ge" || name == ">=") return less(other, v) || equals(v, other);
  if (name == "in") return contains(other, v);
  if (name == "sameas") {
    if (v.type() != other.type()) return false;
    if (v.is_none() || v.is_undefined()) return true;
    if (v.is_bool()) return v.as_bool() == other.as_bool();
    if (v.is_number() || v.is_string()) return equals(v, other);
    return v.same_object(other);
  }
  throw Error(fmt::format("unknown test '{}'", name));
}

}  // namespace exq::chat
