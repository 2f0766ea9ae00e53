// Sliding-window attention on the GPU (query p sees keys p - window + 1 .. p) against a
// double-precision loop: the f32 prefill kernel, the tensor-core prefill (whole key tiles before
// a block's window skipped, keys below each row's window masked, rows left without a visible key
// in a tile), and the decode kernels (SIMT for the f32 cache, tensor cores for f16 at head_dim 64
// and 128) over every split count. The decode's cache rows below the window and past the
// position hold NaN, so a read of them shows up in the output.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <string>
#include <vector>

#include "backend/cuda/attention.h"
#include "cuda_test_util.h"

namespace exq::cuda {
namespace {

using test::CudaTest;

// [kv_heads, capacity, hd] in `dtype`, uniform in [-1, 1) at positions [lo, hi), NaN elsewhere.
Tensor cache(DType dtype, int64_t kv_heads, int64_t capacity, int64_t hd, int64_t lo, int64_t hi, uint32_t seed) {
  Tensor t = test::random_f32({kv_heads, capacity, hd}, seed, -1.0f, 1.0f);
  for (int64_t h = 0; h < kv_heads; ++h)
    for (int64_t p = 0; p < capacity; ++p)
      if (p < lo || p >= hi)
        for (int64_t d = 0; d < hd; ++d) t.data<float>()[(h * capacity + p) * hd + d] = std::numeric_limits<float>::quiet_NaN();
  if (dtype == DType::F32) return t;
  Tensor h16(DType::F16, t.shape());
  for (int64_t i = 0; i < t.numel(); ++i) h16.data<uint16_t>()[i] = float_to_half(t.data<float>()[i]);
  return h16;
}

std::vector<double> windowed_ref(const Tensor& q, const Tensor& k, const Tensor& v, int start, int window, double scale) {
  const int64_t T = q.dim(0), H = q.dim(1), D = q.dim(2), KVH = k.dim(0), cap = k.dim(1);
  std::vector<double> out(static_cast<size_t>(q.numel()));
  for (int64_t t = 0; t < T; ++t)
    for (int64_t h = 0; h < H; ++h) {
      const int64_t kvh = h / (H / KVH), pos = start + t, lo = std::max<int64_t>(0, pos - window + 1);
      const float* qv = q.data<float>() + (t * H + h) * D;
      std::vector<double> s;
      double m = -INFINITY;
      for (int64_t j = lo; j <= pos; ++j) {
        double acc = 0.0;
        for (int64_t d = 0; d < D; ++d) acc += qv[d] * test::value_at(k, (kvh * cap + j) * D + d);
        s.push_back(acc * scale);
        m = std::max(m, acc * scale);
      }
      double l = 0.0;
      for (double& x : s) l += (x = std::exp(x - m));
      for (int64_t d = 0; d < D; ++d) {
        double acc = 0.0;
        for (int64_t j = lo; j <= pos; ++j) acc += s[static_cast<size_t>(j - lo)] * test::value_at(v, (kvh * cap + j) * D + d);
        out[static_cast<size_t>((t * H + h) * D + d)] = acc / l;
      }
    }
  return out;
}

struct Case {
  int64_t tokens, heads, kv_heads, hd;
  int start, window;
};

std::string name(const char* what, DType dtype, const Case& c) {
  return std::string(what) + " " + std::string(dtype_name(dtype)) + " T=" + std::to_string(c.tokens) + " H=" +
         std::to_string(c.heads) + "/" + std::to_string(c.kv_heads) + " hd=" + std::to_string(c.hd) +
         " start=" + std::to_string(c.start) + " window=" + std::to_string(c.window);
}

using SlidingWindow = CudaTest;

TEST_F(SlidingWindow, PrefillMatchesCpu) {
  const std::vector<Case> cases = {{37, 4, 2, 64, 0, 5},    {100, 4, 1, 128, 29, 17}, {77, 8, 2, 64, 1000, 100},
                                   {300, 4, 2, 128, 0, 70}, {65, 6, 3, 64, 200, 1},   {16, 4, 4, 96, 500, 300},
                                   {200, 9, 3, 64, 0, 129}, {130, 4, 2, 128, 64, 64}};
  uint32_t seed = 501;
  for (const DType dtype : {DType::F32, DType::F16})
    for (const Case& c : cases) {
      const int64_t valid = c.start + c.tokens, capacity = valid + 9;
      const Tensor k = cache(dtype, c.kv_heads, capacity, c.hd, 0, valid, seed);
      const Tensor v = cache(dtype, c.kv_heads, capacity, c.hd, 0, valid, seed + 1);
      const Tensor q = test::random_f32({c.tokens, c.heads, c.hd}, seed + 2, -2.0f, 2.0f);
      seed += 3;
      const float scale = 1.0f / std::sqrt(static_cast<float>(c.hd));
      const std::vector<double> want = windowed_ref(q, k, v, c.start, c.window, scale);
      DeviceTensor dq = upload(q), dk = upload(k), dv = upload(v), dout = empty(DType::F32, q.shape());
      attention_prefill(dq, dk, dv, dout, c.start, scale, stream(), c.window);
      test::expect_close(want, download(dout), 3e-5, 1e-4, name("prefill", dtype, c));
      if (dtype == DType::F16 && attention_prefill_fast_supports(dtype, c.hd)) {
        attention_prefill_fast(dq, dk, dv, dout, c.start, scale, stream(), c.window);
        test::expect_close(want, download(dout), 2e-3, 2e-3, name("tensor-core prefill", dtype, c));
      }
    }
}

TEST_F(SlidingWindow, DecodeMatchesCpu) {
  const std::vector<Case> cases = {{1, 9, 3, 64, 999, 100},   {1, 32, 8, 128, 2047, 512}, {1, 4, 2, 96, 700, 33},
                                   {1, 8, 1, 64, 257, 1},     {1, 32, 8, 128, 4000, 3000}, {1, 24, 2, 128, 513, 513},
                                   {1, 16, 16, 128, 100, 7},  {1, 9, 3, 64, 40, 4096}};
  uint32_t seed = 601;
  for (const DType dtype : {DType::F32, DType::F16})
    for (const Case& c : cases) {
      const int64_t lo = std::max(0, c.start - c.window + 1), capacity = c.start + 20;
      const Tensor k = cache(dtype, c.kv_heads, capacity, c.hd, lo, c.start + 1, seed);
      const Tensor v = cache(dtype, c.kv_heads, capacity, c.hd, lo, c.start + 1, seed + 1);
      const Tensor q = test::random_f32({1, c.heads, c.hd}, seed + 2, -2.0f, 2.0f);
      seed += 3;
      const float scale = 1.0f / std::sqrt(static_cast<float>(c.hd));
      const std::vector<double> want = windowed_ref(q, k, v, c.start, c.window, scale);
      DeviceTensor dq = upload(q), dk = upload(k), dv = upload(v), dout = empty(DType::F32, q.shape());
      DeviceTensor ws = empty(DType::F32, {static_cast<int64_t>(attention_decode_workspace_floats(
                                              static_cast<int>(c.heads), static_cast<int>(c.hd)))});
      for (int splits : {0, 1, 3, 7, kDecodeMaxSplits}) {
        attention_decode(dq, dk, dv, dout, c.start, scale, ws, stream(), splits, c.window);
        test::expect_close(want, download(dout), 3e-5, 1e-4, name("decode", dtype, c) + " splits=" + std::to_string(splits));
      }
    }
}

TEST(SlidingWindowArgs, NegativeWindowIsRefused) {
  using test::fake_view;
  const DeviceView q = fake_view(DType::F32, {4, 8, 64}), out = fake_view(DType::F32, {4, 8, 64});
  const DeviceView kc = fake_view(DType::F16, {2, 16, 64}), vc = fake_view(DType::F16, {2, 16, 64});
  test::expect_error([&] { attention_prefill(q, kc, vc, out, 0, 0.125f, nullptr, -1); }, "window -1 is negative");
}

}  // namespace
}  // namespace exq::cuda
