// Mistral Small 3.1 / 3.2 (model_type mistral3) run as their language model, text only: the
// config's text_config read as a mistral config with the wrapper's token ids, the tensors under
// either transformers naming presented as the plain model's, the vision tower left out. (Gemma 3's
// wrapper: gemma_test.cpp.)
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <cstring>
#include <filesystem>

#include "golden_logits.h"
#include "io/hf_config.h"
#include "io/safetensors.h"
#include "model/llama.h"
#include "multimodal.h"
#include "test_support.h"
#include "tiny_configs.h"

namespace exq::model {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

// scripts/mistral3_golden.py: a Mistral3ForConditionalGeneration saved by transformers 5.24 (a
// Pixtral tower and a projector beside the language model, an untied head, a window of 5 keys),
// its logits for a text prompt.
TEST(Mistral3, LogitsMatchTransformers) {
  test::expect_goldens({"mistral3_tiny"}, 1e-4);
  const LlamaModel m = LlamaModel::load(test::model_data_dir("mistral3_tiny"));
  EXPECT_EQ(m.config().language_model_of, "mistral3");
  EXPECT_EQ(m.config().layer_window, (std::vector<int64_t>{5, 5}));
}

TEST(Mistral3, MultimodalCheckpointRunsItsLanguageModel) {
  LlamaModel plain = LlamaModel::load(test::model_data_dir("mistral_swa_tiny"));
  const std::vector<int32_t> ids = {1, 17, 250, 3, 99, 140, 7, 300, 12};  // past the window of 5
  KvCache pc = plain.make_cache(16);
  const Tensor want = plain.forward(ids, pc, true);
  for (const bool t5 : {false, true}) {
    SCOPED_TRACE(t5 ? "transformers 5" : "transformers 4");
    const fs::path dir = test::temp_dir(t5 ? "mistral3_mm_t5" : "mistral3_mm");
    test::write_multimodal(dir, test::kMistral3Multimodal, t5);
    const io::SafetensorsModel files = io::SafetensorsModel::open(dir);
    EXPECT_EQ(files.language_model_prefix(), t5 ? "model.language_model." : "language_model.model.");
    EXPECT_TRUE(files.contains("lm_head.weight"));
    for (const std::string& n : files.names()) EXPECT_TRUE(n.starts_with("model.") || n == "lm_head.weight") << n;
    EXPECT_EQ(files.names().size(), io::SafetensorsModel::open(test::model_data_dir("mistral_swa_tiny")).names().size());
    LlamaModel m = LlamaModel::load(dir);
    EXPECT_EQ(m.config().model_type, "mistral");
    EXPECT_EQ(m.config().language_model_of, "mistral3");
    EXPECT_EQ(m.config().eos_token_ids, (std::vector<int32_t>{2}));
    EXPECT_EQ(m.config().layer_window, plain.config().layer_window);
    KvCache c = m.make_cache(16);
    const Tensor got = m.forward(ids, c, true);
    EXPECT_EQ(std::memcmp(got.raw(), want.raw(), want.nbytes()), 0);
    fs::remove_all(dir);
  }
}

TEST(Mistral3, ConfigRules) {
  // Mistral Small 3.1's text_config, abridged: no model_type means MistralConfig; a null window.
  json mm = {{"architectures", {"Mistral3ForConditionalGeneration"}},
             {"model_type", "mistral3"},
             {"torch_dtype", "bfloat16"},
             {"image_token_index", 10},
             {"text_config", {{"head_dim", 128}, {"hidden_size", 5120}, {"intermediate_size", 32768},
                              {"max_position_embeddings", 131072}, {"num_attention_heads", 32},
                              {"num_hidden_layers", 40}, {"num_key_value_heads", 8}, {"rms_norm_eps", 1e-5},
                              {"rope_theta", 1e9}, {"sliding_window", nullptr}, {"vocab_size", 131072}}},
             {"vision_config", {{"model_type", "pixtral"}}}};
  const io::ModelConfig c = io::parse_model_config(mm.dump(), "config.json");
  EXPECT_EQ(c.model_type, "mistral");
  EXPECT_EQ(c.language_model_of, "mistral3");
  EXPECT_EQ(c.head_dim, 128);
  EXPECT_EQ(c.rope_theta, 1e9);
  EXPECT_TRUE(c.layer_window.empty());
  EXPECT_EQ(c.torch_dtype, DType::BF16);
  EXPECT_FALSE(c.tie_word_embeddings);
  EXPECT_EQ(io::text_model_config(mm).at("architectures"), json::array({"MistralForCausalLM"}));
  EXPECT_EQ(io::multimodal_wrapper(mm), "mistral3");
  EXPECT_EQ(io::multimodal_wrapper(mm["text_config"]), "");

  json no_text = mm;
  no_text.erase("text_config");
  test::expect_config_refused(no_text, "text_config");
  json other = mm;
  other["text_config"]["model_type"] = "ministral3";  // Ministral 3's own attention scaling
  test::expect_config_refused(other, "text_config.model_type");
}

}  // namespace
}  // namespace exq::model
