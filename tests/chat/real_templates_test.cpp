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

TEST(RenderChat, RejectsNonArrayMessages) {
  const Template t("x");
  EXPECT_THROW(render_chat(t, nlohmann::json::object(), false, "", ""), Error);
}

}  // namespace
}  // namespace exq::chat
