// A tiny random Llama (2 layers, hidden 128, untied head, so the head is quantized too) with
// SmolLM2's tokenizer files (needs EXQ_TEST_MODEL), for conversion tests that take seconds.
// Header-only: the test glob compiles only *_test.cpp.
#pragma once

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <random>
#include <string>
#include <vector>

#include "core/half.h"
#include "core/tensor.h"
#include "io/safetensors.h"
#include "test_support.h"

namespace exq::quant::test_models {
namespace fs = std::filesystem;

// qwen3: model_type qwen3 with per-head q/k norm weights.
inline void write_tiny_model(const fs::path& dir, bool qwen3 = false) {
  fs::create_directories(dir);
  const int64_t hidden = 128, inter = 256, layers = 2, heads = 4, kv = 2, hd = 32, vocab = 49152;
  std::ofstream(dir / "config.json") << nlohmann::json{
      {"architectures", {qwen3 ? "Qwen3ForCausalLM" : "LlamaForCausalLM"}},
      {"model_type", qwen3 ? "qwen3" : "llama"}, {"hidden_size", hidden},
      {"intermediate_size", inter}, {"num_hidden_layers", layers}, {"num_attention_heads", heads},
      {"num_key_value_heads", kv}, {"head_dim", hd}, {"rms_norm_eps", 1e-5},
      {"rope_theta", 10000.0}, {"max_position_embeddings", 2048}, {"vocab_size", vocab},
      {"tie_word_embeddings", false}, {"bos_token_id", 1}, {"eos_token_id", 2},
      {"torch_dtype", "float16"}}.dump(2);
  for (const char* f : {"tokenizer.json", "tokenizer_config.json"})
    fs::copy_file(test::test_model() / f, dir / f);
  std::mt19937 rng(1234);
  std::vector<Tensor> store;
  std::vector<io::NamedTensor> named;
  auto add = [&](const std::string& name, Shape shape, float scale, bool ones = false) {
    Tensor t(DType::F16, shape);
    std::uniform_real_distribution<float> u(-scale, scale);
    for (auto& v : t.span<uint16_t>()) v = float_to_half(ones ? 1.0f + u(rng) * 0.1f : u(rng));
    store.push_back(std::move(t));
    named.push_back({name, store.back()});
  };
  store.reserve(64);
  add("model.embed_tokens.weight", {vocab, hidden}, 1.0f);
  for (int64_t l = 0; l < layers; ++l) {
    const std::string p = fmt::format("model.layers.{}.", l);
    add(p + "input_layernorm.weight", {hidden}, 1.0f, true);
    add(p + "post_attention_layernorm.weight", {hidden}, 1.0f, true);
    const float s = 1.7f / std::sqrt(static_cast<float>(hidden));
    add(p + "self_attn.q_proj.weight", {heads * hd, hidden}, s);
    add(p + "self_attn.k_proj.weight", {kv * hd, hidden}, s);
    add(p + "self_attn.v_proj.weight", {kv * hd, hidden}, s);
    add(p + "self_attn.o_proj.weight", {hidden, heads * hd}, s);
    if (qwen3) {
      add(p + "self_attn.q_norm.weight", {hd}, 1.0f, true);
      add(p + "self_attn.k_norm.weight", {hd}, 1.0f, true);
    }
    add(p + "mlp.gate_proj.weight", {inter, hidden}, s);
    add(p + "mlp.up_proj.weight", {inter, hidden}, s);
    add(p + "mlp.down_proj.weight", {hidden, inter}, 1.7f / std::sqrt(static_cast<float>(inter)));
  }
  add("model.norm.weight", {hidden}, 1.0f, true);
  add("lm_head.weight", {vocab, hidden}, 0.15f);
  io::write_safetensors(dir / "model.safetensors", named);
}

}  // namespace exq::quant::test_models
