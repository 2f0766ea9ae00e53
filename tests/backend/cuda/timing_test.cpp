// Baseline timings of the kernels that will be tuned (decode/prefill attention, matmul). Not
// correctness tests: DISABLED_ so they run only on request, on a GPU:
//   backend_cuda_tests --gtest_also_run_disabled_tests --gtest_filter='*Timing*'
#include <gtest/gtest.h>

#include <cstdio>
#include <functional>

#include "backend/cuda/attention.h"
#include "backend/cuda/matmul.h"
#include "cuda_test_util.h"

namespace exq::cuda {
namespace {

using test::CudaTest;

class Timing : public CudaTest {
 protected:
  // Mean milliseconds per call over `iters` calls after a warm-up.
  float time_ms(const std::function<void()>& fn, int iters = 50) {
    fn();
    Event start, end;
    start.record(stream());
    for (int i = 0; i < iters; ++i) fn();
    end.record(stream());
    end.synchronize();
    return Event::elapsed_ms(start, end) / static_cast<float>(iters);
  }
};

TEST_F(Timing, DISABLED_AttentionDecode) {
  struct Case { int64_t heads, kv_heads, hd, kv_len; };
  for (const Case c : {Case{9, 3, 64, 1024}, Case{9, 3, 64, 8192}, Case{32, 8, 128, 4096},
                       Case{32, 8, 128, 32768}}) {
    DeviceTensor q = upload(test::random_f32({1, c.heads, c.hd}, 1));
    DeviceTensor k = upload(test::random_half(DType::F16, {c.kv_heads, c.kv_len, c.hd}, 2));
    DeviceTensor v = upload(test::random_half(DType::F16, {c.kv_heads, c.kv_len, c.hd}, 3));
    DeviceTensor out = empty(DType::F32, {1, c.heads, c.hd});
    DeviceTensor ws = empty(DType::F32, {static_cast<int64_t>(attention_decode_workspace_floats(
                                            static_cast<int>(c.heads), static_cast<int>(c.hd)))});
    // The raw launcher: the op wrapper also zeroes the workspace counters on every call.
    attention_decode_reset_cuda(ws.view().data<float>(), static_cast<int>(c.heads), static_cast<int>(c.hd), stream());
    DecodeAttention<__half> a;
    a.q = q.view().data<float>();
    a.k_cache = static_cast<__half*>(k.raw());
    a.v_cache = static_cast<__half*>(v.raw());
    a.out = out.view().data<float>();
    a.workspace = ws.view().data<float>();
    a.heads = static_cast<int>(c.heads);
    a.kv_heads = static_cast<int>(c.kv_heads);
    a.head_dim = static_cast<int>(c.hd);
    a.capacity = static_cast<int>(c.kv_len);
    a.position = static_cast<int>(c.kv_len - 1);
    a.scale = 0.125f;
    const float ms = time_ms([&] { attention_decode_cuda(a, stream()); });
    const double bytes = 2.0 * static_cast<double>(c.kv_heads * c.kv_len * c.hd) * 2.0;
    std::printf("decode attention H=%ld/%ld hd=%ld kv=%ld: %.1f us, %.0f GB/s of K+V\n",
                static_cast<long>(c.heads), static_cast<long>(c.kv_heads), static_cast<long>(c.hd),
                static_cast<long>(c.kv_len), ms * 1e3, bytes / (ms * 1e-3) / 1e9);
  }
}

TEST_F(Timing, DISABLED_AttentionPrefill) {
  struct Case { int64_t tokens, heads, kv_heads, hd; };
  for (const Case c : {Case{512, 9, 3, 64}, Case{2048, 32, 8, 128}}) {
    DeviceTensor q = upload(test::random_f32({c.tokens, c.heads, c.hd}, 1));
    DeviceTensor k = upload(test::random_half(DType::F16, {c.kv_heads, c.tokens, c.hd}, 2));
    DeviceTensor v = upload(test::random_half(DType::F16, {c.kv_heads, c.tokens, c.hd}, 3));
    DeviceTensor out = empty(DType::F32, q.shape());
    const float ms = time_ms([&] { attention_prefill(q, k, v, out, 0, 0.1f, stream()); }, 10);
    const double flops = 2.0 * 2.0 * c.heads * c.hd * (c.tokens * (c.tokens + 1) / 2.0);
    std::printf("prefill attention T=%ld H=%ld/%ld hd=%ld: %.3f ms, %.1f TFLOP/s\n",
                static_cast<long>(c.tokens), static_cast<long>(c.heads),
                static_cast<long>(c.kv_heads), static_cast<long>(c.hd), ms,
                flops / (ms * 1e-3) / 1e12);
  }
}

TEST_F(Timing, DISABLED_Matmul) {
  CublasHandle cublas;
  struct Case { int64_t rows, in, out; };
  for (const Case c : {Case{1, 576, 1536}, Case{1, 576, 49152}, Case{1, 4096, 14336},
                       Case{512, 576, 1536}, Case{2048, 4096, 14336}}) {
    DeviceTensor x = upload(test::random_f32({c.rows, c.in}, 1));
    DeviceTensor w = upload(test::random_half(DType::F16, {c.out, c.in}, 2, -0.05f, 0.05f));
    DeviceTensor y = empty(DType::F32, {c.rows, c.out});
    DeviceTensor ws = empty(DType::U8, {static_cast<int64_t>(matmul_workspace_bytes(c.rows, c.in))});
    const float ms = time_ms([&] { matmul(cublas, x, w, y, ws, stream()); });
    std::printf("matmul f16 [%ld x %ld] x [%ld x %ld]^T: %.1f us, %.0f GB/s of weights, %.1f TFLOP/s\n",
                static_cast<long>(c.rows), static_cast<long>(c.in), static_cast<long>(c.out),
                static_cast<long>(c.in), ms * 1e3,
                2.0 * c.in * c.out / (ms * 1e-3) / 1e9,
                2.0 * c.rows * c.in * c.out / (ms * 1e-3) / 1e12);
  }
}

}  // namespace
}  // namespace exq::cuda
