// DeviceHessian and prepare_hessian on the GPU (quant/hessian.cpp is the reference).
//
// Precision of X^T X: every batch is split as x = hi + lo, hi = x rounded to TF32 (10 mantissa
// bits), lo = x - hi (exact in f32), and H += 2 (hi^T hi + hi^T lo + lo^T hi) runs as three
// tensor-core GEMM passes over one triangle (CUBLAS_COMPUTE_32F_FAST_TF32) with f32
// accumulation. The dropped lo^T lo
// and the TF32 rounding of lo are ~2^-21 relative per product: f32-level accuracy (the CPU's
// SYRK is f32 too) at about 3/8 of the tensor-core TF32 rate, far above f32 SIMT GEMMs.
// The symmetric result is mirrored from one triangle, as the CPU does.
// Act-order and damping are computed on the device (hessian_kernels.cu), so the measurement's
// prepare_hessian_async queues the whole preparation without a host wait.
#include <fmt/format.h>

#include <algorithm>
#include <iterator>

#include "backend/cuda/cuda_check.h"
#include "backend/cuda/validate.h"
#include "core/error.h"
#include "quant/cuda/gptq_batch.h"
#include "quant/cuda/gptq_cuda.h"
#include "quant/cuda/gptq_launchers.h"

namespace exq::quant::cuda {
namespace {

constexpr int kMaxDampings = 10;  // as quant::prepare_hessian
constexpr int64_t kMaxDim = (int64_t{1} << 31) - 1;

void check_context(const GptqContext& ctx, const char* op) {
  EXQ_CHECK(ctx.allocator != nullptr && ctx.cublas != nullptr,
            "{}: GptqContext needs an allocator and a cuBLAS handle", op);
}

void cusolver_check(cusolverStatus_t status, const char* what) {
  if (status != CUSOLVER_STATUS_SUCCESS)
    throw Error(fmt::format("cuSOLVER error {} in {}", static_cast<int>(status), what));
}

// The context's handle, or one owned for the duration of a call.
class SolverHandle {
 public:
  SolverHandle(cusolverDnHandle_t given, cudaStream_t stream) : handle_(given) {
    if (handle_ == nullptr) {
      cusolver_check(cusolverDnCreate(&handle_), "cusolverDnCreate");
      owned_ = true;
    }
    cusolver_check(cusolverDnSetStream(handle_, stream), "cusolverDnSetStream");
  }
  ~SolverHandle() {
    if (owned_) cusolverDnDestroy(handle_);
  }
  SolverHandle(const SolverHandle&) = delete;
  SolverHandle& operator=(const SolverHandle&) = delete;
  cusolverDnHandle_t get() const { return handle_; }

