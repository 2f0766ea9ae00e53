// GPTQ kernels for one group of rows of W' = W^T[perm] ([in, out], f32): the permuted
// transposes in and out, column maxima, the 97-point scale grid and its deterministic column
// sum (the row pass is in gptq_rows.cu). The arithmetic mirrors quant/gptq.cpp operation for
// operation (gptq_device.cuh): given the same inputs the per-column grid errors are
// bit-identical to the CPU's.
#include <cmath>

#include "quant/cuda/gptq_common.cuh"

namespace exq::quant::cuda {
namespace {

using exq::cuda::ceil_div;
using namespace detail;

constexpr int kErrPerThread = 4;  // grid points per thread (independent chains: ILP)
constexpr int kErrPointsPerBlock = kColSplit * kErrPerThread;
constexpr int kErrChunk = 256;    // group rows staged in shared memory at a time (32 KB)

template <typename T>
__global__ void permute_transpose_kernel(const T* __restrict__ w,
                                         const int32_t* __restrict__ perm,
                                         float* __restrict__ wp, int64_t in, int64_t out) {
  __shared__ float tile[kTile][kTile + 1];
  const int64_t i0 = static_cast<int64_t>(blockIdx.x) * kTile;
  const int64_t c0 = static_cast<int64_t>(blockIdx.y) * kTile;
  load_permuted_tile(tile, w, perm, in, out, i0, c0);
  const int x = threadIdx.x;
  for (int y = threadIdx.y; y < kTile; y += kTileRows) {
    const int64_t r = i0 + y, c = c0 + x;
    if (r < in && c < out) wp[r * out + c] = tile[x][y];
  }
}

__global__ void unpermute_transpose_kernel(const __half* __restrict__ wq,
                                           const int32_t* __restrict__ invperm,
                                           __half* __restrict__ weight, int64_t in, int64_t out) {
  __shared__ __half tile[kTile][kTile + 1];
  const int64_t k0 = static_cast<int64_t>(blockIdx.x) * kTile;
  const int64_t c0 = static_cast<int64_t>(blockIdx.y) * kTile;
  const int x = threadIdx.x;
  for (int y = threadIdx.y; y < kTile; y += kTileRows) {
    const int64_t k = k0 + y, c = c0 + x;
    if (k < in && c < out) tile[y][x] = wq[static_cast<int64_t>(invperm[k]) * out + c];
  }
  __syncthreads();
  for (int y = threadIdx.y; y < kTile; y += kTileRows) {
    const int64_t c = c0 + y, k = k0 + x;
    if (k < in && c < out) weight[c * in + k] = tile[x][y];  // weight[c0 + y, k0 + x]
  }
}

__global__ void group_colmax_kernel(const float* __restrict__ wp, float* __restrict__ base,
                                    float* __restrict__ partials, int64_t out, int64_t a,
                                    int64_t rows, float half_maxq) {
  __shared__ float s_max[kColSplit][kCols + 1];
  group_colmax(s_max, wp, base, partials, out, a, rows, half_maxq);
}

// Block (32 columns, 8 threads) x kErrPerThread grid points each: 32 of the 97 points per
// block, blockIdx.y picks which. The group's rows pass through shared memory in chunks; each
// accumulator adds its terms in row order, as the CPU does.
__global__ void group_grid_errors_kernel(const float* __restrict__ wp,
                                         const float* __restrict__ base,
                                         const float* __restrict__ partials,
                                         int64_t partial_count, uint8_t* __restrict__ qs,
                                         float* __restrict__ col_err,
                                         const __grid_constant__ GptqGrid grid, int64_t out,
                                         int64_t a, int64_t rows, float zero, float maxq) {
  __shared__ float s_col[kErrChunk][kCols];
  __shared__ float s_smax;
  const int tx = threadIdx.x, ty = threadIdx.y;
  if (ty == 0) {
    const float m = warp_max_of(partials, partial_count, tx);
    if (tx == 0) s_smax = m;
  }
  __syncthreads();
  const int64_t c = static_cast<int64_t>(blockIdx.x) * kCols + tx;
  const bool valid = c < out;
  const float smax = s_smax;
  const float q = column_q(valid ? base[c] : smax, smax);
  if (valid && blockIdx.y == 0 && ty == 0) qs[c] = static_cast<uint8_t>(q);
  const float sw = column_scale(q, smax);
  float s[kErrPerThread], inv[kErrPerThread], acc[kErrPerThread];
#pragma unroll
  for (int k = 0; k < kErrPerThread; ++k) {
    const int i = static_cast<int>(blockIdx.y) * kErrPointsPerBlock + k * kColSplit + ty;
    s[k] = __fmul_rn(sw, grid.p[i < kGptqGrid ? i : kGptqGrid - 1]);
    inv[k] = __frcp_rn(s[k]);
    acc[k] = 0.0f;
  }
  const float lo = -zero, hi = __fsub_rn(maxq, zero);
  const float* col = wp + a * out + c;
  for (int64_t r0 = 0; r0 < rows; r0 += kErrChunk) {
    const int n = static_cast<int>(rows - r0 < kErrChunk ? rows - r0 : kErrChunk);
    __syncthreads();  // the previous chunk is consumed
    for (int r = ty; r < n; r += kColSplit) {  // asynchronous: all rows in flight at once
      if (valid)
        __pipeline_memcpy_async(&s_col[r][tx], &col[(r0 + r) * out], sizeof(float));
      else
        s_col[r][tx] = 0.0f;
    }
    __pipeline_commit();
    __pipeline_wait_prior(0);
    __syncthreads();
    for (int r = 0; r < n; ++r) {
      const float w = s_col[r][tx];
#pragma unroll
      for (int k = 0; k < kErrPerThread; ++k)
        acc[k] = __fadd_rn(acc[k], grid_term(w, s[k], inv[k], lo, hi));
    }
  }
  if (!valid) return;
#pragma unroll
  for (int k = 0; k < kErrPerThread; ++k) {
    const int i = static_cast<int>(blockIdx.y) * kErrPointsPerBlock + k * kColSplit + ty;
    if (i < kGptqGrid) col_err[static_cast<int64_t>(i) * out + c] = acc[k];
  }
}

__global__ void grid_error_sums_kernel(const float* __restrict__ col_err,
                                       double* __restrict__ err, int64_t out) {
  __shared__ double partial[kReduceThreads];
  const float* row = col_err + static_cast<int64_t>(blockIdx.x) * out;
  double acc = 0.0;
  for (int64_t c = threadIdx.x; c < out; c += kReduceThreads) acc += static_cast<double>(row[c]);
  partial[threadIdx.x] = acc;
  __syncthreads();
  for (int o = kReduceThreads / 2; o > 0; o >>= 1) {
    if (static_cast<int>(threadIdx.x) < o) partial[threadIdx.x] += partial[threadIdx.x + o];
    __syncthreads();
  }
  if (threadIdx.x == 0) err[blockIdx.x] = partial[0];
}

}  // namespace

void permute_transpose_cuda(const void* w, int dtype, const int32_t* perm, float* wp, int64_t in,
                            int64_t out, cudaStream_t stream) {
  if (in == 0 || out == 0) return;
  const dim3 grid(ceil_div(in, kTile), ceil_div(out, kTile));
  const dim3 block(kTile, kTileRows);
  if (dtype == 0)
    permute_transpose_kernel<<<grid, block, 0, stream>>>(static_cast<const float*>(w), perm, wp,
                                                         in, out);
  else if (dtype == 1)
    permute_transpose_kernel<<<grid, block, 0, stream>>>(static_cast<const __half*>(w), perm,
                                                         wp, in, out);
  else
    permute_transpose_kernel<<<grid, block, 0, stream>>>(
        static_cast<const __nv_bfloat16*>(w), perm, wp, in, out);
  CUDA_CHECK_LAUNCH();
}

void unpermute_transpose_cuda(const __half* wq, const int32_t* invperm, __half* weight,
                              int64_t in, int64_t out, cudaStream_t stream) {
  if (in == 0 || out == 0) return;
  const dim3 grid(ceil_div(in, kTile), ceil_div(out, kTile));
  unpermute_transpose_kernel<<<grid, dim3(kTile, kTileRows), 0, stream>>>(wq, invperm, weight,
                                                                           in, out);
  CUDA_CHECK_LAUNCH();
}

int64_t gptq_colmax_blocks(int64_t out) { return (out + kCols - 1) / kCols; }

void group_colmax_cuda(const float* wp, float* base, float* partials, int64_t out, int64_t a,
                       int64_t rows, float half_maxq, cudaStream_t stream) {
  group_colmax_kernel<<<ceil_div(out, kCols), dim3(kCols, kColSplit), 0, stream>>>(
      wp, base, partials, out, a, rows, half_maxq);
  CUDA_CHECK_LAUNCH();
}

void group_grid_errors_cuda(const float* wp, const float* base, const float* partials,
                            int64_t partial_count, uint8_t* qs, float* col_err,
                            const GptqGrid& grid, int64_t out, int64_t a, int64_t rows,
                            float zero, float maxq, cudaStream_t stream) {
  const dim3 blocks(ceil_div(out, kCols), ceil_div(kGptqGrid, kErrPointsPerBlock));
  group_grid_errors_kernel<<<blocks, dim3(kCols, kColSplit), 0, stream>>>(
      wp, base, partials, partial_count, qs, col_err, grid, out, a, rows, zero, maxq);
  CUDA_CHECK_LAUNCH();
}

void grid_error_sums_cuda(const float* col_err, double* err, int64_t out, cudaStream_t stream) {
  grid_error_sums_kernel<<<kGptqGrid, kReduceThreads, 0, stream>>>(col_err, err, out);
  CUDA_CHECK_LAUNCH();
}

}  // namespace exq::quant::cuda
