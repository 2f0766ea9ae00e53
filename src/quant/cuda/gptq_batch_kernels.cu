// Kernels of batched GPTQ (gptq_batch.cpp): every option of a linear in one launch, blockIdx.z
// or .y picking the option; per column the arithmetic of gptq_kernels.cu exactly (the scale
// search is bit-identical to the CPU's given the same W'), so results do not depend on how
// many options share a launch. The row pass is in gptq_batch_rows.cu.
#include <cmath>

#include "quant/cuda/gptq_common.cuh"

namespace exq::quant::cuda {
namespace {

using exq::cuda::ceil_div;
using namespace detail;

constexpr int kPoints = 12;     // grid points per thread: 8 x 12 = 96, warp 0 also takes point 96
constexpr int kErrChunk = 128;  // group rows staged in shared memory at a time (16 KB)
constexpr int kPendCols = 64;   // pending update: 64 columns x 32 rows a block, 32 sources a pass
constexpr int kPendRows = 32;
constexpr int kPendK = 32;
constexpr int kPendThreads = 256;
constexpr int kSplitThreads = 256;

static_assert(kColSplit * kPoints + 1 == kGptqGrid, "grid points per thread");

template <typename T>
__global__ void permute_copies_kernel(const T* __restrict__ w, const int32_t* __restrict__ perm,
                                      float* __restrict__ wp, int64_t stride, int count,
                                      int64_t in, int64_t out) {
  __shared__ float tile[kTile][kTile + 1];
  const int64_t i0 = static_cast<int64_t>(blockIdx.x) * kTile;
  const int64_t c0 = static_cast<int64_t>(blockIdx.y) * kTile;
  load_permuted_tile(tile, w, perm, in, out, i0, c0);
  const int x = threadIdx.x;
  for (int y = threadIdx.y; y < kTile; y += kTileRows) {
    const int64_t r = i0 + y, c = c0 + x;
    if (r >= in || c >= out) continue;
    const float v = tile[x][y];
    for (int o = 0; o < count; ++o) wp[o * stride + r * out + c] = v;
  }
}

// Block (64 columns, 4 row phases) of option blockIdx.z: rows dst_begin + j0 .. + 32 get the
// errors of ring rows [src_begin, src_end), summed in ascending source order.
__global__ void __launch_bounds__(kPendThreads)
    batch_pending_kernel(const GptqBatchBuffers b, const __grid_constant__ GptqPendingStep step,
                         const float* __restrict__ u) {
  __shared__ float s_e[kPendK][kPendCols];
  __shared__ float s_u[kPendK][kPendRows + 1];
  const int o = blockIdx.z;
  const int64_t dst = step.dst_begin[o], src = step.src_begin[o];
  const int64_t sources = step.src_end[o] - src;
  const int rows = step.dst_rows[o];
  const int j0 = static_cast<int>(blockIdx.y) * kPendRows;
  if (rows <= 0 || sources <= 0 || j0 >= rows) return;  // uniform over the block
  const int tx = threadIdx.x % kPendCols, ty = threadIdx.x / kPendCols;
  constexpr int kPhases = kPendThreads / kPendCols;
  constexpr int kPerThread = kPendRows / kPhases;
  const int64_t c = static_cast<int64_t>(blockIdx.x) * kPendCols + tx;
  const bool valid = c < b.out;
  const float* ring = b.ring + o * b.ring_stride;
  float acc[kPerThread];
#pragma unroll
  for (int i = 0; i < kPerThread; ++i) acc[i] = 0.0f;
  for (int64_t k0 = 0; k0 < sources; k0 += kPendK) {
    const int kn = static_cast<int>(sources - k0 < kPendK ? sources - k0 : kPendK);
    __syncthreads();  // the previous pass is consumed
    for (int r = ty; r < kPendK; r += kPhases) {
      const int64_t slot = (src + k0 + r) & b.ring_mask;
      s_e[r][tx] = r < kn && valid ? ring[slot * b.out + c] : 0.0f;
    }
    for (int idx = threadIdx.x; idx < kPendK * kPendRows; idx += kPendThreads) {
      const int r = idx / kPendRows, j = idx % kPendRows;
      s_u[r][j] = r < kn && j0 + j < rows ? u[(src + k0 + r) * b.in + dst + j0 + j] : 0.0f;
    }
    __syncthreads();
    for (int r = 0; r < kn; ++r) {
      const float e = s_e[r][tx];
#pragma unroll
      for (int i = 0; i < kPerThread; ++i)
        acc[i] = __fmaf_rn(s_u[r][ty + i * kPhases], e, acc[i]);
    }
  }
  if (!valid) return;
  float* wp = b.wp + o * b.wp_stride;
#pragma unroll
  for (int i = 0; i < kPerThread; ++i) {
    const int j = j0 + ty + i * kPhases;
    if (j < rows) {
      float* x = wp + (dst + j) * b.out + c;
      *x = __fsub_rn(*x, acc[i]);
    }
  }
}

// group_colmax_kernel for option blockIdx.y.
__global__ void batch_colmax_kernel(const GptqBatchBuffers b,
                                    const __grid_constant__ GptqBatchStep step) {
  __shared__ float s_max[kColSplit][kCols + 1];
  const int o = blockIdx.y;
  const int64_t a = step.row_begin[o];
  if (a < 0) return;
  const int64_t rows = step.rows[o];
  const float half_maxq = static_cast<float>((1 << step.bits[o]) - 1) / 2.0f;
  group_colmax(s_max, b.wp + o * b.wp_stride, b.base + o * b.out, b.partials + o * b.parts, b.out,
               a, rows, half_maxq);
}

// group_grid_errors_kernel for option blockIdx.y with all 97 points in one block: warp ty takes
// points ty + 8k (k < 12) and warp 0 point 96 too, each an accumulator adding in row order.
__global__ void __launch_bounds__(kCols* kColSplit)
    batch_grid_errors_kernel(const GptqBatchBuffers b, const __grid_constant__ GptqBatchStep step,
                             const __grid_constant__ GptqGrid grid) {
  __shared__ float s_col[kErrChunk][kCols];
  __shared__ float s_smax;
  const int o = blockIdx.y;
  const int64_t a = step.row_begin[o];
  if (a < 0) return;
  const int64_t rows = step.rows[o];
  const int bits = step.bits[o];
  const float zero = static_cast<float>(1 << (bits - 1));
  const float maxq = static_cast<float>((1 << bits) - 1);
  const int tx = threadIdx.x, ty = threadIdx.y;
  if (ty == 0) {
    const float m = warp_max_of(b.partials + o * b.parts, b.parts, tx);
    if (tx == 0) s_smax = m;
  }
  __syncthreads();
  const int64_t c = static_cast<int64_t>(blockIdx.x) * kCols + tx;
  const bool valid = c < b.out;
  const float smax = s_smax;
  const float q = column_q(valid ? b.base[o * b.out + c] : smax, smax);
  if (valid && ty == 0) b.qs[static_cast<int64_t>(step.group[o]) * b.out + c] =
      static_cast<uint8_t>(q);
  const float sw = column_scale(q, smax);
  float s[kPoints], inv[kPoints], acc[kPoints];
#pragma unroll
  for (int k = 0; k < kPoints; ++k) {
    s[k] = __fmul_rn(sw, grid.p[ty + k * kColSplit]);
    inv[k] = __frcp_rn(s[k]);
    acc[k] = 0.0f;
  }
  const bool extra = ty == 0;  // point 96
  const float s_x = __fmul_rn(sw, grid.p[kGptqGrid - 1]);
  const float inv_x = __frcp_rn(s_x);
  float acc_x = 0.0f;
  const float lo = -zero, hi = __fsub_rn(maxq, zero);
  const float* col = b.wp + o * b.wp_stride + a * b.out + c;
  for (int64_t r0 = 0; r0 < rows; r0 += kErrChunk) {
    const int n = static_cast<int>(rows - r0 < kErrChunk ? rows - r0 : kErrChunk);
    __syncthreads();  // the previous chunk is consumed
    for (int r = ty; r < n; r += kColSplit) {
      if (valid)
        __pipeline_memcpy_async(&s_col[r][tx], &col[(r0 + r) * b.out], sizeof(float));
      else
        s_col[r][tx] = 0.0f;
    }
    __pipeline_commit();
    __pipeline_wait_prior(0);
    __syncthreads();
    for (int r = 0; r < n; ++r) {
      const float w = s_col[r][tx];
#pragma unroll
      for (int k = 0; k < kPoints; ++k)
        acc[k] = __fadd_rn(acc[k], grid_term(w, s[k], inv[k], lo, hi));
      if (extra) acc_x = __fadd_rn(acc_x, grid_term(w, s_x, inv_x, lo, hi));
    }
  }
  if (!valid) return;
  float* err = b.col_err + static_cast<int64_t>(o) * kGptqGrid * b.out + c;
#pragma unroll
  for (int k = 0; k < kPoints; ++k) err[static_cast<int64_t>(ty + k * kColSplit) * b.out] = acc[k];
  if (extra) err[static_cast<int64_t>(kGptqGrid - 1) * b.out] = acc_x;
}

// grid_error_sums_kernel: block (point blockIdx.x, option blockIdx.y).
__global__ void batch_error_sums_kernel(const GptqBatchBuffers b,
                                        const __grid_constant__ GptqBatchStep step) {
  __shared__ double partial[kReduceThreads];
  const int o = blockIdx.y;
  if (step.row_begin[o] < 0) return;
  const float* row = b.col_err + (static_cast<int64_t>(o) * kGptqGrid + blockIdx.x) * b.out;
  double acc = 0.0;
  for (int64_t c = threadIdx.x; c < b.out; c += kReduceThreads) acc += static_cast<double>(row[c]);
  partial[threadIdx.x] = acc;
  __syncthreads();
  for (int k = kReduceThreads / 2; k > 0; k >>= 1) {
    if (static_cast<int>(threadIdx.x) < k) partial[threadIdx.x] += partial[threadIdx.x + k];
    __syncthreads();
  }
  if (threadIdx.x == 0) b.err[o * kGptqGrid + blockIdx.x] = partial[0];
}

// dst_o [3 * rows, out] = [hi; hi; lo] of ring rows [row_begin, row_begin + rows) of option
// first + blockIdx.z (one contiguous run of slots).
__global__ void batch_split_errors_kernel(const GptqBatchBuffers b, int first, int64_t row_begin,
                                          int64_t rows, float* __restrict__ dst,
                                          int64_t dst_stride) {
  const int o = first + static_cast<int>(blockIdx.z);
  const int64_t r = blockIdx.y;
  const float* src = b.ring + o * b.ring_stride + ((row_begin & b.ring_mask) + r) * b.out;
  float* d = dst + static_cast<int64_t>(blockIdx.z) * dst_stride + r * b.out;
  const int64_t plane = rows * b.out;
  for (int64_t c = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; c < b.out;
       c += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const float v = src[c];
    const float h = round_tf32(v);
    d[c] = h;
    d[plane + c] = h;
    d[2 * plane + c] = isfinite(v) ? __fsub_rn(v, h) : 0.0f;
  }
}

}  // namespace

void permute_transpose_copies_cuda(const void* w, int dtype, const int32_t* perm, float* wp,
                                   int64_t stride, int count, int64_t in, int64_t out,
                                   cudaStream_t stream) {
  if (in == 0 || out == 0 || count == 0) return;
  const dim3 grid(ceil_div(in, kTile), ceil_div(out, kTile));
  const dim3 block(kTile, kTileRows);
  if (dtype == 0)
    permute_copies_kernel<<<grid, block, 0, stream>>>(static_cast<const float*>(w), perm, wp,
                                                      stride, count, in, out);
  else if (dtype == 1)
    permute_copies_kernel<<<grid, block, 0, stream>>>(static_cast<const __half*>(w), perm, wp,
                                                      stride, count, in, out);
  else
    permute_copies_kernel<<<grid, block, 0, stream>>>(static_cast<const __nv_bfloat16*>(w),
                                                      perm, wp, stride, count, in, out);
  CUDA_CHECK_LAUNCH();
}

void batch_pending_cuda(const GptqBatchBuffers& b, const GptqPendingStep& step, const float* u,
                        int max_rows, cudaStream_t stream) {
  const dim3 grid(ceil_div(b.out, kPendCols), ceil_div(max_rows, kPendRows),
                  static_cast<unsigned>(b.count));
  batch_pending_kernel<<<grid, kPendThreads, 0, stream>>>(b, step, u);
  CUDA_CHECK_LAUNCH();
}

void batch_scale_search_cuda(const GptqBatchBuffers& b, const GptqBatchStep& step,
                             const GptqGrid& grid, cudaStream_t stream) {
  const dim3 tiles(static_cast<unsigned>(b.parts), static_cast<unsigned>(b.count));
  batch_colmax_kernel<<<tiles, dim3(kCols, kColSplit), 0, stream>>>(b, step);
  CUDA_CHECK_LAUNCH();
  batch_grid_errors_kernel<<<tiles, dim3(kCols, kColSplit), 0, stream>>>(b, step, grid);
  CUDA_CHECK_LAUNCH();
  batch_error_sums_kernel<<<dim3(kGptqGrid, static_cast<unsigned>(b.count)), kReduceThreads, 0,
                            stream>>>(b, step);
  CUDA_CHECK_LAUNCH();
}

void batch_split_errors_cuda(const GptqBatchBuffers& b, int first, int count, int64_t row_begin,
                             int64_t rows, float* dst, int64_t dst_stride, cudaStream_t stream) {
  const int64_t col_blocks = ceil_div(b.out, kSplitThreads);
  const dim3 grid(static_cast<unsigned>(col_blocks < 65535 ? col_blocks : 65535),
                  static_cast<unsigned>(rows), static_cast<unsigned>(count));
  batch_split_errors_kernel<<<grid, kSplitThreads, 0, stream>>>(b, first, row_begin, rows, dst,
                                                                dst_stride);
  CUDA_CHECK_LAUNCH();
}

}  // namespace exq::quant::cuda
