// import-gguf of mixtures of experts: llama files with experts (Mixtral) and qwen3moe files,
// written here from the tiny golden models' own fp16 weights the way llama.cpp's converter lays
// them out (a layer's experts as one 3-D tensor, or one tensor each as older Mixtral files have
// them; llama's q/k rows interleaved), must import to the same tensors, byte for byte, and a
// config that reads as the same model.
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <cstring>
#include <fstream>
#include <regex>

#include "core/error.h"
#include "gguf_builder.h"
#include "io/gguf_import.h"
#include "io/hf_config.h"
#include "io/safetensors.h"
#include "test_support.h"

namespace exq::io {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;
using test::GgufBuilder;

fs::path model_data(const char* name) { return fs::path(EXQ_SOURCE_DIR) / "tests" / "model" / "data" / name; }

std::string bytes_of(const TensorView& t) { return std::string(static_cast<const char*>(t.raw()), t.nbytes()); }

// HF rows [H, 2, D] -> llama.cpp's [H, D, 2] (the inverse of the import's unpermute).
std::string gguf_row_order(const std::string& data, int64_t heads, size_t row_bytes) {
  const int64_t rows = static_cast<int64_t>(data.size() / row_bytes), d = rows / heads / 2;
  std::string out(data.size(), '\0');
  for (int64_t h = 0; h < heads; ++h)
    for (int64_t i = 0; i < 2; ++i)
      for (int64_t k = 0; k < d; ++k)
        out.replace(static_cast<size_t>(h * 2 * d + k * 2 + i) * row_bytes, row_bytes, data,
                    static_cast<size_t>(h * 2 * d + i * d + k) * row_bytes, row_bytes);
  return out;
}

// The GGUF of a tiny golden model. arch "llama" (mixtral_tiny; layer 0's experts stacked, layer
// 1's one tensor each), "qwen3moe" (qwen3_moe_tiny; stacked; its dense layer 1 as plain ffn_*) or
// "granitemoe" (granitemoe_tiny: its fused experts as llama.cpp splits them, stacked gate, up and
// down; the scalars; a tied head).
std::string gguf_of(const char* model, const std::string& arch) {
  const ModelConfig c = load_model_config(model_data(model));
  const SafetensorsModel st = SafetensorsModel::open(model_data(model));
  GgufBuilder b;
  const std::string a = arch + ".";
  b.kv_str("general.architecture", arch);
  b.kv<uint32_t>(a + "block_count", GgufBuilder::U32, static_cast<uint32_t>(c.num_hidden_layers));
  b.kv<uint32_t>(a + "context_length", GgufBuilder::U32, static_cast<uint32_t>(c.max_position_embeddings));
  b.kv<uint32_t>(a + "embedding_length", GgufBuilder::U32, static_cast<uint32_t>(c.hidden_size));
  b.kv<uint32_t>(a + "feed_forward_length", GgufBuilder::U32, static_cast<uint32_t>(c.intermediate_size));
  b.kv<uint32_t>(a + "attention.head_count", GgufBuilder::U32, static_cast<uint32_t>(c.num_attention_heads));
  b.kv<uint32_t>(a + "attention.head_count_kv", GgufBuilder::U32, static_cast<uint32_t>(c.num_key_value_heads));
  b.kv<uint32_t>(a + "attention.key_length", GgufBuilder::U32, static_cast<uint32_t>(c.head_dim));
  b.kv<float>(a + "rope.freq_base", GgufBuilder::F32, static_cast<float>(c.rope_theta));
  b.kv<float>(a + "attention.layer_norm_rms_epsilon", GgufBuilder::F32, static_cast<float>(c.rms_norm_eps));
  b.kv<uint32_t>(a + "vocab_size", GgufBuilder::U32, static_cast<uint32_t>(c.vocab_size));
  b.kv<uint32_t>(a + "expert_count", GgufBuilder::U32, static_cast<uint32_t>(c.num_experts));
  b.kv<uint32_t>(a + "expert_used_count", GgufBuilder::U32, static_cast<uint32_t>(c.experts_per_token));
  if (arch == "qwen3moe")
    b.kv<uint32_t>(a + "expert_feed_forward_length", GgufBuilder::U32, static_cast<uint32_t>(c.expert_intermediate));
  if (arch == "granitemoe") {
    b.kv<float>(a + "embedding_scale", GgufBuilder::F32, static_cast<float>(c.embedding_multiplier));
    b.kv<float>(a + "residual_scale", GgufBuilder::F32, static_cast<float>(c.residual_multiplier));
    b.kv<float>(a + "logit_scale", GgufBuilder::F32, static_cast<float>(c.logits_scaling));
    b.kv<float>(a + "attention.scale", GgufBuilder::F32, static_cast<float>(c.attention_multiplier));
  }
  b.kv_str("tokenizer.ggml.model", "gpt2");
  b.kv_str("tokenizer.ggml.pre", "smollm");
  b.kv_strs("tokenizer.ggml.tokens", {"<|endoftext|>", "a", "b", "ab"});
  b.kv_i32s("tokenizer.ggml.token_type", {3, 1, 1, 1});
  b.kv_strs("tokenizer.ggml.merges", {"a b"});
  auto put = [&](const std::string& name, const TensorView& t, std::string data = {}) {
    std::vector<uint64_t> dims;
    for (auto it = t.shape().rbegin(); it != t.shape().rend(); ++it) dims.push_back(static_cast<uint64_t>(*it));
    b.tensor(name, dims, 1, data.empty() ? bytes_of(t) : data);
  };
  put("token_embd.weight", st.get("model.embed_tokens.weight"));
  put("output_norm.weight", st.get("model.norm.weight"));
  if (st.contains("lm_head.weight")) put("output.weight", st.get("lm_head.weight"));
  const bool mixtral_names = arch != "qwen3moe", permuted = arch != "qwen3moe";
  const char* moe = mixtral_names ? "block_sparse_moe" : "mlp";
  const char* parts[3][2] = {{"gate", mixtral_names ? "w1" : "gate_proj"},
                             {"up", mixtral_names ? "w3" : "up_proj"},
                             {"down", mixtral_names ? "w2" : "down_proj"}};
  for (int64_t l = 0; l < c.num_hidden_layers; ++l) {
    const std::string p = fmt::format("model.layers.{}.", l), g = fmt::format("blk.{}.", l);
    for (const auto& [from, to] : {std::pair{"input_layernorm", "attn_norm"}, std::pair{"post_attention_layernorm", "ffn_norm"},
                                   std::pair{"self_attn.v_proj", "attn_v"}, std::pair{"self_attn.o_proj", "attn_output"}})
      put(g + to + ".weight", st.get(p + from + ".weight"));
    for (const auto& [from, to, heads] : {std::tuple{"q", "attn_q", c.num_attention_heads}, std::tuple{"k", "attn_k", c.num_key_value_heads}}) {
      const TensorView w = st.get(p + "self_attn." + from + "_proj.weight");
      put(g + to + ".weight", w,
          permuted ? gguf_row_order(bytes_of(w), heads, static_cast<size_t>(w.dim(1)) * 2) : bytes_of(w));
      if (c.qk_norm) put(g + to + "_norm.weight", st.get(p + "self_attn." + from + "_norm.weight"));
    }
    if (!c.moe_layer(l)) {
      for (const auto& part : parts) put(g + "ffn_" + part[0] + ".weight", st.get(p + "mlp." + part[0] + "_proj.weight"));
      continue;
    }
    put(g + "ffn_gate_inp.weight", st.get(p + moe + ".gate.weight"));
    for (const auto& part : parts) {
      std::string stacked;
      TensorView one;
      for (int64_t e = 0; e < c.num_experts; ++e) {
        one = st.get(fmt::format("{}{}.experts.{}.{}.weight", p, moe, e, part[1]));
        if (arch == "llama" && l == 1) put(fmt::format("{}ffn_{}.{}.weight", g, part[0], e), one);
        stacked += bytes_of(one);
      }
      if (arch == "llama" && l == 1) continue;
      b.tensor(g + "ffn_" + part[0] + "_exps.weight",
               {static_cast<uint64_t>(one.dim(1)), static_cast<uint64_t>(one.dim(0)), static_cast<uint64_t>(c.num_experts)},
               1, stacked);
    }
  }
  return b.build();
}

// Every tensor of the tiny model, under the same name with the same bytes.
void expect_same_tensors(const fs::path& imported, const char* model) {
  const SafetensorsModel out = SafetensorsModel::open(imported);
  const SafetensorsModel ref = SafetensorsModel::open(model_data(model));
  EXPECT_EQ(out.names().size(), ref.names().size());
  for (const std::string& name : ref.names()) {
    ASSERT_TRUE(out.contains(name)) << name;
    EXPECT_EQ(out.get(name).shape(), ref.get(name).shape()) << name;
    EXPECT_EQ(bytes_of(out.get(name)), bytes_of(ref.get(name))) << name;
  }
}

TEST(GgufMoe, MixtralImportsToTheSameModel) {
  const fs::path dir = test::temp_dir("gguf_mixtral");
  std::ofstream(dir / "m.gguf", std::ios::binary) << gguf_of("mixtral_tiny", "llama");
  import_gguf(dir / "m.gguf", dir / "out");
  const json cfg = json::parse(test::read_file(dir / "out" / "config.json"));
  EXPECT_EQ(cfg["model_type"], "mixtral");
  EXPECT_EQ(cfg["architectures"], json::array({"MixtralForCausalLM"}));
  EXPECT_EQ(cfg["num_local_experts"], 4);
  EXPECT_EQ(cfg["num_experts_per_tok"], 2);
  expect_same_tensors(dir / "out", "mixtral_tiny");
  const ModelConfig c = load_model_config(dir / "out"), ref = load_model_config(model_data("mixtral_tiny"));
  EXPECT_EQ(c.expert_intermediate, ref.expert_intermediate);
  EXPECT_EQ(c.head_dim, ref.head_dim);
  EXPECT_EQ(c.rope_theta, ref.rope_theta);
  EXPECT_EQ(c.rms_norm_eps, ref.rms_norm_eps);
  EXPECT_EQ(gguf_to_hf_name("blk.3.ffn_down_exps.weight"), "model.layers.3.block_sparse_moe.experts.*.w2.weight");
  EXPECT_EQ(gguf_to_hf_name("blk.3.ffn_up.5.weight", "qwen3moe"), "model.layers.3.mlp.experts.5.up_proj.weight");
  EXPECT_EQ(gguf_to_hf_name("blk.0.ffn_gate_inp.weight", "qwen3moe"), "model.layers.0.mlp.gate.weight");
}

TEST(GgufMoe, Qwen3MoeImportsToTheSameModel) {
  const fs::path dir = test::temp_dir("gguf_qwen3moe");
  std::ofstream(dir / "q.gguf", std::ios::binary) << gguf_of("qwen3_moe_tiny", "qwen3moe");
  const GgufFile g = GgufFile::open(dir / "q.gguf");
  const auto summary = gguf_summary(g);
  EXPECT_EQ(summary["problems"], json::array());
  EXPECT_EQ(summary["config"]["model_type"], "qwen3_moe");
  EXPECT_EQ(summary["config"]["num_experts"], 6);
  EXPECT_EQ(summary["config"]["num_experts_per_tok"], 3);
  import_gguf(dir / "q.gguf", dir / "out");
  const ModelConfig c = load_model_config(dir / "out");
  EXPECT_EQ(c.model_type, "qwen3_moe");
  EXPECT_EQ(c.num_experts, 6);
  EXPECT_EQ(c.expert_intermediate, 24);
  EXPECT_TRUE(c.norm_topk_prob);
  EXPECT_EQ(c.layer_moe, (std::vector<uint8_t>{1, 0, 1}));  // layer 1 has no router: dense
  EXPECT_TRUE(c.qk_norm);
  expect_same_tensors(dir / "out", "qwen3_moe_tiny");
}

// granitemoe: llama.cpp's stacked gate and up become transformers' fused input_linear (down:
// output_linear, the router: router.layer), which read back as the same per-expert tensors; the
// scalars under transformers' names; a folder transformers loads (GraniteMoeForCausalLM).
TEST(GgufMoe, GraniteMoeImportsToTheSameModel) {
  const fs::path dir = test::temp_dir("gguf_granitemoe");
  std::ofstream(dir / "g.gguf", std::ios::binary) << gguf_of("granitemoe_tiny", "granitemoe");
  const GgufFile g = GgufFile::open(dir / "g.gguf");
  EXPECT_EQ(gguf_summary(g)["problems"], json::array());
  import_gguf(dir / "g.gguf", dir / "out");
  const json cfg = json::parse(test::read_file(dir / "out" / "config.json"));
  EXPECT_EQ(cfg["model_type"], "granitemoe");
  EXPECT_EQ(cfg["architectures"], json::array({"GraniteMoeForCausalLM"}));
  EXPECT_EQ(cfg["num_local_experts"], 5);
  EXPECT_EQ(cfg["residual_multiplier"], 0.22);
  EXPECT_EQ(cfg["tie_word_embeddings"], true);
  const SafetensorsFile raw = SafetensorsFile::open(dir / "out" / "model.safetensors");
  EXPECT_EQ(raw.get("model.layers.1.block_sparse_moe.input_linear.weight").shape(), (Shape{5, 96, 64}));
  EXPECT_EQ(raw.get("model.layers.1.block_sparse_moe.output_linear.weight").shape(), (Shape{5, 64, 48}));
  EXPECT_TRUE(raw.contains("model.layers.0.block_sparse_moe.router.layer.weight"));
  expect_same_tensors(dir / "out", "granitemoe_tiny");
  const ModelConfig c = load_model_config(dir / "out"), ref = load_model_config(model_data("granitemoe_tiny"));
  EXPECT_EQ(c.num_experts, ref.num_experts);
  EXPECT_EQ(c.experts_per_token, ref.experts_per_token);
  EXPECT_EQ(c.expert_intermediate, ref.expert_intermediate);
  EXPECT_EQ(c.embedding_multiplier, ref.embedding_multiplier);
  EXPECT_EQ(c.logits_scaling, ref.logits_scaling);
  EXPECT_EQ(c.attention_scale(), ref.attention_scale());
}

TEST(GgufMoe, RefusesExpertsWithoutTheirCounts) {
  const fs::path dir = test::temp_dir("gguf_moe_bad");
  std::string bytes = gguf_of("qwen3_moe_tiny", "qwen3moe");
  // Rename the key so the file has no expert_used_count (same length keeps the layout).
  const std::string key = "qwen3moe.expert_used_count", other = "qwen3moe.expert_used_cnnnt";
  bytes.replace(bytes.find(key), key.size(), other);
  std::ofstream(dir / "q.gguf", std::ios::binary) << bytes;
  try {
    import_gguf(dir / "q.gguf", dir / "out");
    ADD_FAILURE() << "imported";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("expert_used_count"), std::string::npos) << e.what();
  }
  EXPECT_FALSE(fs::exists(dir / "out" / "config.json"));
}

}  // namespace
}  // namespace exq::io
