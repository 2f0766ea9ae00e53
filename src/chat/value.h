// The runtime value of the chat-template interpreter: Python's view of JSON data (None, bool,
// int, float, str, list/tuple, dict) plus what Jinja adds (Undefined, namespace(), callables).
// Lists and dicts are immutable once built and shared by pointer, so copies are cheap; only a
// namespace is mutable, and it may never hold another namespace, so no reference cycles form.
#pragma once

#include <nlohmann/json.hpp>

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "chat/limits.h"

namespace exq::chat {

class Value;

struct List {
  std::vector<Value> items;
  bool tuple = false;   // prints as (a, b) instead of [a, b]
  // A lazy Python iterator, as jinja2's select/map/unique/items/reverse filters return: always
  // true, no len(), no indexing, not JSON. Templates usually pass it through |list.
  bool generator = false;
  int depth = 1;        // nesting depth of lists/dicts, bounded by kMaxValueDepth
  bool has_ns = false;  // some element holds a namespace
};

// Insertion-ordered string-keyed map (Python dicts keep insertion order).
struct Dict {
  std::vector<std::pair<std::string, Value>> items;
  int depth = 1;
  bool has_ns = false;

  const Value* find(std::string_view key) const;
  void set(std::string key, Value value);  // replaces an existing key in place
};

// Positional and keyword arguments of a call.
struct CallArgs {
  std::vector<Value> pos;
  std::vector<std::pair<std::string, Value>> kw;
};

using NativeFn = std::function<Value(CallArgs& args, Budget& budget)>;

struct Function {
  std::string name;
  NativeFn fn;
  bool bound_holds_namespace = false;  // fn captured a value that holds a namespace
};

class Value {
 public:
  enum class Type : uint8_t { Undefined, None, Bool, Int, Float, String, List, Dict, Namespace, Function };

  Value() = default;  // Undefined
  Value(bool b) : type_(Type::Bool) { i_ = b ? 1 : 0; }
  Value(int64_t i) : type_(Type::Int) { i_ = i; }
  Value(int i) : Value(static_cast<int64_t>(i)) {}
  Value(double f) : type_(Type::Float) { f_ = f; }
  Value(std::string s);
  Value(const char* s) : Value(std::string(s)) {}

  // Undefined remembers what was looked up, for the error when it is used.
  static Value undefined(std::string hint);
  static Value none();
  static Value list(std::vector<Value> items, bool tuple = false);
  static Value generator(std::vector<Value> items);
  static Value dict(Dict d);
  static Value make_namespace(Dict d);
  // holds_ns: fn captures a value that holds a namespace (see holds_namespace()).
  static Value function(std::string name, NativeFn fn, bool holds_ns = false);

  Type type() const { return type_; }
  bool is_undefined() const { return type_ == Type::Undefined; }
  bool is_none() const { return type_ == Type::None; }
  bool is_bool() const { return type_ == Type::Bool; }
  bool is_int() const { return type_ == Type::Int; }
  bool is_float() const { return type_ == Type::Float; }
  bool is_number() const { return type_ == Type::Bool || type_ == Type::Int || type_ == Type::Float; }
  bool is_string() const { return type_ == Type::String; }
  bool is_list() const { return type_ == Type::List; }
  bool is_generator() const { return type_ == Type::List && as_list().generator; }
  bool is_dict() const { return type_ == Type::Dict; }
  bool is_namespace() const { return type_ == Type::Namespace; }
  bool is_function() const { return type_ == Type::Function; }

  bool as_bool() const { return i_ != 0; }
  int64_t as_int() const { return i_; }  // Bool and Int
  double as_double() const;              // Bool, Int and Float
  const std::string& as_string() const;
  const List& as_list() const;
  const Dict& as_dict() const;        // Dict and Namespace
  Dict& namespace_dict() const;       // Namespace only: the one mutable kind
  const Function& as_function() const;
  const std::string& undefined_hint() const;

  int depth() const;  // nesting depth of containers, 0 for scalars
  bool truthy() const;
  bool same_object(const Value& other) const { return ptr_ == other.ptr_; }
  std::shared_ptr<const void> shared() const { return ptr_; }

 private:
  Type type_ = Type::Undefined;
  union {
    int64_t i_ = 0;
    double f_;
  };
  std::shared_ptr<void> ptr_;  // string, List, Dict, Function or the Undefined hint
};

// Python type name, for error messages ('str', 'int', 'NoneType', 'list', ...).
std::string type_name(const Value& v);

// Python str() and repr(); Undefined prints as "". Throws once the text would pass max_bytes
// (a list may repeat one shared string many times, so its text can dwarf its memory).
constexpr size_t kDefaultMaxTextBytes = size_t{64} << 20;
std::string to_str(const Value& v, size_t max_bytes = kDefaultMaxTextBytes);
std::string repr(const Value& v, size_t max_bytes = kDefaultMaxTextBytes);

// Python ==, and < (throws exq::Error for unorderable types).
bool equals(const Value& a, const Value& b);
bool less(const Value& a, const Value& b);

// Error raised when an Undefined value is used in a way Jinja's Undefined refuses.
[[noreturn]] void throw_undefined(const Value& v);

// True when v (through lists, dicts and bound methods) holds a namespace object.
bool holds_namespace(const Value& v);

// Builds a Value from JSON; object keys keep the JSON object's iteration order.
Value from_json(const nlohmann::json& j);
Value from_json(const nlohmann::ordered_json& j);

}  // namespace exq::chat
