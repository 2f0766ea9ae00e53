// A small random Llama-shaped layer with biases for the CUDA engine tests (no model file).
#pragma once

#include <random>
#include <utility>

#include "core/half.h"
#include "core/tensor.h"
#include "io/hf_config.h"
#include "quant/module_forward.h"

namespace exq::quant::cuda::test {

// hidden 256, intermediate 640, 4/2 heads of 64; q/k/v and MLP biases, o_proj's when out_bias.
inline io::ModelConfig tiny_config(bool out_bias) {
  io::ModelConfig c;
  c.model_type = "llama";
  c.hidden_size = 256;
  c.intermediate_size = 640;
  c.num_hidden_layers = 1;
  c.num_attention_heads = 4;
  c.num_key_value_heads = 2;
  c.head_dim = 64;
  c.vocab_size = 1000;
  c.max_position_embeddings = 512;
  c.rms_norm_eps = 1e-5;
  c.rope_theta = 10000.0;
  c.attention_qkv_bias = true;
  c.attention_out_bias = out_bias;
  c.mlp_bias = true;
  return c;
}

// offset + scale * N(0, 1) from rng, rounded through fp16 when f16_exact.
inline Tensor random_tensor(Shape shape, std::mt19937& rng, float scale, float offset,
                            bool f16_exact) {
  Tensor t(DType::F32, std::move(shape));
  std::normal_distribution<float> dist(0.0f, 1.0f);
  for (float& v : t.span<float>()) {
    v = offset + scale * dist(rng);
    if (f16_exact) v = half_to_float(float_to_half(v));
  }
  return t;
}

// Norms and attention weights fp16-exact; biases and MLP weights too when all_f16. o_proj gets
// a bias when the config asks for one.
inline LayerF32 random_layer(const io::ModelConfig& c, uint32_t seed, bool all_f16) {
  std::mt19937 rng(seed);
  const int64_t h = c.hidden_size, q = c.q_dim(), kv = c.kv_dim(), in = c.intermediate_size;
  LayerF32 l;
  l.attn_norm = random_tensor({h}, rng, 0.1f, 1.0f, true);
  l.q = random_tensor({q, h}, rng, 0.06f, 0.0f, true);
  l.k = random_tensor({kv, h}, rng, 0.06f, 0.0f, true);
  l.v = random_tensor({kv, h}, rng, 0.06f, 0.0f, true);
  l.o = random_tensor({h, q}, rng, 0.06f, 0.0f, true);
  l.q_bias = random_tensor({q}, rng, 0.1f, 0.0f, all_f16);
  l.k_bias = random_tensor({kv}, rng, 0.1f, 0.0f, all_f16);
  l.v_bias = random_tensor({kv}, rng, 0.1f, 0.0f, all_f16);
  if (c.attention_out_bias) l.o_bias = random_tensor({h}, rng, 0.1f, 0.0f, all_f16);
  l.ffn_norm = random_tensor({h}, rng, 0.1f, 1.0f, true);
  l.gate = random_tensor({in, h}, rng, 0.06f, 0.0f, all_f16);
  l.up = random_tensor({in, h}, rng, 0.06f, 0.0f, all_f16);
  l.down = random_tensor({h, in}, rng, 0.04f, 0.0f, all_f16);
  l.gate_bias = random_tensor({in}, rng, 0.1f, 0.0f, all_f16);
  l.up_bias = random_tensor({in}, rng, 0.1f, 0.0f, all_f16);
  l.down_bias = random_tensor({h}, rng, 0.1f, 0.0f, all_f16);
  return l;
}

}  // namespace exq::quant::cuda::test
