// load_tokenizer_config: tokenizer_config.json variants, special_tokens_map.json fallback,
// chat_template.jinja, and errors that name the file and field.
#include <gtest/gtest.h>

#include <fstream>
#include <string>

#include "core/error.h"
#include "test_support.h"
#include "tokenizer/tokenizer_config.h"

namespace exq::tokenizer {
namespace {

namespace fs = std::filesystem;

void write(const fs::path& p, const std::string& text) {
  std::ofstream f(p, std::ios::binary);
  f << text;
}

TEST(TokenizerConfig, NamedTemplatesAndAddedTokenDicts) {
  const fs::path dir = test::temp_dir("tokcfg_named");
  write(dir / "tokenizer_config.json", R"({
    "add_bos_token": true, "add_eos_token": false,
    "bos_token": {"__type": "AddedToken", "content": "<s>", "lstrip": false},
    "eos_token": "</s>", "pad_token": null,
    "chat_template": [{"name": "tool_use", "template": "TOOLS"}, {"name": "default", "template": "CHAT"}]
  })");
  write(dir / "special_tokens_map.json", R"({"bos_token": "<ignored>", "pad_token": {"content": "<pad>"}})");
  const TokenizerConfig cfg = load_tokenizer_config(dir);
  EXPECT_EQ(cfg.chat_template, "CHAT");
  EXPECT_EQ(cfg.bos_token, "<s>");  // tokenizer_config.json wins over special_tokens_map.json
  EXPECT_EQ(cfg.eos_token, "</s>");
  EXPECT_EQ(cfg.pad_token, "<pad>");  // only set by special_tokens_map.json
  EXPECT_TRUE(cfg.add_bos);
  EXPECT_FALSE(cfg.add_eos);
}

TEST(TokenizerConfig, TemplateFileAndMissingFiles) {
  const fs::path dir = test::temp_dir("tokcfg_jinja");
  EXPECT_EQ(load_tokenizer_config(dir).chat_template, "");
  write(dir / "chat_template.jinja", "{{ messages }}");
  EXPECT_EQ(load_tokenizer_config(dir).chat_template, "{{ messages }}");
  EXPECT_THROW(load_tokenizer_config(dir / "missing"), Error);
}

TEST(TokenizerConfig, BadFilesNameFileAndField) {
  const fs::path dir = test::temp_dir("tokcfg_bad");
  write(dir / "tokenizer_config.json", R"({"add_bos_token": "yes"})");
  try {
    load_tokenizer_config(dir);
    FAIL() << "expected exq::Error";
  } catch (const Error& e) {
    const std::string msg = e.what();
    EXPECT_NE(msg.find("tokenizer_config.json"), std::string::npos) << msg;
    EXPECT_NE(msg.find("add_bos_token"), std::string::npos) << msg;
  }
  write(dir / "tokenizer_config.json", R"({"chat_template": 5})");
  EXPECT_THROW(load_tokenizer_config(dir), Error);
  write(dir / "tokenizer_config.json", "{not json");
  try {
    load_tokenizer_config(dir);
    FAIL() << "expected exq::Error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("not valid JSON"), std::string::npos);
  }
}

}  // namespace
}  // namespace exq::tokenizer
