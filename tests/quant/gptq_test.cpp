#include "quant/gptq.h"

#include <gtest/gtest.h>

#include <cmath>
#include <random>

#include "core/error.h"
#include "core/half.h"
#include "gptq_inputs.h"

namespace exq::quant {
namespace {

using exq::test::make_inputs;

// ||X (W - Wq)^T||_F / ||X W^T||_F with W, Wq [out, in].
double output_error(const std::vector<float>& x, int64_t tokens, const std::vector<float>& w,
                    const std::vector<float>& wq, int64_t out, int64_t in) {
  double num = 0.0, den = 0.0;
  for (int64_t t = 0; t < tokens; ++t)
    for (int64_t o = 0; o < out; ++o) {
      double y = 0.0, d = 0.0;
      for (int64_t i = 0; i < in; ++i) {
        y += static_cast<double>(x[t * in + i]) * w[o * in + i];
        d += static_cast<double>(x[t * in + i]) * (w[o * in + i] - wq[o * in + i]);
      }
      num += d * d;
      den += y * y;
    }
  return std::sqrt(num / den);
}

TEST(Hessian, AccumulatesTwiceXtXOverBatches) {
  const int64_t in = 40, rows = 33;
  const auto x1 = make_inputs(rows, in, 1), x2 = make_inputs(rows, in, 2);
  HessianAccumulator acc(in);
  acc.add_batch(x1.data(), rows);
  acc.add_batch(x2.data(), rows);
  const std::vector<float> h = acc.hessian();
  double worst = 0.0;
  for (int64_t r = 0; r < in; ++r)
    for (int64_t c = 0; c < in; ++c) {
      double ref = 0.0;
      for (int64_t t = 0; t < rows; ++t)
        ref += static_cast<double>(x1[t * in + r]) * x1[t * in + c] +
               static_cast<double>(x2[t * in + r]) * x2[t * in + c];
      ref *= 2.0 / 2.0;
      worst = std::max(worst, std::fabs(h[r * in + c] - ref) / (std::fabs(ref) + 1e-3));
    }
  EXPECT_LT(worst, 1e-4);
  EXPECT_THROW(HessianAccumulator(3).hessian(), Error);
}

TEST(Hessian, PreparesActOrderAndInverseCholesky) {
  const int64_t in = 64, tokens = 256;
  const auto x = make_inputs(tokens, in, 3);
  HessianAccumulator acc(in);
  acc.add_batch(x.data(), tokens);
  const std::vector<float> h = acc.hessian();
  const PreparedHessian p = prepare_hessian(h, in);
  EXPECT_EQ(p.dampings, 1);
  for (int64_t i = 1; i < in; ++i) EXPECT_GE(h[p.perm[i - 1] * (in + 1)], h[p.perm[i] * (in + 1)]);
  double mean = 0.0;
  for (int64_t i = 0; i < in; ++i) mean += h[i * (in + 1)] / in;
  EXPECT_NEAR(p.damp, 0.12 * mean, 1e-4 * mean);
  // U^T U (H_perm + damp) = I.
  double worst = 0.0;
  for (int64_t r = 0; r < in; ++r)
    for (int64_t c = 0; c < in; ++c) {
      double v = 0.0;
      for (int64_t k = 0; k < in; ++k) {
        double uu = 0.0;
        for (int64_t j = 0; j <= std::min(r, k); ++j)
          uu += double(p.u[j * in + r]) * p.u[j * in + k];
        const double hk = h[p.perm[k] * in + p.perm[c]] + (k == c ? p.damp : 0.0f);
        v += uu * hk;
      }
      worst = std::max(worst, std::fabs(v - (r == c ? 1.0 : 0.0)));
      if (c < r) {
        EXPECT_EQ(p.u[r * in + c], 0.0f);
      }
    }
  EXPECT_LT(worst, 1e-3);
}

TEST(Hessian, RetriesDampingLikeExllamav2) {
  // diag(1,1,1,-0.4): mean 0.65, damp 0.078; the last pivot turns positive after 6 steps.
  std::vector<float> h(16, 0.0f);
  h[0] = h[5] = h[10] = 1.0f;
  h[15] = -0.4f;
  const PreparedHessian p = prepare_hessian(h, 4);
  EXPECT_FLOAT_EQ(p.damp, 0.12f * 0.65f);
  EXPECT_EQ(p.dampings, 6);
  h[15] = -1.0f;  // mean 0.75, damp 0.09: needs 12 steps, not invertible after 10
  EXPECT_THROW(prepare_hessian(h, 4), Error);
}

TEST(Gptq, ScaleSearchPicksCodesAndGridMaximum) {
  std::mt19937 rng(4);
  std::normal_distribution<float> nd(0.0f, 0.02f);
  const int64_t rows = 32, out = 48;
  std::vector<float> x(rows * out);
  for (auto& v : x) v = nd(rng);
  for (int64_t r = 0; r < rows; ++r) x[r * out + 5] *= 0.1f;  // a quiet column
  for (int bits : {2, 3, 4, 5, 6, 8}) {
    const GroupScales s = search_group_scales(x.data(), rows, out, bits);
    float smax = 0.0f;
    for (int64_t c = 0; c < out; ++c) {
      float m = 0.0f;
      for (int64_t r = 0; r < rows; ++r) m = std::max(m, std::fabs(x[r * out + c]));
      smax = std::max(smax, m / ((1 << bits) - 1) * 2);
    }
    const float ratio = half_to_float(s.scale_max) / smax;
    EXPECT_GE(ratio, 0.699f);
    EXPECT_LE(ratio, 1.201f);
    EXPECT_EQ(*std::max_element(s.qs.begin(), s.qs.end()), 16);
    EXPECT_LT(s.qs[5], 8);
  }
}

TEST(Gptq, ErrorFallsWithBitsBeatsRoundingAndRoundTripsThroughExl2) {
  const int64_t in = 256, out = 80, tokens = 512;
  const auto x = make_inputs(tokens, in, 5);
  std::mt19937 rng(6);
  std::normal_distribution<float> nd(0.0f, 0.02f);
  std::vector<float> w(out * in);
  for (auto& v : w) v = nd(rng);
  HessianAccumulator acc(in);
  for (int64_t b = 0; b < tokens; b += 128) acc.add_batch(&x[b * in], 128);
  const PreparedHessian h = prepare_hessian(acc.hessian(), in);
  const PreparedHessian id = identity_hessian(in);

  double previous = 1e9;
  for (const char* opt :
       {"1:2b_32g s4", "1:3b_32g s4", "1:4b_32g s4", "1:5b_32g s4", "1:6b_32g s4", "1:8b_32g s4"}) {
    const QuantOption o = parse_option(opt);
    const GptqResult r = gptq_quantize(w.data(), out, in, h, o);
    const double e = output_error(x, tokens, w, r.weight, out, in);
    const double e_rtn =
        output_error(x, tokens, w, gptq_quantize(w.data(), out, in, id, o).weight, out, in);
    std::printf("%-14s GPTQ output error %.5f   round-to-nearest %.5f\n", opt, e, e_rtn);
    EXPECT_LT(e, previous) << opt;
    EXPECT_LT(e, 0.5 * e_rtn) << opt;  // error propagation through H^-1 pays off
    previous = e;
  }

  for (const char* opt : {"0.05:8b_32g/0.1:4b_128g/0.85:3b_128g s4",
                          "0.05:6b_32g/0.2:3b_64g/0.75:2b_64g s4", "0.1:6b_32g/0.9:5b_32g s4"}) {
    const GptqResult r = gptq_quantize(w.data(), out, in, h, parse_option(opt));
    const io::Exl2Packed packed = io::pack_exl2(r.layer);
    const Tensor f32 = io::dequantize_exl2(packed.view(), in, out, "gptq", DType::F32);
    const Tensor f16 = io::dequantize_exl2(packed.view(), in, out, "gptq", DType::F16);
    int64_t diff = 0;
    for (int64_t i = 0; i < out * in; ++i) {
      diff += f32.data<float>()[i] != r.weight[i];
      diff += f16.data<uint16_t>()[i] != float_to_half(r.weight[i]);
    }
    EXPECT_EQ(diff, 0) << opt;
    EXPECT_EQ(packed.q_groups.numel() / 2,
              static_cast<int64_t>(group_layout(parse_option(opt), in).size()));
  }
  EXPECT_THROW(gptq_quantize(w.data(), out, in - 1, h, parse_option("1:4b_32g")), Error);
}

}  // namespace
}  // namespace exq::quant
