// Rotary frequencies and tables of a config: YaRN against the formula of its paper as transformers
// writes it (in double here), Qwen2.5's correction range, YaRN's attention factor, the table's
// scale, and the checks of rotary settings given on the command line.
#include "model/rope.h"

#include <gtest/gtest.h>

#include <cmath>
#include <numbers>

#include "core/error.h"

namespace exq::model {
namespace {

io::ModelConfig yarn_config(int64_t head_dim, double theta, double factor, int64_t original) {
  io::ModelConfig c;
  c.model_type = "qwen2";
  c.head_dim = head_dim;
  c.rope_theta = theta;
  c.max_position_embeddings = original;
  c.rope_scaling.type = io::RopeScalingType::Yarn;
  c.rope_scaling.factor = factor;
  c.rope_scaling.original_max_position_embeddings = original;
  return c;
}

// transformers' _compute_yarn_parameters in double: the dimensions that turn beta_fast and
// beta_slow times over the trained context bound a ramp from kept to divided frequencies.
struct YarnRef {
  double low = 0, high = 0;
  std::vector<double> inv_freq;
};
YarnRef yarn_reference(const io::ModelConfig& c) {
  const io::RopeScaling& rs = c.rope_scaling;
  const double dim = static_cast<double>(c.head_dim), ctx = static_cast<double>(rs.original_max_position_embeddings);
  auto correction = [&](double rotations) {
    return dim * std::log(ctx / (rotations * 2 * std::numbers::pi)) / (2 * std::log(c.rope_theta));
  };
  YarnRef r;
  r.low = correction(rs.beta_fast);
  r.high = correction(rs.beta_slow);
  if (rs.truncate) {
    r.low = std::floor(r.low);
    r.high = std::ceil(r.high);
  }
  r.low = std::max(r.low, 0.0);
  r.high = std::min(r.high, dim - 1);
  const double span = r.high == r.low ? 0.001 : r.high - r.low;
  for (int64_t i = 0; i < c.head_dim / 2; ++i) {
    const double base = 1.0 / std::pow(c.rope_theta, 2.0 * static_cast<double>(i) / dim);
    const double ramp = std::clamp((static_cast<double>(i) - r.low) / span, 0.0, 1.0);
    r.inv_freq.push_back(base / rs.factor * ramp + base * (1.0 - ramp));
  }
  return r;
}

void expect_matches_reference(const io::ModelConfig& c) {
  const YarnRef ref = yarn_reference(c);
  const std::vector<float> got = rope_inv_freq(c, 4096);
  ASSERT_EQ(got.size(), ref.inv_freq.size());
  double worst = 0;
  for (size_t i = 0; i < got.size(); ++i)
    worst = std::max(worst, std::fabs(got[i] - ref.inv_freq[i]) / ref.inv_freq[i]);
  // Float32 as torch: 1 - (1 - ramp) loses ~6e-8 absolute, up to factor x that relative where
  // a frequency is mostly divided (2.3e-6 at x40).
  EXPECT_LE(worst, 5e-6) << "head_dim " << c.head_dim << " factor " << c.rope_scaling.factor;
}

TEST(Rope, YarnMatchesTheFormula) {
  // Qwen2.5-7B with the yarn its model card adds: head_dim 128, theta 1e6, x4 from 32768.
  io::ModelConfig q = yarn_config(128, 1e6, 4.0, 32768);
  const YarnRef r = yarn_reference(q);
  EXPECT_EQ(r.low, 23.0);  // floor(22.6), ceil(39.4)
  EXPECT_EQ(r.high, 40.0);
  expect_matches_reference(q);
  const std::vector<float> f = rope_inv_freq(q, 4096);
  // Below the ramp frequencies are kept, above it divided by the factor, and in between mixed.
  for (int i : {0, 10, 23}) EXPECT_FLOAT_EQ(f[static_cast<size_t>(i)], static_cast<float>(std::pow(1e6, -i / 64.0)));
  for (int i : {40, 50, 63})
    EXPECT_FLOAT_EQ(f[static_cast<size_t>(i)], static_cast<float>(std::pow(1e6, -i / 64.0) / 4.0));
  // Python (math, float64) of the same formula: 1.1547819847e-01, 1.0643609812e-03, 3.1023444019e-07.
  EXPECT_NEAR(f[10], 1.1547819847e-01, 1.1547819847e-01 * 2e-6);
  EXPECT_NEAR(f[30], 1.0643609812e-03, 1.0643609812e-03 * 2e-6);
  EXPECT_NEAR(f[63], 3.1023444019e-07, 3.1023444019e-07 * 2e-6);

  // DeepSeek-V3-like fields: other betas, no truncation (the ramp ends are fractional).
  io::ModelConfig d = yarn_config(128, 10000.0, 40.0, 4096);
  d.rope_scaling.beta_fast = 16;
  d.rope_scaling.beta_slow = 2;
  d.rope_scaling.truncate = false;
  const YarnRef rd = yarn_reference(d);
  EXPECT_NEAR(rd.low, 25.76096155, 1e-6);
  EXPECT_NEAR(rd.high, 40.21040134, 1e-6);
  expect_matches_reference(d);
  EXPECT_NEAR(rope_inv_freq(d, 4096)[30], 9.5208606256e-03, 9.5208606256e-03 * 2e-6);

  // Small heads: the ramp clamps at 0 and at dim - 1; equal ends get transformers' +0.001.
  for (int64_t orig : {16, 64, 4096, 1 << 20}) expect_matches_reference(yarn_config(8, 10000.0, 3.0, orig));
  // A factor of 1 changes nothing.
  io::ModelConfig one = yarn_config(64, 10000.0, 1.0, 2048);
  io::ModelConfig plain = one;
  plain.rope_scaling = {};
  EXPECT_EQ(rope_inv_freq(one, 4096), rope_inv_freq(plain, 4096));
  EXPECT_EQ(rope_attention_factor(one), 1.0f);
}

TEST(Rope, YarnAttentionFactor) {
  io::ModelConfig c = yarn_config(64, 10000.0, 4.0, 2048);
  EXPECT_FLOAT_EQ(rope_attention_factor(c), static_cast<float>(0.1 * std::log(4.0) + 1.0));  // 1.1386
  // mscale and mscale_all_dim both set: the ratio of their mscales (DeepSeek-V3's 1 / 1 gives 1).
  c.rope_scaling.factor = 40;
  c.rope_scaling.mscale = 1.0;
  c.rope_scaling.mscale_all_dim = 1.0;
  EXPECT_FLOAT_EQ(rope_attention_factor(c), 1.0f);
  c.rope_scaling.mscale = 0.707;
  EXPECT_NEAR(rope_attention_factor(c), 0.92104235531634, 1e-6);
  // Only one of them: the default.
  c.rope_scaling.mscale_all_dim = 0;
  EXPECT_FLOAT_EQ(rope_attention_factor(c), static_cast<float>(0.1 * std::log(40.0) + 1.0));
  c.rope_scaling.attention_factor = 1.25;  // given: taken as is
  EXPECT_FLOAT_EQ(rope_attention_factor(c), 1.25f);
  c.rope_scaling.attention_factor = 0;
  c.rope_scaling.factor = 0.5;  // a factor <= 1 has no correction
  EXPECT_FLOAT_EQ(rope_attention_factor(c), 1.0f);
  c.rope_scaling = {.type = io::RopeScalingType::Linear, .factor = 4.0};
  EXPECT_FLOAT_EQ(rope_attention_factor(c), 1.0f);
}

// The table multiplies HF's float32 cos / sin by the attention factor.
TEST(Rope, TableCarriesTheAttentionFactor) {
  const io::ModelConfig c = yarn_config(16, 10000.0, 8.0, 64);
  const float m = rope_attention_factor(c);
  ASSERT_GT(m, 1.2f);
  const cpu::RopeTable t = rope_table(c, 100);
  const std::vector<float> inv = rope_inv_freq(c, 4096);
  ASSERT_EQ(t.positions(), 100);
  for (int64_t p : {0, 1, 37, 99}) {
    for (int64_t i = 0; i < 8; ++i) {
      const float angle = static_cast<float>(p) * inv[static_cast<size_t>(i)];
      EXPECT_EQ(t.cos.data<float>()[p * 8 + i], static_cast<float>(std::cos(static_cast<double>(angle))) * m);
      EXPECT_EQ(t.sin.data<float>()[p * 8 + i], static_cast<float>(std::sin(static_cast<double>(angle))) * m);
    }
  }
  EXPECT_THROW(cpu::make_rope_table(inv, 4, 0.0f), Error);
  EXPECT_THROW(cpu::make_rope_table(inv, 4, NAN), Error);
}

TEST(Rope, CheckRefusesBadSettings) {
  auto message = [](const io::ModelConfig& c) -> std::string {
    try {
      check_rope(c);
    } catch (const Error& e) {
      return e.what();
    }
    return "";
  };
  io::ModelConfig c = yarn_config(64, 10000.0, 4.0, 2048);
  EXPECT_EQ(message(c), "");
  c.rope_theta = 0.5;
  EXPECT_NE(message(c).find("frequency base"), std::string::npos) << message(c);
  c.rope_theta = 1e4;
  c.rope_scaling.factor = 0;
  EXPECT_NE(message(c).find("yarn scaling factor"), std::string::npos) << message(c);
  c.rope_scaling.factor = 4;
  c.rope_scaling.original_max_position_embeddings = 0;
  EXPECT_NE(message(c).find("original context"), std::string::npos) << message(c);
  c.rope_scaling = {.type = io::RopeScalingType::Llama3, .factor = 8, .low_freq_factor = 4, .high_freq_factor = 1};
  EXPECT_NE(message(c).find("high_freq_factor"), std::string::npos) << message(c);
}

}  // namespace
}  // namespace exq::model
