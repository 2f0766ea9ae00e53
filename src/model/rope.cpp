#include "model/rope.h"

#include <algorithm>
#include <cmath>
#include <numbers>

#include "core/error.h"

namespace exq::model {
namespace {

// base^(2i / dim): transformers' float32 exponent, the power rounded to float32.
float pos_freq(const io::ModelConfig& c, int64_t i) {
  const float e = static_cast<float>(2 * i) / static_cast<float>(c.rope_dim());
  return static_cast<float>(std::pow(c.rope_theta, static_cast<double>(e)));
}

// transformers' find_correction_dim: the dimension whose wavelength turns `rotations` times
// over the trained context.
double yarn_correction_dim(double rotations, int64_t dim, double base, double context) {
  return static_cast<double>(dim) * std::log(context / (rotations * 2.0 * std::numbers::pi)) / (2.0 * std::log(base));
}

double yarn_mscale(double scale, double mscale) {
  return scale <= 1.0 ? 1.0 : 0.1 * mscale * std::log(scale) + 1.0;
}

// YaRN (transformers' _compute_yarn_parameters, with the factor as given): high frequencies
// kept (extrapolated), low ones divided by factor (interpolated), a linear ramp between the
// correction dimensions of beta_fast and beta_slow rotations. Float32 like torch.
void apply_yarn(std::vector<float>& inv, const io::ModelConfig& c) {
  const io::RopeScaling& rs = c.rope_scaling;
  const int64_t dim = c.rope_dim(), half = dim / 2;
  const double ctx = static_cast<double>(rs.original_max_position_embeddings);
  double low = yarn_correction_dim(rs.beta_fast, dim, c.rope_theta, ctx);
  double high = yarn_correction_dim(rs.beta_slow, dim, c.rope_theta, ctx);
  if (rs.truncate) {
    low = std::floor(low);
    high = std::ceil(high);
  }
  low = std::max(low, 0.0);
  high = std::min(high, static_cast<double>(dim - 1));
  const float lo = static_cast<float>(low);
  float hi = static_cast<float>(high);
  if (lo == hi) hi += 0.001f;  // transformers: prevents a division by zero
  const float factor = static_cast<float>(rs.factor);
  for (int64_t i = 0; i < half; ++i) {
    float& f = inv[static_cast<size_t>(i)];
    const float extrapolated = f;
    const float interpolated = 1.0f / (factor * pos_freq(c, i));
    const float ramp = std::clamp((static_cast<float>(i) - lo) / (hi - lo), 0.0f, 1.0f);
    const float keep = 1.0f - ramp;
    f = interpolated * (1.0f - keep) + extrapolated * keep;
  }
}

}  // namespace

void check_rope(const io::ModelConfig& c) {
  const io::RopeScaling& rs = c.rope_scaling;
  EXQ_CHECK(std::isfinite(c.rope_theta) && c.rope_theta > 1.0 && c.rope_theta <= 1e12,
            "rope: the frequency base must be in (1, 1e12], got {}", c.rope_theta);
  if (rs.type == io::RopeScalingType::None) return;
  EXQ_CHECK(std::isfinite(rs.factor) && rs.factor >= 1e-3 && rs.factor <= 1e6,
            "rope: the {} scaling factor must be in [0.001, 1e6], got {}", io::rope_scaling_name(rs.type), rs.factor);
  if (rs.type == io::RopeScalingType::Llama3)
    EXQ_CHECK(rs.high_freq_factor > rs.low_freq_factor && rs.low_freq_factor > 0.0,
              "rope: llama3 high_freq_factor {} must exceed low_freq_factor {} > 0", rs.high_freq_factor,
              rs.low_freq_factor);
  if (rs.type == io::RopeScalingType::Llama3 || rs.type == io::RopeScalingType::Yarn)
    EXQ_CHECK(rs.original_max_position_embeddings >= 1, "rope: the {} original context must be at least 1, got {}",
              io::rope_scaling_name(rs.type), rs.original_max_position_embeddings);
  if (rs.type == io::RopeScalingType::LongRope) {
    const size_t half = static_cast<size_t>(c.rope_dim() / 2);
    EXQ_CHECK(rs.short_factor.size() == half && rs.long_factor.size() == half,
              "rope: longrope needs {} short and long factors ({} rotary dimensions), got {} and {}", half,
              c.rope_dim(), rs.short_factor.size(), rs.long_factor.size());
    EXQ_CHECK(rs.original_max_position_embeddings >= 1, "rope: the longrope original context must be at least 1, got {}",
              rs.original_max_position_embeddings);
  }
  if (rs.type == io::RopeScalingType::Yarn)
    EXQ_CHECK(rs.beta_fast > 0.0 && rs.beta_slow > 0.0, "rope: yarn beta_fast {} and beta_slow {} must be positive",
              rs.beta_fast, rs.beta_slow);
}

bool rope_uses_long_factors(const io::ModelConfig& c, int64_t context) {
  return c.rope_scaling.type == io::RopeScalingType::LongRope &&
         context > c.rope_scaling.original_max_position_embeddings;
}

std::vector<float> rope_inv_freq(const io::ModelConfig& c, int64_t context) {
  const int64_t D = c.rope_dim();
  std::vector<float> inv(static_cast<size_t>(D / 2));
  // transformers: 1.0 / (base ** (arange(0, dim, 2).float() / dim)), all float32.
  for (int64_t i = 0; i < D / 2; ++i) inv[static_cast<size_t>(i)] = 1.0f / pos_freq(c, i);
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
  } else if (rs.type == io::RopeScalingType::Yarn) {
    apply_yarn(inv, c);
  } else if (rs.type == io::RopeScalingType::LongRope) {
    // transformers: 1 / (ext_factors * base ** (arange(0, dim, 2) / dim)) in float32.
    const std::vector<double>& ext = rope_uses_long_factors(c, context) ? rs.long_factor : rs.short_factor;
    for (int64_t i = 0; i < D / 2; ++i) {
      const auto u = static_cast<size_t>(i);
      inv[u] = 1.0f / (static_cast<float>(ext[u]) * pos_freq(c, i));
    }
  }
  return inv;
}

float rope_attention_factor(const io::ModelConfig& c) {
  const io::RopeScaling& rs = c.rope_scaling;
  if (rs.type == io::RopeScalingType::LongRope) {
    if (rs.attention_factor > 0.0) return static_cast<float>(rs.attention_factor);
    if (rs.factor <= 1.0) return 1.0f;
    return static_cast<float>(
        std::sqrt(1.0 + std::log(rs.factor) / std::log(static_cast<double>(rs.original_max_position_embeddings))));
  }
  if (rs.type != io::RopeScalingType::Yarn) return 1.0f;
  if (rs.attention_factor > 0.0) return static_cast<float>(rs.attention_factor);
  if (rs.mscale > 0.0 && rs.mscale_all_dim > 0.0)
    return static_cast<float>(yarn_mscale(rs.factor, rs.mscale) / yarn_mscale(rs.factor, rs.mscale_all_dim));
  return static_cast<float>(yarn_mscale(rs.factor, 1.0));
}

cpu::RopeTable rope_table(const io::ModelConfig& config, int64_t positions) {
  return cpu::make_rope_table(rope_inv_freq(config, positions), positions, rope_attention_factor(config));
}

io::ModelConfig local_rope_config(const io::ModelConfig& c) {
  io::ModelConfig local = c;
  local.rope_theta = c.rope_local_theta;
  local.rope_scaling = io::RopeScaling{};
  return local;
}

}  // namespace exq::model
