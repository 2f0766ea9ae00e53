// Mixtures of experts (mixtral, qwen3_moe): tiny random models against transformers' logits
// (scripts/moe_golden.py wrote tests/model/data/mixtral_tiny and qwen3_moe_tiny), through the KV
// cache in chunks and as batch rows; the routing rule; the config fields and what is refused.
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <vector>

#include "core/error.h"
#include "core/half.h"
#include "io/hf_config.h"
#include "io/safetensors.h"
#include "model/llama.h"
#include "model/lora.h"
#include "model/moe.h"
#include "golden_logits.h"
#include "tiny_configs.h"
#include "test_support.h"

namespace exq::model {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

fs::path data_dir(const char* name) { return test::model_data_dir(name); }

TEST(Moe, LogitsMatchTransformers) {
  // The logits reach 5-6; switching to top-1 routing moves them by 3-4 (moe_golden.py).
  test::expect_goldens({"mixtral_tiny", "qwen3_moe_tiny"}, 1e-4);
}

// norm_topk_prob false: the top-k probabilities as they are (they move the logits by 0.26).
TEST(Moe, UnnormalizedTopKMatchesTransformers) {
  const fs::path dir = data_dir("qwen3_moe_tiny");
  io::ModelConfig c = io::load_model_config(dir / "config.nonorm.json");
  EXPECT_FALSE(c.norm_topk_prob);
  LlamaWeights w = load_llama_weights(c, dir);
  LlamaModel m(std::move(c), std::move(w));
  const json g = test::config_json("qwen3_moe_tiny", "golden.nonorm.json");
  const double err = test::golden_logit_error(m, g, {9, 5});
  EXPECT_LE(err, 1e-4);
}

// One token of each of two sequences in one pass (exq serve -np) equals running them alone.
TEST(Moe, BatchRowsMatchSingleSequences) {
  LlamaModel m = LlamaModel::load(data_dir("qwen3_moe_tiny"));
  const double err = test::batch_rows_error(m);
  EXPECT_LE(err, 1e-5);
}

TEST(Moe, RouteTokenPicksTheMostProbable) {
  const std::vector<float> logits = {0.5f, 2.0f, -1.0f, 2.0f, 1.0f};
  std::vector<int32_t> ids(3);
  std::vector<float> w(3);
  route_token(logits, 3, false, ids, w);
  EXPECT_EQ(ids, (std::vector<int32_t>{1, 3, 4}));  // the tie of 1 and 3: the lower id first
  double z = 0;
  for (float l : logits) z += std::exp(static_cast<double>(l));
  EXPECT_NEAR(w[0], std::exp(2.0) / z, 1e-7);
  EXPECT_NEAR(w[2], std::exp(1.0) / z, 1e-7);
  route_token(logits, 3, true, ids, w);
  const double top = 2 * std::exp(2.0) + std::exp(1.0);
  EXPECT_NEAR(w[0], std::exp(2.0) / top, 1e-7);
  EXPECT_NEAR(w[0] + w[1] + w[2], 1.0, 1e-6);
  EXPECT_THROW(route_token(logits, 6, true, std::span<int32_t>(), std::span<float>()), Error);
  // A NaN logit (an overflowed activation) makes every probability NaN; the ids stay valid and
  // distinct (the NaN reaches the output, where the caller's checks see it).
  const std::vector<float> nan = {1.0f, std::nanf(""), 3.0f};
  std::vector<int32_t> two(2);
  std::vector<float> w2(2);
  route_token(nan, 2, false, two, w2);
  EXPECT_EQ(two, (std::vector<int32_t>{0, 1}));
  EXPECT_TRUE(std::isnan(w2[0]));
}

// Slots grouped by expert, tokens ascending within; gather and weighted add by those lists.
TEST(Moe, GroupByExpertKeepsTokenOrder) {
  const std::vector<int32_t> ids = {2, 0, 0, 1, 2, 1};  // 3 tokens, top 2
  const std::vector<float> w = {0.6f, 0.4f, 0.7f, 0.3f, 0.9f, 0.1f};
  const ExpertGroups g = group_by_expert(ids, w, 4, 2);
  EXPECT_EQ(g.first, (std::vector<int64_t>{0, 2, 4, 6, 6}));
  EXPECT_EQ(g.token, (std::vector<int32_t>{0, 1, 1, 2, 0, 2}));
  EXPECT_EQ(g.weight, (std::vector<float>{0.4f, 0.7f, 0.3f, 0.1f, 0.6f, 0.9f}));
  EXPECT_EQ(g.count(3), 0);
  Tensor x(DType::F32, {3, 2}), rows(DType::F32, {2, 2}), out(DType::F32, {3, 2});
  for (int64_t i = 0; i < 6; ++i) x.data<float>()[i] = static_cast<float>(i + 1);
  std::fill(out.data<float>(), out.data<float>() + 6, 0.0f);
  gather_rows(x, g.tokens(2), rows);  // tokens 0 and 2
  EXPECT_EQ(rows.data<float>()[0], 1.0f);
  EXPECT_EQ(rows.data<float>()[3], 6.0f);
  add_weighted_rows(rows, g.tokens(2), g.weights(2), out);
  EXPECT_FLOAT_EQ(out.data<float>()[0], 0.6f);
  EXPECT_FLOAT_EQ(out.data<float>()[5], 0.9f * 6.0f);
  EXPECT_EQ(out.data<float>()[2], 0.0f);
  EXPECT_THROW(group_by_expert(std::vector<int32_t>{4, 0}, std::vector<float>{1, 1}, 4, 2), Error);
}

TEST(Moe, ConfigFields) {
  const io::ModelConfig mx = test::parse_config(test::config_json("mixtral_tiny"));
  EXPECT_EQ(mx.num_experts, 4);
  EXPECT_EQ(mx.experts_per_token, 2);
  EXPECT_EQ(mx.expert_intermediate, 48);  // mixtral: intermediate_size is each expert's
  EXPECT_TRUE(mx.norm_topk_prob);
  EXPECT_TRUE(mx.moe_layer(0) && mx.moe_layer(1));
  EXPECT_EQ(mx.head_dim, 16);  // head_dim null: hidden / heads
  EXPECT_EQ(moe_names(mx).block, std::string("block_sparse_moe"));
  EXPECT_EQ(expert_key(mx, 1, 3, moe_names(mx).down), "model.layers.1.block_sparse_moe.experts.3.w2");
  EXPECT_EQ(router_key(mx, 0), "model.layers.0.block_sparse_moe.gate");

  const io::ModelConfig q = test::parse_config(test::config_json("qwen3_moe_tiny"));
  EXPECT_EQ(q.num_experts, 6);
  EXPECT_EQ(q.expert_intermediate, 24);
  EXPECT_EQ(q.intermediate_size, 48);  // the dense layer's
  EXPECT_TRUE(q.qk_norm && q.norm_topk_prob);
  EXPECT_EQ(q.layer_moe, (std::vector<uint8_t>{1, 0, 1}));
  EXPECT_EQ(expert_key(q, 2, 5, moe_names(q).gate), "model.layers.2.mlp.experts.5.gate_proj");

  json t5 = test::config_json("qwen3_moe_tiny");  // transformers 5 writes num_local_experts
  t5["num_local_experts"] = t5["num_experts"];
  t5.erase("num_experts");
  t5.erase("norm_topk_prob");  // transformers' default: false
  t5["decoder_sparse_step"] = 2;
  t5.erase("mlp_only_layers");
  const io::ModelConfig q5 = test::parse_config(t5);
  EXPECT_EQ(q5.num_experts, 6);
  EXPECT_FALSE(q5.norm_topk_prob);
  EXPECT_EQ(q5.layer_moe, (std::vector<uint8_t>{0, 1, 0}));  // (l + 1) % 2 == 0

  const io::ModelConfig dense = test::parse_config(test::config_json("gemma2_tiny"));
  EXPECT_EQ(dense.num_experts, 0);
  EXPECT_FALSE(dense.moe_layer(0));
}

TEST(Moe, RefusedConfigs) {
  json k = test::config_json("mixtral_tiny");
  k["num_experts_per_tok"] = 5;  // more than the 4 experts
  test::expect_config_refused(k, "num_experts_per_tok");
  json none = test::config_json("mixtral_tiny");
  none.erase("num_local_experts");
  test::expect_config_refused(none, "num_local_experts");
  json only = test::config_json("qwen3_moe_tiny");
  only["mlp_only_layers"] = {0, 3};  // 3 layers
  test::expect_config_refused(only, "mlp_only_layers[1]");
  json inter = test::config_json("qwen3_moe_tiny");
  inter.erase("moe_intermediate_size");
  test::expect_config_refused(inter, "moe_intermediate_size");
}

// A checkpoint missing an expert's tensor is refused naming it.
TEST(Moe, MissingExpertTensorNamed) {
  const fs::path dir = exq::test::temp_dir("moe_missing");
  fs::copy_file(data_dir("mixtral_tiny") / "config.json", dir / "config.json", fs::copy_options::overwrite_existing);
  const io::SafetensorsModel src = io::SafetensorsModel::open(data_dir("mixtral_tiny"));
  std::vector<io::NamedTensor> keep;
  for (const std::string& name : src.names())
    if (name != "model.layers.1.block_sparse_moe.experts.2.w3.weight") keep.push_back({name, src.get(name)});
  io::write_safetensors(dir / "model.safetensors", keep);
  try {
    LlamaModel::load(dir);
    ADD_FAILURE() << "loaded";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("model.layers.1.block_sparse_moe.experts.2.w3.weight"), std::string::npos)
        << e.what();
  }
}

