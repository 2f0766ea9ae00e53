// The SmolLM2 chat template from its tokenizer_config.json must render every fixture case
// byte-identically to transformers' apply_chat_template.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include <fstream>
#include <sstream>
#include <string>

#include "chat/template.h"
#include "tokenizer/tokenizer.h"
#include "test_support.h"

namespace exq::chat {
namespace {

// bos_token / eos_token are strings or {"content": ...} objects in tokenizer_config.json.
std::string token_text(const nlohmann::json& v) {
  if (v.is_string()) return v.get<std::string>();
  if (v.is_object() && v.contains("content")) return v["content"].get<std::string>();
  return "";
}

TEST(SmolLM2Template, RendersEveryFixtureCaseByteIdentically) {
  const auto shared = test::shared_dir();
  const auto config = nlohmann::json::parse(
      test::read_file(shared / "models/smollm2-135m-instruct/tokenizer_config.json"));
  ASSERT_TRUE(config.contains("chat_template"));
  const Template tmpl(config["chat_template"].get<std::string>());
  const std::string bos = token_text(config["bos_token"]);
  const std::string eos = token_text(config["eos_token"]);
  EXPECT_EQ(bos, "<|im_start|>");
  EXPECT_EQ(eos, "<|im_end|>");

  const auto tok =
      tokenizer::Tokenizer::from_file(shared / "models/smollm2-135m-instruct/tokenizer.json");
  std::istringstream lines(test::read_file(shared / "fixtures/smollm2/chat_template_cases.jsonl"));
  std::string line;
  int cases = 0;
  while (std::getline(lines, line)) {
    if (line.empty()) continue;
    const auto c = nlohmann::json::parse(line);
    const std::string got = render_chat(tmpl, c["messages"], c["add_generation_prompt"].get<bool>(), bos, eos);
    EXPECT_EQ(got, c["rendered"].get<std::string>()) << "case " << cases;
    // Rendered text through exq's tokenizer gives the fixture's ids (special tokens matched).
    EXPECT_EQ(tok.encode(got), c["ids"].get<std::vector<int32_t>>()) << "case " << cases;
    ++cases;
  }
  EXPECT_GE(cases, 2);
}

TEST(SmolLM2Template, AddsDefaultSystemPromptOnlyWithoutSystemMessage) {
  const auto config = nlohmann::json::parse(
      test::read_file(test::shared_dir() / "models/smollm2-135m-instruct/tokenizer_config.json"));
  const Template tmpl(config["chat_template"].get<std::string>());
  const auto user = nlohmann::json::parse(R"([{"role": "user", "content": "Hi"}])");
  EXPECT_EQ(render_chat(tmpl, user, false, "<|im_start|>", "<|im_end|>"),
            "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging "
            "Face<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n");
  const auto sys = nlohmann::json::parse(R"([{"role": "system", "content": "S"}])");
  EXPECT_EQ(render_chat(tmpl, sys, true, "<|im_start|>", "<|im_end|>"),
            "<|im_start|>system\nS<|im_end|>\n<|im_start|>assistant\n");
}

}  // namespace
}  // namespace exq::chat
