#include "chat/operators.h"

#include <fmt/format.h>

#include <cmath>

#include "chat/builtins.h"
#include "chat/text.h"

namespace exq::chat {

namespace {

bool int_like(const Value& v) { return v.is_int() || v.is_bool(); }

[[noreturn]] void unsupported(std::string_view op, const Value& a, const Value& b) {
  if (a.is_undefined()) throw_undefined(a);
  if (b.is_undefined()) throw_undefined(b);
  throw Error(fmt::format("unsupported operand type(s) for {}: '{}' and '{}'", op, type_name(a),
                          type_name(b)));
}

[[noreturn]] void overflow(std::string_view op) {
  throw Error(fmt::format("integer overflow in '{}' (exq templates use 64-bit integers)", op));
}

int64_t floor_div(int64_t a, int64_t b) {
  if (b == 0) throw Error("integer division or modulo by zero");
  if (a == INT64_MIN && b == -1) overflow("//");
  int64_t q = a / b;
  if (a % b != 0 && ((a < 0) != (b < 0))) --q;
  return q;
}

int64_t py_mod(int64_t a, int64_t b) {
  if (b == 0) throw Error("integer division or modulo by zero");
  if (b == -1) return 0;
  int64_t r = a % b;
  if (r != 0 && ((r < 0) != (b < 0))) r += b;
  return r;
}

// Python's float divmod.
std::pair<double, double> float_divmod(double x, double y) {
  if (y == 0.0) throw Error("float divmod() by zero");
  double mod = std::fmod(x, y);
  double div = (x - mod) / y;
  if (mod != 0.0) {
    if ((y < 0) != (mod < 0)) {
      mod += y;
      div -= 1.0;
    }
  } else {
    mod = std::copysign(0.0, y);
  }
  double floordiv;
  if (div != 0.0) {
    floordiv = std::floor(div);
    if (div - floordiv > 0.5) floordiv += 1.0;
  } else {
    floordiv = std::copysign(0.0, x / y);
  }
  return {floordiv, mod};
}

Value int_pow(int64_t base, int64_t exp) {
  if (exp < 0) {
    if (base == 0) throw Error("0.0 cannot be raised to a negative power");
    return Value(std::pow(static_cast<double>(base), static_cast<double>(exp)));
  }
  int64_t result = 1;
  while (exp > 0) {
    if (exp & 1)
      if (__builtin_mul_overflow(result, base, &result)) overflow("**");
    exp >>= 1;
    if (exp > 0 && __builtin_mul_overflow(base, base, &base)) overflow("**");
  }
  return Value(result);
}

Value repeat(const Value& seq, int64_t n, Budget& budget) {
  if (n < 0) n = 0;
  if (seq.is_string()) {
    const std::string& s = seq.as_string();
    if (!s.empty() && static_cast<uint64_t>(n) > budget.limits().max_output_bytes / s.size())
      budget.check_size(budget.limits().max_output_bytes + 1);
    budget.charge_bytes(s.size() * static_cast<size_t>(n));
    std::string out;
    out.reserve(s.size() * static_cast<size_t>(n));
    for (int64_t i = 0; i < n; ++i) out += s;
    return Value(std::move(out));
  }
  const List& l = seq.as_list();
  if (!l.items.empty() && static_cast<uint64_t>(n) > budget.limits().max_output_bytes / l.items.size())
    budget.check_size(budget.limits().max_output_bytes + 1);
  budget.charge_bytes(l.items.size() * static_cast<size_t>(n) * sizeof(Value));
  std::vector<Value> items;
  for (int64_t i = 0; i < n; ++i) items.insert(items.end(), l.items.begin(), l.items.end());
  return Value::list(std::move(items), l.tuple);
}

// Python index normalization; nullopt when out of range.
std::optional<size_t> normalize_index(int64_t i, size_t n) {
  if (i < 0) i += static_cast<int64_t>(n);
  if (i < 0 || static_cast<uint64_t>(i) >= n) return std::nullopt;
  return static_cast<size_t>(i);
}

bool is_ascii(const std::string& s) {
  for (char c : s)
    if (static_cast<unsigned char>(c) >= 0x80) return false;
  return true;
}

std::string object_name(const Value& v) {
  return v.is_none() ? std::string("'None'") : fmt::format("'{} object'", type_name(v));
}

}  // namespace

Value binary_op(std::string_view op, const Value& a, const Value& b, Budget& budget) {
  const bool ints = int_like(a) && int_like(b);
  const bool nums = a.is_number() && b.is_number();
  if (op == "+") {
    if (ints) {
      int64_t r;
      if (__builtin_add_overflow(a.as_int(), b.as_int(), &r)) overflow("+");
      return Value(r);
    }
    if (nums) return Value(a.as_double() + b.as_double());
    if (a.is_string() && b.is_string()) {
      budget.charge_bytes(a.as_string().size() + b.as_string().size());
      return Value(a.as_string() + b.as_string());
    }
    if (a.is_list() && b.is_list() && a.as_list().tuple == b.as_list().tuple && !a.is_generator() &&
        !b.is_generator()) {
      const auto& x = a.as_list().items;
      const auto& y = b.as_list().items;
      budget.charge_bytes((x.size() + y.size()) * sizeof(Value));
      std::vector<Value> items(x);
      items.insert(items.end(), y.begin(), y.end());
      return Value::list(std::move(items), a.as_list().tuple);
    }
  } else if (op == "-") {
    if (ints) {
      int64_t r;
      if (__builtin_sub_overflow(a.as_int(), b.as_int(), &r)) overflow("-");
      return Value(r);
    }
    if (nums) return Value(a.as_double() - b.as_double());
  } else if (op == "*") {
    if (ints) {
      int64_t r;
      if (__builtin_mul_overflow(a.as_int(), b.as_int(), &r)) overflow("*");
      return Value(r);
    }
    if (nums) return Value(a.as_double() * b.as_double());
    if ((a.is_string() || (a.is_list() && !a.is_generator())) && int_like(b))
      return repeat(a, b.as_int(), budget);
    if (int_like(a) && (b.is_string() || (b.is_list() && !b.is_generator())))
      return repeat(b, a.as_int(), budget);
  } else if (op == "/") {
    if (nums) {
      if (b.as_double() == 0.0) throw Error("division by zero");
      return Value(a.as_double() / b.as_double());
    }
  } else if (op == "//") {
    if (ints) return Value(floor_div(a.as_int(), b.as_int()));
    if (nums) return Value(float_divmod(a.as_double(), b.as_double()).first);
  } else if (op == "%") {
    if (ints) return Value(py_mod(a.as_int(), b.as_int()));
    if (nums) return Value(float_divmod(a.as_double(), b.as_double()).second);
    if (a.is_string()) throw Error("printf-style '%' string formatting is not supported");
  } else if (op == "**") {
    if (ints) return int_pow(a.as_int(), b.as_int());
    if (nums) {
      const double x = a.as_double();
      const double y = b.as_double();
      if (x == 0.0 && y < 0) throw Error("0.0 cannot be raised to a negative power");
      if (x < 0 && y != std::floor(y)) throw Error("complex results of '**' are not supported");
      return Value(std::pow(x, y));
    }
  }
  unsupported(op, a, b);
}

Value negate(const Value& v) {
  if (int_like(v)) {
    if (v.as_int() == INT64_MIN) overflow("-");
    return Value(-v.as_int());
  }
  if (v.is_float()) return Value(-v.as_double());
  if (v.is_undefined()) throw_undefined(v);
  throw Error(fmt::format("bad operand type for unary -: '{}'", type_name(v)));
}

Value unary_plus(const Value& v) {
  if (int_like(v)) return Value(v.as_int());
  if (v.is_float()) return v;
  if (v.is_undefined()) throw_undefined(v);
  throw Error(fmt::format("bad operand type for unary +: '{}'", type_name(v)));
}

bool contains(const Value& container, const Value& item) {
  switch (container.type()) {
    case Value::Type::String:
      if (item.is_undefined()) throw_undefined(item);
      if (!item.is_string())
        throw Error(fmt::format("'in <string>' requires string as left operand, not {}", type_name(item)));
      return container.as_string().find(item.as_string()) != std::string::npos;
    case Value::Type::List:
      for (const Value& e : container.as_list().items)
        if (equals(e, item)) return true;
      return false;
    case Value::Type::Dict:
      return item.is_string() && container.as_dict().find(item.as_string()) != nullptr;
    case Value::Type::Undefined:
      return false;
    default:
      throw Error(fmt::format("argument of type '{}' is not iterable", type_name(container)));
  }
}

Value get_attr(const Value& obj, const std::string& name) {
  if (obj.is_undefined()) throw_undefined(obj);
  if (obj.is_dict()) {
    if (auto m = bound_method(obj, name)) return *m;
    if (const Value* v = obj.as_dict().find(name)) return *v;
  } else if (obj.is_namespace()) {
    if (const Value* v = obj.as_dict().find(name)) return *v;
  } else if (auto m = bound_method(obj, name)) {
    return *m;
  }
  return Value::undefined(fmt::format("{} has no attribute '{}'", object_name(obj), name));
}

Value get_item(const Value& obj, const Value& key) {
  if (obj.is_undefined()) throw_undefined(obj);
  if (obj.is_generator())
    return Value::undefined("'generator' object is not subscriptable");
  if ((obj.is_list() || obj.is_string()) && int_like(key)) {
    if (obj.is_list()) {
      const auto& items = obj.as_list().items;
      if (auto i = normalize_index(key.as_int(), items.size())) return items[*i];
    } else {
      const std::string& s = obj.as_string();
      if (is_ascii(s)) {
        if (auto i = normalize_index(key.as_int(), s.size())) return Value(s.substr(*i, 1));
      } else {
        const std::vector<size_t> off = utf8_offsets(s);
        if (auto i = normalize_index(key.as_int(), off.size() - 1))
          return Value(s.substr(off[*i], off[*i + 1] - off[*i]));
      }
    }
    return Value::undefined(fmt::format("{} has no element {}", object_name(obj), key.as_int()));
  }
  if ((obj.is_dict() || obj.is_namespace()) && key.is_string()) {
    if (const Value* v = obj.as_dict().find(key.as_string())) return *v;
  }
  if (key.is_string()) return get_attr(obj, key.as_string());
  return Value::undefined(fmt::format("{} has no element {}", object_name(obj), repr(key)));
}

Value slice(const Value& obj, const Value& start_v, const Value& stop_v, const Value& step_v,
            Budget& budget) {
  if (obj.is_undefined()) throw_undefined(obj);
  // jinja2 slices with Python's own [] (not its getitem), so failures are errors.
  if ((!obj.is_list() && !obj.is_string()) || obj.is_generator())
    throw Error(fmt::format("'{}' object is not subscriptable", type_name(obj)));
  auto bound = [](const Value& v) -> std::optional<int64_t> {
    if (v.is_none()) return std::nullopt;
    if (v.is_undefined()) throw_undefined(v);
    if (!int_like(v)) throw Error("slice indices must be integers or None");
    return v.as_int();
  };
  const std::optional<int64_t> step_o = bound(step_v);
  const int64_t step = step_o.value_or(1);
  if (step == 0) throw Error("slice step cannot be zero");

  const bool ascii = obj.is_list() || is_ascii(obj.as_string());
  std::vector<size_t> off;
  if (!ascii) off = utf8_offsets(obj.as_string());
  const auto n = static_cast<int64_t>(obj.is_list() ? obj.as_list().items.size()
                                      : ascii       ? obj.as_string().size()
                                                    : off.size() - 1);
  const int64_t lower = step > 0 ? 0 : -1;
  const int64_t upper = step > 0 ? n : n - 1;
  auto clamp = [&](std::optional<int64_t> v, int64_t dflt) {
    if (!v) return dflt;
    int64_t i = *v;
    if (i < 0) i += n;
    return std::clamp(i, lower, upper);
  };
  const int64_t start = clamp(bound(start_v), step > 0 ? lower : upper);
  const int64_t stop = clamp(bound(stop_v), step > 0 ? upper : lower);

  std::vector<int64_t> idx;
  for (int64_t i = start; step > 0 ? i < stop : i > stop; i += step) {
    idx.push_back(i);
    if ((step > 0 && i > INT64_MAX - step) || (step < 0 && i < INT64_MIN - step)) break;
  }
  budget.charge_bytes(idx.size());
  if (obj.is_list()) {
    std::vector<Value> items;
    items.reserve(idx.size());
    for (int64_t i : idx) items.push_back(obj.as_list().items[static_cast<size_t>(i)]);
    return Value::list(std::move(items), obj.as_list().tuple);
  }
  const std::string& s = obj.as_string();
  std::string out;
  for (int64_t i : idx) {
    const auto k = static_cast<size_t>(i);
    if (ascii) out += s[k];
    else out.append(s, off[k], off[k + 1] - off[k]);
  }
  return Value(std::move(out));
}

std::vector<Value> iterate(const Value& v, Budget& budget) {
  std::vector<Value> out;
  switch (v.type()) {
    case Value::Type::Undefined:
      return out;
    case Value::Type::List:
      budget.step(v.as_list().items.size() / 16);
      return v.as_list().items;
    case Value::Type::Dict:
      for (const auto& [k, e] : v.as_dict().items) out.emplace_back(k);
      budget.step(out.size() / 16);
      return out;
    case Value::Type::String: {
      const std::string& s = v.as_string();
      budget.charge_bytes(s.size() * 4);
      for (size_t pos = 0; pos < s.size();) {
        const size_t start = pos;
        decode_utf8(s, pos);
        out.emplace_back(s.substr(start, pos - start));
      }
      return out;
    }
    default:
      throw Error(fmt::format("'{}' object is not iterable", type_name(v)));
  }
}

}  // namespace exq::chat
