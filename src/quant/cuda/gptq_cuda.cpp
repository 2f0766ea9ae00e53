// gptq_quantize_batch v1: GPTQ of one linear under many options, one option after another
// (quant/gptq.cpp is the reference; gptq_batch.cpp is v2), and the argument checks both share.
//
// Every option gets its own working copy W' = W^T[perm] ([in, out], f32, copied from one
// permuted transpose made per call). Per group (gptq_plan.h): pending errors of the block's
// earlier groups (GEMM), column maxima, the 97-point grid errors, their deterministic column
// sum, then the sequential row pass; after a block's last group every later row is updated
// with W'[b:] -= U[s:b, b:]^T E[s:b].
// Precision: plain TF32 (2^-11 input rounding) would move rounding decisions of 6-8 bit codes,
// which the CPU makes after f32 updates. The small in-block GEMMs run in f32 on CUDA cores
// (CUBLAS_COMPUTE_32F); the large update after each block, most of GPTQ's arithmetic, runs as
// 3-pass TF32 on tensor cores: E = Eh + El and U = Uh + Ul split at TF32 precision, and
// Eh^T Uh + Eh^T Ul + El^T Uh in one GEMM over the stacked operands (K = 3 * block rows), f32
// accumulation; the dropped El^T Ul and the TF32 rounding of the lo parts are ~2^-21 relative,
// f32-level accuracy at over twice the f32 rate. Nothing here waits for the device, except the
// download of codes and scales at the end when want_packed (one wait per call).
#include <fmt/format.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <cstring>

#include "backend/cuda/cuda_check.h"
#include "backend/cuda/validate.h"
#include "core/error.h"
#include "quant/cuda/gptq_batch.h"
#include "quant/cuda/gptq_cuda.h"
#include "quant/cuda/gptq_launchers.h"
#include "quant/cuda/gptq_plan.h"

