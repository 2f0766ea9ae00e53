// What templates can call: methods of str, dict and list values (s.strip(), d.items(), ...), the
// globals Hugging Face provides (raise_exception, strftime_now) and Jinja's own (range,
// namespace, dict), plus Python-style argument binding shared with the filters.
#pragma once

#include <initializer_list>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "chat/limits.h"
#include "chat/value.h"

namespace exq::chat {

// Thrown by raise_exception(msg): the message is the template's own, passed through unchanged.
class RaisedError : public Error {
 public:
  using Error::Error;
};

// Binds call arguments to parameter names like a Python signature; nullopt where an argument
// was not given. Throws for surplus positional, unknown or duplicate keyword arguments.
std::vector<std::optional<Value>> bind_args(const CallArgs& args, std::string_view fn,
                                            std::initializer_list<std::string_view> params);

// Argument readers: nullopt and None give the default; Undefined and wrong types throw
// (bool_arg takes any value's truthiness).
int64_t int_arg(const std::optional<Value>& v, int64_t dflt, std::string_view fn);
bool bool_arg(const std::optional<Value>& v, bool dflt);
std::optional<std::string> str_arg(const std::optional<Value>& v, std::string_view fn);

// obj.name as a bound method of a str, dict or list (count, index), or nullopt when obj has
// no such method.
std::optional<Value> bound_method(const Value& obj, const std::string& name);

// range, namespace, dict, raise_exception, strftime_now.
std::vector<std::pair<std::string, Value>> global_functions();

}  // namespace exq::chat
