// The small ops against naive double-precision references, on odd shapes.
#include <gtest/gtest.h>

#include <cmath>
#include <random>

#include "backend/cpu/attention.h"
#include "backend/cpu/elementwise.h"
#include "backend/cpu/norm.h"
#include "backend/cpu/rotary.h"
#include "core/half.h"

namespace exq::cpu {
namespace {

Tensor random_f32(Shape shape, std::mt19937& rng, float scale = 1.0f) {
  Tensor t(DType::F32, std::move(shape));
  std::normal_distribution<float> d(0.0f, scale);
  for (float& v : t.span<float>()) v = d(rng);
  return t;
}

TEST(RmsNorm, MatchesNaiveWithLargeResiduals) {
  std::mt19937 rng(1);
  for (int64_t d : {1, 7, 576}) {
    Tensor x = random_f32({5, d}, rng, 3000.0f);
    x.data<float>()[0] = 25000.0f;
    Tensor w = random_f32({d}, rng);
    Tensor out(DType::F32, {5, d});
    rms_norm(x, w, 1e-5f, out);
    for (int64_t t = 0; t < 5; ++t) {
      double ss = 0;
      for (int64_t i = 0; i < d; ++i) ss += std::pow(x.data<float>()[t * d + i], 2.0);
      const double r = 1.0 / std::sqrt(ss / d + 1e-5);
      for (int64_t i = 0; i < d; ++i) {
        const double want = w.data<float>()[i] * x.data<float>()[t * d + i] * r;
        EXPECT_NEAR(out.data<float>()[t * d + i], want, 1e-6 * (1 + std::fabs(want)));
      }
    }
    rms_norm(x, w, 1e-5f, x);  // in place gives the same
    for (int64_t i = 0; i < x.numel(); ++i) EXPECT_EQ(x.data<float>()[i], out.data<float>()[i]);
  }
  Tensor x = Tensor::zeros(DType::F32, {2, 4});
  Tensor w = Tensor::zeros(DType::F32, {3});
  EXPECT_THROW(rms_norm(x, w, 1e-5f, x), Error);
}

TEST(Rotary, RotateHalfLayout) {
  std::mt19937 rng(2);
  const int64_t D = 10, H = 3, T = 4, start = 5;
  std::vector<float> inv_freq;
  for (int64_t i = 0; i < D / 2; ++i) inv_freq.push_back(std::pow(10000.0f, -2.0f * i / D));
  const RopeTable table = make_rope_table(inv_freq, 16);
  ASSERT_EQ(table.positions(), 16);
  Tensor x = random_f32({T, H, D}, rng);
  Tensor orig = Tensor::copy_of(x);
  apply_rotary(x, table, start);
  for (int64_t t = 0; t < T; ++t) {
    for (int64_t h = 0; h < H; ++h) {
      const float* a = orig.data<float>() + (t * H + h) * D;
      const float* b = x.data<float>() + (t * H + h) * D;
      for (int64_t i = 0; i < D; ++i) {
        // HF: x * cos(emb) + rotate_half(x) * sin(emb), emb = cat(freqs, freqs).
        const int64_t f = i % (D / 2);
        const double ang = static_cast<double>(static_cast<float>(start + t) * inv_freq[f]);
        const double rot = i < D / 2 ? -a[i + D / 2] : a[i - D / 2];
        EXPECT_NEAR(b[i], a[i] * std::cos(ang) + rot * std::sin(ang), 1e-6);
      }
    }
  }
  EXPECT_THROW(apply_rotary(x, table, 13), Error);  // positions 13..16 exceed 16
  Tensor wrong = Tensor::zeros(DType::F32, {1, 1, 8});
  EXPECT_THROW(apply_rotary(wrong, table, 0), Error);
}

// Reference: full causal softmax attention in double over cache rows 0..start+t.
void reference_attention(const Tensor& q, const Tensor& k, const Tensor& v, int64_t start, Tensor& out) {
  const int64_t T = q.dim(0), H = q.dim(1), D = q.dim(2), KVH = k.dim(1);
  for (int64_t t = 0; t < T; ++t) {
    for (int64_t h = 0; h < H; ++h) {
      const int64_t kv = h / (H / KVH), n = start + t + 1;
      std::vector<double> s(static_cast<size_t>(n));
      double mx = -1e300;
      for (int64_t j = 0; j < n; ++j) {
        double dot = 0;
        for (int64_t d = 0; d < D; ++d)
          dot += static_cast<double>(q.data<float>()[(t * H + h) * D + d]) * k.data<float>()[(j * KVH + kv) * D + d];
        s[j] = dot / std::sqrt(static_cast<double>(D));
        mx = std::max(mx, s[j]);
      }
      double sum = 0;
      for (auto& e : s) sum += (e = std::exp(e - mx));
      for (int64_t d = 0; d < D; ++d) {
        double acc = 0;
        for (int64_t j = 0; j < n; ++j) acc += s[j] / sum * v.data<float>()[(j * KVH + kv) * D + d];
        out.data<float>()[(t * H + h) * D + d] = static_cast<float>(acc);
      }
    }
  }
}

TEST(Attention, CausalGqaMatchesNaive) {
  std::mt19937 rng(3);
  struct Case { int64_t T, start, H, KVH, D; };
  for (const Case c : {Case{1, 0, 1, 1, 8}, Case{5, 0, 6, 2, 10}, Case{3, 4, 9, 3, 64},
                       Case{1, 17, 4, 4, 7}, Case{7, 2, 6, 1, 16}, Case{33, 0, 9, 3, 64},
                       // blocked-GEMM path: T >= 16, several blocks, a cache prefix, odd D
                       Case{16, 0, 2, 1, 5}, Case{70, 5, 6, 2, 16}, Case{150, 3, 9, 3, 64}}) {
    const int64_t L = c.start + c.T + 2;  // the cache may be longer than what is used
    Tensor q = random_f32({c.T, c.H, c.D}, rng, 2.0f);
    Tensor k = random_f32({L, c.KVH, c.D}, rng);
    Tensor v = random_f32({L, c.KVH, c.D}, rng);
    Tensor out(DType::F32, {c.T, c.H, c.D}), ref(DType::F32, {c.T, c.H, c.D});
    attention(q, k, v, c.start, out);
    reference_attention(q, k, v, c.start, ref);
    for (int64_t i = 0; i < out.numel(); ++i)
      ASSERT_NEAR(out.data<float>()[i], ref.data<float>()[i], 2e-5) << "T=" << c.T << " i=" << i;
  }
  Tensor q = Tensor::zeros(DType::F32, {2, 4, 8}), k = Tensor::zeros(DType::F32, {3, 3, 8});
  Tensor out(DType::F32, {2, 4, 8});
  EXPECT_THROW(attention(q, k, k, 0, out), Error);  // 4 heads over 3 kv heads
  Tensor k2 = Tensor::zeros(DType::F32, {3, 2, 8});
  EXPECT_THROW(attention(q, k2, k2, 2, out), Error);  // rows 2..3 exceed 3
}

TEST(Elementwise, SwigluAndAdd) {
  std::mt19937 rng(4);
  Tensor g = random_f32({3, 37}, rng, 4.0f), u = random_f32({3, 37}, rng);
  Tensor out(DType::F32, {3, 37});
  swiglu(g, u, out);
  for (int64_t i = 0; i < g.numel(); ++i) {
    const double a = g.data<float>()[i];
    EXPECT_NEAR(out.data<float>()[i], a / (1 + std::exp(-a)) * u.data<float>()[i], 1e-5);
  }
  Tensor x = Tensor::copy_of(g);
  add_inplace(x, u);
  for (int64_t i = 0; i < g.numel(); ++i) EXPECT_EQ(x.data<float>()[i], g.data<float>()[i] + u.data<float>()[i]);
  Tensor bad = Tensor::zeros(DType::F32, {3, 36});
  EXPECT_THROW(add_inplace(x, bad), Error);
  EXPECT_THROW(swiglu(g, bad, out), Error);
}

TEST(Elementwise, EmbeddingInEveryDtype) {
  std::mt19937 rng(5);
  Tensor ref = random_f32({11, 6}, rng);
  Tensor f16(DType::F16, {11, 6}), bf16(DType::BF16, {11, 6});
  for (int64_t i = 0; i < ref.numel(); ++i) {
    f16.data<uint16_t>()[i] = float_to_half(ref.data<float>()[i]);
    bf16.data<uint16_t>()[i] = float_to_bf16(ref.data<float>()[i]);
  }
  const std::vector<int32_t> ids = {10, 0, 3, 3};
  Tensor out(DType::F32, {4, 6});
  for (const Tensor* table : {&ref, &f16, &bf16}) {
    embedding(*table, ids, out);
    for (int64_t t = 0; t < 4; ++t) {
      for (int64_t i = 0; i < 6; ++i) {
        const int64_t k = ids[t] * 6 + i;
        const float want = table == &ref ? ref.data<float>()[k]
                           : table == &f16 ? half_to_float(f16.data<uint16_t>()[k])
                                           : bf16_to_float(bf16.data<uint16_t>()[k]);
        EXPECT_EQ(out.data<float>()[t * 6 + i], want);
      }
    }
  }
  const std::vector<int32_t> bad = {1, 11};
  Tensor out2(DType::F32, {2, 6});
  try {
    embedding(f16, bad, out2);
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("11"), std::string::npos);
  }
  const std::vector<int32_t> neg = {-1};
  Tensor out1(DType::F32, {1, 6});
  EXPECT_THROW(embedding(f16, neg, out1), Error);
}

TEST(Elementwise, SoftmaxAndLogsumexp) {
  std::mt19937 rng(6);
  Tensor x = random_f32({4, 49}, rng, 30.0f);
  x.data<float>()[0] = 25000.0f;  // no overflow with huge logits
  const std::vector<double> lse = logsumexp_rows(x);
  Tensor p = Tensor::copy_of(x);
  softmax_rows(p);
  for (int64_t t = 0; t < 4; ++t) {
    double mx = -1e300;
    for (int64_t i = 0; i < 49; ++i) mx = std::max<double>(mx, x.data<float>()[t * 49 + i]);
    double sum = 0;
    for (int64_t i = 0; i < 49; ++i) sum += std::exp(x.data<float>()[t * 49 + i] - mx);
    EXPECT_NEAR(lse[t], mx + std::log(sum), 1e-9 * std::fabs(mx) + 1e-6);
    for (int64_t i = 0; i < 49; ++i)
      EXPECT_NEAR(p.data<float>()[t * 49 + i], std::exp(x.data<float>()[t * 49 + i] - lse[t]), 1e-6);
  }
}

}  // namespace
}  // namespace exq::cpu
