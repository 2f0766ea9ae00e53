// Tiny random Llama folders for the CUDA runtime tests: dense (F16 / BF16 / F32 weights, with
// or without biases, tied or untied head) or EXL2 (every linear and the head random packed
// layers of mixed bit widths, as exllamav2 stores them), written to a temp folder and loaded
// with model::LlamaModel::load. Plus comparison helpers shared by the tests.
#pragma once

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <random>
#include <string>
#include <vector>

#include "core/half.h"
#include "core/tensor.h"
#include "exl2_test_models.h"
#include "io/safetensors.h"
#include "test_support.h"

namespace exq::test {

struct TinyShape {
  int64_t hidden = 128, heads = 4, kv_heads = 2, head_dim = 32, inter = 256, vocab = 300, layers = 2;
};

struct TinySpec {
  DType dtype = DType::F16;  // dense weights
  bool exl2 = false;         // every linear and the head EXL2
  bool bias = false;         // attention_bias + mlp_bias
  bool tied = false;         // tie_word_embeddings (dense head only)
  bool qwen3 = false;        // model_type qwen3: q/k norms per head (attention_bias for bias)
  // model_type phi3 with longrope from 32 positions (long factors above); dense: q/k/v and
  // gate/up stored fused as qkv_proj and gate_up_proj. No biases.
  bool phi3 = false;
  double partial_rotary = 1.0;  // phi3: partial_rotary_factor (Phi-4-mini: 0.75)
  // Sliding-window attention of this many keys: phi3 on every layer, qwen3 from layer 1 on
  // (use_sliding_window, max_window_layers 1), else model_type mistral on every layer.
  int64_t window = 0;
  // 2: model_type gemma2 (attention softcap 20, logit softcap 15, query_pre_attn_scalar 0.75 x
  // head_dim, layer 0 windowed (window, default 6), layer 1 full); 3: gemma3_text (q/k norms,
  // the local rotary base 100 on layer 0, linear x2 on layer 1). Both: GeGLU, norms stored as
  // w and applied as 1 + w, four norms a layer, the embedding scaled by sqrt(hidden). No biases.
  int gemma = 0;
  // Mixture of experts when > 0: model_type mixtral (every layer), or qwen3_moe with qwen3 (layer
  // 1 dense: mlp_only_layers), of experts_per_token of `experts` SwiGLU experts of expert_inter
  // rows. EXL2: an expert's gate, up and down each take one option of the layer (one layout for
  // all experts, as conversions write), unless mixed_layouts gives every expert its own. No biases.
  int64_t experts = 0, experts_per_token = 2, expert_inter = 96;
  bool norm_topk = true;  // qwen3_moe's norm_topk_prob (mixtral always renormalizes)
  bool mixed_layouts = false;
  // model_type granite: embedding_multiplier 12, attention_multiplier 0.6 x head_dim^-0.5,
  // residual_multiplier 0.22, logits_scaling 8 (biases and tied head as the spec says).
  bool granite = false;
  uint32_t seed = 1;
  TinyShape shape;
};

inline nlohmann::json tiny_config(const TinySpec& s) {
  const TinyShape& t = s.shape;
  nlohmann::json c = {{"model_type", "llama"},
                      {"hidden_size", t.hidden},
                      {"intermediate_size", t.inter},
                      {"num_hidden_layers", t.layers},
                      {"num_attention_heads", t.heads},
                      {"num_key_value_heads", t.kv_heads},
                      {"head_dim", t.head_dim},
                      {"vocab_size", t.vocab},
                      {"rms_norm_eps", 1e-5},
                      {"rope_theta", 10000.0},
                      {"max_position_embeddings", 256},
                      {"tie_word_embeddings", s.tied && !s.exl2},
                      {"attention_bias", s.bias},
                      {"mlp_bias", s.bias}};
  if (s.exl2) c["quantization_config"] = {{"quant_method", "exl2"}, {"bits", 4.0}};
  if (s.experts > 0) {
    c.erase("mlp_bias");
    c.erase("attention_bias");
    c["num_experts_per_tok"] = s.experts_per_token;
    if (s.qwen3) {
      c["model_type"] = "qwen3_moe";
      c["num_experts"] = s.experts;
      c["moe_intermediate_size"] = s.expert_inter;
      c["norm_topk_prob"] = s.norm_topk;
      c["decoder_sparse_step"] = 1;
      c["mlp_only_layers"] = {1};
    } else {
      c["model_type"] = "mixtral";
      c["num_local_experts"] = s.experts;
      c["intermediate_size"] = s.expert_inter;
    }
    return c;
  }
  if (s.qwen3) {
    c["model_type"] = "qwen3";
    c.erase("mlp_bias");
  }
  if (s.granite) {
    c["model_type"] = "granite";
    c["embedding_multiplier"] = 12.0;
    c["attention_multiplier"] = 0.6 / std::sqrt(static_cast<double>(t.head_dim));
    c["residual_multiplier"] = 0.22;
    c["logits_scaling"] = 8.0;
  }
  if (s.phi3) {
    c["model_type"] = "phi3";
    c.erase("mlp_bias");
    c.erase("attention_bias");
    c["original_max_position_embeddings"] = 32;
    c["partial_rotary_factor"] = s.partial_rotary;
    std::vector<double> sf, lf;
    const auto rot = static_cast<int64_t>(static_cast<double>(t.head_dim) * s.partial_rotary);
    for (int64_t i = 0; i < rot / 2; ++i) {
      sf.push_back(1.0 + 0.05 * static_cast<double>(i % 7));
      lf.push_back(1.0 + 0.9 * static_cast<double>(i % 5));
    }
    c["rope_scaling"] = {{"type", "longrope"}, {"short_factor", sf}, {"long_factor", lf}};
  }
  if (s.gemma > 0) {
    c["model_type"] = s.gemma == 2 ? "gemma2" : "gemma3_text";
    c.erase("mlp_bias");
    c["hidden_activation"] = "gelu_pytorch_tanh";
    c["query_pre_attn_scalar"] = s.gemma == 2 ? 0.75 * static_cast<double>(t.head_dim) : static_cast<double>(t.head_dim);
    c["sliding_window"] = s.window > 0 ? s.window : 6;
    if (s.gemma == 2) {
      c["attn_logit_softcapping"] = 20.0;
      c["final_logit_softcapping"] = 15.0;
    } else {
      c["sliding_window_pattern"] = 2;
      c["rope_local_base_freq"] = 100.0;
      c["rope_scaling"] = {{"rope_type", "linear"}, {"factor", 2.0}};
    }
    return c;
  }
  if (s.window > 0) {
    c["sliding_window"] = s.window;
    if (s.qwen3) {
      c["use_sliding_window"] = true;
      c["max_window_layers"] = 1;
    } else if (!s.phi3) {
      c["model_type"] = "mistral";
    }
  }
  return c;
}

// Writes the folder and returns it.
inline std::filesystem::path write_tiny_llama(const std::filesystem::path& dir, const TinySpec& s) {
  const TinyShape& t = s.shape;
  std::mt19937 rng(s.seed);
  std::map<std::string, Tensor> tensors, twin;
  auto add = [&](const std::string& name, Shape shape, float mean, float sd, DType dtype) {
    std::normal_distribution<float> nd(mean, sd);
    Tensor x(dtype, shape);
    for (int64_t i = 0; i < x.numel(); ++i) {
      const float v = nd(rng);
      if (dtype == DType::F16) x.data<uint16_t>()[i] = float_to_half(v);
      else if (dtype == DType::BF16) x.data<uint16_t>()[i] = float_to_bf16(v);
      else x.data<float>()[i] = v;
    }
    tensors[name] = std::move(x);
  };
  const DType dt = s.exl2 ? DType::F16 : s.dtype;
  // MoE: a residual led by the (exact) embedding keeps the router's input within ~1e-4 of the
  // CPU's, so that rounding seldom swaps two experts of nearly equal probability.
  add("model.embed_tokens.weight", {t.vocab, t.hidden}, 0.0f, s.experts > 0 ? 10.0f : 1.0f, dt);
  const float one = s.gemma > 0 ? 0.0f : 1.0f;  // gemma multiplies by 1 + w
  add("model.norm.weight", {t.hidden}, one, 0.1f, dt);
  if (!s.tied || s.exl2) add("lm_head.weight", {t.vocab, t.hidden}, 0.0f, 0.2f, dt);
  const int64_t qd = t.heads * t.head_dim, kvd = t.kv_heads * t.head_dim;
  const std::vector<std::vector<int>> widths = {{4}, {8, 4}, {6, 3}, {5, 2}, {4, 4, 3}};
  uint32_t wseed = s.seed * 100;
  for (int64_t l = 0; l < t.layers; ++l) {
    const std::string p = "model.layers." + std::to_string(l) + ".";
    // Random EXL2 codes make large weights (RMS up to ~1 at 8 bits): small norm weights keep
    // attention scores moderate, else softmax is near-argmax and rounding flips it.
    const float norm = s.exl2 ? 0.15f : 1.0f;
    add(p + "input_layernorm.weight", {t.hidden}, norm - 1.0f + one, 0.1f * norm, dt);
    add(p + "post_attention_layernorm.weight", {t.hidden}, norm - 1.0f + one, 0.1f * norm, dt);
    if (s.gemma > 0) {
      add(p + "pre_feedforward_layernorm.weight", {t.hidden}, norm - 1.0f, 0.1f * norm, dt);
      add(p + "post_feedforward_layernorm.weight", {t.hidden}, -0.5f, 0.1f, dt);
    }
    if (s.qwen3 || s.gemma == 3) {
      add(p + "self_attn.q_norm.weight", {t.head_dim}, one, 0.2f, dt);
      add(p + "self_attn.k_norm.weight", {t.head_dim}, one, 0.2f, dt);
    }
    const std::pair<const char*, Shape> lin[] = {
        {"self_attn.q_proj", {qd, t.hidden}}, {"self_attn.k_proj", {kvd, t.hidden}},
        {"self_attn.v_proj", {kvd, t.hidden}}, {"self_attn.o_proj", {t.hidden, qd}},
        {"mlp.gate_proj", {t.inter, t.hidden}}, {"mlp.up_proj", {t.inter, t.hidden}},
        {"mlp.down_proj", {t.hidden, t.inter}}};
    const bool moe = s.experts > 0 && !(s.qwen3 && l == 1);
    const int64_t inter = s.experts > 0 && !s.qwen3 ? s.expert_inter : t.inter;
    if (moe) {
      const std::string b = p + (s.qwen3 ? "mlp." : "block_sparse_moe.");
      const float rsd = 2.0f / (norm * std::sqrt(static_cast<float>(t.hidden)));  // logits of sd ~2
      add(b + "gate.weight", {s.experts, t.hidden}, 0.0f, rsd, dt);
      const char* parts[3] = {s.qwen3 ? "gate_proj" : "w1", s.qwen3 ? "up_proj" : "w3", s.qwen3 ? "down_proj" : "w2"};
      const uint32_t layer_seed = wseed;
      wseed += 3;
      for (int64_t e = 0; e < s.experts; ++e)
        for (uint32_t j = 0; j < 3; ++j) {
          const std::string key = b + "experts." + std::to_string(e) + "." + parts[j];
          const Shape shape = j < 2 ? Shape{s.expert_inter, t.hidden} : Shape{t.hidden, s.expert_inter};
          add(key + ".weight", shape, 0.0f, 1.0f / std::sqrt(static_cast<float>(shape[1])), dt);
          const uint32_t option = s.mixed_layouts ? layer_seed + j + static_cast<uint32_t>(e) : layer_seed + j;
          if (s.exl2)
            exl2ify(tensors, twin, key, widths[option % widths.size()],
                    layer_seed * 1000 + static_cast<uint32_t>(e) * 3 + j);
        }
    }
    for (const auto& [name, shape0] : lin) {
      if (moe && std::string(name).starts_with("mlp")) continue;
      Shape shape = shape0;
      if (std::string(name) == "mlp.down_proj") shape[1] = inter;
      if (std::string(name).starts_with("mlp") && std::string(name) != "mlp.down_proj") shape[0] = inter;
      const float sd = 1.0f / std::sqrt(static_cast<float>(shape[1]));
      add(p + name + ".weight", shape, 0.0f, sd, dt);
      // EXL2 biases are f16, as exllamav2 writes them.
      if (s.bias && !(s.qwen3 && std::string(name).starts_with("mlp")))
        add(p + name + ".bias", {shape[0]}, 0.0f, 0.1f, s.exl2 ? DType::F16 : dt);
      if (s.exl2) {
        exl2ify(tensors, twin, p + name, widths[wseed % widths.size()], wseed);
        ++wseed;
      }
    }
  }
  if (s.exl2) exl2ify(tensors, twin, "lm_head", {6, 4}, wseed);
  if (s.phi3 && !s.exl2)
    for (int64_t l = 0; l < t.layers; ++l) {
      const std::string p = "model.layers." + std::to_string(l) + ".";
      auto fuse = [&](const std::string& name, const std::vector<std::string>& parts) {
        int64_t rows = 0;
        for (const auto& part : parts) rows += tensors[p + part].dim(0);
        Tensor f(dt, {rows, tensors[p + parts[0]].dim(1)});
        size_t at = 0;
        for (const auto& part : parts) {
          const Tensor& x = tensors[p + part];
          std::memcpy(static_cast<char*>(f.raw()) + at, x.raw(), x.nbytes());
          at += x.nbytes();
          tensors.erase(p + part);
        }
        tensors[p + name] = std::move(f);
      };
      fuse("self_attn.qkv_proj.weight", {"self_attn.q_proj.weight", "self_attn.k_proj.weight", "self_attn.v_proj.weight"});
      fuse("mlp.gate_up_proj.weight", {"mlp.gate_proj.weight", "mlp.up_proj.weight"});
    }
  std::filesystem::create_directories(dir);
  std::ofstream(dir / "config.json") << tiny_config(s).dump(1);
  std::vector<io::NamedTensor> list;
  for (const auto& [name, x] : tensors) list.push_back({name, x.view()});
  io::write_safetensors(dir / "model.safetensors", list);
  return dir;
}

// max |a - b| over max |b| of two F32 tensors of one shape.
inline double rel_max_abs(const Tensor& a, const Tensor& b) {
  EXPECT_EQ(a.shape(), b.shape());
  const auto x = a.span<const float>(), y = b.span<const float>();
  double diff = 0.0, mag = 0.0;
  for (size_t i = 0; i < std::min(x.size(), y.size()); ++i) {
    const double d = std::fabs(static_cast<double>(x[i]) - y[i]);
    diff = std::isnan(d) ? INFINITY : std::max(diff, d);
    mag = std::max(mag, std::fabs(static_cast<double>(y[i])));
  }
  return mag > 0 ? diff / mag : diff;
}

inline int32_t argmax_row(const Tensor& logits, int64_t row = 0) {
  const int64_t v = logits.dim(-1);
  const float* p = logits.data<float>() + row * v;
  return static_cast<int32_t>(std::max_element(p, p + v) - p);
}

inline bool bit_equal(const Tensor& a, const Tensor& b) {
  return a.shape() == b.shape() && a.dtype() == b.dtype() &&
         std::memcmp(a.view().raw(), b.view().raw(), a.nbytes()) == 0;
}

}  // namespace exq::test
