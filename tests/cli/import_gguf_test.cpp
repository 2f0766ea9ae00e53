// `exq import-gguf`: a tiny qwen2 GGUF imported and run by `generate`, and unsupported input as
// one-line errors.
#include <gtest/gtest.h>

#include <fstream>

#include "../io/gguf_builder.h"
#include "cli_support.h"

namespace exq::test {
namespace {

using nlohmann::json;

TEST(CliImportGguf, Qwen2ImportsAndGenerates) {
  const auto dir = temp_dir("cli_import_qwen2");
  std::ofstream(dir / "tiny.gguf", std::ios::binary)
      << tiny_llama_builder(5, {}, "qwen2").build();
  const RunResult r = run_exq({"import-gguf", (dir / "tiny.gguf").string(), (dir / "m").string()});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.out.find("imported"), std::string::npos) << r.out;
  EXPECT_EQ(json::parse(read_file(dir / "m" / "config.json"))["model_type"], "qwen2");

  const RunResult g = run_exq({"generate", "-m", (dir / "m").string(), "-p", "ab a", "--max-tokens",
                               "4", "--temperature", "0", "--json", "--threads", "1"});
  ASSERT_EQ(g.exit_code, 0) << g.err;
  const json out = json::parse(g.out);
  EXPECT_EQ(out["prompt_tokens"], 2);  // "ab", " a"
  const auto ids = out["ids"].get<std::vector<int32_t>>();
  ASSERT_GE(ids.size(), 1u);
  EXPECT_LE(ids.size(), 4u);
  for (int32_t id : ids) EXPECT_TRUE(id >= 0 && id < 12) << id;
}

TEST(CliImportGguf, UnsupportedTensorTypeIsOneLine) {
  const auto dir = temp_dir("cli_import_iq2");
  GgufBuilder b = tiny_llama_builder(5);
  b.tensor("blk.0.attn_output.bias", {256}, 16, std::string(66, '\0'));  // IQ2_XXS
  std::ofstream(dir / "iq2.gguf", std::ios::binary) << b.build();
  const RunResult r = run_exq({"import-gguf", (dir / "iq2.gguf").string(), (dir / "m").string()});
  expect_user_error(r, "unsupported tensor type IQ2_XXS");
  EXPECT_NE(r.err.find("blk.0.attn_output.bias"), std::string::npos) << r.err;
  EXPECT_FALSE(std::filesystem::exists(dir / "m" / "model.safetensors"));
}

TEST(CliImportGguf, UnsupportedArchitectureIsOneLine) {
  const auto dir = temp_dir("cli_import_arch");
  std::ofstream(dir / "gemma.gguf", std::ios::binary)
      << tiny_llama_builder(5, {{"general.architecture", "gemma"}}).build();
  expect_user_error(
      run_exq({"import-gguf", (dir / "gemma.gguf").string(), (dir / "m").string()}),
      "unsupported architecture 'gemma' (import-gguf handles llama, qwen2, qwen3, qwen3moe, granite and granitemoe)");
}

// `exq info FILE.gguf`: sizes and type counts from the file, and every reason import-gguf would
// refuse it, without importing.
TEST(CliImportGguf, InfoSummarisesAGguf) {
  const auto dir = temp_dir("cli_info_gguf");
  const GgufBuilder ok = tiny_llama_builder(5);
  const std::string bytes = ok.build();
  std::ofstream(dir / "tiny.gguf", std::ios::binary) << bytes;
  const RunResult r = run_exq({"info", (dir / "tiny.gguf").string(), "--json"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const json j = json::parse(r.out);
  EXPECT_EQ(j["format"], "GGUF v3");
  EXPECT_EQ(j["architecture"], "llama");
  EXPECT_EQ(j["config"]["num_hidden_layers"], 1);
  EXPECT_EQ(j["config"]["hidden_size"], 32);
  EXPECT_EQ(j["config"]["vocab_size"], 12);
  EXPECT_EQ(j["tensors"], 11);
  EXPECT_EQ(j["types"], json::parse(R"({"BF16": 1, "F16": 1, "F32": 4, "Q4_0": 1, "Q4_1": 2, "Q8_0": 2})"));
  // Values: embedding 384, 3 norms of 32, q and o 1024, k and v 512, gate/up/down 2048 each.
  EXPECT_EQ(j["values"], 384 + 3 * 32 + 2 * 1024 + 2 * 512 + 3 * 2048);
  EXPECT_EQ(j["importable"], true);
  EXPECT_EQ(j["problems"], json::array());

  GgufBuilder bad = tiny_llama_builder(5, {{"general.architecture", "gemma"}});
  bad.tensor("blk.0.attn_output.bias", {256}, 16, std::string(66, '\0'));  // IQ2_XXS
  bad.tensor("blk.0.rope_freqs.weight", {32}, 0, std::string(128, '\0'));
  std::ofstream(dir / "bad.gguf", std::ios::binary) << bad.build();
  const RunResult t = run_exq({"info", (dir / "bad.gguf").string()});
  ASSERT_EQ(t.exit_code, 0) << t.err;
  EXPECT_NE(t.out.find("import-gguf:   no"), std::string::npos) << t.out;
  EXPECT_NE(t.out.find("unsupported architecture 'gemma'"), std::string::npos) << t.out;
  EXPECT_NE(t.out.find("1 tensor(s) of type IQ2_XXS, which import-gguf does not read"),
            std::string::npos) << t.out;
  EXPECT_NE(t.out.find("1 tensor(s) import-gguf does not know, first 'blk.0.rope_freqs.weight'"),
            std::string::npos) << t.out;

  write_text(dir / "notes.txt", "not a gguf");
  expect_user_error(run_exq({"info", (dir / "notes.txt").string()}), "notes.txt");
}

}  // namespace
}  // namespace exq::test