// A LoRA adapter on an expert (either naming) and the router merges into them: the merged model's
// expert equals W + scale B A; a target in a MoE layer's missing dense MLP is refused by name.
TEST(Moe, LoraMergesIntoExpertsAndRouter) {
  const fs::path dir = exq::test::temp_dir("moe_lora");
  Tensor a(DType::F32, {2, 64}), b(DType::F32, {48, 2}), ra(DType::F32, {2, 64}), rb(DType::F32, {4, 2});
  for (Tensor* t : {&a, &b, &ra, &rb})
    for (int64_t i = 0; i < t->numel(); ++i) t->data<float>()[i] = 0.01f * static_cast<float>((i * 7919) % 23 - 11);
  const std::string ex = "base_model.model.model.layers.1.block_sparse_moe.experts.2.w1";
  const std::string rt = "base_model.model.model.layers.0.block_sparse_moe.gate";
  const json cfg = {{"peft_type", "LORA"}, {"r", 2}, {"lora_alpha", 4}, {"target_modules", {"w1", "gate"}},
                    {"bias", "none"}, {"use_dora", false}, {"fan_in_fan_out", false}};
  std::ofstream(dir / "adapter_config.json") << cfg.dump();
  io::write_safetensors(dir / "adapter_model.safetensors",
                        {{ex + ".lora_A.weight", a.view()}, {ex + ".lora_B.weight", b.view()},
                         {rt + ".lora_A.weight", ra.view()}, {rt + ".lora_B.weight", rb.view()}});
  LlamaModel base = LlamaModel::load(data_dir("mixtral_tiny"));
  LlamaModel merged = LlamaModel::load(data_dir("mixtral_tiny"));
  merged.merge_lora(load_lora(dir));
  auto weight = [](const Linear& l) { return dynamic_cast<const DenseLinear&>(l).weight(); };
  const TensorView w0 = weight(*base.weights().layers[1].experts[2].gate);
  const TensorView w1 = weight(*merged.weights().layers[1].experts[2].gate);
  double worst = 0;
  for (int64_t o = 0; o < 48; ++o)
    for (int64_t i = 0; i < 64; ++i) {
      double d = 0;
      for (int64_t k = 0; k < 2; ++k) d += double(b.data<float>()[o * 2 + k]) * a.data<float>()[k * 64 + i];
      const double want = half_to_float(w0.data<uint16_t>()[o * 64 + i]) + 2.0 * d;  // scale 4 / 2
      worst = std::max(worst, std::fabs(half_to_float(w1.data<uint16_t>()[o * 64 + i]) - want));
    }
  EXPECT_LE(worst, 2e-3);  // an fp16 rounding of values below 2
  EXPECT_GT(std::fabs(half_to_float(weight(*merged.weights().layers[0].router).data<uint16_t>()[0]) -
                      half_to_float(weight(*base.weights().layers[0].router).data<uint16_t>()[0])),
            0.0);

  LlamaModel q = LlamaModel::load(data_dir("qwen3_moe_tiny"));
  const fs::path bad = exq::test::temp_dir("moe_lora_bad");
  const std::string dense = "base_model.model.model.layers.0.mlp.gate_proj";  // layer 0 is MoE
  std::ofstream(bad / "adapter_config.json") << cfg.dump();
  Tensor gb(DType::F32, {48, 2});
  io::write_safetensors(bad / "adapter_model.safetensors",
                        {{dense + ".lora_A.weight", a.view()}, {dense + ".lora_B.weight", gb.view()}});
  try {
    q.merge_lora(load_lora(bad));
    ADD_FAILURE() << "merged";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("model.layers.0.mlp.gate_proj.weight"), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace exq::model
