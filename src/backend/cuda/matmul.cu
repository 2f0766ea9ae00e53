// fp16/bf16-weight matmul through cuBLAS.
//
// Precision: the weights are f16 (or bf16), and cuBLAS's tensor-core GEMMs want both inputs in
// the same type, so activations are rounded to the weight type; products accumulate in f32
// (CUBLAS_COMPUTE_32F, never the 16F "fast" modes) and y is written in f32. Rounding x to f16
// costs at most 2^-11 relative per element, but f16 overflows at 65504 and flushes below
// 2^-24, and activations can be large (SmolLM2's residual reaches ~25,000). So each row of x is
// first divided by a power of two that brings its max |x| into [2^13, 2^14): exact, no
// overflow, no needless subnormals, and y's row is multiplied back by the same power of two.
// bf16 has f32's range, so the scaling is harmless there. TF32 would need f32 weights (twice
// the memory and bandwidth) and bf16 activations would lose 3 mantissa bits against f16.
#include <cmath>

#include "backend/cuda/cuda_check.h"
#include "backend/cuda/kernel_utils.cuh"
#include "backend/cuda/launchers.h"

namespace exq::cuda {
namespace {

constexpr int kQuantizeThreads = 256;
constexpr int kScaleThreads = 256;
constexpr int kRowMaxExponent = 14;  // rows scaled so max |x| < 2^14, 4x below f16's max

template <typename W>
struct CudaType;
template <>
struct CudaType<__half> {
  static constexpr cudaDataType_t kValue = CUDA_R_16F;
};
template <>
struct CudaType<__nv_bfloat16> {
  static constexpr cudaDataType_t kValue = CUDA_R_16BF;
};

// One block per row: max |x|, power-of-two scale, scaled copy in W.
template <typename W>
__global__ void scale_round_rows_kernel(const float* __restrict__ x, W* __restrict__ xq,
                                        float* __restrict__ row_scale, int k) {
  __shared__ float scratch[32];
  const float* xr = x + static_cast<size_t>(blockIdx.x) * k;
  float amax = 0.0f;
  for (int i = threadIdx.x; i < k; i += blockDim.x) amax = fmaxf(amax, fabsf(xr[i]));
  amax = block_max(amax, scratch);
  float scale = 1.0f;
  if (amax > 0.0f && isfinite(amax)) {
    int e = 0;
    frexpf(amax, &e);  // amax = f * 2^e with f in [0.5, 1)
    scale = ldexpf(1.0f, e - kRowMaxExponent);
  }
  const float inv = 1.0f / scale;  // exact: a power of two
  W* qr = xq + static_cast<size_t>(blockIdx.x) * k;
  for (int i = threadIdx.x; i < k; i += blockDim.x) qr[i] = from_float<W>(xr[i] * inv);
  if (threadIdx.x == 0) row_scale[blockIdx.x] = scale;
}

// One thread per element of y (a 1-D grid: rows can exceed gridDim.y's 65535).
__global__ void scale_rows_kernel(float* __restrict__ y, const float* __restrict__ row_scale,
                                  int64_t total, int n) {
  const int64_t idx = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (idx < total) y[idx] *= row_scale[idx / n];
}

}  // namespace

template <typename W>
void matmul_cuda(cublasHandle_t handle, const float* x, const W* w, float* y, W* x_scratch,
                 float* row_scale, int rows, int n, int k, cudaStream_t stream) {
  if (rows == 0 || n == 0) return;
  if (k == 0) {
    CUDA_CHECK(cudaMemsetAsync(y, 0, sizeof(float) * rows * static_cast<size_t>(n), stream));
    return;
  }
  cudaStream_t bound = nullptr;
  CUBLAS_CHECK(cublasGetStream(handle, &bound));
  if (bound != stream) CUBLAS_CHECK(cublasSetStream(handle, stream));

  scale_round_rows_kernel<W><<<rows, kQuantizeThreads, 0, stream>>>(x, x_scratch, row_scale, k);
  CUDA_CHECK_LAUNCH();
  // Row-major y[rows, n] = x[rows, k] w[n, k]^T is column-major y^T[n, rows] = w^T x^T, with w
  // read as a column-major [k, n] matrix (op T) and x as column-major [k, rows] (op N).
  const float alpha = 1.0f, beta = 0.0f;
  CUBLAS_CHECK(cublasGemmEx(handle, CUBLAS_OP_T, CUBLAS_OP_N, n, rows, k, &alpha, w,
                            CudaType<W>::kValue, k, x_scratch, CudaType<W>::kValue, k, &beta, y,
                            CUDA_R_32F, n, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
  const int64_t total = static_cast<int64_t>(rows) * n;
  scale_rows_kernel<<<ceil_div(total, kScaleThreads), kScaleThreads, 0, stream>>>(y, row_scale,
                                                                                 total, n);
  CUDA_CHECK_LAUNCH();
}

template void matmul_cuda<__half>(cublasHandle_t, const float*, const __half*, float*, __half*,
                                  float*, int, int, int, cudaStream_t);
template void matmul_cuda<__nv_bfloat16>(cublasHandle_t, const float*, const __nv_bfloat16*,
                                         float*, __nv_bfloat16*, float*, int, int, int,
                                         cudaStream_t);

}  // namespace exq::cuda
