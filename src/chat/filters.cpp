#include "chat/filters.h"

#include <fmt/format.h>

#include <algorithm>
#include <charconv>
#include <cmath>

#include "chat/builtins.h"
#include "chat/json_dump.h"
#include "chat/operators.h"
#include "chat/text.h"

namespace exq::chat {

namespace {

constexpr std::string_view kFilters[] = {
    "trim", "length", "count", "upper", "lower", "capitalize", "title", "tojson", "string",
    "join", "first", "last", "default", "d", "replace", "int", "float", "list", "items", "abs",
    "round", "reverse", "sort", "dictsort", "map", "select", "reject", "selectattr", "rejectattr",
    "indent", "escape", "e", "safe", "unique", "min", "max", "sum"};

size_t py_len(const Value& v) {
  switch (v.type()) {
    case Value::Type::String: return utf8_length(v.as_string());
    case Value::Type::List:
      if (v.is_generator()) throw Error("object of type 'generator' has no len()");
      return v.as_list().items.size();
    case Value::Type::Dict:
    case Value::Type::Namespace: return v.as_dict().items.size();
    case Value::Type::Undefined: return 0;
    default: throw Error(fmt::format("object of type '{}' has no len()", type_name(v)));
  }
}

Value tojson(const Value& v, CallArgs& a, Budget& budget) {
  // Hugging Face: tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False)
  auto p = bind_args(a, "tojson", {"ensure_ascii", "indent", "separators", "sort_keys"});
  JsonDumpOptions o;
  o.ensure_ascii = bool_arg(p[0], false);
  if (p[1] && !p[1]->is_none()) {
    if (p[1]->is_string()) {
      o.indent = p[1]->as_string();
    } else {
      const int64_t n = int_arg(p[1], 0, "tojson");
      EXQ_CHECK(n <= 1024, "tojson(): indent {} is larger than 1024", n);
      o.indent = std::string(static_cast<size_t>(std::max<int64_t>(n, 0)), ' ');
    }
  }
  if (p[2] && !p[2]->is_none()) {
    const Value& s = *p[2];
    if (!s.is_list() || s.as_list().items.size() != 2 || !s.as_list().items[0].is_string() ||
        !s.as_list().items[1].is_string())
      throw Error("tojson(): separators must be a pair of strings");
    o.item_separator = s.as_list().items[0].as_string();
    o.key_separator = s.as_list().items[1].as_string();
  }
  o.sort_keys = bool_arg(p[3], false);
  return Value(json_dumps(v, o, budget));
}

Value to_int(const Value& v, CallArgs& a) {
  auto p = bind_args(a, "int", {"default", "base"});
  const Value dflt = p[0] ? *p[0] : Value(int64_t{0});
  const int64_t base = int_arg(p[1], 10, "int");
  if (v.is_undefined()) throw_undefined(v);
  if (v.is_int() || v.is_bool()) return Value(v.as_int());
  if (v.is_float()) {
    const double d = std::trunc(v.as_double());
    if (!std::isfinite(d) || std::fabs(d) >= 9.2e18) return dflt;
    return Value(static_cast<int64_t>(d));
  }
  if (!v.is_string()) return dflt;
  std::string s = py_strip(v.as_string(), true, true);
  s.erase(std::remove(s.begin(), s.end(), '_'), s.end());
  bool neg = false;
  if (!s.empty() && (s[0] == '+' || s[0] == '-')) neg = s[0] == '-', s.erase(0, 1);
  int64_t out = 0;
  if (base >= 2 && base <= 36 && !s.empty()) {
    const auto r = std::from_chars(s.data(), s.data() + s.size(), out, static_cast<int>(base));
    if (r.ec == std::errc() && r.ptr == s.data() + s.size()) return Value(neg ? -out : out);
  }
  double d = 0;  // Jinja retries as int(float(value))
  const auto r = std::from_chars(s.data(), s.data() + s.size(), d);
  if (r.ec == std::errc() && r.ptr == s.data() + s.size() && std::isfinite(d) && std::fabs(d) < 9.2e18)
    return Value(static_cast<int64_t>(std::trunc(neg ? -d : d)));
  return dflt;
}

Value to_float(const Value& v, CallArgs& a) {
  auto p = bind_args(a, "float", {"default"});
  const Value dflt = p[0] ? *p[0] : Value(0.0);
  if (v.is_undefined()) throw_undefined(v);
  if (v.is_number()) return Value(v.as_double());
  if (!v.is_string()) return dflt;
  std::string s = py_strip(v.as_string(), true, true);
  if (!s.empty() && s[0] == '+') s.erase(0, 1);
  double d = 0;
  const auto r = std::from_chars(s.data(), s.data() + s.size(), d);
  if (r.ec == std::errc() && r.ptr == s.data() + s.size()) return Value(d);
  return dflt;
}

Value round_filter(const Value& v, CallArgs& a) {
  auto p = bind_args(a, "round", {"precision", "method"});
  const int64_t precision = int_arg(p[0], 0, "round");
  const std::string method = str_arg(p[1], "round").value_or("common");
  if (!v.is_number()) throw Error(fmt::format("round(): expected a number, got '{}'", type_name(v)));
  if (v.is_int() && method == "common" && precision >= 0) return Value(v.as_int());
  const double scale = std::pow(10.0, static_cast<double>(std::clamp<int64_t>(precision, -300, 300)));
  const double x = v.as_double() * scale;
  double r;
  if (method == "common") r = std::nearbyint(x);  // Python round(): ties to even
  else if (method == "ceil") r = std::ceil(x);
  else if (method == "floor") r = std::floor(x);
  else throw Error("round(): method must be 'common', 'ceil' or 'floor'");
  return Value(r / scale);
}

std::string html_escape(const std::string& s) {
  std::string out;
  for (char c : s) {
    switch (c) {
      case '&': out += "&amp;"; break;
      case '<': out += "&lt;"; break;
      case '>': out += "&gt;"; break;
      case '"': out += "&#34;"; break;
      case '\'': out += "&#39;"; break;
      default: out += c;
    }
  }
  return out;
}

// Jinja's indent filter (splitlines on \n, \r\n and \r).
std::string indent(const std::string& text, CallArgs& a, Budget& budget) {
  auto p = bind_args(a, "indent", {"width", "first", "blank"});
  std::string pad;
  if (p[0] && p[0]->is_string()) pad = p[0]->as_string();
  else pad = std::string(static_cast<size_t>(std::clamp<int64_t>(int_arg(p[0], 4, "indent"), 0, 1024)), ' ');
  const bool first = bool_arg(p[1], false);
  const bool blank = bool_arg(p[2], false);
  std::vector<std::string> lines;
  std::string cur;
  for (size_t i = 0; i < text.size(); ++i) {
    if (text[i] == '\n' || text[i] == '\r') {
      if (text[i] == '\r' && i + 1 < text.size() && text[i + 1] == '\n') ++i;
      lines.push_back(std::move(cur));
      cur.clear();
    } else {
      cur += text[i];
    }
  }
  lines.push_back(std::move(cur));  // text + "\n" always ends a last line
  std::string out = lines[0];
  for (size_t i = 1; i < lines.size(); ++i) {
    out += '\n';
    if (blank || !lines[i].empty()) out += pad;
    out += lines[i];
    budget.check_size(out.size());
  }
  return first ? pad + out : out;
}

Value join(const Value& v, CallArgs& a, Budget& budget) {
  auto p = bind_args(a, "join", {"d", "attribute"});
  const std::string sep = p[0] ? to_str(*p[0]) : "";
  const std::optional<std::string> attr = p[1] ? std::optional(to_str(*p[1])) : std::nullopt;
  std::string out;
  bool first = true;
  for (const Value& e : iterate(v, budget)) {
    if (!first) out += sep;
    first = false;
    out += to_str(attr ? get_path(e, *attr) : e);
    budget.check_size(out.size());
  }
  return Value(std::move(out));
}

Value sort_filter(const Value& v, CallArgs& a, Budget& budget) {
  auto p = bind_args(a, "sort", {"reverse", "case_sensitive", "attribute"});
  const bool reverse = bool_arg(p[0], false);
  const bool case_sensitive = bool_arg(p[1], false);
  const std::optional<std::string> attr = str_arg(p[2], "sort");
  std::vector<Value> items = iterate(v, budget);
  budget.step(items.size() * 8);
  auto key = [&](const Value& e) {
    Value k = attr ? get_path(e, *attr) : e;
    return !case_sensitive && k.is_string() ? Value(py_lower(k.as_string())) : k;
  };
  std::stable_sort(items.begin(), items.end(), [&](const Value& x, const Value& y) {
    return reverse ? less(key(y), key(x)) : less(key(x), key(y));
  });
  return Value::list(std::move(items));
}

// select / reject / selectattr / rejectattr
Value select_filter(std::string_view name, const Value& v, CallArgs& a, Budget& budget) {
  const bool by_attr = name == "selectattr" || name == "rejectattr";
  const bool keep = name == "select" || name == "selectattr";
  CallArgs rest = a;
  if (!rest.kw.empty()) throw Error(fmt::format("{}() takes no keyword arguments", name));
  std::optional<std::string> attr;
  if (by_attr) {
    if (rest.pos.empty()) throw Error(fmt::format("{}() needs an attribute name", name));
    attr = to_str(rest.pos[0]);
    rest.pos.erase(rest.pos.begin());
  }
  std::optional<std::string> test;
  if (!rest.pos.empty()) {
    test = to_str(rest.pos[0]);
    rest.pos.erase(rest.pos.begin());
    if (!has_test(*test)) throw Error(fmt::format("unknown test '{}'", *test));
  }
  std::vector<Value> out;
  for (const Value& e : iterate(v, budget)) {
    const Value x = attr ? get_path(e, *attr) : e;
    CallArgs ta = rest;
    const bool ok = test ? apply_test(*test, x, ta, budget) : x.truthy();
    if (ok == keep) out.push_back(e);
  }
  return Value::generator(std::move(out));
}

Value map_filter(const Value& v, CallArgs& a, Budget& budget) {
  std::vector<Value> out;
  const Value* attr = nullptr;
  const Value* dflt = nullptr;
  for (const auto& [k, x] : a.kw) {
    if (k == "attribute") attr = &x;
    else if (k == "default") dflt = &x;
    else throw Error(fmt::format("map() got an unexpected keyword argument '{}'", k));
  }
  if (attr) {
    const std::string path = to_str(*attr);
    for (const Value& e : iterate(v, budget)) {
      Value r = get_path(e, path);
      out.push_back(r.is_undefined() && dflt ? *dflt : r);
    }
    return Value::generator(std::move(out));
  }
  if (a.pos.empty()) throw Error("map() needs a filter name or attribute=");
  const std::string filter = to_str(a.pos[0]);
  if (!has_filter(filter)) throw Error(fmt::format("unknown filter '{}'", filter));
  CallArgs rest;
  rest.pos.assign(a.pos.begin() + 1, a.pos.end());
  for (const Value& e : iterate(v, budget)) {
    CallArgs fa = rest;
    out.push_back(apply_filter(filter, e, fa, budget));
  }
  return Value::generator(std::move(out));
}

Value dictsort(const Value& v, CallArgs& a, Budget& budget) {
  auto p = bind_args(a, "dictsort", {"case_sensitive", "by", "reverse"});
  if (!v.is_dict()) throw Error("dictsort(): mapping expected");
  const bool cs = bool_arg(p[0], false);
  const bool by_value = str_arg(p[1], "dictsort").value_or("key") == "value";
  const bool reverse = bool_arg(p[2], false);
  std::vector<std::pair<std::string, Value>> items = v.as_dict().items;
  budget.step(items.size() * 8);
  auto key = [&](const std::pair<std::string, Value>& kv) {
    Value k = by_value ? kv.second : Value(kv.first);
    return !cs && k.is_string() ? Value(py_lower(k.as_string())) : k;
  };
  std::stable_sort(items.begin(), items.end(), [&](const auto& x, const auto& y) {
    return reverse ? less(key(y), key(x)) : less(key(x), key(y));
  });
  std::vector<Value> out;
  for (auto& [k, x] : items) out.push_back(Value::list({Value(k), x}, true));
  return Value::list(std::move(out));
}

// unique / min / max / sum
Value aggregate(std::string_view name, const Value& v, CallArgs& a, Budget& budget) {
  const std::vector<Value> items = iterate(v, budget);
  budget.step(items.size() * 4);
  if (name == "sum") {
    auto p = bind_args(a, name, {"attribute", "start"});
    const std::optional<std::string> attr = str_arg(p[0], name);
    Value total = p[1] ? *p[1] : Value(int64_t{0});
    for (const Value& e : items) total = binary_op("+", total, attr ? get_path(e, *attr) : e, budget);
    return total;
  }
  auto p = bind_args(a, name, {"case_sensitive", "attribute"});
  const bool cs = bool_arg(p[0], false);
  const std::optional<std::string> attr = str_arg(p[1], name);
  auto key = [&](const Value& e) {
    Value k = attr ? get_path(e, *attr) : e;
    return !cs && k.is_string() ? Value(py_lower(k.as_string())) : k;
  };
  if (name == "unique") {
    std::vector<Value> out, seen;
    for (const Value& e : items) {
      const Value k = key(e);
      if (std::none_of(seen.begin(), seen.end(), [&](const Value& s) { return equals(s, k); })) {
        seen.push_back(k);
        out.push_back(e);
      }
    }
    return Value::generator(std::move(out));
  }
  if (items.empty()) return Value::undefined(fmt::format("No aggregated item, sequence was empty."));
  size_t best = 0;
  for (size_t i = 1; i < items.size(); ++i) {
    const bool better = name == "min" ? less(key(items[i]), key(items[best]))
                                      : less(key(items[best]), key(items[i]));
    if (better) best = i;
  }
  return items[best];
}

Value reverse(const Value& v, Budget& budget) {
  if (v.is_string()) {
    const std::string& s = v.as_string();
    const std::vector<size_t> off = utf8_offsets(s);
    std::string out;
    for (size_t i = off.size() - 1; i > 0; --i) out.append(s, off[i - 1], off[i] - off[i - 1]);
    return Value(std::move(out));
  }
  std::vector<Value> items = iterate(v, budget);
  std::reverse(items.begin(), items.end());
  // reversed() of a list or dict is an iterator; jinja2 falls back to a list for iterators.
  return v.is_generator() ? Value::list(std::move(items)) : Value::generator(std::move(items));
}

}  // namespace

bool has_filter(std::string_view name) {
  return std::find(std::begin(kFilters), std::end(kFilters), name) != std::end(kFilters);
}

Value get_path(const Value& v, const std::string& path) {
  Value cur = v;
  size_t start = 0;
  while (true) {
    const size_t dot = path.find('.', start);
    const std::string part = path.substr(start, dot == std::string::npos ? std::string::npos : dot - start);
    int64_t idx = 0;
    const auto r = std::from_chars(part.data(), part.data() + part.size(), idx);
    const bool numeric = !part.empty() && r.ec == std::errc() && r.ptr == part.data() + part.size();
    cur = get_item(cur, numeric ? Value(idx) : Value(part));
    if (dot == std::string::npos) return cur;
    start = dot + 1;
  }
}

Value apply_filter(std::string_view name, const Value& v, CallArgs& a, Budget& budget) {
  budget.step();
  if (name == "length" || name == "count") {
    bind_args(a, name, {});
    return Value(static_cast<int64_t>(py_len(v)));
  }
  if (name == "trim") {
    auto p = bind_args(a, name, {"chars"});
    return Value(py_strip(to_str(v), true, true, str_arg(p[0], name)));
  }
  if (name == "upper" || name == "lower" || name == "capitalize" || name == "title" ||
      name == "string" || name == "escape" || name == "e") {
    bind_args(a, name, {});
    const std::string s = to_str(v);
    budget.charge_bytes(s.size());
    if (name == "upper") return Value(py_upper(s));
    if (name == "lower") return Value(py_lower(s));
    if (name == "capitalize") return Value(py_capitalize(s));
    if (name == "title") return Value(jinja_title(s));
    if (name == "string") return Value(s);
    return Value(html_escape(s));
  }
  if (name == "safe") return bind_args(a, name, {}), v;
  if (name == "tojson") return tojson(v, a, budget);
  if (name == "join") return join(v, a, budget);
  if (name == "first" || name == "last") {
    bind_args(a, name, {});
    if (v.is_string()) {
      const std::vector<size_t> off = utf8_offsets(v.as_string());
      if (off.size() == 1) return Value::undefined(fmt::format("No {} item, sequence was empty.", name));
      const size_t i = name == "first" ? 0 : off.size() - 2;
      return Value(v.as_string().substr(off[i], off[i + 1] - off[i]));
    }
    if (name == "last" && v.is_generator()) throw Error("'generator' object is not reversible");
    const std::vector<Value> items = iterate(v, budget);
    if (items.empty()) return Value::undefined(fmt::format("No {} item, sequence was empty.", name));
    return name == "first" ? items.front() : items.back();
  }
  if (name == "default" || name == "d") {
    auto p = bind_args(a, name, {"default_value", "boolean"});
    const bool use_default = v.is_undefined() || (bool_arg(p[1], false) && !v.truthy());
    return use_default ? (p[0] ? *p[0] : Value("")) : v;
  }
  if (name == "replace") {
    auto p = bind_args(a, name, {"old", "new", "count"});
    if (!p[0] || !p[1]) throw Error("replace() needs 'old' and 'new' arguments");
    return Value(py_replace(to_str(v), to_str(*p[0]), to_str(*p[1]), int_arg(p[2], -1, name),
                            budget.limits().max_output_bytes));
  }
  if (name == "int") return to_int(v, a);
  if (name == "float") return to_float(v, a);
  if (name == "list") return bind_args(a, name, {}), Value::list(iterate(v, budget));
  if (name == "items") {
    bind_args(a, name, {});
    if (v.is_undefined()) return Value::generator({});
    if (!v.is_dict()) throw Error(fmt::format("items(): mapping expected, got '{}'", type_name(v)));
    std::vector<Value> out;
    for (const auto& [k, x] : v.as_dict().items) out.push_back(Value::list({Value(k), x}, true));
    return Value::generator(std::move(out));
  }
  if (name == "abs") {
    bind_args(a, name, {});
    if (v.is_float()) return Value(std::fabs(v.as_double()));
    if (!v.is_number()) throw Error(fmt::format("bad operand type for abs(): '{}'", type_name(v)));
    return v.as_int() < 0 ? negate(v) : Value(v.as_int());
  }
  if (name == "round") return round_filter(v, a);
  if (name == "reverse") return bind_args(a, name, {}), reverse(v, budget);
  if (name == "sort") return sort_filter(v, a, budget);
  if (name == "dictsort") return dictsort(v, a, budget);
  if (name == "map") return map_filter(v, a, budget);
  if (name == "select" || name == "reject" || name == "selectattr" || name == "rejectattr")
    return select_filter(name, v, a, budget);
  if (name == "indent") return Value(indent(to_str(v), a, budget));
  if (name == "unique" || name == "min" || name == "max" || name == "sum")
    return aggregate(name, v, a, budget);
  throw Error(fmt::format("unknown filter '{}'", name));
}

}  // namespace exq::chat
