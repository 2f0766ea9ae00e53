// The measurement's tensor-core attention (fp16 q/k/v) against the f32 prefill kernel of the
// CUDA backend: causal GQA on sequences that are and are not multiples of the 64-token tiles,
// head sizes 64 and 128, scores large enough for the online softmax to rescale, and gemma2's
// score softcap.
#include "quant/cuda/flash_attention.h"

#include <gtest/gtest.h>

#include <cmath>
#include <random>
#include <vector>

#include "backend/cuda/allocator.h"
#include "backend/cuda/attention.h"
#include "backend/cuda/device_tensor.h"
#include "backend/cuda/kv_cache.h"
#include "backend/cuda/stream.h"
#include "engine_test_util.h"

namespace exq::quant::cuda {
namespace {

Tensor random(Shape shape, uint32_t seed, float scale) {
  Tensor t(DType::F32, std::move(shape));
  std::mt19937 rng(seed);
  std::normal_distribution<float> dist(0.0f, scale);
  for (float& v : t.span<float>()) v = dist(rng);
  return t;
}

struct Case {
  int tokens, heads, kv_heads, head_dim;
  float q_scale;  // larger: sharper softmax
  float softcap = 0.0f;
};

TEST(FlashAttention, MatchesTheF32Kernel) {
  EXQ_REQUIRE_GPU();
  exq::cuda::CachingAllocator alloc;
  exq::cuda::Stream stream;
  for (const Case c :
       {Case{200, 8, 2, 64, 1.0f}, Case{64, 4, 4, 128, 1.0f}, Case{333, 8, 1, 128, 3.0f},
        Case{1, 2, 1, 64, 1.0f}, Case{129, 6, 3, 64, 0.2f}, Case{200, 8, 2, 64, 3.0f, 2.0f},
        Case{333, 8, 4, 128, 3.0f, 1.0f}}) {
    SCOPED_TRACE(::testing::Message() << "T " << c.tokens << " heads " << c.heads << "/"
                                      << c.kv_heads << " d " << c.head_dim << " softcap " << c.softcap);
    ASSERT_TRUE(flash_attention_supports(c.head_dim));
    const int T = c.tokens, H = c.heads, KVH = c.kv_heads, D = c.head_dim;
    const Tensor q = random({T, H, D}, 1, c.q_scale), k = random({T, KVH, D}, 2, 1.0f);
    const Tensor v = random({T, KVH, D}, 3, 1.0f);
    auto up = [&](const Tensor& t) { return exq::cuda::to_device(t.view(), alloc, stream); };
    const auto dq = up(q), dk = up(k), dv = up(v);
    exq::cuda::DeviceTensor kc(DType::F32, {KVH, T, D}, alloc, stream);
    exq::cuda::DeviceTensor vc(DType::F32, {KVH, T, D}, alloc, stream);
    exq::cuda::DeviceTensor want(DType::F32, {T, H, D}, alloc, stream);
    exq::cuda::DeviceTensor got(DType::F32, {T, H, D}, alloc, stream);
    exq::cuda::kv_append(dk, dv, kc, vc, 0, stream);
    const float scale = static_cast<float>(1.0 / std::sqrt(static_cast<double>(D)));
    exq::cuda::attention_prefill(dq, kc, vc, want, 0, scale, stream, 0, c.softcap);
    exq::cuda::DeviceTensor q16(DType::F16, {H, T, D}, alloc, stream);
    exq::cuda::DeviceTensor k16(DType::F16, {KVH, T, D}, alloc, stream);
    exq::cuda::DeviceTensor v16(DType::F16, {KVH, T, D}, alloc, stream);
    head_major_f16_cuda(dq.view().data<float>(), static_cast<__half*>(q16.raw()), T, H, D,
                        scale * 1.4426950408889634f, stream);
    head_major_f16_cuda(dk.view().data<float>(), static_cast<__half*>(k16.raw()), T, KVH, D, 1.0f,
                        stream);
    head_major_f16_cuda(dv.view().data<float>(), static_cast<__half*>(v16.raw()), T, KVH, D, 1.0f,
                        stream);
    flash_attention_cuda(static_cast<__half*>(q16.raw()), static_cast<__half*>(k16.raw()),
                         static_cast<__half*>(v16.raw()), got.view().data<float>(), T, H, KVH, D,
                         c.softcap * 1.4426950408889634f, stream);
    const Tensor w = exq::cuda::to_host(want, stream), g = exq::cuda::to_host(got, stream);
    double num = 0, den = 0, worst = 0;
    for (int64_t i = 0; i < w.numel(); ++i) {
      const double d = static_cast<double>(g.data<float>()[i]) - w.data<float>()[i];
      ASSERT_TRUE(std::isfinite(d)) << "element " << i;
      num += d * d;
      den += static_cast<double>(w.data<float>()[i]) * w.data<float>()[i];
      worst = std::max(worst, std::fabs(d));
    }
    const double rel = std::sqrt(num / den);
    std::printf("T %4d H %d/%d D %3d softcap %.1f: relative error %.2e, max abs %.2e\n", T, H, KVH, D,
                c.softcap, rel, worst);
    EXPECT_LT(rel, 2e-3);
    EXPECT_LT(worst, 2e-2);
  }
}

}  // namespace
}  // namespace exq::quant::cuda

