#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include <string>

#include "chat/template.h"
#include "core/error.h"
#include "real_templates.h"

namespace exq::chat {
namespace {

using test::ChatCase;

class ChatCaseTest : public ::testing::TestWithParam<ChatCase> {};

TEST_P(ChatCaseTest, RendersConversation) {
  const ChatCase& c = GetParam();
  const Template t(c.tmpl);
  // ordered_json keeps key order as Python dicts do, which |tojson output depends on.
  nlohmann::ordered_json ctx = nlohmann::ordered_json::object();
  ctx["bos_token"] = c.bos;
  ctx["eos_token"] = c.eos;
  ctx["messages"] = nlohmann::ordered_json::parse(c.messages);
  if (*c.tools) ctx["tools"] = nlohmann::ordered_json::parse(c.tools);
  ctx["add_generation_prompt"] = c.add_generation_prompt;
  if (!c.error) {
    EXPECT_EQ(t.render(ctx), std::string(c.want));
    return;
  }
  try {
    t.render(ctx);
    FAIL() << "expected raise_exception";
  } catch (const Error& e) {
    EXPECT_EQ(e.message(), std::string(c.want));
  }
}

INSTANTIATE_TEST_SUITE_P(RealTemplates, ChatCaseTest, ::testing::ValuesIn(test::kChatCases),
                         [](const auto& info) { return std::string(info.param.name); });

TEST(RenderChat, MatchesRenderWithTheSameContext) {
  const Template t(test::kMistralTemplate);
  const auto messages = nlohmann::json::parse(R"([{"role": "user", "content": "Hi"}])");
  EXPECT_EQ(render_chat(t, messages, false, "<s>", "</s>"), "<s>[INST] Hi [/INST]");
}

TEST(RenderChat, ExtraContextReachesTheTemplate) {
  const Template t("{{ bos_token }}{{ greeting }}{{ messages|length }}{{ add_generation_prompt }}");
  const auto extra = nlohmann::json::parse(R"({"greeting": "hey", "bos_token": "<B>"})");
  EXPECT_EQ(render_chat(t, nlohmann::json::array(), true, "<s>", "</s>", extra), "<B>hey0True");
}

// Gemma 2 style: no system role (raise_exception), "model" for the assistant, |trim.
constexpr const char* kGemma2Template =
    "{{ bos_token }}{% if messages[0]['role'] == 'system' %}{{ raise_exception('System role not supported') }}"
    "{% endif %}{% for message in messages %}{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}"
    "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}"
    "{% if (message['role'] == 'assistant') %}{% set role = 'model' %}{% else %}{% set role = message['role'] %}"
    "{% endif %}{{ '<start_of_turn>' + role + '\\n' + message['content'] | trim + '<end_of_turn>\\n' }}{% endfor %}"
    "{% if add_generation_prompt %}{{'<start_of_turn>model\\n'}}{% endif %}";

TEST(RenderChat, SystemMessageOpensTheFirstUserTurnWhereTheTemplateRefusesIt) {
  const Template t(kGemma2Template);
  const auto msgs = nlohmann::json::parse(
      R"([{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"},
          {"role": "assistant", "content": "Hello"}, {"role": "user", "content": "Bye "}])");
  EXPECT_EQ(render_chat(t, msgs, true, "<bos>", "<eos>"),
            "<bos><start_of_turn>user\nBe brief.\n\nHi<end_of_turn>\n<start_of_turn>model\nHello<end_of_turn>\n"
            "<start_of_turn>user\nBye<end_of_turn>\n<start_of_turn>model\n");
  // Without a system message nothing changes; other refusals still reach the caller.
  EXPECT_EQ(render_chat(t, nlohmann::json::parse(R"([{"role": "user", "content": "Hi"}])"), false, "<bos>", "<eos>"),
            "<bos><start_of_turn>user\nHi<end_of_turn>\n");
  try {
    render_chat(t, nlohmann::json::parse(R"([{"role": "system", "content": "S"}, {"role": "assistant", "content": "A"}])"),
                true, "<bos>", "<eos>");
    ADD_FAILURE() << "expected the template's error";
  } catch (const Error& e) {
    EXPECT_EQ(e.message(), "System role not supported");
  }
  try {
    render_chat(t, nlohmann::json::parse(R"([{"role": "system", "content": "S"}, {"role": "user", "content": "a"},
                                             {"role": "user", "content": "b"}])"),
                true, "<bos>", "<eos>");
    ADD_FAILURE() << "expected the template's error";
  } catch (const Error& e) {
    EXPECT_EQ(e.message(), "Conversation roles must alternate user/assistant/user/assistant/...");
  }
}

TEST(RenderChat, RejectsNonArrayMessages) {
  const Template t("x");
  EXPECT_THROW(render_chat(t, nlohmann::json::object(), false, "", ""), Error);
}

}  // namespace
}  // namespace exq::chat
