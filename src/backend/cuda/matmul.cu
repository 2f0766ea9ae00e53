// fp16/bf16-weight matmul through cuBLAS.
//
// Precision: the weights are f16 (or bf16), and cuBLAS's tensor-core GEMMs want both inputs in
// the same type, so activations are rounded to the weight type; products accumulate in f32
// (CUBLAS_COMPUTE_32F, never the 16F "fast" modes) and y is written in f32. Rounding x to f16
// costs at most 2^-11 relative per element, but f16 overflows at 65504 and flushes below
// 2^-24, and activations can be large (SmolLM2's residual reaches ~25,000). So a row of x whose
// max |x| lies outside [2^-4, 2^14) is first multiplied by a power of two that brings it into
// [2^13, 2^14), and y's row by its inverse: exact, no overflow. Rows inside that range (nearly
// all: matmul inputs are normed activations) keep scale 1 and y is not touched again, which
// saves a read and a write of y (351 MB for an 8B layer at 2048 tokens). A power-of-two scale
// changes no normal f16 value's rounding, so the only difference between the two is in
// elements below 2^-14 (subnormal in f16), which are below 2^-10 of their row's max. bf16 has
// f32's range, so the scaling is harmless there. TF32 would need f32 weights (twice the memory and
// bandwidth) and bf16 activations would lose 3 mantissa bits against f16.
#include <cmath>

#include "backend/cuda/cuda_check.h"
#include "backend/cuda/device.h"
#include "backend/cuda/kernel_utils.cuh"
#include "backend/cuda/launchers.h"

