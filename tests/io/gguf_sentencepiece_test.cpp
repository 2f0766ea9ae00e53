// import-gguf of a SentencePiece BPE vocabulary (tokenizer.ggml.model "llama": Llama 2, Mistral,
// Mixtral): the tokenizer.json it writes must give the ids sentencepiece itself gives
// (tests/io/data/spm_tiny.json, made by scripts/spm_golden.py from a vocabulary trained with
// Llama's settings), decode them back to the text, and add BOS as llama.cpp does.
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "core/error.h"
#include "gguf_builder.h"
#include "io/gguf_import.h"
#include "test_support.h"
#include "tokenizer/tokenizer.h"

namespace exq::io {
namespace {

using nlohmann::json;
using test::GgufBuilder;

json golden() {
  return json::parse(test::read_file(std::filesystem::path(EXQ_SOURCE_DIR) / "tests" / "io" / "data" / "spm_tiny.json"));
}

// The tokenizer part of a GGUF as llama.cpp writes a SentencePiece vocabulary.
GgufFile sentencepiece_gguf(const json& g, const std::string& model = "llama") {
  GgufBuilder b;
  b.kv_str("general.architecture", "llama");
  b.kv_str("tokenizer.ggml.model", model);
  b.kv_strs("tokenizer.ggml.tokens", g["tokens"].get<std::vector<std::string>>());
  b.kv_f32s("tokenizer.ggml.scores", g["scores"].get<std::vector<float>>());
  b.kv_i32s("tokenizer.ggml.token_type", g["types"].get<std::vector<int32_t>>());
  b.kv<uint32_t>("tokenizer.ggml.bos_token_id", GgufBuilder::U32, g["bos"].get<uint32_t>());
  b.kv<uint32_t>("tokenizer.ggml.eos_token_id", GgufBuilder::U32, g["eos"].get<uint32_t>());
  b.kv<uint32_t>("tokenizer.ggml.unknown_token_id", GgufBuilder::U32, g["unk"].get<uint32_t>());
  const std::string bytes = b.build();
  return GgufFile::parse(MappedFile::from_bytes(std::vector<uint8_t>(bytes.begin(), bytes.end()), "spm.gguf"));
}

TEST(GgufSentencePiece, EncodesAsSentencePieceDoes) {
  const json g = golden();
  const GgufFile file = sentencepiece_gguf(g);
  const json tj = hf_tokenizer_from_gguf(file);
  EXPECT_EQ(tj["model"]["byte_fallback"], true);
  EXPECT_EQ(tj["model"]["unk_token"], "<unk>");
  const tokenizer::Tokenizer tok = tokenizer::Tokenizer::from_json_string(tj.dump(), "spm.gguf");
  for (const json& c : g["cases"]) {
    const std::string text = c["text"].get<std::string>();
    const auto want = c["ids"].get<std::vector<int32_t>>();
    EXPECT_EQ(tok.encode(text), want) << text;
    EXPECT_EQ(tok.decode(want), text) << text;
    // llama.cpp adds BOS for these vocabularies: tokenizer.ggml.add_bos_token's default.
    const std::vector<int32_t> with_bos = tok.encode(text, true);
    ASSERT_FALSE(with_bos.empty());
    EXPECT_EQ(with_bos[0], g["bos"].get<int32_t>()) << text;
    EXPECT_EQ(with_bos.size(), want.size() + 1) << text;
  }
  const json cfg = hf_tokenizer_config_from_gguf(file);
  EXPECT_EQ(cfg["tokenizer_class"], "LlamaTokenizer");
  EXPECT_EQ(cfg["add_bos_token"], true);
  EXPECT_EQ(cfg["unk_token"], "<unk>");
}

TEST(GgufSentencePiece, RefusesWhatItCannotRead) {
  json g = golden();
  try {
    hf_tokenizer_from_gguf(sentencepiece_gguf(g, "t5"));
    ADD_FAILURE() << "accepted t5";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("unsupported tokenizer.ggml.model 't5'"), std::string::npos) << e.what();
  }
  g["scores"].erase(g["scores"].size() - 1);
  try {
    hf_tokenizer_from_gguf(sentencepiece_gguf(g));
    ADD_FAILURE() << "accepted short scores";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("tokenizer.ggml.scores has 599 entries for 600 tokens"), std::string::npos)
        << e.what();
  }
}

}  // namespace
}  // namespace exq::io
