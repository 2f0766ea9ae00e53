// IBM Granite MoE (model_type granitemoe): a tiny random model against transformers' logits
// (scripts/granitemoe_golden.py wrote tests/model/data/granitemoe_tiny); its fused experts
// (input_linear, output_linear, router.layer, or transformers 5's in-memory names) presented as
// Mixtral's per-expert tensors; the config's fields and defaults.
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <cstring>
#include <filesystem>

#include "io/hf_config.h"
#include "io/safetensors.h"
#include "model/llama.h"
#include "model/llama_weights.h"
#include "golden_logits.h"
#include "tiny_configs.h"
#include "test_support.h"

namespace exq::model {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

TEST(GraniteMoe, LogitsMatchTransformers) {
  // The logits reach 4.2; a scalar set back to neutral moves them 0.08 (attention_multiplier)
  // to 29 (logits_scaling), one expert a token 0.15 (granitemoe_golden.py).
  test::expect_goldens({"granitemoe_tiny"}, 1e-4);
}

TEST(GraniteMoe, BatchRowsMatchSingleSequences) {
  LlamaModel m = LlamaModel::load(test::model_data_dir("granitemoe_tiny"));
  EXPECT_LE(test::batch_rows_error(m), 1e-5);
}

// Each expert's gate, up and down are views of the fused tensors' rows; the fused names are
// not presented.
TEST(GraniteMoe, FusedExpertsArePresentedPerExpert) {
  const fs::path dir = test::model_data_dir("granitemoe_tiny");
  const io::SafetensorsModel files = io::SafetensorsModel::open(dir);
  const io::SafetensorsFile& raw = files.files().at(0);  // the same mapping: views point into it
  const TensorView in = raw.get("model.layers.1.block_sparse_moe.input_linear.weight");
  const TensorView out = raw.get("model.layers.1.block_sparse_moe.output_linear.weight");
  ASSERT_EQ(in.shape(), (Shape{5, 96, 64}));
  ASSERT_EQ(out.shape(), (Shape{5, 64, 48}));
  const size_t matrix = 48 * 64 * 2;  // bytes of one expert's gate (or up, or down)
  for (int64_t e = 0; e < 5; ++e) {
    const std::string p = fmt::format("model.layers.1.block_sparse_moe.experts.{}.", e);
    const TensorView g = files.get(p + "w1.weight"), u = files.get(p + "w3.weight"), d = files.get(p + "w2.weight");
    EXPECT_EQ(g.shape(), (Shape{48, 64}));
    EXPECT_EQ(d.shape(), (Shape{64, 48}));
    const auto* base = static_cast<const uint8_t*>(in.raw()) + static_cast<size_t>(e) * 2 * matrix;
    EXPECT_EQ(g.raw(), base);
    EXPECT_EQ(u.raw(), base + matrix);
    EXPECT_EQ(d.raw(), static_cast<const uint8_t*>(out.raw()) + static_cast<size_t>(e) * matrix);
  }
  EXPECT_TRUE(files.contains("model.layers.0.block_sparse_moe.gate.weight"));
  for (const std::string& n : files.names()) {
    EXPECT_EQ(n.find("input_linear"), std::string::npos) << n;
    EXPECT_EQ(n.find("router"), std::string::npos) << n;
  }
  // Presented in expert order, gate before up: 2 layers x (router + 5 x 3) + the rest.
  const std::vector<std::string> names = files.names();
  EXPECT_EQ(names.size(), raw.names().size() - 3 * 2 + 2 * (1 + 15));
  const auto at = [&](const std::string& n) { return std::find(names.begin(), names.end(), n) - names.begin(); };
  EXPECT_LT(at("model.layers.0.block_sparse_moe.experts.0.w1.weight"), at("model.layers.0.block_sparse_moe.experts.0.w3.weight"));
  EXPECT_LT(at("model.layers.0.block_sparse_moe.experts.0.w3.weight"), at("model.layers.0.block_sparse_moe.experts.1.w1.weight"));
}

// transformers 5's in-memory names (experts.gate_up_proj, experts.down_proj, router.weight), as a
// checkpoint saved without its conversion mapping would hold them: the same model bit for bit.
TEST(GraniteMoe, Transformers5NamesGiveTheSameModel) {
  const fs::path src = test::model_data_dir("granitemoe_tiny"), dir = test::temp_dir("granitemoe_t5");
  fs::create_directories(dir);
  fs::copy_file(src / "config.json", dir / "config.json", fs::copy_options::overwrite_existing);
  const io::SafetensorsFile raw = io::SafetensorsFile::open(src / "model.safetensors");
  std::vector<io::NamedTensor> list;
  for (std::string n : raw.names()) {
    const TensorView t = raw.get(n);
    for (const auto& [from, to] : {std::pair<std::string, std::string>{"input_linear.weight", "experts.gate_up_proj"},
                                   {"output_linear.weight", "experts.down_proj"},
                                   {"router.layer.weight", "router.weight"}})
      if (n.ends_with(from)) n = n.substr(0, n.size() - from.size()) + to;
    list.push_back({n, t});
  }
  io::write_safetensors(dir / "model.safetensors", list);
  LlamaModel a = LlamaModel::load(src), b = LlamaModel::load(dir);
  const std::vector<int32_t> ids = {2, 17, 250, 3, 99, 140, 7, 300, 12};
  KvCache ca = a.make_cache(16), cb = b.make_cache(16);
  const Tensor x = a.forward(ids, ca, true), y = b.forward(ids, cb, true);
  EXPECT_EQ(std::memcmp(x.raw(), y.raw(), x.nbytes()), 0);
  fs::remove_all(dir);
}

TEST(GraniteMoe, ConfigFields) {
  json j = test::config_json("granitemoe_tiny");
  const io::ModelConfig c = test::parse_config(j);
  EXPECT_EQ(c.model_type, "granitemoe");
  EXPECT_EQ(c.num_experts, 5);
  EXPECT_EQ(c.experts_per_token, 2);
  EXPECT_EQ(c.expert_intermediate, 48);  // intermediate_size is each expert's
  EXPECT_TRUE(c.norm_topk_prob);         // the softmax of the top k logits
  EXPECT_TRUE(c.moe_layer(0) && c.moe_layer(1));
  EXPECT_EQ(c.residual_multiplier, 0.22);
  EXPECT_EQ(c.attention_scale(), 0.09375);
  EXPECT_EQ(moe_names(c).block, std::string("block_sparse_moe"));
  EXPECT_EQ(router_key(c, 3), "model.layers.3.block_sparse_moe.gate");
  // GraniteMoeConfig's defaults: 8 experts, 2 a token.
  j.erase("num_local_experts");
  j.erase("num_experts_per_tok");
  const io::ModelConfig d = test::parse_config(j);
  EXPECT_EQ(d.num_experts, 8);
  EXPECT_EQ(d.experts_per_token, 2);
  json bad = test::config_json("granitemoe_tiny");
  bad["num_experts_per_tok"] = 6;
  test::expect_config_refused(bad, "num_experts_per_tok");
  bad = test::config_json("granitemoe_tiny");
  bad["residual_multiplier"] = 0;
  test::expect_config_refused(bad, "residual_multiplier");
}

}  // namespace
}  // namespace exq::model
