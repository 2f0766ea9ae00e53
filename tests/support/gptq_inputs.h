// Calibration-like GPTQ inputs shared by the CPU and CUDA GPTQ tests.
#pragma once

#include <cmath>
#include <cstdint>
#include <random>
#include <vector>

namespace exq::test {

// Inputs [tokens, in]: channels of very different magnitudes driven by a few shared factors
// (strongly correlated, as real activations are) plus noise.
inline std::vector<float> make_inputs(int64_t tokens, int64_t in, uint32_t seed) {
  constexpr int64_t kFactors = 24;
  std::mt19937 rng(seed);
  std::normal_distribution<float> nd(0.0f, 1.0f);
  std::vector<float> mix(static_cast<size_t>(kFactors * in));
  for (auto& v : mix) v = nd(rng);
  std::vector<float> gain(static_cast<size_t>(in));
  for (auto& g : gain) g = std::exp(nd(rng));
  std::vector<float> x(static_cast<size_t>(tokens * in));
  float z[kFactors];
  for (int64_t t = 0; t < tokens; ++t) {
    for (auto& v : z) v = nd(rng);
    for (int64_t i = 0; i < in; ++i) {
      float s = 0.3f * nd(rng);
      for (int64_t k = 0; k < kFactors; ++k) s += mix[k * in + i] * z[k];
      x[t * in + i] = gain[i] * s;
    }
  }
  return x;
}

}  // namespace exq::test
