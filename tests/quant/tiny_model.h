// A tiny random Llama (2 layers, hidden 128, untied head, so the head is quantized too) with
// SmolLM2's tokenizer files (needs EXQ_TEST_MODEL), for conversion tests that take seconds.
// Header-only: the test glob compiles only *_test.cpp.
#pragma once

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include <cmath>
#include <cstring>
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

// write_tiny_model(src)'s llama as phi3 in dst: q/k/v_proj stored as one qkv_proj and
// gate/up_proj as one gate_up_proj (rows in that order), model_type phi3; the same model.
inline void write_tiny_phi3(const fs::path& src, const fs::path& dst) {
  fs::create_directories(dst);
  auto cfg = nlohmann::json::parse(test::read_file(src / "config.json"));
  cfg["model_type"] = "phi3";
  cfg["architectures"] = {"Phi3ForCausalLM"};
  std::ofstream(dst / "config.json") << cfg.dump(2);
  for (const char* f : {"tokenizer.json", "tokenizer_config.json"}) fs::copy_file(src / f, dst / f);
  const io::SafetensorsModel files = io::SafetensorsModel::open(src);
  std::vector<Tensor> store;
  std::vector<io::NamedTensor> named;
  store.reserve(16);
  auto fuse = [&](const std::string& name, const std::vector<std::string>& parts) {
    int64_t rows = 0;
    for (const auto& p : parts) rows += files.get(p).dim(0);
    const TensorView first = files.get(parts[0]);
    Tensor t(first.dtype(), {rows, first.dim(1)});
    size_t at = 0;
    for (const auto& p : parts) {
      const TensorView v = files.get(p);
      std::memcpy(static_cast<char*>(t.raw()) + at, v.raw(), v.nbytes());
      at += v.nbytes();
    }
    store.push_back(std::move(t));
    named.push_back({name, store.back()});
  };
  for (const std::string& name : files.names()) {
    const size_t q = name.find("self_attn.q_proj.weight"), g = name.find("mlp.gate_proj.weight");
    if (q != std::string::npos) {
      const std::string p = name.substr(0, q) + "self_attn.";
      fuse(p + "qkv_proj.weight", {p + "q_proj.weight", p + "k_proj.weight", p + "v_proj.weight"});
    } else if (g != std::string::npos) {
      const std::string p = name.substr(0, g) + "mlp.";
      fuse(p + "gate_up_proj.weight", {p + "gate_proj.weight", p + "up_proj.weight"});
    } else if (name.find("k_proj.weight") == std::string::npos && name.find("v_proj.weight") == std::string::npos &&
               name.find("up_proj.weight") == std::string::npos) {
      named.push_back({name, files.get(name)});
    }
  }
  io::write_safetensors(dst / "model.safetensors", named);
}

}  // namespace exq::quant::test_models