 private:
  cusolverDnHandle_t handle_ = nullptr;
  bool owned_ = false;
};

// Only the triangle that hessian() mirrors from is computed: in cuBLAS's column-major view
// (X row-major [rows, n] is column-major [n, rows]) C = X X^T, and the row-major upper
// triangle (r <= c) that mirror_scale_cuda reads is the column-major lower one (i >= j). Column
// panels of kPanel columns j in [j0, j1) need rows i in [j0, n): about half the work of the
// full square for large n.
constexpr int64_t kPanel = 1024;

// C[i >= j] += 2 * A B^T for column-major [n, rows] A and B, TF32 inputs, f32 accumulation.
void syrk_tf32(cublasHandle_t handle, const float* a, const float* b, float* c, int64_t n,
               int64_t rows) {
  const float alpha = 2.0f, beta = 1.0f;
  const int ld = static_cast<int>(n);
  for (int64_t j0 = 0; j0 < n; j0 += kPanel) {
    const int64_t cols = std::min(kPanel, n - j0);
    CUBLAS_CHECK(cublasGemmEx(handle, CUBLAS_OP_N, CUBLAS_OP_T, static_cast<int>(n - j0),
                              static_cast<int>(cols), static_cast<int>(rows), &alpha, a + j0,
                              CUDA_R_32F, ld, b + j0, CUDA_R_32F, ld, &beta, c + j0 + j0 * n,
                              CUDA_R_32F, ld, CUBLAS_COMPUTE_32F_FAST_TF32, CUBLAS_GEMM_DEFAULT));
  }
}

// The permuted matrix of one implementation and its factorization scratch. attempt() adds the
// damping (device scalar) `steps` more times and queues one factorization with its status in
// infos[0, kPrepareStatusInts) (all zero on success); take() gives U of the last attempt.
// v1: potrf, potri, potrf as quant/hessian.cpp: U = chol(inv(H_perm + damping)).
// v2: the reversed matrix A = J H_perm J (J: the exchange matrix) factored once, A = L L^T, and
// U = J L^-1 J: upper, with U^T U = J L^-T L^-1 J = J A^-1 J = inv(H_perm) -- the same factor as
// v1's in exact arithmetic, with one Cholesky and one triangular inverse (potrf, trtri: about
// n^3 / 3 flops each) instead of potrf, potri (2 n^3 / 3) and potrf.
// Column-major LAPACK on a symmetric matrix: "lower" is the row-major upper triangle, so v1's
// final lower factor L (inv(H) = L L^T) read row-major is U = L^T, as on the CPU, and v2's
// column-major lower L^-1 is the row-major upper triangle.
class Factorizer {
 public:
  Factorizer(const DeviceView& h, const DevicePreparedHessian& p, const int32_t* reversed,
             const float* damp, GptqContext& ctx, GptqImpl impl)
      : v1_(impl == GptqImpl::kV1),
        in_(p.in),
        n_(static_cast<int>(p.in)),
        damp_(damp),
        stream_(ctx.stream),
        solver_(ctx.cusolver, ctx.stream) {
    CachingAllocator& alloc = *ctx.allocator;
    base_ = DeviceTensor(DType::F32, {in_, in_}, alloc, stream_);  // H_perm + damping so far
    permute_symmetric_cuda(h.data<float>(), v1_ ? p.perm_d.view().data<int32_t>() : reversed,
                           hp(), in_, stream_);
    work_matrix_ = DeviceTensor(DType::F32, {in_, in_}, alloc, stream_);
    int lwork_potrf = 0, lwork_potri = 0;
    cusolver_check(cusolverDnSpotrf_bufferSize(solver_.get(), CUBLAS_FILL_MODE_LOWER, n_, wm(),
                                               n_, &lwork_potrf),
                   "cusolverDnSpotrf_bufferSize");
    size_t work_bytes = static_cast<size_t>(std::max(lwork_potrf, 1)) * sizeof(float);
    if (v1_) {
      cusolver_check(cusolverDnSpotri_bufferSize(solver_.get(), CUBLAS_FILL_MODE_LOWER, n_, wm(),
                                                 n_, &lwork_potri),
                     "cusolverDnSpotri_bufferSize");
      work_bytes = std::max(work_bytes, static_cast<size_t>(lwork_potri) * sizeof(float));
    } else {
      cusolver_check(cusolverDnXtrtri_bufferSize(solver_.get(), CUBLAS_FILL_MODE_LOWER,
                                                 CUBLAS_DIAG_NON_UNIT, in_, CUDA_R_32F, wm(),
                                                 in_, &trtri_device_, &trtri_host_),
                     "cusolverDnXtrtri_bufferSize");
      work_bytes = std::max(work_bytes, trtri_device_);
    }
    work_ = alloc.allocate(work_bytes, stream_);
    lwork_ = static_cast<int>(work_bytes / sizeof(float));
    host_work_.resize(std::max<size_t>(trtri_host_, 1));
  }

  // True when cuSOLVER uses host workspace: it must outlive the queued attempt (a wait).
  bool uses_host_workspace() const { return trtri_host_ > 0; }

  void attempt(int steps, int* infos) {
    add_diagonal_device_cuda(hp(), in_, damp_, steps, stream_);
    CUDA_CHECK(cudaMemcpyAsync(wm(), hp(), base_.nbytes(), cudaMemcpyDeviceToDevice, stream_));
    CUDA_CHECK(cudaMemsetAsync(infos, 0, kPrepareStatusInts * sizeof(int), stream_));
    float* w = work_.as<float>();
    cusolver_check(cusolverDnSpotrf(solver_.get(), CUBLAS_FILL_MODE_LOWER, n_, wm(), n_, w,
                                    lwork_, infos),
                   "cusolverDnSpotrf");
    if (v1_) {
      cusolver_check(cusolverDnSpotri(solver_.get(), CUBLAS_FILL_MODE_LOWER, n_, wm(), n_, w,
                                      lwork_, infos + 1),
                     "cusolverDnSpotri");
      cusolver_check(cusolverDnSpotrf(solver_.get(), CUBLAS_FILL_MODE_LOWER, n_, wm(), n_, w,
                                      lwork_, infos + 2),
                     "cusolverDnSpotrf");
      clear_lower_check_finite_cuda(wm(), in_, infos + 3, stream_);
    } else {
      cusolver_check(cusolverDnXtrtri(solver_.get(), CUBLAS_FILL_MODE_LOWER, CUBLAS_DIAG_NON_UNIT,
                                      in_, CUDA_R_32F, wm(), in_, work_.data(), trtri_device_,
                                      host_work_.data(), trtri_host_, infos + 1),
                     "cusolverDnXtrtri");
      // Clear the column-major upper part of L^-1, check the rest.
      clear_lower_check_finite_cuda(wm(), in_, infos + 2, stream_);
    }
  }