namespace exq::quant::cuda {
namespace {

// Llama-3-8B's attention at 2048 tokens: prints the rate (causal FLOPs 2 * 2 * T^2/2 * D per
// head) of both kernels; not a pass/fail number.
TEST(FlashAttention, ReportsItsRate) {
  EXQ_REQUIRE_GPU();
  exq::cuda::CachingAllocator alloc;
  exq::cuda::Stream stream;
  constexpr int T = 2048, H = 32, KVH = 8, D = 128;
  exq::cuda::DeviceTensor q16(DType::F16, {H, T, D}, alloc, stream);
  exq::cuda::DeviceTensor k16(DType::F16, {KVH, T, D}, alloc, stream);
  exq::cuda::DeviceTensor v16(DType::F16, {KVH, T, D}, alloc, stream);
  exq::cuda::DeviceTensor q(DType::F32, {T, H, D}, alloc, stream);
  exq::cuda::DeviceTensor kc(DType::F32, {KVH, T, D}, alloc, stream);
  exq::cuda::DeviceTensor vc(DType::F32, {KVH, T, D}, alloc, stream);
  exq::cuda::DeviceTensor out(DType::F32, {T, H, D}, alloc, stream);
  for (const exq::cuda::DeviceTensor* t : {&q16, &k16, &v16, &q, &kc, &vc})
    ASSERT_EQ(cudaMemsetAsync(t->raw(), 0, t->nbytes(), stream), cudaSuccess);
  exq::cuda::Event start, stop;
  const double flops = 2.0 * 2.0 * T * (T / 2.0) * D * H;
  for (int kernel = 0; kernel < 2; ++kernel) {
    auto launch = [&] {
      if (kernel == 0)
        flash_attention_cuda(static_cast<__half*>(q16.raw()), static_cast<__half*>(k16.raw()),
                             static_cast<__half*>(v16.raw()), out.view().data<float>(), T, H, KVH,
                             D, 0.0f, stream);
      else
        exq::cuda::attention_prefill(q, kc, vc, out, 0, 0.088f, stream);
    };
    launch();
    start.record(stream);
    for (int i = 0; i < 10; ++i) launch();
    stop.record(stream);
    stop.synchronize();
    const double ms = exq::cuda::Event::elapsed_ms(start, stop) / 10;
    std::printf("%s: %.3f ms, %.1f TFLOP/s\n", kernel == 0 ? "flash (fp16 mma)" : "f32 prefill", ms,
                flops / (ms * 1e-3) / 1e12);
  }
}

}  // namespace
}  // namespace exq::quant::cuda
