// Small Llama-shaped configs and seeded normal tensors for tests that need no model file.
#pragma once

#include <cstdint>
#include <random>
#include <utility>

#include "core/tensor.h"
#include "io/hf_config.h"

namespace exq::test {

// vocab 1000, 1024 positions, eps 1e-5, rope theta 10000, one layer, no biases.
inline io::ModelConfig tiny_llama_config(int64_t hidden, int64_t intermediate, int64_t heads,
                                         int64_t kv_heads, int64_t head_dim) {
  io::ModelConfig c;
  c.model_type = "llama";
  c.hidden_size = hidden;
  c.intermediate_size = intermediate;
  c.num_hidden_layers = 1;
  c.num_attention_heads = heads;
  c.num_key_value_heads = kv_heads;
  c.head_dim = head_dim;
  c.vocab_size = 1000;
  c.max_position_embeddings = 1024;
  c.rms_norm_eps = 1e-5;
  c.rope_theta = 10000.0;
  return c;
}

// F32 tensor of offset + N(0, sd) draws from mt19937(seed), in element order.
inline Tensor random_normal(Shape shape, float sd, uint32_t seed, float offset = 0.0f) {
  Tensor t(DType::F32, std::move(shape));
  std::mt19937 rng(seed);
  std::normal_distribution<float> nd(0.0f, sd);
  for (float& v : t.span<float>()) v = offset + nd(rng);
  return t;
}

}  // namespace exq::test
