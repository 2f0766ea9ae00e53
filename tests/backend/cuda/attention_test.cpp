// Prefill and decode attention on the GPU against a naive double-precision causal GQA loop.
// Cache slots past the valid length hold NaN, so any read beyond it shows up in the output.
#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <vector>

#include "backend/cuda/attention.h"
#include "cuda_test_util.h"

namespace exq::cuda {
namespace {

using test::CudaTest;

struct Cache {
  Tensor k, v;  // [kv_heads, capacity, head_dim] in the cache dtype
};

Cache random_cache(DType dtype, int64_t kv_heads, int64_t capacity, int64_t hd, int64_t valid,
                   uint32_t seed) {
  Cache c{test::random_f32({kv_heads, capacity, hd}, seed, -1.0f, 1.0f),
          test::random_f32({kv_heads, capacity, hd}, seed + 1000, -1.0f, 1.0f)};
  for (Tensor* t : {&c.k, &c.v}) {
    for (int64_t h = 0; h < kv_heads; ++h)
      for (int64_t p = valid; p < capacity; ++p)
        for (int64_t d = 0; d < hd; ++d)
          t->data<float>()[(h * capacity + p) * hd + d] = std::numeric_limits<float>::quiet_NaN();
    if (dtype == DType::F16) {
      Tensor h16(DType::F16, t->shape());
      for (int64_t i = 0; i < t->numel(); ++i) h16.data<uint16_t>()[i] = float_to_half(t->data<float>()[i]);
      *t = std::move(h16);
    }
  }
  return c;
}

// q: [tokens, heads, hd]; token t at position start_pos + t sees keys [0, start_pos + t].
std::vector<double> attention_ref(const Tensor& q, const Cache& c, int start_pos, double scale) {
  const int64_t tokens = q.dim(0), heads = q.dim(1), hd = q.dim(2);
  const int64_t kv_heads = c.k.dim(0), capacity = c.k.dim(1);
  std::vector<double> out(static_cast<size_t>(q.numel()));
  for (int64_t t = 0; t < tokens; ++t)
    for (int64_t h = 0; h < heads; ++h) {
      const int64_t kvh = h / (heads / kv_heads), keys = start_pos + t + 1;
      const float* qv = q.data<float>() + (t * heads + h) * hd;
      std::vector<double> s(static_cast<size_t>(keys));
      double m = -INFINITY;
      for (int64_t j = 0; j < keys; ++j) {
        double acc = 0.0;
        for (int64_t d = 0; d < hd; ++d) acc += qv[d] * test::value_at(c.k, (kvh * capacity + j) * hd + d);
        s[static_cast<size_t>(j)] = acc * scale;
        m = std::max(m, acc * scale);
      }
      double l = 0.0;
      for (double& x : s) l += (x = std::exp(x - m));
      for (int64_t d = 0; d < hd; ++d) {
        double acc = 0.0;
        for (int64_t j = 0; j < keys; ++j)
          acc += s[static_cast<size_t>(j)] * test::value_at(c.v, (kvh * capacity + j) * hd + d);
        out[static_cast<size_t>((t * heads + h) * hd + d)] = acc / l;
      }
    }
  return out;
}

struct Case {
  int64_t tokens, heads, kv_heads, hd;
  int start_pos;
  float q_range;  // larger q: sharper softmax
};

std::string case_name(const char* what, DType dtype, const Case& c) {
  return std::string(what) + " " + std::string(dtype_name(dtype)) + " T=" + std::to_string(c.tokens) +
         " H=" + std::to_string(c.heads) + "/" + std::to_string(c.kv_heads) +
         " hd=" + std::to_string(c.hd) + " start=" + std::to_string(c.start_pos);
}

class Attention : public CudaTest, public ::testing::WithParamInterface<DType> {};

TEST_P(Attention, PrefillMatchesCpu) {
  const DType dtype = GetParam();
  const std::vector<Case> cases = {
      {1, 9, 3, 64, 0, 1.0f},    {7, 9, 3, 64, 0, 1.0f},   {37, 9, 3, 64, 0, 4.0f},
      {100, 4, 1, 128, 29, 1.0f}, {5, 2, 2, 80, 3, 1.0f},  {3, 4, 2, 256, 40, 1.0f},
      {17, 3, 1, 7, 0, 1.0f},    {200, 9, 3, 64, 0, 8.0f}, {16, 8, 8, 96, 500, 2.0f}};
  uint32_t seed = 71;
  for (const Case& c : cases) {
    const int64_t valid = c.start_pos + c.tokens, capacity = valid + 19;
    const Cache cache = random_cache(dtype, c.kv_heads, capacity, c.hd, valid, seed);
    const Tensor q = test::random_f32({c.tokens, c.heads, c.hd}, seed + 1, -c.q_range, c.q_range);
    seed += 2;
    const float scale = 1.0f / std::sqrt(static_cast<float>(c.hd));
    DeviceTensor dq = upload(q), dk = upload(cache.k), dv = upload(cache.v);
    DeviceTensor dout = empty(DType::F32, q.shape());
    attention_prefill(dq, dk, dv, dout, c.start_pos, scale, stream());
    test::expect_close(attention_ref(q, cache, c.start_pos, scale), download(dout), 3e-5, 1e-4,
                       case_name("prefill", dtype, c));
  }
}

TEST_P(Attention, DecodeMatchesCpu) {
  const DType dtype = GetParam();
  // tokens is 1; start_pos + 1 keys. Lengths cross the 128-key step and the split sizes.
  const std::vector<Case> cases = {
      {1, 9, 3, 64, 0, 1.0f},     {1, 9, 3, 64, 32, 1.0f},    {1, 9, 3, 64, 127, 1.0f},
      {1, 9, 3, 64, 128, 4.0f},   {1, 9, 3, 64, 999, 1.0f},   {1, 9, 3, 64, 4096, 8.0f},
      {1, 32, 8, 128, 1999, 1.0f}, {1, 64, 8, 128, 3000, 1.0f}, {1, 4, 2, 96, 700, 2.0f},
      {1, 2, 1, 256, 300, 1.0f},  {1, 300, 300, 16, 50, 1.0f}, {1, 3, 1, 7, 12, 1.0f}};
  uint32_t seed = 171;
  for (const Case& c : cases) {
    const int64_t valid = c.start_pos + 1, capacity = valid + 33;
    const Cache cache = random_cache(dtype, c.kv_heads, capacity, c.hd, valid, seed);
    const Tensor q = test::random_f32({1, c.heads, c.hd}, seed + 1, -c.q_range, c.q_range);
    seed += 2;
    const float scale = 1.0f / std::sqrt(static_cast<float>(c.hd));
    DeviceTensor dq = upload(q), dk = upload(cache.k), dv = upload(cache.v);
    DeviceTensor dout = empty(DType::F32, q.shape());
    const auto ws_floats =
        static_cast<int64_t>(attention_decode_workspace_floats(static_cast<int>(c.heads), static_cast<int>(c.hd)));
    DeviceTensor ws = empty(DType::F32, {ws_floats});
    attention_decode(dq, dk, dv, dout, c.start_pos, scale, ws, stream());
    const auto want = attention_ref(q, cache, c.start_pos, scale);
    test::expect_close(want, download(dout), 3e-5, 1e-4, case_name("decode", dtype, c));
    // The prefill kernel on the same single token agrees too.
    attention_prefill(dq, dk, dv, dout, c.start_pos, scale, stream());
    test::expect_close(want, download(dout), 3e-5, 1e-4, case_name("prefill as decode", dtype, c));
  }
}

INSTANTIATE_TEST_SUITE_P(CacheDtypes, Attention, ::testing::Values(DType::F16, DType::F32),
                         [](const auto& info) { return std::string(dtype_name(info.param)); });

TEST(AttentionArgs, RejectBadShapes) {
  using test::fake_view;
  const DeviceView kc = fake_view(DType::F16, {3, 64, 64}), vc = fake_view(DType::F16, {3, 64, 64});
  const DeviceView q = fake_view(DType::F32, {4, 9, 64}), out = fake_view(DType::F32, {4, 9, 64});
  test::expect_error([&] { attention_prefill(q, kc, vc, out, 61, 0.125f, nullptr); },
                     "positions [61, 65) exceed the cache capacity 64");
  test::expect_error([&] { attention_prefill(fake_view(DType::F32, {4, 8, 64}), kc, vc,
                                             fake_view(DType::F32, {4, 8, 64}), 0, 0.125f, nullptr); },
                     "8 query heads are not a multiple of 3 kv heads");
  test::expect_error([&] { attention_prefill(fake_view(DType::F32, {4, 9, 32}), kc, vc,
                                             fake_view(DType::F32, {4, 9, 32}), 0, 0.125f, nullptr); },
                     "cache head_dim 64 differs from q's 32");
  test::expect_error([&] { attention_prefill(q, kc, fake_view(DType::F32, {3, 64, 64}), out, 0, 0.125f, nullptr); },
                     "v_cache must be F16, got F32");
  const DeviceView q1 = fake_view(DType::F32, {1, 9, 64}), out1 = fake_view(DType::F32, {1, 9, 64});
  test::expect_error([&] { attention_decode(q, kc, vc, out, 0, 0.125f, fake_view(DType::F32, {100000}), nullptr); },
                     "q must hold one token");
  test::expect_error([&] { attention_decode(q1, kc, vc, out1, 3, 0.125f, fake_view(DType::F32, {10}), nullptr); },
                     "workspace has 10 floats, needs");
  const DeviceView big_kc = fake_view(DType::F16, {1, 64, 512}), big_vc = fake_view(DType::F16, {1, 64, 512});
  test::expect_error([&] { attention_prefill(fake_view(DType::F32, {1, 1, 512}), big_kc, big_vc,
                                             fake_view(DType::F32, {1, 1, 512}), 0, 0.1f, nullptr); },
                     "head_dim 512 is not supported");
  EXPECT_TRUE(attention_supports(DType::F16, 128));
  EXPECT_FALSE(attention_supports(DType::BF16, 128));
}

}  // namespace
}  // namespace exq::cuda
