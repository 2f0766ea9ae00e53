// Jinja filters (`x | name(args)`) and tests (`x is name(args)`) that chat templates use, with
// Hugging Face's tojson. Names are checked when the template is parsed, so an unknown filter
// or test is a syntax error that names its line.
#pragma once

#include <string_view>

#include "chat/limits.h"
#include "chat/value.h"

namespace exq::chat {

bool has_filter(std::string_view name);
bool has_test(std::string_view name);

Value apply_filter(std::string_view name, const Value& v, CallArgs& args, Budget& budget);
bool apply_test(std::string_view name, const Value& v, CallArgs& args, Budget& budget);

// Jinja's attribute getter for map/selectattr/join/sort: "a.b.0" looks up a, then b, then item 0.
Value get_path(const Value& v, const std::string& path);

}  // namespace exq::chat
