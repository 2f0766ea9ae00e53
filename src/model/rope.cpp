#include "model/rope.h"

#include <cmath>
#include <numbers>

namespace exq::model {

std::vector<float> rope_inv_freq(const io::ModelConfig& c) {
  const int64_t D = c.head_dim;
  std::vector<float> inv(static_cast<size_t>(D / 2));
  for (int64_t i = 0; i < D / 2; ++i) {
    // transformers: 1.0 / (base ** (arange(0, dim, 2).float() / dim)), all float32.
    const float e = static_cast<float>(2 * i) / static_cast<float>(D);
    const float p = static_cast<float>(std::pow(c.rope_theta, static_cast<double>(e)));
    inv[static_cast<size_t>(i)] = 1.0f / p;
  }
  const io::RopeScaling& rs = c.rope_scaling;
  if (rs.type == io::RopeScalingType::Linear) {
    for (float& f : inv) f = static_cast<float>(f / rs.factor);
  } else if (rs.type == io::RopeScalingType::Llama3) {
    // transformers' _compute_llama3_parameters: long wavelengths are divided by factor, short
    // ones kept, and the band between them interpolated.
    const double old_len = static_cast<double>(rs.original_max_position_embeddings);
    const double low_wavelen = old_len / rs.low_freq_factor;
    const double high_wavelen = old_len / rs.high_freq_factor;
    for (float& f : inv) {
      const double wavelen = 2.0 * std::numbers::pi / f;
      if (wavelen > low_wavelen) {
        f = static_cast<float>(f / rs.factor);
      } else if (wavelen >= high_wavelen) {
        const double smooth = (old_len / wavelen - rs.low_freq_factor) / (rs.high_freq_factor - rs.low_freq_factor);
        f = static_cast<float>((1.0 - smooth) * f / rs.factor + smooth * f);
      }
    }
  }
  return inv;
}

}  // namespace exq::model
