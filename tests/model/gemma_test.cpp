// Gemma, Gemma 2 and Gemma 3 (text): tiny random models against transformers' logits
// (scripts/gemma_golden.py wrote tests/model/data/gemma*_tiny), through the KV cache in chunks,
// and the config rules: activations, softcaps, the attention scale, the windowed layers, the
// local rotary base, transformers 5's rope_parameters per layer kind, what is refused.
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <cmath>
#include <cstring>
#include <filesystem>

#include "core/error.h"
#include "core/half.h"
#include "io/hf_config.h"
#include "io/safetensors.h"
#include "model/llama.h"
#include "golden_logits.h"
#include "tiny_configs.h"
#include "multimodal.h"
#include "test_support.h"

namespace exq::model {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

fs::path data_dir(const char* name) { return test::model_data_dir(name); }

TEST(Gemma, LogitsMatchTransformers) {
  // The logits reach 26-34 (gemma, gemma3; gemma2's are capped at 3).
  test::expect_goldens({"gemma_tiny", "gemma2_tiny", "gemma3_tiny"}, 2e-4);
}

// Several caches in one pass (exq serve -np) take the same per-row path as one cache.
TEST(Gemma, BatchRowsMatchSingleSequences) {
  LlamaModel m = LlamaModel::load(data_dir("gemma2_tiny"));
  const double err = test::batch_rows_error(m);
  EXPECT_LE(err, 1e-5);
}


TEST(Gemma, ConfigRules) {
  const io::ModelConfig g1 = test::parse_config(test::config_json("gemma_tiny"));
  EXPECT_EQ(g1.activation, io::Activation::GeluTanh);  // hidden_act "gelu": the legacy name
  EXPECT_TRUE(g1.norm_plus_one && g1.embed_scale && g1.tie_word_embeddings);
  EXPECT_FALSE(g1.sandwich_norms);
  EXPECT_TRUE(g1.layer_window.empty());
  EXPECT_DOUBLE_EQ(g1.attention_scale(), 0.25);  // head_dim 16

  const io::ModelConfig g2 = test::parse_config(test::config_json("gemma2_tiny"));
  EXPECT_TRUE(g2.sandwich_norms);
  EXPECT_EQ(g2.layer_window, (std::vector<int64_t>{5, 0, 5}));  // even layers slide
  EXPECT_DOUBLE_EQ(g2.attn_softcap, 2.0);
  EXPECT_DOUBLE_EQ(g2.final_softcap, 3.0);
  EXPECT_DOUBLE_EQ(g2.attention_scale(), 1.0 / std::sqrt(24.0));
  EXPECT_EQ(g2.rope_local_theta, 0.0);
  json d2 = test::config_json("gemma2_tiny");
  d2.erase("attn_logit_softcapping");  // transformers' defaults: 50 and 30
  d2.erase("final_logit_softcapping");
  EXPECT_DOUBLE_EQ(test::parse_config(d2).attn_softcap, 50.0);
  EXPECT_DOUBLE_EQ(test::parse_config(d2).final_softcap, 30.0);
  d2["attn_logit_softcapping"] = nullptr;
  EXPECT_EQ(test::parse_config(d2).attn_softcap, 0.0);

  const io::ModelConfig g3 = test::parse_config(test::config_json("gemma3_tiny"));
  EXPECT_TRUE(g3.qk_norm && g3.sandwich_norms);
  EXPECT_EQ(g3.layer_window, (std::vector<int64_t>{6, 6, 0, 6}));
  EXPECT_EQ(g3.rope_local_theta, 100.0);
  EXPECT_EQ(g3.rope_theta, 1e6);
  EXPECT_EQ(g3.rope_scaling.type, io::RopeScalingType::Linear);
  EXPECT_TRUE(g3.local_rope(0) && !g3.local_rope(2));
  EXPECT_EQ(g3.final_softcap, 0.0);
  EXPECT_EQ(g3.attn_softcap, 0.0);

  // transformers 5 writes rope_parameters per layer kind and layer_types: the same model.
  const io::ModelConfig t5 =
      io::load_model_config(data_dir("gemma3_tiny") / "config.transformers5.json");
  EXPECT_EQ(t5.layer_window, g3.layer_window);
  EXPECT_EQ(t5.rope_local_theta, g3.rope_local_theta);
  EXPECT_EQ(t5.rope_theta, g3.rope_theta);
  EXPECT_EQ(t5.rope_scaling.type, g3.rope_scaling.type);
  EXPECT_EQ(t5.rope_scaling.factor, g3.rope_scaling.factor);
  EXPECT_EQ(t5.attention_scale(), g3.attention_scale());
}

// The multimodal Gemma 3 checkpoints: their language model, under either naming, is gemma3_tiny.
TEST(Gemma, MultimodalCheckpointRunsItsLanguageModel) {
  LlamaModel plain = LlamaModel::load(data_dir("gemma3_tiny"));
  const std::vector<int32_t> ids = {2, 17, 250, 3, 99, 140, 7, 300, 12};
  KvCache pc = plain.make_cache(16);
  const Tensor want = plain.forward(ids, pc, true);
  for (const bool t5 : {false, true}) {
    const fs::path dir = exq::test::temp_dir(t5 ? "gemma3_mm_t5" : "gemma3_mm");
    exq::test::write_multimodal(dir, exq::test::kGemma3Multimodal, t5);
    const io::SafetensorsModel files = io::SafetensorsModel::open(dir);
    EXPECT_EQ(files.language_model_prefix(), t5 ? "model.language_model." : "language_model.model.");
    EXPECT_TRUE(files.contains("model.layers.3.mlp.down_proj.weight"));
    for (const std::string& n : files.names()) EXPECT_TRUE(n.starts_with("model.")) << n;  // no vision tower
    EXPECT_EQ(files.names().size(), io::SafetensorsModel::open(data_dir("gemma3_tiny")).names().size());
    LlamaModel m = LlamaModel::load(dir);
    EXPECT_EQ(m.config().model_type, "gemma3_text");
    EXPECT_EQ(m.config().language_model_of, "gemma3");
    EXPECT_EQ(m.config().eos_token_ids, (std::vector<int32_t>{1, 106}));  // the wrapper's
    EXPECT_EQ(m.config().layer_window, plain.config().layer_window);
    KvCache c = m.make_cache(16);
    const Tensor got = m.forward(ids, c, true);
    EXPECT_EQ(std::memcmp(got.raw(), want.raw(), want.nbytes()), 0) << (t5 ? "transformers 5" : "transformers 4");
    fs::remove_all(dir);
  }
  // The 4B checkpoints' text_config leaves heads, head_dim and the vocabulary to Gemma3TextConfig.
  const json mm = {{"model_type", "gemma3"},
                   {"text_config", {{"hidden_size", 2560}, {"intermediate_size", 10240}, {"model_type", "gemma3_text"},
                                    {"num_hidden_layers", 34}, {"rope_scaling", {{"factor", 8.0}, {"rope_type", "linear"}}},
                                    {"sliding_window", 1024}}},
                   {"eos_token_id", {1, 106}}};
  const io::ModelConfig c = test::parse_config(mm);
  EXPECT_EQ(c.num_attention_heads, 8);
  EXPECT_EQ(c.num_key_value_heads, 4);
  EXPECT_EQ(c.head_dim, 256);
  EXPECT_EQ(c.vocab_size, 262208);
  EXPECT_EQ(c.rope_theta, 1e6);
  EXPECT_EQ(c.rope_local_theta, 1e4);
  EXPECT_EQ(c.rope_scaling.factor, 8.0);
  EXPECT_EQ(c.window_of(0), 1024);
  EXPECT_EQ(c.window_of(5), 0);
  EXPECT_TRUE(c.tie_word_embeddings);
}

TEST(Gemma, RefusedConfigs) {
  json mm = test::config_json("gemma3_tiny");
  mm["model_type"] = "gemma3";  // without text_config
  test::expect_config_refused(mm, "text_config");
  json bi = test::config_json("gemma3_tiny");
  bi["use_bidirectional_attention"] = true;
  test::expect_config_refused(bi, "use_bidirectional_attention");
  json act = test::config_json("gemma2_tiny");
  act["hidden_activation"] = "relu";
  test::expect_config_refused(act, "hidden_activation");
  json local = test::config_json("gemma3_tiny", "config.transformers5.json");
  local["rope_parameters"]["sliding_attention"] = {{"rope_type", "linear"}, {"factor", 2.0}};
  test::expect_config_refused(local, "rope_parameters.sliding_attention");
}

// transformers multiplies the rows by sqrt(hidden) in the table's dtype.
TEST(Gemma, EmbeddingScaleRoundedToTableDtype) {
  io::ModelConfig c = test::parse_config(test::config_json("gemma2_tiny"));
  c.hidden_size = 3584;  // Gemma 2 9B: sqrt = 59.866...
  c.torch_dtype = std::nullopt;
  EXPECT_EQ(embedding_scale(c, DType::F32), static_cast<float>(std::sqrt(3584.0)));
  EXPECT_EQ(embedding_scale(c, DType::BF16), 59.75f);
  EXPECT_EQ(embedding_scale(c, DType::F16), 59.875f);
  c.torch_dtype = DType::BF16;  // a converted bf16 checkpoint: its fp16 table, config.json's dtype
  EXPECT_EQ(embedding_scale(c, DType::F16), 59.75f);
  c.embed_scale = false;
  EXPECT_EQ(embedding_scale(c, DType::F16), 1.0f);
}

}  // namespace
}  // namespace exq::model
