#include "chat/template.h"

#include "chat/ast.h"
#include "chat/builtins.h"
#include "chat/eval.h"
#include "chat/parser.h"
#include "chat/value.h"
#include "core/error.h"

namespace exq::chat {

Template::Template(std::string source, Limits limits)
    : source_(std::move(source)),
      limits_(limits),
      program_(std::make_shared<const ast::Program>(parse_template(source_))) {}

std::string Template::render(const nlohmann::json& context) const {
  EXQ_CHECK(context.is_object(), "chat template: the render context must be a JSON object, got {}",
            context.type_name());
  return render_program(*program_, from_json(context), limits_);
}

std::string Template::render(const nlohmann::ordered_json& context) const {
  EXQ_CHECK(context.is_object(), "chat template: the render context must be a JSON object, got {}",
            context.type_name());
  return render_program(*program_, from_json(context), limits_);
}

namespace {

template <typename Json>
std::string render_chat_with(const Template& t, const Json& messages, bool add_generation_prompt,
                             const std::string& bos_token, const std::string& eos_token, const Json& extra) {
  EXQ_CHECK(messages.is_array(), "chat template: messages must be a JSON array, got {}",
            messages.type_name());
  EXQ_CHECK(extra.is_object() || extra.is_null(), "chat template: extra context must be a JSON object");
  Json context = Json::object();
  context["bos_token"] = bos_token;
  context["eos_token"] = eos_token;
  if (extra.is_object())
    for (auto it = extra.begin(); it != extra.end(); ++it) context[it.key()] = it.value();
  context["messages"] = messages;
  context["add_generation_prompt"] = add_generation_prompt;
  try {
    return t.render(context);
  } catch (const RaisedError&) {
    // Templates without a system role (Gemma 2, Mistral v0.1) raise on one: as llama.cpp does,
    // its text then opens the first user message, separated by a blank line.
    if (messages.size() < 2 || !messages[0].is_object() || !messages[1].is_object() ||
        messages[0].value("role", "") != "system" || messages[1].value("role", "") != "user" ||
        !messages[0].contains("content") || !messages[0]["content"].is_string() ||
        !messages[1].contains("content") || !messages[1]["content"].is_string())
      throw;
    Json merged = Json::array();
    for (size_t i = 1; i < messages.size(); ++i) merged.push_back(messages[i]);
    merged[0]["content"] =
        messages[0]["content"].template get<std::string>() + "\n\n" + messages[1]["content"].template get<std::string>();
    context["messages"] = merged;
    return t.render(context);
  }
}

}  // namespace

std::string render_chat(const Template& t, const nlohmann::json& messages, bool add_generation_prompt,
                        const std::string& bos_token, const std::string& eos_token,
                        const nlohmann::json& extra) {
  return render_chat_with(t, messages, add_generation_prompt, bos_token, eos_token, extra);
}

std::string render_chat(const Template& t, const nlohmann::ordered_json& messages, bool add_generation_prompt,
                        const std::string& bos_token, const std::string& eos_token,
                        const nlohmann::ordered_json& extra) {
  return render_chat_with(t, messages, add_generation_prompt, bos_token, eos_token, extra);
}

}  // namespace exq::chat
