#include "quant/cuda/head_step.h"

#include <fmt/format.h>

#include <cmath>
#include <vector>

#include "backend/cuda/cuda_check.h"
#include "backend/cuda/matmul.h"
#include "backend/cuda/norm.h"
#include "core/error.h"
#include "quant/cuda/engine_kernels.h"
#include "quant/cuda/engine_plan.h"
#include "quant/cuda/gptq_cuda.h"
#include "quant/options.h"

namespace exq::quant::cuda {
namespace {

using exq::cuda::DeviceTensor;
using exq::cuda::DeviceView;

// A contiguous host tensor copied as is (widened to F32 first when `f32`).
DeviceTensor upload(const TensorView& host, bool f32, EngineContext& ctx) {
  Tensor keep;
  TensorView src = host;
  if ((f32 && host.dtype() != DType::F32) || !host.is_contiguous()) {
    keep = f32 ? to_f32(host) : Tensor::copy_of(host);
    src = keep.view();
  }
  DeviceTensor d(src.dtype(), src.shape(), *ctx.alloc, ctx.compute);
  CUDA_CHECK(cudaMemcpyAsync(d.raw(), src.raw(), src.nbytes(), cudaMemcpyHostToDevice,
                             ctx.compute));
  ctx.host_sync(ctx.compute, "head step: upload");  // `keep` may go
  return d;
}

}  // namespace

size_t head_step_bytes(int64_t vocab, int64_t hidden, int64_t tokens) {
  const auto r = [](int64_t bytes) {
    return exq::cuda::CachingAllocator::round_size(static_cast<size_t>(bytes));
  };
  const int64_t w = vocab * hidden;
  return r(4 * w) + r(2 * w)                      // weights (F32 at worst) + F16 copy
         + 3 * r(4 * hidden * hidden)             // Hessian sum, scaled, prepared U
         + gptq_scratch_estimate(vocab, hidden)   // GPTQ scratch
         + r(2 * w) + r(w)                        // the result's weight and codes
         + 2 * r(4 * tokens * hidden)             // one row, row 0 normed
         + 2 * r(4 * tokens * vocab)              // reference and quantized logits
         + r(static_cast<int64_t>(exq::cuda::matmul_workspace_bytes(tokens, hidden)));
}

QuantStep quantize_head_cuda(EngineContext& ctx, const TensorView& states,
                             const TensorView& final_norm, const TensorView& head_weight,
                             float eps, int head_bits) {
  EXQ_CHECK(states.rank() == 3 && states.dtype() == DType::F32 && states.is_contiguous(),
            "lm_head: states must be contiguous F32 [rows, T, hidden], got {} {}",
            dtype_name(states.dtype()), shape_str(states.shape()));
  const int64_t rows = states.dim(0), T = states.dim(1), hidden = states.dim(2);
  EXQ_CHECK(head_weight.rank() == 2 && head_weight.dim(1) == hidden,
            "lm_head: expected [vocab, {}], got {}", hidden, shape_str(head_weight.shape()));
  EXQ_CHECK(final_norm.numel() == hidden, "model.norm.weight: expected [{}], got {}", hidden,
            shape_str(final_norm.shape()));
  const int64_t vocab = head_weight.dim(0);
  GptqContext g{ctx.alloc.get(), ctx.compute.get(), &ctx.cublas, ctx.cusolver.get(),
                [&ctx](cudaStream_t s, const char* why) { ctx.host_sync(s, why); }};
  const DeviceTensor norm_w = upload(final_norm, true, ctx);
  // GPTQ reads F32|F16|BF16; the reference logits need F16|BF16.
  const bool half = head_weight.dtype() == DType::F16 || head_weight.dtype() == DType::BF16;
  const DeviceTensor w = upload(head_weight, !half, ctx);
  DeviceTensor w16;
  if (!half) {
    w16 = DeviceTensor(DType::F16, w.shape(), *ctx.alloc, ctx.compute);
    f32_to_f16_cuda(w.view().data<float>(), static_cast<__half*>(w16.raw()), w.numel(),
                    ctx.compute);
  }

  DeviceTensor row(DType::F32, {T, hidden}, *ctx.alloc, ctx.compute);
  DeviceTensor normed0(DType::F32, {T, hidden}, *ctx.alloc, ctx.compute);
  DeviceTensor counter(DType::U8, {8}, *ctx.alloc, ctx.compute);
  CUDA_CHECK(cudaMemsetAsync(counter.raw(), 0, 8, ctx.compute));
  auto* bad = static_cast<unsigned long long*>(counter.raw());
  DevicePreparedHessian prepared;
  {
    DeviceHessian hessian(hidden, g);
    const size_t row_bytes = static_cast<size_t>(T * hidden) * sizeof(float);
    for (int64_t r = 0; r < rows; ++r) {
      CUDA_CHECK(cudaMemcpyAsync(row.raw(), static_cast<const char*>(states.raw()) + r * row_bytes,
                                 row_bytes, cudaMemcpyHostToDevice, ctx.compute));
      count_non_finite_cuda(row.view().data<float>(), row.numel(), bad, ctx.compute);
      const DeviceTensor& dst = r == 0 ? normed0 : row;
      exq::cuda::rmsnorm(row.view(), norm_w.view(), dst.view(), eps, ctx.compute);
      hessian.add_batch(dst.view());
    }
    unsigned long long n_bad = 0;
    CUDA_CHECK(cudaMemcpyAsync(&n_bad, bad, sizeof(n_bad), cudaMemcpyDeviceToHost, ctx.compute));
    ctx.host_sync(ctx.compute, "head step: NaN/Inf count");
    EXQ_CHECK(n_bad == 0, "lm_head: the input states hold {} NaN/Inf values", n_bad);
    prepared = prepare_hessian(hessian.hessian(), 0.12f, g);
  }
  row = {};
  const QuantOption option = head_option(head_bits);
  std::vector<DeviceGptqResult> q =
      gptq_quantize_batch(w.view(), prepared, std::span<const QuantOption>(&option, 1), true, g);
  EXQ_CHECK(q.size() == 1, "lm_head: GPTQ returned {} results", q.size());

  QuantStep out;
  out.packed.emplace_back("lm_head", io::pack_exl2(q[0].layer));
  // rfn of the first row's logits, as the CPU step computes it.
  {
    const DeviceTensor ws(DType::U8,
                          {static_cast<int64_t>(exq::cuda::matmul_workspace_bytes(T, hidden))},
                          *ctx.alloc, ctx.compute);
    DeviceTensor ref(DType::F32, {T, vocab}, *ctx.alloc, ctx.compute);
    DeviceTensor got(DType::F32, {T, vocab}, *ctx.alloc, ctx.compute);
    exq::cuda::matmul(ctx.cublas, normed0.view(), half ? w.view() : w16.view(), ref.view(),
                      ws.view(), ctx.compute);
    exq::cuda::matmul(ctx.cublas, normed0.view(), q[0].weight.view(), got.view(), ws.view(),
                      ctx.compute);
    const int64_t n = T * vocab;
    const int blocks = error_blocks(n);
    DeviceTensor partials(DType::U8, {static_cast<int64_t>(blocks) * 16}, *ctx.alloc,
                          ctx.compute);
    error_partials_cuda(got.view().data<float>(), nullptr, nullptr, nullptr,
                        ref.view().data<float>(), nullptr, n, vocab,
                        static_cast<double*>(partials.raw()), ctx.compute);
    std::vector<double> p(static_cast<size_t>(blocks) * 2);
    CUDA_CHECK(cudaMemcpyAsync(p.data(), partials.raw(), p.size() * sizeof(double),
                               cudaMemcpyDeviceToHost, ctx.compute));
    ctx.host_sync(ctx.compute, "head step: rfn");
    double num = 0.0, den = 0.0;
    for (int b = 0; b < blocks; ++b) {
      num += p[2 * static_cast<size_t>(b)];
      den += p[2 * static_cast<size_t>(b) + 1];
    }
    out.rfn = den == 0.0 ? (num == 0.0 ? 0.0 : INFINITY) : std::sqrt(num / den);
  }
  return out;
}

}  // namespace exq::quant::cuda
