#include "chat/builtins.h"

#include <fmt/format.h>

#include <algorithm>
#include <ctime>

#include "chat/operators.h"
#include "chat/text.h"

namespace exq::chat {

namespace {

// jinja2.sandbox.MAX_RANGE
constexpr int64_t kMaxRange = 100000;

std::string need_str(const std::optional<Value>& v, std::string_view fn) {
  std::optional<std::string> s = str_arg(v, fn);
  if (!s) throw Error(fmt::format("{}() missing a required string argument", fn));
  return *s;
}

// Python str.title(): a cased letter after a cased letter is lower-cased, any other upper-cased.
std::string py_title(std::string_view s) {
  std::string out;
  bool prev_cased = false;
  for (size_t pos = 0; pos < s.size();) {
    const char32_t cp = decode_utf8(s, pos);
    const bool cased = upper_cp(cp) != cp || lower_cp(cp) != cp;
    append_utf8(out, !cased ? cp : prev_cased ? lower_cp(cp) : upper_cp(cp));
    prev_cased = cased;
  }
  return out;
}

// startswith/endswith accept one string or a tuple of strings.
bool affix_match(const std::string& s, const Value& affix, bool prefix, std::string_view fn) {
  auto one = [&](const Value& a) {
    if (!a.is_string())
      throw Error(fmt::format("{}() argument must be str or a tuple of str, not {}", fn, type_name(a)));
    const std::string& x = a.as_string();
    if (x.size() > s.size()) return false;
    return prefix ? s.compare(0, x.size(), x) == 0 : s.compare(s.size() - x.size(), x.size(), x) == 0;
  };
  if (affix.is_list()) {
    for (const Value& a : affix.as_list().items)
      if (one(a)) return true;
    return false;
  }
  if (affix.is_undefined()) throw_undefined(affix);
  return one(affix);
}

Value string_list(std::vector<std::string> parts) {
  std::vector<Value> items;
  items.reserve(parts.size());
  for (auto& p : parts) items.emplace_back(std::move(p));
  return Value::list(std::move(items));
}

Value str_method(const std::string& s, const std::string& name, CallArgs& a, Budget& budget) {
  budget.charge_bytes(s.size());
  if (name == "strip" || name == "lstrip" || name == "rstrip") {
    auto p = bind_args(a, name, {"chars"});
    return Value(py_strip(s, name != "rstrip", name != "lstrip", str_arg(p[0], name)));
  }
  if (name == "split" || name == "rsplit") {
    auto p = bind_args(a, name, {"sep", "maxsplit"});
    const auto sep = str_arg(p[0], name);
    const int64_t maxsplit = int_arg(p[1], -1, name);
    return string_list(name == "split" ? py_split(s, sep, maxsplit) : py_rsplit(s, sep, maxsplit));
  }
  if (name == "startswith" || name == "endswith") {
    auto p = bind_args(a, name, {name == "startswith" ? "prefix" : "suffix"});
    if (!p[0]) throw Error(fmt::format("{}() takes exactly one argument (0 given)", name));
    return Value(affix_match(s, *p[0], name == "startswith", name));
  }
  if (name == "upper" || name == "lower" || name == "title" || name == "capitalize") {
    bind_args(a, name, {});
    if (name == "upper") return Value(py_upper(s));
    if (name == "lower") return Value(py_lower(s));
    if (name == "title") return Value(py_title(s));
    return Value(py_capitalize(s));
  }
  if (name == "replace") {
    auto p = bind_args(a, name, {"old", "new", "count"});
    return Value(py_replace(s, need_str(p[0], name), need_str(p[1], name), int_arg(p[2], -1, name),
                            budget.limits().max_output_bytes));
  }
  if (name == "find" || name == "count") {
    auto p = bind_args(a, name, {"sub"});
    const std::string sub = need_str(p[0], name);
    if (name == "find") {
      const size_t hit = s.find(sub);
      return Value(hit == std::string::npos ? int64_t{-1}
                                            : static_cast<int64_t>(utf8_length(std::string_view(s).substr(0, hit))));
    }
    if (sub.empty()) return Value(static_cast<int64_t>(utf8_length(s) + 1));
    int64_t n = 0;
    for (size_t at = s.find(sub); at != std::string::npos; at = s.find(sub, at + sub.size())) ++n;
    return Value(n);
  }
  if (name == "join") {
    auto p = bind_args(a, name, {"iterable"});
    if (!p[0]) throw Error("join() takes exactly one argument (0 given)");
    std::string out;
    size_t i = 0;
    for (const Value& e : iterate(*p[0], budget)) {
      if (!e.is_string())
        throw Error(fmt::format("sequence item {}: expected str instance, {} found", i, type_name(e)));
      if (i++) out += s;
      out += e.as_string();
      budget.check_size(out.size());
    }
    return Value(std::move(out));
  }
  throw Error(fmt::format("str has no method '{}'", name));
}

Value dict_method(const Value& self, const std::string& name, CallArgs& a, Budget& budget) {
  const Dict& d = self.as_dict();
  budget.step(d.items.size() / 16);
  if (name == "get") {
    auto p = bind_args(a, name, {"key", "default"});
    if (!p[0]) throw Error("get() takes at least 1 argument (0 given)");
    if (p[0]->is_string())
      if (const Value* v = d.find(p[0]->as_string())) return *v;
    return p[1] ? *p[1] : Value::none();
  }
  bind_args(a, name, {});
  std::vector<Value> out;
  out.reserve(d.items.size());
  for (const auto& [k, v] : d.items) {
    if (name == "keys") out.emplace_back(k);
    else if (name == "values") out.push_back(v);
    else out.push_back(Value::list({Value(k), v}, true));
  }
  return Value::list(std::move(out));
}

Value list_method(const Value& self, const std::string& name, CallArgs& a, Budget& budget) {
  auto p = bind_args(a, name, {"value"});
  if (!p[0]) throw Error(fmt::format("{}() takes exactly one argument (0 given)", name));
  const auto& items = self.as_list().items;
  budget.step(items.size() / 4);
  int64_t n = 0;
  for (size_t i = 0; i < items.size(); ++i) {
    if (!equals(items[i], *p[0])) continue;
    if (name == "index") return Value(static_cast<int64_t>(i));
    ++n;
  }
  if (name == "index") throw Error(fmt::format("{} is not in list", repr(*p[0])));
  return Value(n);
}

Value range_fn(CallArgs& a, Budget& budget) {
  auto p = bind_args(a, "range", {"start", "stop", "step"});
  if (!p[0]) throw Error("range expected at least 1 argument, got 0");
  for (const auto& v : p)
    if (v && !v->is_int() && !v->is_bool()) {
      if (v->is_undefined()) throw_undefined(*v);
      throw Error(fmt::format("'{}' object cannot be interpreted as an integer", type_name(*v)));
    }
  int64_t start = 0, stop = p[0]->as_int(), step = 1;
  if (p[1]) start = p[0]->as_int(), stop = p[1]->as_int();
  if (p[2]) step = p[2]->as_int();
  if (step == 0) throw Error("range() arg 3 must not be zero");
  std::vector<Value> out;
  for (int64_t i = start; step > 0 ? i < stop : i > stop; i += step) {
    if (static_cast<int64_t>(out.size()) >= kMaxRange)
      throw Error(fmt::format("range too big, maximum size for range is {}", kMaxRange));
    out.emplace_back(i);
    if ((step > 0 && i > INT64_MAX - step) || (step < 0 && i < INT64_MIN - step)) break;
  }
  budget.step(out.size() / 16);
  return Value::list(std::move(out));
}

// dict(**kw) and namespace(**kw), each also taking one mapping positionally.
Dict mapping_args(CallArgs& a, std::string_view fn) {
  if (a.pos.size() > 1) throw Error(fmt::format("{}() expected at most 1 positional argument", fn));
  Dict d;
  if (!a.pos.empty()) {
    if (!a.pos[0].is_dict()) throw Error(fmt::format("{}() positional argument must be a dict", fn));
    d.items = a.pos[0].as_dict().items;
  }
  for (auto& [k, v] : a.kw) d.set(k, v);
  return d;
}

Value strftime_now(CallArgs& a, Budget&) {
  auto p = bind_args(a, "strftime_now", {"format"});
  const std::string format = need_str(p[0], "strftime_now");
  EXQ_CHECK(format.size() <= 256, "strftime_now(): format longer than 256 bytes");
  const std::time_t now = std::time(nullptr);
  std::tm tm{};
  localtime_r(&now, &tm);
  char buf[1024];
  const size_t n = format.empty() ? 0 : std::strftime(buf, sizeof buf, format.c_str(), &tm);
  return Value(std::string(buf, n));
}

}  // namespace

std::vector<std::optional<Value>> bind_args(const CallArgs& args, std::string_view fn,
                                            std::initializer_list<std::string_view> params) {
  std::vector<std::optional<Value>> out(params.size());
  if (args.pos.size() > params.size())
    throw Error(fmt::format("{}() takes at most {} argument(s) ({} given)", fn, params.size(),
                            args.pos.size()));
  for (size_t i = 0; i < args.pos.size(); ++i) out[i] = args.pos[i];
  for (const auto& [k, v] : args.kw) {
    const auto it = std::find(params.begin(), params.end(), k);
    if (it == params.end()) throw Error(fmt::format("{}() got an unexpected keyword argument '{}'", fn, k));
    auto& slot = out[static_cast<size_t>(it - params.begin())];
    if (slot) throw Error(fmt::format("{}() got multiple values for argument '{}'", fn, k));
    slot = v;
  }
  return out;
}

int64_t int_arg(const std::optional<Value>& v, int64_t dflt, std::string_view fn) {
  if (!v || v->is_none()) return dflt;
  if (v->is_undefined()) throw_undefined(*v);
  if (v->is_int() || v->is_bool()) return v->as_int();
  throw Error(fmt::format("{}(): expected an integer argument, got '{}'", fn, type_name(*v)));
}

bool bool_arg(const std::optional<Value>& v, bool dflt) { return v ? v->truthy() : dflt; }

std::optional<std::string> str_arg(const std::optional<Value>& v, std::string_view fn) {
  if (!v || v->is_none()) return std::nullopt;
  if (v->is_string()) return v->as_string();
  if (v->is_undefined()) throw_undefined(*v);
  throw Error(fmt::format("{}() argument must be str or None, not {}", fn, type_name(*v)));
}

std::optional<Value> bound_method(const Value& obj, const std::string& name) {
  static constexpr std::string_view kStr[] = {"strip", "lstrip", "rstrip", "split", "rsplit",
                                              "startswith", "endswith", "upper", "lower", "title",
                                              "capitalize", "replace", "find", "count", "join"};
  static constexpr std::string_view kDict[] = {"items", "keys", "values", "get"};
  if (obj.is_list() && !obj.is_generator() && (name == "count" || name == "index")) {
    return Value::function(
        name, [obj, name](CallArgs& a, Budget& b) { return list_method(obj, name, a, b); },
        holds_namespace(obj));
  }
  if (obj.is_string() && std::find(std::begin(kStr), std::end(kStr), name) != std::end(kStr)) {
    return Value::function(name, [obj, name](CallArgs& a, Budget& b) {
      return str_method(obj.as_string(), name, a, b);
    });
  }
  if (obj.is_dict() && std::find(std::begin(kDict), std::end(kDict), name) != std::end(kDict)) {
    return Value::function(
        name, [obj, name](CallArgs& a, Budget& b) { return dict_method(obj, name, a, b); },
        holds_namespace(obj));
  }
  return std::nullopt;
}

std::vector<std::pair<std::string, Value>> global_functions() {
  std::vector<std::pair<std::string, Value>> g;
  g.emplace_back("range", Value::function("range", range_fn));
  g.emplace_back("namespace", Value::function("namespace", [](CallArgs& a, Budget&) {
                   return Value::make_namespace(mapping_args(a, "namespace"));
                 }));
  g.emplace_back("dict", Value::function("dict", [](CallArgs& a, Budget&) {
                   return Value::dict(mapping_args(a, "dict"));
                 }));
  g.emplace_back("raise_exception", Value::function("raise_exception", [](CallArgs& a, Budget&) -> Value {
                   auto p = bind_args(a, "raise_exception", {"message"});
                   throw RaisedError(p[0] ? to_str(*p[0]) : std::string("raise_exception() called"));
                 }));
  g.emplace_back("strftime_now", Value::function("strftime_now", strftime_now));
  return g;
}

}  // namespace exq::chat