namespace exq::quant::cuda {
namespace {

constexpr int64_t kMaxOut = int64_t{1} << 21;  // tile grids put out/32 in gridDim.y (<= 65535)
constexpr int64_t kMaxStackRows = 65535;       // split_tf32_stack_cuda: rows in gridDim.y

template <typename T>
T* ptr(const DeviceTensor& t) {
  return static_cast<T*>(t.raw());
}

// W'[dst0:dst1] -= U[src0:src1, dst0:dst1]^T E[src0:src1], with E holding rows from
// block_begin on. Row-major [R, C] is column-major [C, R], so in cuBLAS's terms:
// W'^T (out x n) -= E^T (out x k) * U_sub (k x n), U_sub read as the transpose of the
// column-major (n x k) matrix at &U[src0, dst0] with leading dimension in.
void update_rows(cublasHandle_t handle, float* wp, const float* u, const float* e, int64_t in,
                 int64_t out, int64_t dst0, int64_t dst1, int64_t src0, int64_t src1,
                 int64_t block_begin) {
  const float alpha = -1.0f, beta = 1.0f;
  CUBLAS_CHECK(cublasGemmEx(handle, CUBLAS_OP_N, CUBLAS_OP_T, static_cast<int>(out),
                            static_cast<int>(dst1 - dst0), static_cast<int>(src1 - src0), &alpha,
                            e + (src0 - block_begin) * out, CUDA_R_32F, static_cast<int>(out),
                            u + src0 * in + dst0, CUDA_R_32F, static_cast<int>(in), &beta,
                            wp + dst0 * out, CUDA_R_32F, static_cast<int>(out),
                            CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
}

// The same update after a block [s, b) for every row from b on, in 3-pass TF32 (see the top).
// e3: [3 * (b - s), out] and u3: [3 * (b - s), in - b] scratch.
void flush_rows_tf32(cublasHandle_t handle, float* wp, const float* u, const float* e, float* e3,
                     float* u3, int64_t in, int64_t out, int64_t s, int64_t b,
                     cudaStream_t stream) {
  const int64_t k = b - s, n = in - b;
  split_tf32_stack_cuda(e, out, k, out, e3, false, stream);          // [Eh; Eh; El]
  split_tf32_stack_cuda(u + s * in + b, in, k, n, u3, true, stream);  // [Uh; Ul; Uh]
  const float alpha = -1.0f, beta = 1.0f;
  CUBLAS_CHECK(cublasGemmEx(handle, CUBLAS_OP_N, CUBLAS_OP_T, static_cast<int>(out),
                            static_cast<int>(n), static_cast<int>(3 * k), &alpha, e3, CUDA_R_32F,
                            static_cast<int>(out), u3, CUDA_R_32F, static_cast<int>(n), &beta,
                            wp + b * out, CUDA_R_32F, static_cast<int>(out),
                            CUBLAS_COMPUTE_32F_FAST_TF32, CUBLAS_GEMM_DEFAULT));
}

// Device outputs of one option kept until the end of the call for the packed layer.
struct PackedPending {
  DeviceTensor codes;      // U8 [in, out]
  DeviceTensor qs;         // U8 [groups, out]
  DeviceTensor scale_max;  // I16 [groups], fp16 bits
};

}  // namespace

GptqInputs check_gptq_inputs(const DeviceView& w, const DevicePreparedHessian& h,
                             std::span<const QuantOption> options, bool want_packed,
                             const GptqContext& ctx, bool deferred_packed) {
  constexpr const char* op = "gptq_quantize_batch";
  EXQ_CHECK(ctx.allocator != nullptr && ctx.cublas != nullptr,
            "{}: GptqContext needs an allocator and a cuBLAS handle", op);
  exq::cuda::check_dtype_in(w, {DType::F32, DType::F16, DType::BF16}, op, "w");
  exq::cuda::check_rank(w, 2, op, "w");
  exq::cuda::check_dense(w, op, "w");
  GptqInputs r;
  r.out = w.dim(0);
  r.in = w.dim(1);
  const int64_t out = r.out, in = r.in;
  EXQ_CHECK(out > 0 && out <= kMaxOut && in > 0 && in <= 65536,
            "{}: weight {} out of range (out 1 .. {}, in 1 .. 65536)", op, shape_str(w.shape()),
            kMaxOut);
  const bool host_perm = h.perm.size() == static_cast<size_t>(in);
  EXQ_CHECK(h.in == in && (host_perm || (h.perm.empty() && !h.invperm_d.empty())),
            "{}: Hessian prepared for {} inputs, layer has {}", op, h.in, in);
  EXQ_CHECK(host_perm || !want_packed || deferred_packed,
            "{}: packed results need the host permutation (prepare_hessian, not _async)", op);
  h.u.view().expect(DType::F32, {in, in}, "gptq_quantize_batch: prepared Hessian u");
  h.perm_d.view().expect(DType::I32, {in}, "gptq_quantize_batch: prepared Hessian perm_d");
  if (!h.invperm_d.empty())
    h.invperm_d.view().expect(DType::I32, {in}, "gptq_quantize_batch: prepared Hessian invperm_d");
  if (host_perm) r.invperm = inverse_permutation(h.perm);
  for (const QuantOption& o : options) r.layouts.push_back(group_layout(o, in));
  return r;
}

const int32_t* invperm_device(const DevicePreparedHessian& h, const GptqInputs& inputs,
                              DeviceTensor& scratch, GptqContext& ctx) {
  if (!h.invperm_d.empty()) return h.invperm_d.view().data<int32_t>();
  scratch = DeviceTensor(DType::I32, {inputs.in}, *ctx.allocator, ctx.stream);
  CUDA_CHECK(cudaMemcpyAsync(scratch.raw(), inputs.invperm.data(), scratch.nbytes(),
                             cudaMemcpyHostToDevice, ctx.stream));
  return scratch.view().data<int32_t>();
}

void host_wait(const GptqContext& ctx, const char* why) {
  if (ctx.wait)
    ctx.wait(ctx.stream, why);
  else
    CUDA_CHECK(cudaStreamSynchronize(ctx.stream));
}

void download_packed(const GptqContext& ctx, io::Exl2Linear& l, const void* codes,
                     const void* qs, const void* scale_max) {
  const auto t0 = std::chrono::steady_clock::now();
  // Pageable destinations: each copy returns once done.
  CUDA_CHECK(cudaMemcpyAsync(l.q.data(), codes, l.q.size(), cudaMemcpyDeviceToHost, ctx.stream));
  CUDA_CHECK(cudaMemcpyAsync(l.qs.data(), qs, l.qs.size(), cudaMemcpyDeviceToHost, ctx.stream));
  CUDA_CHECK(cudaMemcpyAsync(l.scale_max.data(), scale_max,
                             l.scale_max.size() * sizeof(l.scale_max[0]), cudaMemcpyDeviceToHost,
                             ctx.stream));
  if (ctx.packed_download_s)
    *ctx.packed_download_s +=
        std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

PackedHostLayout packed_host_layout(int64_t in, int64_t out, int64_t groups) {
  const auto align = [](size_t n) { return (n + 15) / 16 * 16; };
  PackedHostLayout l;
  l.qs = align(static_cast<size_t>(in * out));
  l.scale_max = l.qs + align(static_cast<size_t>(groups * out));
  l.perm = l.scale_max + align(static_cast<size_t>(groups) * sizeof(uint16_t));
  l.bytes = l.perm + static_cast<size_t>(in) * sizeof(int32_t);
  return l;
}

PackedHost download_packed_async(const GptqContext& ctx, size_t option, int64_t in, int64_t out,
                                 int64_t groups, const void* codes, const void* qs,
                                 const void* scale_max, const int32_t* perm_d) {
  const PackedHostLayout at = packed_host_layout(in, out, groups);
  char* dst = static_cast<char*>(ctx.packed_to(option, at.bytes));
  const auto copy = [&](size_t offset, const void* src, size_t bytes) {
    CUDA_CHECK(cudaMemcpyAsync(dst + offset, src, bytes, cudaMemcpyDeviceToHost, ctx.stream));
  };
  copy(0, codes, static_cast<size_t>(in * out));
  copy(at.qs, qs, static_cast<size_t>(groups * out));
  copy(at.scale_max, scale_max, static_cast<size_t>(groups) * sizeof(uint16_t));
  copy(at.perm, perm_d, static_cast<size_t>(in) * sizeof(int32_t));
  return {dst, in, out, groups};
}

double take_packed(io::Exl2Linear& l, const PackedHost& p) {
  if (p.data == nullptr) return 0.0;
  const auto t0 = std::chrono::steady_clock::now();
  const PackedHostLayout at = packed_host_layout(p.in, p.out, p.groups);
  const char* src = static_cast<const char*>(p.data);
  const auto fill = [src](auto& v, size_t offset, size_t n) {
    v.resize(n);
    std::memcpy(v.data(), src + offset, n * sizeof(v[0]));
  };
  fill(l.q, 0, static_cast<size_t>(p.in * p.out));
  fill(l.qs, at.qs, static_cast<size_t>(p.groups * p.out));
  fill(l.scale_max, at.scale_max, static_cast<size_t>(p.groups));
  fill(l.perm, at.perm, static_cast<size_t>(p.in));
  l.invperm = inverse_permutation(l.perm);  // as check_gptq_inputs computes it
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

int gptq_dtype_code(DType t) { return t == DType::F32 ? 0 : (t == DType::F16 ? 1 : 2); }

GptqImpl gptq_impl_from_env() {
  const char* v = std::getenv("EXQ_GPTQ_IMPL");
  if (v == nullptr || *v == '\0' || std::strcmp(v, "v2") == 0) return GptqImpl::kV2;
  if (std::strcmp(v, "v1") == 0) return GptqImpl::kV1;
  throw Error(fmt::format("EXQ_GPTQ_IMPL='{}': expected v1 or v2", v));
}

GptqLaunch gptq_launch(GptqContext& ctx, int64_t out) {
  ctx.cublas->set_stream(ctx.stream);
  return {ctx.stream, *ctx.allocator, ctx.cublas->get(), gptq_grid(), gptq_colmax_blocks(out)};
}

const char* gptq_impl_name(GptqImpl impl) { return impl == GptqImpl::kV1 ? "v1" : "v2"; }

std::vector<DeviceGptqResult> gptq_quantize_batch(const DeviceView& w,
                                                  const DevicePreparedHessian& h,
                                                  std::span<const QuantOption> options,
                                                  bool want_packed, GptqContext& ctx,
                                                  const GptqResultHook& on_weight) {
  return gptq_quantize_batch(w, h, options, want_packed, ctx, on_weight, gptq_impl_from_env());
}

std::vector<DeviceGptqResult> gptq_quantize_batch(const DeviceView& w,
                                                  const DevicePreparedHessian& h,
                                                  std::span<const QuantOption> options,
                                                  bool want_packed, GptqContext& ctx,
                                                  const GptqResultHook& on_weight, GptqImpl impl) {
  return impl == GptqImpl::kV1
             ? gptq_quantize_batch_v1(w, h, options, want_packed, ctx, on_weight)
             : gptq_quantize_batch_v2(w, h, options, want_packed, ctx, on_weight);
}

std::vector<DeviceGptqResult> gptq_quantize_batch_v1(const DeviceView& w,
                                                     const DevicePreparedHessian& h,
                                                     std::span<const QuantOption> options,
                                                     bool want_packed, GptqContext& ctx,
                                                     const GptqResultHook& on_weight) {
  // Everything that can fail on the host fails before the first launch.
  const GptqInputs inputs = check_gptq_inputs(w, h, options, want_packed, ctx);
  const int64_t out = inputs.out, in = inputs.in;
  const std::vector<int32_t>& invperm = inputs.invperm;
  const std::vector<std::vector<GroupSpan>>& layouts = inputs.layouts;
  std::vector<GptqPlan> plans;
  int64_t max_block_rows = 0;
  for (const auto& layout : layouts) {
    plans.push_back(plan_gptq(layout, in));
    max_block_rows = std::max(max_block_rows, plans.back().max_block_rows);
  }
  std::vector<DeviceGptqResult> results(options.size());
  if (options.empty()) return results;

  const auto [stream, alloc, handle, grid, parts] = gptq_launch(ctx, out);

  DeviceTensor invperm_scratch;
  const int32_t* invperm_d = invperm_device(h, inputs, invperm_scratch, ctx);
  DeviceTensor wp0(DType::F32, {in, out}, alloc, stream);
  permute_transpose_cuda(w.raw(), gptq_dtype_code(w.dtype()), ptr<int32_t>(h.perm_d),
                         ptr<float>(wp0), in, out, stream);
  DeviceTensor wp(DType::F32, {in, out}, alloc, stream);
  DeviceTensor e(DType::F32, {max_block_rows, out}, alloc, stream);
  DeviceTensor base(DType::F32, {out}, alloc, stream);
  DeviceTensor partials(DType::F32, {parts}, alloc, stream);
  DeviceTensor col_err(DType::F32, {kGptqGrid, out}, alloc, stream);
  exq::cuda::DeviceBuffer err_sums = alloc.allocate(kGptqGrid * sizeof(double), stream);
  DeviceTensor wq(DType::F16, {in, out}, alloc, stream);
  const bool use_tf32 = max_block_rows <= kMaxStackRows;
  const int64_t stack_rows = use_tf32 ? 3 * max_block_rows : 0;
  DeviceTensor e3(DType::F32, {stack_rows, out}, alloc, stream);
  DeviceTensor u3(DType::F32, {stack_rows, in}, alloc, stream);
  const float* u = ptr<float>(h.u);
  std::vector<PackedPending> pending;

  for (size_t k = 0; k < options.size(); ++k) {
    const GptqPlan& plan = plans[k];
    const int64_t groups = static_cast<int64_t>(plan.steps.size());
    float* wpd = ptr<float>(wp);
    CUDA_CHECK(cudaMemcpyAsync(wpd, wp0.raw(), wp.nbytes(), cudaMemcpyDeviceToDevice, stream));
    PackedPending dev{DeviceTensor(DType::U8, {in, out}, alloc, stream),
                      DeviceTensor(DType::U8, {groups, out}, alloc, stream),
                      DeviceTensor(DType::I16, {groups}, alloc, stream)};
    for (int64_t g = 0; g < groups; ++g) {
      const GptqStep& s = plan.steps[static_cast<size_t>(g)];
      const int64_t a = s.row_begin, b = s.row_begin + s.rows;
      if (s.block_begin < a)
        update_rows(handle, wpd, u, ptr<float>(e), in, out, a, b, s.block_begin, a,
                    s.block_begin);
      const float maxq = static_cast<float>((1 << s.bits) - 1);
      const float zero = static_cast<float>(1 << (s.bits - 1));
      uint8_t* qs = ptr<uint8_t>(dev.qs) + g * out;
      group_colmax_cuda(wpd, ptr<float>(base), ptr<float>(partials), out, a, s.rows, maxq / 2.0f,
                        stream);
      group_grid_errors_cuda(wpd, ptr<float>(base), ptr<float>(partials), parts, qs,
                             ptr<float>(col_err), grid, out, a, s.rows, zero, maxq, stream);
      grid_error_sums_cuda(ptr<float>(col_err), err_sums.as<double>(), out, stream);
      group_rows_cuda(wpd, u, ptr<float>(e), ptr<uint8_t>(dev.codes), ptr<__half>(wq),
                      ptr<uint16_t>(dev.scale_max) + g, qs, err_sums.as<double>(),
                      ptr<float>(partials), parts, grid, in, out, a, s.rows, s.block_begin,
                      s.bits, stream);
      if (s.block_end && b < in) {
        if (use_tf32)
          flush_rows_tf32(handle, wpd, u, ptr<float>(e), ptr<float>(e3), ptr<float>(u3), in, out,
                          s.block_begin, b, stream);
        else
          update_rows(handle, wpd, u, ptr<float>(e), in, out, b, in, s.block_begin, b,
                      s.block_begin);
      }
    }
    DeviceGptqResult& r = results[k];
    r.option = options[k];
    r.weight = DeviceTensor(DType::F16, {out, in}, alloc, stream);
    unpermute_transpose_cuda(ptr<__half>(wq), invperm_d, ptr<__half>(r.weight), in, out,
                             stream);
    if (on_weight) on_weight(k, r);
    if (want_packed) pending.push_back(std::move(dev));
  }

  if (want_packed) {
    // The host vectors first (their pages are touched while the device still works), then one
    // wait, then the copies alone.
    for (size_t k = 0; k < options.size(); ++k) {
      io::Exl2Linear& l = results[k].layer;
      const PackedPending& dev = pending[k];
      l.in = in;
      l.out = out;
      l.groups = io::exl2_group_table(group_bits_rows(layouts[k]));
      l.perm = h.perm;
      l.invperm = invperm;
      l.q.resize(static_cast<size_t>(in * out));
      l.qs.resize(static_cast<size_t>(dev.qs.numel()));
      l.scale_max.resize(static_cast<size_t>(dev.scale_max.numel()));
      EXQ_ASSERT(dev.codes.nbytes() == l.q.size() && dev.qs.nbytes() == l.qs.size() &&
                 dev.scale_max.nbytes() == l.scale_max.size() * sizeof(l.scale_max[0]));
    }
    host_wait(ctx, "GPTQ v1 packed results");
    for (size_t k = 0; k < options.size(); ++k)
      download_packed(ctx, results[k].layer, pending[k].codes.raw(), pending[k].qs.raw(),
                      pending[k].scale_max.raw());
  }
  return results;
}

}  // namespace exq::quant::cuda
