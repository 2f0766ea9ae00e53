// The |tojson filter as Hugging Face binds it: Python's json.dumps(x, ensure_ascii=False,
// indent=None, separators=None, sort_keys=False), byte for byte (Python float repr, ", " and
// ": " separators without indent, "," with it, dict insertion order).
#pragma once

#include <optional>
#include <string>

#include "chat/limits.h"
#include "chat/value.h"

namespace exq::chat {

struct JsonDumpOptions {
  bool ensure_ascii = false;
  std::optional<std::string> indent;  // nullopt: one line; "" (indent=0): newlines only
  std::optional<std::string> item_separator;  // default ", " (one line) or "," (indented)
  std::string key_separator = ": ";
  bool sort_keys = false;
};

// Throws exq::Error for values JSON cannot hold (Undefined, namespace, functions).
std::string json_dumps(const Value& v, const JsonDumpOptions& options, Budget& budget);

}  // namespace exq::chat
