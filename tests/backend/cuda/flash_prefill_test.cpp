// Tensor-core prefill attention (attention_prefill_fast) against the f32 attention_prefill on the
// same random f16 cache: head_dim 64 / 96 / 128 / 256, GQA, chunked prefill (start_pos > 0), odd lengths,
// Gemma 2's attention softcap.
// Cache slots past the valid length hold NaN, so a read beyond it shows up in the output.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <limits>
#include <string>
#include <utility>
#include <vector>

#include "backend/cuda/attention.h"
#include "backend/cuda/stream.h"
#include "cuda_test_util.h"

namespace exq::cuda {
namespace {

using test::CudaTest;

// [kv_heads, capacity, hd] F16, uniform in [-1, 1) below `valid`, NaN from there on.
Tensor nan_tail_cache(int64_t kv_heads, int64_t capacity, int64_t hd, int64_t valid, uint32_t seed) {
  Tensor t = test::random_half(DType::F16, {kv_heads, capacity, hd}, seed);
  const uint16_t nan = float_to_half(std::numeric_limits<float>::quiet_NaN());
  for (int64_t h = 0; h < kv_heads; ++h)
    for (int64_t p = valid; p < capacity; ++p)
      for (int64_t d = 0; d < hd; ++d) t.data<uint16_t>()[(h * capacity + p) * hd + d] = nan;
  return t;
}

struct Case {
  int64_t tokens, heads, kv_heads, hd;
  int start_pos;
  float q_range;         // larger q: sharper softmax
  float softcap = 0.0f;  // > 0: scores s -> softcap * tanh(s / softcap)
};

std::string case_name(const Case& c) {
  return "T=" + std::to_string(c.tokens) + " H=" + std::to_string(c.heads) + "/" +
         std::to_string(c.kv_heads) + " hd=" + std::to_string(c.hd) +
         " start=" + std::to_string(c.start_pos) + " q_range=" + std::to_string(c.q_range) +
         " softcap=" + std::to_string(c.softcap);
}

using FlashPrefill = CudaTest;

TEST_F(FlashPrefill, MatchesF32Kernel) {
  const std::vector<Case> cases = {
      {1, 4, 2, 64, 0, 1.0f},      {17, 4, 2, 64, 0, 1.0f},    {77, 8, 2, 64, 0, 4.0f},
      {300, 9, 3, 64, 0, 2.0f},    {64, 4, 1, 64, 64, 1.0f},   {77, 8, 2, 64, 5, 4.0f},
      {1, 4, 2, 128, 0, 1.0f},     {17, 32, 8, 128, 0, 2.0f},  {77, 4, 4, 128, 0, 4.0f},
      {300, 32, 8, 128, 0, 1.0f},  {1, 8, 2, 128, 300, 2.0f},  {17, 8, 2, 128, 100, 1.0f},
      {300, 8, 2, 128, 129, 4.0f}, {128, 4, 2, 128, 63, 8.0f}, {65, 6, 3, 64, 1000, 2.0f},
      // head_dim 96 (Phi-3 / 3.5 mini: 32 / 32 heads).
      {77, 32, 32, 96, 0, 2.0f},   {130, 8, 2, 96, 300, 4.0f},
      // head_dim 256: 32-key tiles, q's fragments from shared memory (Gemma 2 / 3 shapes).
      {1, 8, 4, 256, 0, 1.0f},     {17, 8, 4, 256, 0, 2.0f},   {77, 4, 1, 256, 31, 4.0f},
      {300, 16, 8, 256, 0, 1.0f},  {65, 8, 4, 256, 700, 2.0f},
      // Softcapped scores (Gemma 2's 50 on the scaled score; smaller caps bend more of them).
      {77, 8, 4, 256, 5, 6.0f, 5.0f}, {130, 32, 8, 128, 40, 6.0f, 5.0f}, {17, 9, 3, 64, 0, 8.0f, 2.0f},
      {200, 16, 8, 256, 100, 2.0f, 50.0f}};
  uint32_t seed = 9001;
  for (const Case& c : cases) {
    const int64_t valid = c.start_pos + c.tokens, capacity = valid + 23;
    const Tensor k = nan_tail_cache(c.kv_heads, capacity, c.hd, valid, seed);
    const Tensor v = nan_tail_cache(c.kv_heads, capacity, c.hd, valid, seed + 1);
    const Tensor q = test::random_f32({c.tokens, c.heads, c.hd}, seed + 2, -c.q_range, c.q_range);
    seed += 3;
    const float scale = 1.0f / std::sqrt(static_cast<float>(c.hd));
    DeviceTensor dq = upload(q), dk = upload(k), dv = upload(v);
    DeviceTensor want_d = empty(DType::F32, q.shape()), got_d = empty(DType::F32, q.shape());
    attention_prefill(dq, dk, dv, want_d, c.start_pos, scale, stream(), 0, c.softcap);
    attention_prefill_fast(dq, dk, dv, got_d, c.start_pos, scale, stream(), 0, c.softcap);
    const Tensor want_t = download(want_d), got = download(got_d);
    std::vector<double> want(static_cast<size_t>(want_t.numel()));
    double max_abs = 0.0;
    for (size_t i = 0; i < want.size(); ++i) {
      want[i] = want_t.data<float>()[i];
      max_abs = std::max(max_abs, std::fabs(want[i]));
    }
    // fp16 q and probabilities: errors of a few 1e-4 of the output scale.
    test::expect_close(want, got, 2e-3 * max_abs, 2e-3, case_name(c));
  }
}

// The runtime's layout: q and out are the leading rows of larger activation buffers.
TEST_F(FlashPrefill, ChunkedPrefillEqualsWholePrefill) {
  const int64_t heads = 8, kv_heads = 2, hd = 128, total = 200, capacity = 256;
  const Tensor k = nan_tail_cache(kv_heads, capacity, hd, total, 11);
  const Tensor v = nan_tail_cache(kv_heads, capacity, hd, total, 12);
  const Tensor q = test::random_f32({total, heads, hd}, 13, -2.0f, 2.0f);
  const float scale = 1.0f / std::sqrt(static_cast<float>(hd));
  DeviceTensor dq = upload(q), dk = upload(k), dv = upload(v);
  DeviceTensor whole = empty(DType::F32, q.shape()), parts = empty(DType::F32, q.shape());
  attention_prefill_fast(dq, dk, dv, whole, 0, scale, stream());
  const std::vector<std::pair<int64_t, int64_t>> chunks = {{0, 70}, {70, 1}, {71, 129}};
  for (const auto& [start, n] : chunks)
    attention_prefill_fast(dq.view().slice0(start, start + n), dk, dv,
                           parts.view().slice0(start, start + n), static_cast<int>(start), scale,
                           stream());
  const Tensor w = download(whole), p = download(parts);
  // Same keys, fp16 rounding and key-tile order for every query: the rows agree (bit for bit
  // in exact arithmetic; masked tiles only add zeros).
  for (int64_t i = 0; i < w.numel(); ++i)
    ASSERT_NEAR(w.data<float>()[i], p.data<float>()[i], 1e-6) << "element " << i;
}

// Llama-3-8B attention shape at T = 2048; prints both kernels' times. On request only:
//   backend_cuda_tests --gtest_also_run_disabled_tests --gtest_filter='*FlashPrefill*Timing*'
TEST_F(FlashPrefill, DISABLED_Timing) {
  const int64_t T = 2048, heads = 32, kv_heads = 8, hd = 128;
  DeviceTensor q = upload(test::random_f32({T, heads, hd}, 1));
  DeviceTensor k = upload(test::random_half(DType::F16, {kv_heads, T, hd}, 2));
  DeviceTensor v = upload(test::random_half(DType::F16, {kv_heads, T, hd}, 3));
  DeviceTensor out = empty(DType::F32, {T, heads, hd});
  const float scale = 1.0f / std::sqrt(static_cast<float>(hd));
  const double flops = 4.0 * heads * hd * (static_cast<double>(T) * (T + 1) / 2);
  for (const bool fast : {false, true}) {
    const auto fn = [&] {
      if (fast)
        attention_prefill_fast(q, k, v, out, 0, scale, stream());
      else
        attention_prefill(q, k, v, out, 0, scale, stream());
    };
    fn();
    Event start, end;
    start.record(stream());
    constexpr int kIters = 20;
    for (int i = 0; i < kIters; ++i) fn();
    end.record(stream());
    end.synchronize();
    const double ms = Event::elapsed_ms(start, end) / kIters;
    std::printf("attention prefill %-4s T=%lld 32/8 hd128: %.3f ms, %.1f TFLOP/s\n",
                fast ? "fast" : "f32", static_cast<long long>(T), ms, flops / (ms * 1e9));
  }
}

TEST(FlashPrefillArgs, RejectUnsupported) {
  using test::fake_view;
  const DeviceView q = fake_view(DType::F32, {4, 8, 64}), out = fake_view(DType::F32, {4, 8, 64});
  test::expect_error([&] { attention_prefill_fast(q, fake_view(DType::F32, {2, 64, 64}),
                                                  fake_view(DType::F32, {2, 64, 64}), out, 0,
                                                  0.125f, nullptr); },
                     "needs an F16 cache and head_dim 64, 96, 128 or 256, got F32 and 64");
  test::expect_error([&] { attention_prefill_fast(fake_view(DType::F32, {4, 8, 80}),
                                                  fake_view(DType::F16, {2, 64, 80}),
                                                  fake_view(DType::F16, {2, 64, 80}),
                                                  fake_view(DType::F32, {4, 8, 80}), 0, 0.1f,
                                                  nullptr); },
                     "needs an F16 cache and head_dim 64, 96, 128 or 256, got F16 and 80");
  test::expect_error([&] { attention_prefill_fast(q, fake_view(DType::F16, {2, 64, 64}),
                                                  fake_view(DType::F16, {2, 64, 64}), out, 61,
                                                  0.125f, nullptr); },
                     "positions [61, 65) exceed the cache capacity 64");
  EXPECT_TRUE(attention_prefill_fast_supports(DType::F16, 64));
  EXPECT_TRUE(attention_prefill_fast_supports(DType::F16, 96));
  EXPECT_TRUE(attention_prefill_fast_supports(DType::F16, 128));
  EXPECT_FALSE(attention_prefill_fast_supports(DType::F32, 128));
  EXPECT_FALSE(attention_prefill_fast_supports(DType::F16, 32));
  EXPECT_FALSE(attention_prefill_fast_supports(DType::F16, 512));  // 256: asks the device (MatchesF32Kernel)
}

}  // namespace
}  // namespace exq::cuda