  DeviceTensor take() {
    if (v1_) return std::move(work_matrix_);
    reverse_upper_cuda(wm(), hp(), in_, stream_);  // the damped matrix is no longer needed
    return std::move(base_);
  }

 private:
  float* hp() const { return base_.view().data<float>(); }
  float* wm() const { return work_matrix_.view().data<float>(); }

  bool v1_;
  int64_t in_;
  int n_;
  const float* damp_;
  cudaStream_t stream_;
  SolverHandle solver_;
  DeviceTensor base_, work_matrix_;
  exq::cuda::DeviceBuffer work_;
  int lwork_ = 0;
  size_t trtri_device_ = 0, trtri_host_ = 0;
  std::vector<char> host_work_;
};

// Act-order and damping on the device (hessian_kernels.cu): p.perm_d, p.invperm_d, and the
// reversed permutation and damping for the Factorizer.
struct ActOrder {
  DeviceTensor reversed;  // I32 [in]
  DeviceTensor damp;      // F32 [1]
};

ActOrder act_order(const DeviceView& h, float percdamp, DevicePreparedHessian& p,
                   GptqContext& ctx) {
  constexpr const char* op = "prepare_hessian";
  check_context(ctx, op);
  exq::cuda::check_dtype(h, DType::F32, op, "h");
  exq::cuda::check_rank(h, 2, op, "h");
  exq::cuda::check_dense(h, op, "h");
  const int64_t in = h.dim(0);
  EXQ_CHECK(in > 0 && in <= 65536 && h.dim(1) == in, "{}: Hessian {} is not square (1 .. 65536)",
            op, shape_str(h.shape()));
  cudaStream_t stream = ctx.stream;
  CachingAllocator& alloc = *ctx.allocator;
  p.in = in;
  p.perm_d = DeviceTensor(DType::I32, {in}, alloc, stream);
  p.invperm_d = DeviceTensor(DType::I32, {in}, alloc, stream);
  ActOrder a{DeviceTensor(DType::I32, {in}, alloc, stream),
             DeviceTensor(DType::F32, {1}, alloc, stream)};
  DeviceTensor scratch(DType::F32, {3 * in}, alloc, stream);  // act_order_cuda's
  act_order_cuda(h.data<float>(), in, percdamp, p.perm_d.view().data<int32_t>(),
                 p.invperm_d.view().data<int32_t>(), a.reversed.view().data<int32_t>(),
                 scratch.view().data<float>(), a.damp.view().data<float>(), stream);
  return a;
}

}  // namespace

DeviceHessian::DeviceHessian(int64_t in, GptqContext& ctx) : ctx_(&ctx), in_(in) {
  check_context(ctx, "DeviceHessian");
  EXQ_CHECK(in > 0 && in <= 65536, "DeviceHessian: {} inputs out of range (1 .. 65536)", in);
  sum_ = DeviceTensor(DType::F32, {in, in}, *ctx.allocator, ctx.stream);
  CUDA_CHECK(cudaMemsetAsync(sum_.raw(), 0, sum_.nbytes(), ctx.stream));
}

void DeviceHessian::add_batch(const DeviceView& x) {
  constexpr const char* op = "DeviceHessian::add_batch";
  exq::cuda::check_dtype(x, DType::F32, op, "x");
  exq::cuda::check_rank(x, 2, op, "x");
  exq::cuda::check_dense(x, op, "x");
  EXQ_CHECK(x.dim(1) == in_, "{}: x {} has {} inputs, the Hessian {}", op, shape_str(x.shape()),
            x.dim(1), in_);
  const int64_t rows = x.dim(0);
  EXQ_CHECK(rows > 0 && rows <= kMaxDim, "{}: batch of {} rows", op, rows);
  cudaStream_t stream = ctx_->stream;
  DeviceTensor hi(DType::F32, {rows, in_}, *ctx_->allocator, stream);
  DeviceTensor lo(DType::F32, {rows, in_}, *ctx_->allocator, stream);
  split_tf32_cuda(x.data<float>(), hi.view().data<float>(), lo.view().data<float>(), rows * in_,
                  stream);
  ctx_->cublas->set_stream(stream);
  cublasHandle_t handle = ctx_->cublas->get();
  float* sum = sum_.view().data<float>();
  const float* h = hi.view().data<float>();
  const float* l = lo.view().data<float>();
  syrk_tf32(handle, h, h, sum, in_, rows);
  syrk_tf32(handle, h, l, sum, in_, rows);
  syrk_tf32(handle, l, h, sum, in_, rows);
  ++batches_;
}

DeviceView DeviceHessian::hessian() {
  EXQ_CHECK(batches_ > 0, "Hessian of {} inputs has no batches", in_);
  if (h_.empty()) h_ = DeviceTensor(DType::F32, {in_, in_}, *ctx_->allocator, ctx_->stream);
  mirror_scale_cuda(sum_.view().data<float>(), h_.view().data<float>(), in_,
                    1.0f / static_cast<float>(batches_), ctx_->stream);
  return h_.view();
}

DevicePreparedHessian prepare_hessian(const DeviceView& h, float percdamp, GptqContext& ctx) {
  return prepare_hessian(h, percdamp, ctx, gptq_impl_from_env());
}

DevicePreparedHessian prepare_hessian(const DeviceView& h, float percdamp, GptqContext& ctx,
                                      GptqImpl impl, int skip_dampings) {
  EXQ_ASSERT(skip_dampings >= 0 && skip_dampings < kMaxDampings);
  DevicePreparedHessian p;
  const ActOrder a = act_order(h, percdamp, p, ctx);
  Factorizer f(h, p, a.reversed.view().data<int32_t>(), a.damp.view().data<float>(), ctx, impl);
  exq::cuda::DeviceBuffer info = ctx.allocator->allocate(kPrepareStatusInts * sizeof(int),
                                                         ctx.stream);
  p.perm.resize(static_cast<size_t>(p.in));
  p.dampings = skip_dampings;
  while (p.dampings < kMaxDampings) {
    const bool first = p.dampings == skip_dampings;
    f.attempt(first ? skip_dampings + 1 : 1, info.as<int>());
    ++p.dampings;
    // The first wait also brings the act-order and the damping to the host.
    if (first) {
      CUDA_CHECK(cudaMemcpyAsync(p.perm.data(), p.perm_d.raw(), p.perm_d.nbytes(),
                                 cudaMemcpyDeviceToHost, ctx.stream));
      CUDA_CHECK(cudaMemcpyAsync(&p.damp, a.damp.raw(), sizeof(float), cudaMemcpyDeviceToHost,
                                 ctx.stream));
    }
    int host_info[kPrepareStatusInts] = {};
    CUDA_CHECK(cudaMemcpyAsync(host_info, info.data(), sizeof(host_info),
                               cudaMemcpyDeviceToHost, ctx.stream));
    host_wait(ctx, "Cholesky status");
    if (std::all_of(std::begin(host_info), std::end(host_info), [](int v) { return v == 0; })) {
      p.u = f.take();
      return p;
    }
  }
  throw Error(fmt::format("Hessian [{}x{}] is not invertible after {} damping steps of {}", p.in,
                          p.in, kMaxDampings, p.damp));
}

DevicePreparedHessian prepare_hessian_async(const DeviceView& h, float percdamp, GptqContext& ctx,
                                            GptqImpl impl, int* status, int steps) {
  EXQ_ASSERT(steps >= 1 && steps <= kMaxDampings);
  DevicePreparedHessian p;
  const ActOrder a = act_order(h, percdamp, p, ctx);
  Factorizer f(h, p, a.reversed.view().data<int32_t>(), a.damp.view().data<float>(), ctx, impl);
  f.attempt(steps, status);
  p.dampings = steps;
  p.u = f.take();
  if (f.uses_host_workspace()) host_wait(ctx, "cuSOLVER host workspace");
  return p;
}

}  // namespace exq::quant::cuda
