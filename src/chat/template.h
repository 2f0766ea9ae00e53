// Hugging Face chat templates: a Jinja2 subset interpreter (lexer -> parser -> evaluator) that
// renders tokenizer_config.json's chat_template byte-identically to transformers'
// apply_chat_template (trim_blocks, lstrip_blocks, loopcontrols, tojson, raise_exception).
// A Template is immutable after construction; render() may be called from several threads.
#pragma once

#include <nlohmann/json.hpp>

#include <memory>
#include <string>

#include "chat/limits.h"

namespace exq::chat {

namespace ast {
struct Program;
}

class Template {
 public:
  // Parses source; throws exq::Error "chat template line L, column C: ..." on syntax errors,
  // unknown filters/tests and unsupported tags.
  explicit Template(std::string source, Limits limits = {});

  // context must be a JSON object; its keys become template variables. nlohmann::json keeps
  // object keys sorted, so dicts iterate (and |tojson prints) in key order; pass an
  // ordered_json to keep insertion order as Python does.
  std::string render(const nlohmann::json& context) const;
  std::string render(const nlohmann::ordered_json& context) const;

  const std::string& source() const { return source_; }

 private:
  std::string source_;
  Limits limits_;
  std::shared_ptr<const ast::Program> program_;
};

// messages: JSON array of {role, content, ...}. The context holds bos_token, eos_token, then
// extra's keys (which may override those two), then messages and add_generation_prompt. A
// template that raises on a leading system message (Gemma 2's) gets it prepended to the first
// user message's content with a blank line between, as llama.cpp renders it.
std::string render_chat(const Template& t, const nlohmann::json& messages, bool add_generation_prompt,
                        const std::string& bos_token, const std::string& eos_token,
                        const nlohmann::json& extra = nlohmann::json::object());
// The same keeping the key order of messages and extra (as Python dicts do), e.g. for tools
// whose |tojson must read as sent.
std::string render_chat(const Template& t, const nlohmann::ordered_json& messages, bool add_generation_prompt,
                        const std::string& bos_token, const std::string& eos_token,
                        const nlohmann::ordered_json& extra);

}  // namespace exq::chat
