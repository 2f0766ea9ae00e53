// DeviceHessian and prepare_hessian on the GPU (quant/hessian.cpp is the reference).
//
// Precision of X^T X: every batch is split as x = hi + lo, hi = x rounded to TF32 (10 mantissa
// bits), lo = x - hi (exact in f32), and H += 2 (hi^T hi + hi^T lo + lo^T hi) runs as three
// tensor-core GEMM passes over one triangle (CUBLAS_COMPUTE_32F_FAST_TF32) with f32
// accumulation. The dropped lo^T lo
// and the TF32 rounding of lo are ~2^-21 relative per product: f32-level accuracy (the CPU's
// SYRK is f32 too) at about 3/8 of the tensor-core TF32 rate, far above f32 SIMT GEMMs.
// The symmetric result is mirrored from one triangle, as the CPU does.
#include <fmt/format.h>

#include <algorithm>
#include <numeric>

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

// potrf, potri, potrf as quant/hessian.cpp: U = chol(inv(H_perm + damping)).
DevicePreparedHessian factor_v1(const DeviceView& h, DevicePreparedHessian p, GptqContext& ctx) {
  const int64_t in = p.in;
  cudaStream_t stream = ctx.stream;
  CachingAllocator& alloc = *ctx.allocator;
  DeviceTensor base(DType::F32, {in, in}, alloc, stream);  // H[perm][perm] + damping so far
  float* hp = base.view().data<float>();
  permute_symmetric_cuda(h.data<float>(), p.perm_d.view().data<int32_t>(), hp, in, stream);

  // Column-major LAPACK on a symmetric matrix: "lower" is the row-major upper triangle, so the
  // final lower factor L (inv(H) = L L^T) read row-major is U = L^T, as on the CPU.
  DeviceTensor u(DType::F32, {in, in}, alloc, stream);
  float* ud = u.view().data<float>();
  const int n = static_cast<int>(in);
  SolverHandle solver(ctx.cusolver, stream);
  int lwork_potrf = 0, lwork_potri = 0;
  cusolver_check(cusolverDnSpotrf_bufferSize(solver.get(), CUBLAS_FILL_MODE_LOWER, n, ud, n,
                                             &lwork_potrf),
                 "cusolverDnSpotrf_bufferSize");
  cusolver_check(cusolverDnSpotri_bufferSize(solver.get(), CUBLAS_FILL_MODE_LOWER, n, ud, n,
                                             &lwork_potri),
                 "cusolverDnSpotri_bufferSize");
  const int lwork = std::max({lwork_potrf, lwork_potri, 1});
  exq::cuda::DeviceBuffer work = alloc.allocate(static_cast<size_t>(lwork) * sizeof(float), stream);
  exq::cuda::DeviceBuffer info = alloc.allocate(4 * sizeof(int), stream);
  auto* w = work.as<float>();
  auto* infos = info.as<int>();

  while (p.dampings < kMaxDampings) {
    add_diagonal_cuda(hp, in, p.damp, stream);
    ++p.dampings;
    CUDA_CHECK(cudaMemcpyAsync(ud, hp, u.nbytes(), cudaMemcpyDeviceToDevice, stream));
    CUDA_CHECK(cudaMemsetAsync(infos, 0, 4 * sizeof(int), stream));
    cusolver_check(cusolverDnSpotrf(solver.get(), CUBLAS_FILL_MODE_LOWER, n, ud, n, w, lwork,
                                    infos),
                   "cusolverDnSpotrf");
    cusolver_check(cusolverDnSpotri(solver.get(), CUBLAS_FILL_MODE_LOWER, n, ud, n, w, lwork,
                                    infos + 1),
                   "cusolverDnSpotri");
    cusolver_check(cusolverDnSpotrf(solver.get(), CUBLAS_FILL_MODE_LOWER, n, ud, n, w, lwork,
                                    infos + 2),
                   "cusolverDnSpotrf");
    clear_lower_check_finite_cuda(ud, in, infos + 3, stream);
    int host_info[4] = {};
    CUDA_CHECK(cudaMemcpyAsync(host_info, infos, sizeof(host_info), cudaMemcpyDeviceToHost,
                               stream));
    CUDA_CHECK(cudaStreamSynchronize(stream));
    if (host_info[0] == 0 && host_info[1] == 0 && host_info[2] == 0 && host_info[3] == 0) {
      p.u = std::move(u);
      return p;
    }
  }
  throw Error(fmt::format("Hessian [{}x{}] is not invertible after {} damping steps of {}", in, in,
                          kMaxDampings, p.damp));
}

