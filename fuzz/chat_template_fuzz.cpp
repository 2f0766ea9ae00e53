// Fuzzes the chat-template interpreter: the input bytes are a template source, rendered against a
// fixed chat context. Any outcome but a result or an exq::Error (crash, hang, sanitizer report,
// other exception) is a bug. Tight limits keep every input fast and small.
#include <nlohmann/json.hpp>

#include <cstddef>
#include <cstdint>
#include <string>

#include "chat/template.h"
#include "core/error.h"

namespace {

const nlohmann::ordered_json& context() {
  static const nlohmann::ordered_json ctx = nlohmann::ordered_json::parse(R"({
    "bos_token": "<s>", "eos_token": "</s>", "add_generation_prompt": true,
    "messages": [
      {"role": "system", "content": "You are terse."},
      {"role": "user", "content": " Hi \u00e9\n"},
      {"role": "assistant", "content": "<think>x</think>Hello",
       "tool_calls": [{"type": "function", "function": {"name": "f", "arguments": {"a": 1, "b": [true, null, 2.5]}}}]},
      {"role": "tool", "content": "42"},
      {"role": "user", "content": ""}
    ],
    "tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": "object", "properties": {"a": {"type": "integer"}}}}}]
  })");
  return ctx;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  exq::chat::Limits limits;
  limits.max_output_bytes = 1 << 20;
  limits.max_steps = 200000;
  limits.max_call_depth = 32;
  try {
    const exq::chat::Template t(std::string(reinterpret_cast<const char*>(data), size), limits);
    const std::string out = t.render(context());
    if (out.size() > limits.max_output_bytes) __builtin_trap();
  } catch (const exq::Error&) {
  }
  return 0;
}
