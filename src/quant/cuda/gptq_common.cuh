// Kernel pieces shared by GPTQ v1 (gptq_kernels.cu, gptq_rows.cu) and v2 (gptq_batch_kernels.cu,
// gptq_batch_rows.cu): per column both run the same steps, written once here. Device pieces are
// __forceinline__ and were checked to leave every kernel's SASS as with the code in place (up to
// register names); the asynchronous staging loops stay in the kernels, since as helpers they
// compiled differently. Internal to quant/cuda; included only by .cu files.
#pragma once

#include <cuda_pipeline.h>

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <type_traits>

#include "backend/cuda/cuda_check.h"
#include "backend/cuda/kernel_utils.cuh"
#include "quant/cuda/gptq_device.cuh"
#include "quant/cuda/gptq_launchers.h"

namespace exq::quant::cuda::detail {

using exq::cuda::to_float;

constexpr int kTile = 32;  // permuted transposes: 32 x 32 tiles, 8 row phases a block
constexpr int kTileRows = 8;
constexpr int kCols = 32;  // column maxima / grid errors: 32 columns x 8 threads a block
constexpr int kColSplit = 8;
constexpr int kReduceThreads = 256;  // grid error sums: one block per grid point
constexpr int kRowBlock = 256;       // row pass: threads per block, 256 / L columns
constexpr int kTargetThreads = 32768;    // L grows until columns * L reaches this
constexpr int64_t kSharedURows = 128;    // U's group block in shared memory up to 64 KB
constexpr size_t kSharedBudget = 200 * 1024;  // U block + columns, below the 227 KB opt-in
constexpr int kDefaultSharedBytes = 48 * 1024;

// Tile [x, y] = W'[i0 + x, c0 + y] = w[c0 + y, perm[i0 + x]] as f32, then a block barrier.
template <typename T>
__device__ __forceinline__ void load_permuted_tile(float (&tile)[kTile][kTile + 1], const T* w,
                                                   const int32_t* perm, int64_t in, int64_t out,
                                                   int64_t i0, int64_t c0) {
  const int x = threadIdx.x;
  const int64_t i = i0 + x;
  const int64_t src = i < in ? perm[i] : 0;
  for (int y = threadIdx.y; y < kTile; y += kTileRows) {
    const int64_t c = c0 + y;
    if (i < in && c < out) tile[y][x] = to_float(w[c * in + src]);
  }
  __syncthreads();
}

// Block (32 columns, 8 row phases) over rows a .. a + rows of W' (wp): each thread scans every
// 8th row, row phase 0 combines; base[c] = (max |w| + 1e-12) / half_maxq and the block's
// largest base into partials[blockIdx.x].
__device__ __forceinline__ void group_colmax(float (&s_max)[kColSplit][kCols + 1],
                                             const float* wp, float* base, float* partials,
                                             int64_t out, int64_t a, int64_t rows,
                                             float half_maxq) {
  const int tx = threadIdx.x, ty = threadIdx.y;
  const int64_t c = static_cast<int64_t>(blockIdx.x) * kCols + tx;
  float m = 0.0f;
  if (c < out) {
    const float* col = wp + a * out + c;
    for (int64_t r = ty; r < rows; r += kColSplit) m = fmaxf(m, fabsf(col[r * out]));
  }
  s_max[ty][tx] = m;
  __syncthreads();
  if (ty != 0) return;
  for (int k = 1; k < kColSplit; ++k) m = fmaxf(m, s_max[k][tx]);
  float b = 0.0f;  // neutral: every base is > 0
  if (c < out) {
    b = __fdiv_rn(__fadd_rn(m, 1e-12f), half_maxq);
    base[c] = b;
  }
  b = warp_max(b);
  if (tx == 0) partials[blockIdx.x] = b;
}

// The column's quantizer scale q in 1 .. 16 (the CPU's sqrt(base / smax) * 16, rounded).
__device__ __forceinline__ float column_q(float base, float smax) {
  return fminf(fmaxf(rintf(__fmul_rn(__fsqrt_rn(__fdiv_rn(base, smax)), 16.0f)), 1.0f), 16.0f);
}

// The column's scale before the grid factor: q^2 / 256 * smax.
__device__ __forceinline__ float column_scale(float q, float smax) {
  return __fmul_rn(__fdiv_rn(__fmul_rn(q, q), 256.0f), smax);
}

// The grid point with the least error over one warp (first minimum, as std::min_element);
// every lane gets it.
__device__ __forceinline__ int best_grid_point(const double* err, int lane) {
  double best_err = err[lane];
  int best = lane;
  for (int i = lane + 32; i < kGptqGrid; i += 32)
    if (err[i] < best_err) best_err = err[i], best = i;
  for (int o = 16; o > 0; o >>= 1) {
    const double other_err = __shfl_xor_sync(0xffffffffu, best_err, o);
    const int other = __shfl_xor_sync(0xffffffffu, best, o);
    if (other_err < best_err || (other_err == best_err && other < best))
      best_err = other_err, best = other;
  }
  return best;
}

// The row pass of one column over the staged group: lane t == 0 quantizes row r with the
// column's scale (q^2 * s_m, fp16), put_code(r, code, rec) stores the code and its fp16
// reconstruction, put_err(r, er) the row's error; the L lanes then apply the error to rows
// j = r + 1 + t + k L. Every lane runs every step (the shuffles need the whole warp); `valid`
// guards memory.
template <int L, typename PutCode, typename PutErr>
__device__ __forceinline__ void row_pass(const float* ub, int64_t ldu, float* wb, int64_t ldw,
                                         int64_t rows, int t, bool valid, int bits, float q,
                                         float s_m, PutCode&& put_code, PutErr&& put_err) {
  const float zero = static_cast<float>(1 << (bits - 1));
  const float maxq = static_cast<float>((1 << bits) - 1);
  const float scale = round_half(__fmul_rn(__fmul_rn(q, q), s_m));
  for (int64_t r = 0; r < rows; ++r) {
    const float* urow = ub + r * ldu;
    float er = 0.0f;
    if (t == 0 && valid) {
      const float w = wb[r * ldw];
      const float code = scale == 0.0f ? zero : quantize_code(w, scale, zero, maxq);
      const float rec = round_half(__fmul_rn(__fsub_rn(code, zero), scale));
      put_code(r, code, rec);
      er = __fdiv_rn(__fsub_rn(w, rec), urow[r]);
      put_err(r, er);
    }
    if constexpr (L > 1) er = __shfl_sync(0xffffffffu, er, 0, L);
    // Later rows j = r + 1 + t + k L, four at a time: all loads before the stores, which the
    // compiler may not move loads across (it cannot rule out aliasing).
    if (valid)
      for (int64_t j0 = r + 1 + t; j0 < rows; j0 += 4 * L) {
        float f[4], x[4];
#pragma unroll
        for (int k = 0; k < 4; ++k) {
          const int64_t j = j0 + k * L;
          f[k] = j < rows ? urow[j] : 0.0f;
          x[k] = j < rows ? wb[j * ldw] : 0.0f;
        }
#pragma unroll
        for (int k = 0; k < 4; ++k) {
          const int64_t j = j0 + k * L;
          if (j < rows && f[k] != 0.0f)  // the CPU skips f == 0
            wb[j * ldw] = __fsub_rn(x[k], __fmul_rn(f[k], er));
        }
      }
    if constexpr (L > 1) __syncwarp();  // row r + 1's updates from other lanes are visible
  }
}

// Lanes per column of the row pass: doubles (to 32) while columns * L stays within
// kTargetThreads.
inline int row_lanes(int64_t columns) {
  int lanes = 1;
  while (lanes < 32 && columns * lanes * 2 <= kTargetThreads) lanes *= 2;
  return lanes;
}

// Calls f(std::integral_constant<int, L>{}) for L = lanes (1, 2, 4, .. 32).
template <typename F>
void with_row_lanes(int lanes, F&& f) {
  switch (lanes) {
    case 1: f(std::integral_constant<int, 1>{}); break;
    case 2: f(std::integral_constant<int, 2>{}); break;
    case 4: f(std::integral_constant<int, 4>{}); break;
    case 8: f(std::integral_constant<int, 8>{}); break;
    case 16: f(std::integral_constant<int, 16>{}); break;
    case 32: f(std::integral_constant<int, 32>{}); break;
    default: break;
  }
}

// Shared memory of a row-pass launch of L lanes per column over groups of up to `rows` rows:
// U's block where rows <= kSharedURows, the columns too while both fit kSharedBudget.
struct RowShared {
  bool shared_u = false, shared_w = false;
  size_t bytes = 0;
};
template <int L>
RowShared row_shared(int64_t rows) {
  constexpr int kColsPerBlock = kRowBlock / L;
  RowShared s;
  s.shared_u = rows <= kSharedURows;
  const size_t u_bytes = s.shared_u ? static_cast<size_t>(rows * rows) * sizeof(float) : 0;
  const size_t w_bytes = static_cast<size_t>(rows) * kColsPerBlock * sizeof(float);
  s.shared_w = u_bytes + w_bytes <= kSharedBudget;
  s.bytes = u_bytes + (s.shared_w ? w_bytes : 0);
  return s;
}

// Opts a kernel into more dynamic shared memory than the default 48 KB (less its static
// shared memory: 48 KB of dynamic memory alone already fails to launch).
template <typename Kernel>
void allow_shared(Kernel kernel, size_t bytes) {
  if (bytes > static_cast<size_t>(kDefaultSharedBytes) / 2)
    CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                    static_cast<int>(bytes)));
}

}  // namespace exq::quant::cuda::detail