namespace exq::cuda {
namespace {

constexpr int kQuantizeThreads = 256;
constexpr int kScaleThreads = 256;
constexpr int kScaleVec = 4;         // elements of y per thread of the scale pass

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
// The row multiplied is x, or with x_up silu(x) * x_up (swiglu_kernel's arithmetic: the
// MLP's SwiGLU formed here, not in a pass of its own); x_perm: element i of the copy is
// row[x_perm[i]] (the same max: a permutation). With either, the row is first formed in shared
// memory (dynamic, k floats), so that the gather does not wait on a global round trip per
// element. COPY (x_perm or x_up given) is its own instance, so that the plain one (the decode's
// head) keeps the default shared-memory configuration.
template <typename W, bool COPY>
__global__ void scale_round_rows_kernel(const float* __restrict__ x, W* __restrict__ xq,
                                        float* __restrict__ row_scale, int k,
                                        const int32_t* __restrict__ x_perm,
                                        const float* __restrict__ x_up, bool gelu) {
  __shared__ float scratch[32];
  extern __shared__ float row_copy[];
  const float* xr = x + static_cast<size_t>(blockIdx.x) * k;
  const float* ur = x_up != nullptr ? x_up + static_cast<size_t>(blockIdx.x) * k : nullptr;
  float amax = 0.0f;
  constexpr int kBatch = 8;  // loads in flight per thread
  if constexpr (COPY) {
    for (int i0 = threadIdx.x; i0 < k; i0 += kBatch * blockDim.x) {
      float v[kBatch], u2[kBatch];
#pragma unroll
      for (int u = 0; u < kBatch; ++u) {
        const int i = i0 + u * blockDim.x;
        v[u] = i < k ? xr[i] : 0.0f;
        u2[u] = x_up != nullptr && i < k ? ur[i] : 0.0f;
      }
#pragma unroll
      for (int u = 0; u < kBatch; ++u) {
        const int i = i0 + u * blockDim.x;
        if (x_up != nullptr) v[u] = gelu ? geglu_value(v[u], u2[u]) : swiglu_value(v[u], u2[u]);
        if (i < k) row_copy[i] = v[u];
        amax = fmaxf(amax, fabsf(v[u]));
      }
    }
  } else {
    for (int i = threadIdx.x; i < k; i += blockDim.x) amax = fmaxf(amax, fabsf(xr[i]));
  }
  amax = block_max(amax, scratch);
  const float scale = f16_row_scale(amax);
  const float inv = 1.0f / scale;  // exact: a power of two
  W* qr = xq + static_cast<size_t>(blockIdx.x) * k;
  if constexpr (COPY) {  // block_max's barrier made row_copy visible
    for (int i0 = threadIdx.x; i0 < k; i0 += kBatch * blockDim.x) {
      int src[kBatch];
#pragma unroll
      for (int u = 0; u < kBatch; ++u) {
        const int i = i0 + u * blockDim.x;
        src[u] = i >= k ? 0 : x_perm != nullptr ? x_perm[i] : i;
      }
#pragma unroll
      for (int u = 0; u < kBatch; ++u) {
        const int i = i0 + u * blockDim.x;
        if (i < k) qr[i] = from_float<W>(row_copy[src[u]] * inv);
      }
    }
  } else {
    for (int i = threadIdx.x; i < k; i += blockDim.x) qr[i] = from_float<W>(xr[i] * inv);
  }
  if (threadIdx.x == 0) row_scale[blockIdx.x] = scale;
}

// `chunks` blocks per row of y (a 1-D grid: rows can exceed gridDim.y's 65535); a block whose
// row has scale 1 leaves it alone.
__global__ void scale_rows_kernel(float* __restrict__ y, const float* __restrict__ row_scale,
                                  int chunks, int n) {
  const int64_t row = blockIdx.x / chunks;
  const float s = row_scale[row];
  if (s == 1.0f) return;
  const int c0 = (blockIdx.x % chunks) * kScaleThreads * kScaleVec;
  float* yr = y + row * n;
  for (int c = c0 + threadIdx.x; c < min(n, c0 + kScaleThreads * kScaleVec); c += kScaleThreads)
    yr[c] *= s;
}

}  // namespace

size_t matmul_max_copied_in() {
  // The row copy shares the block's opt-in shared memory with the kernel's static scratch.
  static const size_t floats = [] {
    cudaFuncAttributes attr{};
    CUDA_CHECK(cudaFuncGetAttributes(&attr, scale_round_rows_kernel<__half, true>));
    return (static_cast<size_t>(current_shared_per_block_optin()) - attr.sharedSizeBytes) /
           sizeof(float);
  }();
  return floats;
}

template <typename W>
void matmul_cuda(cublasHandle_t handle, const float* x, const W* w, float* y, W* x_scratch,
                 float* row_scale, int rows, int n, int k, cudaStream_t stream,
                 const int32_t* x_perm, const float* x_up, bool gelu) {
  if (rows == 0 || n == 0) return;
  if (k == 0) {
    CUDA_CHECK(cudaMemsetAsync(y, 0, sizeof(float) * rows * static_cast<size_t>(n), stream));
    return;
  }
  cudaStream_t bound = nullptr;
  CUBLAS_CHECK(cublasGetStream(handle, &bound));
  if (bound != stream) CUBLAS_CHECK(cublasSetStream(handle, stream));

  size_t smem = 0;
  if (x_perm != nullptr || x_up != nullptr) {
    smem = sizeof(float) * static_cast<size_t>(k);
    static const bool configured = [] {
      CUDA_CHECK(cudaFuncSetAttribute(scale_round_rows_kernel<W, true>,
                                      cudaFuncAttributeMaxDynamicSharedMemorySize,
                                      static_cast<int>(sizeof(float) * matmul_max_copied_in())));
      return true;
    }();
    (void)configured;
  }
  if (smem > 0)
    scale_round_rows_kernel<W, true><<<rows, kQuantizeThreads, smem, stream>>>(
        x, x_scratch, row_scale, k, x_perm, x_up, gelu);
  else
    scale_round_rows_kernel<W, false><<<rows, kQuantizeThreads, 0, stream>>>(
        x, x_scratch, row_scale, k, nullptr, nullptr, false);
  CUDA_CHECK_LAUNCH();
  // Row-major y[rows, n] = x[rows, k] w[n, k]^T is column-major y^T[n, rows] = w^T x^T, with w
  // read as a column-major [k, n] matrix (op T) and x as column-major [k, rows] (op N).
  const float alpha = 1.0f, beta = 0.0f;
  CUBLAS_CHECK(cublasGemmEx(handle, CUBLAS_OP_T, CUBLAS_OP_N, n, rows, k, &alpha, w,
                            CudaType<W>::kValue, k, x_scratch, CudaType<W>::kValue, k, &beta, y,
                            CUDA_R_32F, n, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
  const int chunks = static_cast<int>(ceil_div(n, kScaleThreads * kScaleVec));
  scale_rows_kernel<<<static_cast<unsigned>(static_cast<int64_t>(rows) * chunks), kScaleThreads, 0, stream>>>(
      y, row_scale, chunks, n);
  CUDA_CHECK_LAUNCH();
}

template void matmul_cuda<__half>(cublasHandle_t, const float*, const __half*, float*, __half*,
                                  float*, int, int, int, cudaStream_t, const int32_t*,
                                  const float*, bool);
template void matmul_cuda<__nv_bfloat16>(cublasHandle_t, const float*, const __nv_bfloat16*,
                                         float*, __nv_bfloat16*, float*, int, int, int,
                                         cudaStream_t, const int32_t*, const float*, bool);

}  // namespace exq::cuda
