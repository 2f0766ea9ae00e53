// exl2_matmul (backend/cpu) on packed tensors against dequantize-then-matmul.
#include "backend/cpu/exl2_matmul.h"

#include <gtest/gtest.h>

#include <cmath>
#include <map>
#include <random>

#include "core/half.h"
#include "io/exl2.h"
#include "model/exl2_linear.h"
#include "exl2_test_models.h"
#include "test_support.h"

namespace exq {
namespace {

// exl2_matmul against a float64 product with the dequantized weights: fails values beyond
// rtol 1e-4 (plus an atol of 1e-6 * sum|w*x| for cancelling sums); returns the largest
// error as a fraction of that tolerance.
double check_matmul(const io::Exl2Tensors& t, int64_t in, int64_t out, int64_t tokens,
                    uint32_t seed) {
  const Tensor wd = io::dequantize_exl2(t, in, out, "w", DType::F32);  // [out, in]
  std::mt19937 rng(seed);
  std::normal_distribution<float> nd(0.0f, 1.0f);
  std::vector<float> x(tokens * in), y(tokens * out);
  for (auto& v : x) v = nd(rng);
  const model::Exl2Linear layer(t, in, out, "w");  // validates and derives q_perm, groups
  cpu::exl2_matmul(layer.matmul_weight(), x.data(), tokens, y.data());
  double worst = 0.0;
  int bad = 0;
  for (int64_t s = 0; s < tokens; ++s)
    for (int64_t o = 0; o < out; ++o) {
      double ref = t.bias.empty() ? 0.0 : half_to_float(t.bias.data<uint16_t>()[o]);
      double mag = std::fabs(ref);
      for (int64_t i = 0; i < in; ++i) {
        const double p = static_cast<double>(wd.data<float>()[o * in + i]) * x[s * in + i];
        ref += p;
        mag += std::fabs(p);
      }
      const double diff = std::fabs(y[s * out + o] - ref);
      if (diff > 1e-4 * std::fabs(ref) + 1e-6 * mag) ++bad;
      worst = std::max(worst, diff / (1e-4 * std::fabs(ref) + 1e-6 * mag));
    }
  EXPECT_EQ(bad, 0);
  return worst;
}

TEST(Exl2Matmul, RoundToHalfMatchesFloatToHalf) {
  std::mt19937 rng(1);
  for (int i = 0; i < 4000000; ++i) {
    const float v = bits_to_float(static_cast<uint32_t>(rng()));
    const float a = cpu::round_to_half(v), b = half_to_float(float_to_half(v));
    if (std::isnan(b)) {
      ASSERT_TRUE(std::isnan(a));
      continue;
    }
    ASSERT_EQ(float_to_bits(a), float_to_bits(b)) << v;
  }
  for (uint32_t h = 0; h < 0x7c00; ++h) {  // every finite half and the midpoints around it
    const float v = half_to_float(static_cast<uint16_t>(h));
    for (float f : {v, std::nextafter(v, 0.0f), std::nextafter(v, 1e9f),
                    half_to_float(static_cast<uint16_t>(h + 1)) * 0.5f + v * 0.5f, -v})
      ASSERT_EQ(float_to_bits(cpu::round_to_half(f)),
                float_to_bits(half_to_float(float_to_half(f))))
          << f;
  }
}

TEST(Exl2Matmul, MatchesDequantizedMatmulOnFixtures) {
  const auto& linears = test::smollm2_layer0_linears();
  for (const char* bpw : {"4.0", "2.5"}) {
    const auto f = io::SafetensorsFile::open(test::exl2_layer0_fixture(bpw));
    double worst = 0.0;
    for (const auto& [name, shape] : linears) {
      const auto t = io::exl2_tensors(f, "model.layers.0." + name);
      for (int64_t tokens : {1, 7})
        worst = std::max(worst, check_matmul(t, shape.first, shape.second, tokens, 3));
    }
    std::printf("[%s bpw] largest error / tolerance(rtol 1e-4): %.3g\n", bpw, worst);
  }
}

TEST(Exl2Matmul, PaddedColumnsAndBias) {
  // 96 input rows in 8/6/5/4/3/2-bit groups, 40 outputs (padded to 64), with a bias.
  std::mt19937 rng(5);
  io::Exl2Linear l;
  l.groups = io::exl2_group_table({{8, 32}, {6, 16}, {5, 32}, {4, 32}, {3, 32}, {2, 16}, {2, 4}});
  l.in = 164;
  l.out = 40;
  l.q.resize(l.in * l.out);
  for (const auto& g : l.groups)
    for (int64_t i = g.row_begin * l.out; i < (g.row_begin + g.rows) * l.out; ++i)
      l.q[i] = static_cast<uint8_t>(rng() % (1u << g.bits));
  for (size_t i = 0; i < l.groups.size() * l.out; ++i)
    l.qs.push_back(static_cast<uint8_t>(1 + rng() % 16));
  for (size_t g = 0; g < l.groups.size(); ++g)
    l.scale_max.push_back(float_to_half(0.02f * (1 + g)));
  for (int64_t i = 0; i < l.in; ++i) l.perm.push_back(static_cast<int32_t>(i));
  std::shuffle(l.perm.begin(), l.perm.end(), rng);
  l.invperm.resize(l.in);
  for (int64_t i = 0; i < l.in; ++i) l.invperm[l.perm[i]] = static_cast<int32_t>(i);
  for (int64_t c = 0; c < l.out; ++c)
    l.bias.push_back(float_to_half(0.25f * static_cast<float>(c) - 3));
  const io::Exl2Packed p = io::pack_exl2(l);
  for (int64_t tokens : {1, 3}) check_matmul(p.view(), l.in, l.out, tokens, 11);
}

}  // namespace
}  // namespace exq
