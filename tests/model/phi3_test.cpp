// Phi-3 (fused qkv_proj and gate_up_proj, LongRoPE): a tiny random model's logits against
// transformers' own (scripts/phi3_golden.py wrote tests/model/data/phi3_tiny and
// phi3_partial_tiny, the second with Phi-4-mini's partial rotary) with the short factors (a
// context within the original 16 positions) and the long ones (24), and the same model stored
// split (as EXL2 folders name its layers) giving the same logits.
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>

#include "io/hf_config.h"
#include "io/safetensors.h"
#include "lora_adapter.h"
#include "model/llama.h"
#include "model/lora.h"
#include "model/rope.h"
#include "golden_logits.h"
#include "test_support.h"

namespace exq::model {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

fs::path phi3_dir() { return fs::path(EXQ_SOURCE_DIR) / "tests" / "model" / "data" / "phi3_tiny"; }

// The golden's prompt in chunks of 5, 1 and the rest.
double golden_error(LlamaModel& m, const json& g, double* max_abs = nullptr) {
  const size_t n = g["prompt_ids"].size();
  return test::golden_logit_error(m, g, {5, 1, n - 6}, max_abs);
}

TEST(Phi3Tiny, LogitsMatchTransformersWithShortAndLongFactors) {
  LlamaModel m = LlamaModel::load(phi3_dir());
  const io::ModelConfig& c = m.config();
  EXPECT_EQ(c.model_type, "phi3");
  EXPECT_TRUE(c.fused_projections);
  EXPECT_EQ(c.rope_scaling.type, io::RopeScalingType::LongRope);
  EXPECT_EQ(c.rope_scaling.original_max_position_embeddings, 16);
  EXPECT_DOUBLE_EQ(c.rope_scaling.factor, 4.0);  // 64 / 16
  EXPECT_FLOAT_EQ(rope_attention_factor(c), static_cast<float>(std::sqrt(1.0 + std::log(4.0) / std::log(16.0))));
  const json golden = json::parse(test::read_file(phi3_dir() / "golden.json"));
  for (const char* key : {"short", "long"}) {
    double top = 0;
    const double err = golden_error(m, golden[key], &top);
    std::printf("  phi3 tiny, %s factors: max abs logit error %.3g (logits up to %.2f)\n", key, err, top);
    EXPECT_LE(err, 1e-4) << key;
  }
  // The golden itself took the long factors for the long prompt: its first 12 positions differ
  // from the short prompt's, which are the same tokens.
  double diff = 0;
  for (size_t t = 0; t < 12; ++t)
    for (size_t i = 0; i < static_cast<size_t>(c.vocab_size); ++i)
      diff = std::max(diff, std::fabs(golden["long"]["logits"][t][i].get<double>() -
                                      golden["short"]["logits"][t][i].get<double>()));
  EXPECT_GT(diff, 1e-2);
}

// Phi-4-mini's shape: partial_rotary_factor 0.75 (rotary over 24 of 32 dimensions, 12 longrope
// factors), tied embeddings.
TEST(Phi3Tiny, PartialRotaryMatchesTransformers) {
  const fs::path dir = fs::path(EXQ_SOURCE_DIR) / "tests" / "model" / "data" / "phi3_partial_tiny";
  LlamaModel m = LlamaModel::load(dir);
  EXPECT_EQ(m.config().head_dim, 32);
  EXPECT_EQ(m.config().rope_dim(), 24);
  EXPECT_EQ(rope_inv_freq(m.config(), 64).size(), 12u);
  EXPECT_TRUE(m.weights().head_tied);
  const json golden = json::parse(test::read_file(dir / "golden.json"));
  for (const char* key : {"short", "long"}) {
    double top = 0;
    const double err = golden_error(m, golden[key], &top);
    std::printf("  phi3 partial rotary, %s factors: max abs logit error %.3g (logits up to %.2f)\n", key, err, top);
    EXPECT_LE(err, 1e-4) << key;
  }
}

TEST(Phi3Tiny, FactorSetFollowsTheContext) {
  const io::ModelConfig c = io::load_model_config(phi3_dir());
  EXPECT_FALSE(rope_uses_long_factors(c, 16));
  EXPECT_TRUE(rope_uses_long_factors(c, 17));
  const std::vector<float> s = rope_inv_freq(c, 16), l = rope_inv_freq(c, 17);
  for (size_t i = 0; i < s.size(); ++i) {
    const double base = std::pow(10000.0, 2.0 * static_cast<double>(i) / 32.0);
    EXPECT_NEAR(s[i], 1.0 / (c.rope_scaling.short_factor[i] * base), 1e-6 / base);
    EXPECT_NEAR(l[i], 1.0 / (c.rope_scaling.long_factor[i] * base), 1e-6 / base);
  }
}

// The fused tensors written as q/k/v_proj and gate/up_proj (exllamav2's names for phi3 layers).
TEST(Phi3Tiny, SplitCheckpointGivesTheSameLogits) {
  const fs::path dir = test::temp_dir("phi3_split");
  fs::copy_file(phi3_dir() / "config.json", dir / "config.json");
  const io::SafetensorsModel files = io::SafetensorsModel::open(phi3_dir());
  const io::ModelConfig c = io::load_model_config(phi3_dir());
  std::vector<io::NamedTensor> list;
  for (const std::string& name : files.names()) {
    const TensorView t = files.get(name);
    const size_t at = name.find("self_attn.qkv_proj"), gu = name.find("mlp.gate_up_proj");
    if (at != std::string::npos) {
      const std::string p = name.substr(0, at) + "self_attn.";
      const int64_t q = c.q_dim(), kv = c.kv_dim();
      list.push_back({p + "q_proj.weight", t.slice0(0, q)});
      list.push_back({p + "k_proj.weight", t.slice0(q, q + kv)});
      list.push_back({p + "v_proj.weight", t.slice0(q + kv, q + 2 * kv)});
    } else if (gu != std::string::npos) {
      const std::string p = name.substr(0, gu) + "mlp.";
      list.push_back({p + "gate_proj.weight", t.slice0(0, c.intermediate_size)});
      list.push_back({p + "up_proj.weight", t.slice0(c.intermediate_size, 2 * c.intermediate_size)});
    } else {
      list.push_back({name, t});
    }
  }
  io::write_safetensors(dir / "model.safetensors", list);
  LlamaModel fused = LlamaModel::load(phi3_dir()), split = LlamaModel::load(dir);
  const std::vector<int32_t> ids = {7, 123, 42, 299, 5, 77, 180, 3, 250, 61, 14, 200, 33, 8, 271, 95, 160, 2};
  KvCache a = fused.make_cache(18), b = split.make_cache(18);
  const Tensor x = fused.forward(ids, a, true), y = split.forward(ids, b, true);
  ASSERT_EQ(x.numel(), y.numel());
  EXPECT_EQ(std::memcmp(x.raw(), y.raw(), x.nbytes()), 0);
  fs::remove_all(dir);
}

TEST(Phi3Tiny, BadFusedTensorsAreNamed) {
  const fs::path dir = test::temp_dir("phi3_bad");
  fs::copy_file(phi3_dir() / "config.json", dir / "config.json");
  const io::SafetensorsModel files = io::SafetensorsModel::open(phi3_dir());
  const std::string cut = "model.layers.1.mlp.gate_up_proj.weight";
  std::vector<io::NamedTensor> list;
  for (const std::string& name : files.names())
    list.push_back({name, name == cut ? files.get(name).slice0(0, 100) : files.get(name)});
  io::write_safetensors(dir / "model.safetensors", list);
  try {
    LlamaModel::load(dir);
    ADD_FAILURE() << "loaded a short " << cut;
  } catch (const Error& e) {
    EXPECT_EQ(e.context().tensor, cut) << e.what();
    EXPECT_NE(std::string(e.what()).find("[320, 128]"), std::string::npos) << e.what();
  }
  // Neither the fused tensor nor its parts: the fused name is what is missing.
  list.clear();
  const std::string gone = "model.layers.0.self_attn.qkv_proj.weight";
  for (const std::string& name : files.names())
    if (name != gone) list.push_back({name, files.get(name)});
  io::write_safetensors(dir / "model.safetensors", list);
  try {
    LlamaModel::load(dir);
    ADD_FAILURE() << "loaded without " << gone;
  } catch (const Error& e) {
    EXPECT_EQ(e.context().tensor, "model.layers.0.self_attn.q_proj.weight") << e.what();
  }
  fs::remove_all(dir);
}

// An adapter on the fused layers (PEFT's target_modules for Phi-3: qkv_proj, gate_up_proj):
// --lora splits lora_B's rows over q/k/v and gate/up; merge-lora adds B A to the fused tensor.
// Both give the same model.
TEST(Phi3Tiny, LoraOnFusedLayersMergesLikeTheMergedFolder) {
  const fs::path dir = test::temp_dir("phi3_lora");
  const io::ModelConfig c = io::load_model_config(phi3_dir());
  std::vector<test::LoraTarget> targets;
  for (int64_t l = 0; l < 2; ++l) {
    targets.push_back({l, "self_attn.qkv_proj", c.q_dim() + 2 * c.kv_dim(), c.hidden_size});
    targets.push_back({l, "mlp.gate_up_proj", 2 * c.intermediate_size, c.hidden_size});
  }
  test::write_rank4_adapter(dir, targets);
  std::vector<LoraAdapter> ads;
  ads.push_back(load_lora(dir));
  LlamaModel at_load = LlamaModel::load(phi3_dir());
  at_load.merge_lora(ads[0]);
  merge_lora_folder(phi3_dir(), ads, dir / "merged");
  LlamaModel merged = LlamaModel::load(dir / "merged"), base = LlamaModel::load(phi3_dir());
  const std::vector<int32_t> ids = {7, 123, 42, 299, 5, 77, 180, 3, 250, 61};
  KvCache k1 = at_load.make_cache(10), k2 = merged.make_cache(10), k3 = base.make_cache(10);
  const Tensor x = at_load.forward(ids, k1, true), y = merged.forward(ids, k2, true), z = base.forward(ids, k3, true);
  EXPECT_EQ(std::memcmp(x.raw(), y.raw(), x.nbytes()), 0);
  double moved = 0;
  for (int64_t i = 0; i < z.numel(); ++i) moved = std::max(moved, std::fabs(static_cast<double>(x.data<float>()[i] - z.data<float>()[i])));
  EXPECT_GT(moved, 1e-2);  // the adapter changes the logits
  fs::remove_all(dir);
}

TEST(Phi3Config, RefusesPartialRotaryAndBadFactors) {
  json base = json::parse(test::read_file(phi3_dir() / "config.json"));
  auto fails = [](const json& j, const std::string& want) {
    try {
      io::parse_model_config(j.dump(), "config.json");
      ADD_FAILURE() << "accepted " << want;
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find(want), std::string::npos) << e.what();
    }
  };
  json odd = base;
  odd["partial_rotary_factor"] = 0.3;  // 9.6 -> 9 dimensions: no pairs
  fails(odd, "partial_rotary_factor': 0.3 of head_dim 32 gives 9 rotary dimensions");
  json partial = base;
  partial["partial_rotary_factor"] = 0.75;  // 24 dimensions take 12 factors, not 16
  fails(partial, "rope_scaling.short_factor': 16 values, 24 rotary dimensions need 12");
  json short_list = base;
  short_list["rope_scaling"]["long_factor"].erase(0);
  fails(short_list, "rope_scaling.long_factor': 15 values, 32 rotary dimensions need 16");
  json negative = base;
  negative["rope_scaling"]["short_factor"][3] = -1.0;
  fails(negative, "rope_scaling.short_factor[3]");
  json missing = base;
  missing["rope_scaling"].erase("short_factor");
  fails(missing, "rope_scaling.short_factor': missing");
  // transformers 5's form (rope_parameters, the original context inside) reads the same.
  json v5 = base;
  v5.erase("rope_scaling");
  v5.erase("original_max_position_embeddings");
  v5["rope_parameters"] = base["rope_scaling"];
  v5["rope_parameters"].erase("type");
  v5["rope_parameters"]["rope_type"] = "longrope";
  v5["rope_parameters"]["rope_theta"] = 10000.0;
  v5["rope_parameters"]["factor"] = 4.0;
  v5["rope_parameters"]["original_max_position_embeddings"] = 16;
  const io::ModelConfig a = io::load_model_config(phi3_dir()), b = io::parse_model_config(v5.dump(), "v5.json");
  EXPECT_EQ(b.rope_scaling.type, io::RopeScalingType::LongRope);
  EXPECT_EQ(b.rope_scaling.original_max_position_embeddings, 16);
  EXPECT_EQ(rope_inv_freq(a, 24), rope_inv_freq(b, 24));
  EXPECT_EQ(rope_attention_factor(a), rope_attention_factor(b));
}

}  // namespace
}  // namespace exq::model