// The reversed matrix A = J H_perm J (J: the exchange matrix) factored once, A = L L^T, and
// U = J L^-1 J: upper, with U^T U = J L^-T L^-1 J = J A^-1 J = inv(H_perm) -- the same factor as
// v1's in exact arithmetic, with one Cholesky and one triangular inverse (potrf, trtri: about
// n^3 / 3 flops each) instead of potrf, potri (2 n^3 / 3) and potrf.
DevicePreparedHessian factor_v2(const DeviceView& h, DevicePreparedHessian p, GptqContext& ctx) {
  const int64_t in = p.in;
  cudaStream_t stream = ctx.stream;
  CachingAllocator& alloc = *ctx.allocator;
  std::vector<int32_t> reversed(p.perm.rbegin(), p.perm.rend());
  DeviceTensor reversed_d(DType::I32, {in}, alloc, stream);
  CUDA_CHECK(cudaMemcpyAsync(reversed_d.raw(), reversed.data(), reversed_d.nbytes(),
                             cudaMemcpyHostToDevice, stream));
  DeviceTensor base(DType::F32, {in, in}, alloc, stream);  // J H_perm J + damping so far
  float* hp = base.view().data<float>();
  permute_symmetric_cuda(h.data<float>(), reversed_d.view().data<int32_t>(), hp, in, stream);

  DeviceTensor work_matrix(DType::F32, {in, in}, alloc, stream);
  float* ld = work_matrix.view().data<float>();
  const int n = static_cast<int>(in);
  SolverHandle solver(ctx.cusolver, stream);
  int lwork_potrf = 0;
  cusolver_check(cusolverDnSpotrf_bufferSize(solver.get(), CUBLAS_FILL_MODE_LOWER, n, ld, n,
                                             &lwork_potrf),
                 "cusolverDnSpotrf_bufferSize");
  size_t trtri_device = 0, trtri_host = 0;
  cusolver_check(cusolverDnXtrtri_bufferSize(solver.get(), CUBLAS_FILL_MODE_LOWER,
                                             CUBLAS_DIAG_NON_UNIT, in, CUDA_R_32F, ld, in,
                                             &trtri_device, &trtri_host),
                 "cusolverDnXtrtri_bufferSize");
  const size_t work_bytes =
      std::max({static_cast<size_t>(std::max(lwork_potrf, 1)) * sizeof(float), trtri_device,
                sizeof(float)});
  exq::cuda::DeviceBuffer work = alloc.allocate(work_bytes, stream);
  std::vector<char> host_work(std::max<size_t>(trtri_host, 1));
  exq::cuda::DeviceBuffer info = alloc.allocate(3 * sizeof(int), stream);
  auto* infos = info.as<int>();
  const int lwork = static_cast<int>(work_bytes / sizeof(float));

  while (p.dampings < kMaxDampings) {
    add_diagonal_cuda(hp, in, p.damp, stream);
    ++p.dampings;
    CUDA_CHECK(cudaMemcpyAsync(ld, hp, base.nbytes(), cudaMemcpyDeviceToDevice, stream));
    CUDA_CHECK(cudaMemsetAsync(infos, 0, 3 * sizeof(int), stream));
    cusolver_check(cusolverDnSpotrf(solver.get(), CUBLAS_FILL_MODE_LOWER, n, ld, n,
                                    work.as<float>(), lwork, infos),
                   "cusolverDnSpotrf");
    cusolver_check(cusolverDnXtrtri(solver.get(), CUBLAS_FILL_MODE_LOWER, CUBLAS_DIAG_NON_UNIT,
                                    in, CUDA_R_32F, ld, in, work.data(), trtri_device,
                                    host_work.data(), trtri_host, infos + 1),
                   "cusolverDnXtrtri");
    // The column-major lower L^-1 is the row-major upper triangle: clear the other, check it.
    clear_lower_check_finite_cuda(ld, in, infos + 2, stream);
    int host_info[3] = {};
    CUDA_CHECK(cudaMemcpyAsync(host_info, infos, sizeof(host_info), cudaMemcpyDeviceToHost,
                               stream));
    CUDA_CHECK(cudaStreamSynchronize(stream));
    if (host_info[0] == 0 && host_info[1] == 0 && host_info[2] == 0) {
      reverse_upper_cuda(ld, hp, in, stream);  // the damped matrix is no longer needed
      p.u = std::move(base);
      return p;
    }
  }
  throw Error(fmt::format("Hessian [{}x{}] is not invertible after {} damping steps of {}", in, in,
                          kMaxDampings, p.damp));
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
                                      GptqImpl impl) {
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

  // Act-order on the host, from the diagonal alone (one small copy and the call's one sync
  // before the factorization loop).
  std::vector<float> diag(static_cast<size_t>(in));
  CUDA_CHECK(cudaMemcpy2DAsync(diag.data(), sizeof(float), h.data<float>(),
                               static_cast<size_t>(in + 1) * sizeof(float), sizeof(float),
                               static_cast<size_t>(in), cudaMemcpyDeviceToHost, stream));
  CUDA_CHECK(cudaStreamSynchronize(stream));
  DevicePreparedHessian p;
  p.in = in;
  p.perm.resize(static_cast<size_t>(in));
  std::iota(p.perm.begin(), p.perm.end(), 0);
  std::stable_sort(p.perm.begin(), p.perm.end(),
                   [&](int32_t a, int32_t b) { return diag[a] > diag[b]; });
  double diag_sum = 0.0;
  for (int64_t r = 0; r < in; ++r) diag_sum += diag[static_cast<size_t>(p.perm[r])];
  p.damp = std::max(static_cast<float>(percdamp * diag_sum / static_cast<double>(in)), 1e-5f);

  p.perm_d = DeviceTensor(DType::I32, {in}, alloc, stream);
  CUDA_CHECK(cudaMemcpyAsync(p.perm_d.raw(), p.perm.data(), p.perm_d.nbytes(),
                             cudaMemcpyHostToDevice, stream));
  if (impl == GptqImpl::kV1) return factor_v1(h, std::move(p), ctx);
  return factor_v2(h, std::move(p), ctx);
}

}  // namespace exq::quant::cuda
