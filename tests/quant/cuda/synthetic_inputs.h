// The inputs the CUDA engine's synthetic tests share (cuda_engine_synthetic_test.cpp,
// cuda_engine_forward_test.cpp): synthetic_layer.h's layer with o_proj's bias, calibration
// states of T = 77 (not a multiple of the kernels' tiles) and a few rows of each option table.
#pragma once

#include <cstddef>
#include <cstdint>
#include <random>
#include <utility>

#include "core/tensor.h"
#include "io/hf_config.h"
#include "quant/measure.h"
#include "quant/module_forward.h"
#include "quant/options.h"
#include "synthetic_layer.h"

namespace exq::quant::cuda::test::synthetic {

constexpr int64_t kRows = 3, kTokens = 77;

inline io::ModelConfig tiny_config() { return test::tiny_config(/*out_bias=*/true); }

inline Tensor random(Shape shape, std::mt19937& rng, float scale, float offset, bool f16_exact) {
  return test::random_tensor(std::move(shape), rng, scale, offset, f16_exact);
}

inline LayerF32 random_layer(const io::ModelConfig& c, uint32_t seed) {
  return test::random_layer(c, seed, /*all_f16=*/false);
}

// Calibration states [kRows, kTokens, hidden] ~ N(0, 1) from `seed`.
inline Tensor random_states(const io::ModelConfig& c, uint32_t seed) {
  std::mt19937 rng(seed);
  return random({kRows, kTokens, c.hidden_size}, rng, 1.0f, 0.0f, false);
}

inline MeasureOptions some_rows() {
  MeasureOptions o;
  for (size_t i : {0, 2, 3, 9, 12, 18}) o.attn_table.push_back(attn_option_table()[i]);
  for (size_t i : {0, 2, 3, 5, 6, 16}) o.mlp_table.push_back(mlp_option_table()[i]);
  return o;
}

}  // namespace exq::quant::cuda::test::synthetic
