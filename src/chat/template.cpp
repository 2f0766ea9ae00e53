#include "chat/template.h"

#include "chat/ast.h"
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
  return t.render(context);
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
