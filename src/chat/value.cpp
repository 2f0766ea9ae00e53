#include "chat/value.h"

#include <fmt/format.h>

#include "chat/text.h"
#include "core/error.h"

namespace exq::chat {

namespace {

const std::string kEmpty;

template <typename T>
T* get(const std::shared_ptr<void>& p) {
  return static_cast<T*>(p.get());
}

void check_depth(int depth) {
  EXQ_CHECK(depth <= kMaxValueDepth, "chat template: value nested deeper than {} levels",
            kMaxValueDepth);
}

bool both_ints(const Value& a, const Value& b) {
  return (a.is_int() || a.is_bool()) && (b.is_int() || b.is_bool());
}

template <typename Json>
Value convert(const Json& j, int depth) {
  check_depth(depth);
  switch (j.type()) {
    case nlohmann::json::value_t::null:
      return Value::none();
    case nlohmann::json::value_t::boolean:
      return Value(j.template get<bool>());
    case nlohmann::json::value_t::number_integer:
      return Value(j.template get<int64_t>());
    case nlohmann::json::value_t::number_unsigned: {
      const auto u = j.template get<uint64_t>();
      if (u > static_cast<uint64_t>(INT64_MAX)) return Value(static_cast<double>(u));
      return Value(static_cast<int64_t>(u));
    }
    case nlohmann::json::value_t::number_float:
      return Value(j.template get<double>());
    case nlohmann::json::value_t::string:
      return Value(j.template get<std::string>());
    case nlohmann::json::value_t::array: {
      std::vector<Value> items;
      items.reserve(j.size());
      for (const auto& e : j) items.push_back(convert(e, depth + 1));
      return Value::list(std::move(items));
    }
    case nlohmann::json::value_t::object: {
      Dict d;
      d.items.reserve(j.size());
      for (auto it = j.begin(); it != j.end(); ++it)
        d.items.emplace_back(it.key(), convert(it.value(), depth + 1));
      return Value::dict(std::move(d));
    }
    default:
      throw Error("chat template: context holds a JSON value of unsupported type (binary)");
  }
}

void check_text(const std::string& out, size_t max_bytes) {
  EXQ_CHECK(out.size() <= max_bytes, "chat template: text of a value exceeds the {} byte limit",
            max_bytes);
}

void append_repr(std::string& out, const Value& v, size_t max_bytes) {
  switch (v.type()) {
    case Value::Type::Undefined: out += "Undefined"; break;
    case Value::Type::None: out += "None"; break;
    case Value::Type::Bool: out += v.as_bool() ? "True" : "False"; break;
    case Value::Type::Int: out += std::to_string(v.as_int()); break;
    case Value::Type::Float: out += py_float_repr(v.as_double()); break;
    case Value::Type::String: out += py_repr_string(v.as_string()); break;
    case Value::Type::List: {
      const List& l = v.as_list();
      if (l.generator) {
        out += "<generator object>";
        break;
      }
      out += l.tuple ? "(" : "[";
      for (size_t i = 0; i < l.items.size(); ++i) {
        if (i) out += ", ";
        append_repr(out, l.items[i], max_bytes);
        check_text(out, max_bytes);
      }
      if (l.tuple && l.items.size() == 1) out += ",";
      out += l.tuple ? ")" : "]";
      break;
    }
    case Value::Type::Dict:
    case Value::Type::Namespace: {
      out += v.is_namespace() ? "<Namespace {" : "{";
      bool first = true;
      for (const auto& [k, e] : v.as_dict().items) {
        if (!first) out += ", ";
        first = false;
        out += py_repr_string(k) + ": ";
        append_repr(out, e, max_bytes);
        check_text(out, max_bytes);
      }
      out += v.is_namespace() ? "}>" : "}";
      break;
    }
    case Value::Type::Function: out += "<function " + v.as_function().name + ">"; break;
  }
  check_text(out, max_bytes);
}

}  // namespace

const Value* Dict::find(std::string_view key) const {
  for (const auto& [k, v] : items)
    if (k == key) return &v;
  return nullptr;
}

void Dict::set(std::string key, Value value) {
  for (auto& [k, v] : items) {
    if (k == key) {
      v = std::move(value);
      return;
    }
  }
  items.emplace_back(std::move(key), std::move(value));
}

Value::Value(std::string s) : type_(Type::String), ptr_(std::make_shared<std::string>(std::move(s))) {}

Value Value::undefined(std::string hint) {
  Value v;
  if (!hint.empty()) v.ptr_ = std::make_shared<std::string>(std::move(hint));
  return v;
}

Value Value::none() {
  Value v;
  v.type_ = Type::None;
  return v;
}

Value Value::list(std::vector<Value> items, bool tuple) {
  auto l = std::make_shared<List>();
  int depth = 0;
  bool has_ns = false;
  for (const Value& e : items) {
    depth = std::max(depth, e.depth());
    has_ns = has_ns || holds_namespace(e);
  }
  check_depth(depth + 1);
  l->items = std::move(items);
  l->tuple = tuple;
  l->depth = depth + 1;
  l->has_ns = has_ns;
  Value v;
  v.type_ = Type::List;
  v.ptr_ = std::move(l);
  return v;
}

Value Value::generator(std::vector<Value> items) {
  Value v = list(std::move(items));
  std::static_pointer_cast<List>(v.ptr_)->generator = true;
  return v;
}

Value Value::dict(Dict d) {
  int depth = 0;
  bool has_ns = false;
  for (const auto& [k, e] : d.items) {
    depth = std::max(depth, e.depth());
    has_ns = has_ns || holds_namespace(e);
  }
  check_depth(depth + 1);
  d.depth = depth + 1;
  d.has_ns = has_ns;
  Value v;
  v.type_ = Type::Dict;
  v.ptr_ = std::make_shared<Dict>(std::move(d));
  return v;
}

Value Value::make_namespace(Dict d) {
  for (const auto& [k, e] : d.items)
    EXQ_CHECK(!holds_namespace(e), "chat template: a namespace cannot hold another namespace");
  Value v;
  v.type_ = Type::Namespace;
  v.ptr_ = std::make_shared<Dict>(std::move(d));
  return v;
}

Value Value::function(std::string name, NativeFn fn, bool holds_ns) {
  auto f = std::make_shared<Function>();
  f->name = std::move(name);
  f->fn = std::move(fn);
  f->bound_holds_namespace = holds_ns;
  Value v;
  v.type_ = Type::Function;
  v.ptr_ = std::move(f);
  return v;
}

double Value::as_double() const { return type_ == Type::Float ? f_ : static_cast<double>(i_); }
const std::string& Value::as_string() const { return *get<std::string>(ptr_); }
const List& Value::as_list() const { return *get<List>(ptr_); }
const Dict& Value::as_dict() const { return *get<Dict>(ptr_); }
Dict& Value::namespace_dict() const { return *get<Dict>(ptr_); }
const Function& Value::as_function() const { return *get<Function>(ptr_); }

const std::string& Value::undefined_hint() const {
  return ptr_ ? *get<std::string>(ptr_) : kEmpty;
}

int Value::depth() const {
  if (type_ == Type::List) return as_list().depth;
  if (type_ == Type::Dict) return as_dict().depth;
  return 0;
}

bool Value::truthy() const {
  switch (type_) {
    case Type::Undefined:
    case Type::None:
      return false;
    case Type::Bool:
    case Type::Int:
      return i_ != 0;
    case Type::Float:
      return f_ != 0.0;
    case Type::String:
      return !as_string().empty();
    case Type::List:
      return as_list().generator || !as_list().items.empty();
    case Type::Dict:
      return !as_dict().items.empty();
    case Type::Namespace:
    case Type::Function:
      return true;
  }
  return false;
}

std::string type_name(const Value& v) {
  switch (v.type()) {
    case Value::Type::Undefined: return "Undefined";
    case Value::Type::None: return "NoneType";
    case Value::Type::Bool: return "bool";
    case Value::Type::Int: return "int";
    case Value::Type::Float: return "float";
    case Value::Type::String: return "str";
    case Value::Type::List: return v.as_list().generator ? "generator" : v.as_list().tuple ? "tuple" : "list";
    case Value::Type::Dict: return "dict";
    case Value::Type::Namespace: return "Namespace";
    case Value::Type::Function: return "function";
  }
  return "object";
}

std::string to_str(const Value& v, size_t max_bytes) {
  switch (v.type()) {
    case Value::Type::Undefined: return "";
    case Value::Type::String: return v.as_string();
    default: return repr(v, max_bytes);
  }
}

std::string repr(const Value& v, size_t max_bytes) {
  std::string out;
  append_repr(out, v, max_bytes);
  return out;
}

bool equals(const Value& a, const Value& b) {
  if (a.is_number() && b.is_number()) {
    if (both_ints(a, b)) return a.as_int() == b.as_int();
    return a.as_double() == b.as_double();
  }
  if (a.type() != b.type()) return false;
  if (a.type() != Value::Type::Undefined && a.shared() && a.same_object(b)) return true;
  switch (a.type()) {
    case Value::Type::Undefined:
    case Value::Type::None:
      return true;
    case Value::Type::String:
      return a.as_string() == b.as_string();
    case Value::Type::List: {
      const List& x = a.as_list();
      const List& y = b.as_list();
      if (x.generator || y.generator) return false;  // iterators compare by identity
      if (x.tuple != y.tuple || x.items.size() != y.items.size()) return false;
      for (size_t i = 0; i < x.items.size(); ++i)
        if (!equals(x.items[i], y.items[i])) return false;
      return true;
    }
    case Value::Type::Dict: {
      const Dict& x = a.as_dict();
      const Dict& y = b.as_dict();
      if (x.items.size() != y.items.size()) return false;
      for (const auto& [k, e] : x.items) {
        const Value* other = y.find(k);
        if (!other || !equals(e, *other)) return false;
      }
      return true;
    }
    default:
      return a.same_object(b);
  }
}

bool less(const Value& a, const Value& b) {
  if (a.is_number() && b.is_number()) {
    if (both_ints(a, b)) return a.as_int() < b.as_int();
    return a.as_double() < b.as_double();
  }
  if (a.is_string() && b.is_string()) return !a.same_object(b) && a.as_string() < b.as_string();
  if (a.is_list() && b.is_list() && a.as_list().tuple == b.as_list().tuple && !a.is_generator() &&
      !b.is_generator()) {
    const auto& x = a.as_list().items;
    const auto& y = b.as_list().items;
    for (size_t i = 0; i < x.size() && i < y.size(); ++i)
      if (!equals(x[i], y[i])) return less(x[i], y[i]);
    return x.size() < y.size();
  }
  if (a.is_undefined()) throw_undefined(a);
  if (b.is_undefined()) throw_undefined(b);
  throw Error(fmt::format("'<' not supported between instances of '{}' and '{}'", type_name(a),
                          type_name(b)));
}

void throw_undefined(const Value& v) {
  const std::string& hint = v.undefined_hint();
  throw Error(hint.empty() ? std::string("value is undefined") : hint);
}

bool holds_namespace(const Value& v) {
  switch (v.type()) {
    case Value::Type::Namespace: return true;
    case Value::Type::List: return v.as_list().has_ns;
    case Value::Type::Dict: return v.as_dict().has_ns;
    case Value::Type::Function: return v.as_function().bound_holds_namespace;
    default: return false;
  }
}

Value from_json(const nlohmann::json& j) { return convert(j, 0); }
Value from_json(const nlohmann::ordered_json& j) { return convert(j, 0); }

}  // namespace exq::chat
