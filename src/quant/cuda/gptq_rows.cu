// The row pass of GPU GPTQ: for one group, each column quantized row by row with the error of
// every row propagated to the group's later rows through U, exactly in the CPU's order
// (quant/gptq.cpp), so given the same inputs codes and errors are bit-identical.
//
// The pass is a chain of dependent steps per column (quantize row r, then update rows > r), so
// parallelism comes from columns, and layers with few outputs (k/v: 1024) have too few to fill
// the GPU at one thread per column. Each column therefore gets L lanes of a warp (L = 1 .. 32,
// chosen from the width): lane 0 of the column quantizes row r and broadcasts its error, and
// the L lanes update the later rows j = r + 1 + t, r + 1 + t + L, ... (each row still receives
// its updates in ascending r). The group's columns and U's group block sit in shared memory
// when they fit (global memory otherwise: W' in place, U through the cache).
#include <cuda_pipeline.h>

#include <cstdio>

#include "backend/cuda/cuda_check.h"
#include "backend/cuda/kernel_utils.cuh"
#include "quant/cuda/gptq_device.cuh"
#include "quant/cuda/gptq_launchers.h"

namespace exq::quant::cuda {
namespace {

using exq::cuda::ceil_div;
using namespace detail;

constexpr int kRowBlock = 256;           // threads per block: 256 / L columns
constexpr int kTargetThreads = 32768;    // L grows until out * L reaches this (about 8 warps/SM)
constexpr int64_t kSharedURows = 128;    // U's group block in shared memory up to 64 KB
constexpr size_t kSharedBudget = 200 * 1024;  // U block + columns, below the 227 KB opt-in
constexpr int kDefaultSharedBytes = 48 * 1024;

// Warp 0 of a row-pass block: the grid point with the least error (first minimum, as
// std::min_element), the group's fp16 scale maximum (written once, by block 0) and the
// kernel's m = fp16(scale_max / 256) into *s_m.
__device__ void group_scale_prologue(const double* __restrict__ err,
                                     const float* __restrict__ partials, int64_t partial_count,
                                     const GptqGrid& grid, uint16_t* __restrict__ scale_max,
                                     float* s_m) {
  const int lane = threadIdx.x;
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
  const float smax = warp_max_of(partials, partial_count, lane);
  if (lane == 0) {
    const __half h = __float2half_rn(__fmul_rn(smax, grid.p[best]));
    *s_m = round_half(__fdiv_rn(__half2float(h), 256.0f));
    if (blockIdx.x == 0) *scale_max = __half_as_ushort(h);
  }
}

template <int L>
__global__ void __launch_bounds__(kRowBlock)
    group_rows_kernel(float* __restrict__ wp, const float* __restrict__ u, float* __restrict__ e,
                      uint8_t* __restrict__ codes, __half* __restrict__ wq,
                      uint16_t* __restrict__ scale_max, const uint8_t* __restrict__ qs,
                      const double* __restrict__ err, const float* __restrict__ partials,
                      int64_t partial_count, const __grid_constant__ GptqGrid grid, int64_t in,
                      int64_t out, int64_t a, int64_t rows, int64_t block_begin, int bits,
                      bool shared_u, bool shared_w) {
  constexpr int kColsPerBlock = kRowBlock / L;
  extern __shared__ float smem[];  // [rows, rows] U block if shared_u, then [rows, cols] W
  __shared__ float s_m;
  if (threadIdx.x < 32) group_scale_prologue(err, partials, partial_count, grid, scale_max, &s_m);
  const int cb = threadIdx.x / L, t = threadIdx.x % L;
  const int64_t c = static_cast<int64_t>(blockIdx.x) * kColsPerBlock + cb;
  const bool valid = c < out;
  // Asynchronous copies put every load in flight at once.
  const float* ub = u + a * in + a;
  int64_t ldu = in;
  if (shared_u) {
    for (int64_t idx = threadIdx.x; idx < rows * rows; idx += kRowBlock) {
      const int64_t r = idx / rows, k = idx - r * rows;
      __pipeline_memcpy_async(&smem[idx], &ub[r * in + k], sizeof(float));
    }
    ub = smem;
    ldu = rows;
  }
  float* wb = wp + a * out + c;  // wb[j * ldw]: the group's row j of this column
  int64_t ldw = out;
  if (shared_w) {
    float* sw = smem + (shared_u ? rows * rows : 0) + cb;
    if (valid)
      for (int64_t j = t; j < rows; j += L)
        __pipeline_memcpy_async(&sw[j * kColsPerBlock], &wb[j * out], sizeof(float));
    wb = sw;
    ldw = kColsPerBlock;
  }
  __pipeline_commit();
  __pipeline_wait_prior(0);
  __syncthreads();

  const float zero = static_cast<float>(1 << (bits - 1));
  const float maxq = static_cast<float>((1 << bits) - 1);
  const float q = valid ? static_cast<float>(qs[c]) : 1.0f;
  const float scale = round_half(__fmul_rn(__fmul_rn(q, q), s_m));
  float* ecol = e + (a - block_begin) * out + c;
  // Every lane runs every step (the shuffles need the whole warp); `valid` guards memory.
  for (int64_t r = 0; r < rows; ++r) {
    const float* urow = ub + r * ldu;
    float er = 0.0f;
    if (t == 0 && valid) {
      const float w = wb[r * ldw];
      const float code = scale == 0.0f ? zero : quantize_code(w, scale, zero, maxq);
      const float rec = round_half(__fmul_rn(__fsub_rn(code, zero), scale));
      codes[(a + r) * out + c] = static_cast<uint8_t>(code);
      wq[(a + r) * out + c] = __float2half_rn(rec);
      er = __fdiv_rn(__fsub_rn(w, rec), urow[r]);
      ecol[r * out] = er;
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

// Opts a kernel into more dynamic shared memory than the default 48 KB (less its static
// shared memory: 48 KB of dynamic memory alone already fails to launch).
template <typename Kernel>
void allow_shared(Kernel kernel, size_t bytes) {
  if (bytes > static_cast<size_t>(kDefaultSharedBytes) / 2)
    CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                    static_cast<int>(bytes)));
}

template <int L>
void launch_rows(float* wp, const float* u, float* e, uint8_t* codes, __half* wq,
                 uint16_t* scale_max, const uint8_t* qs, const double* err,
                 const float* partials, int64_t partial_count, const GptqGrid& grid, int64_t in,
                 int64_t out, int64_t a, int64_t rows, int64_t block_begin, int bits,
                 cudaStream_t stream) {
  constexpr int kColsPerBlock = kRowBlock / L;
  const bool shared_u = rows <= kSharedURows;
  const size_t u_bytes = shared_u ? static_cast<size_t>(rows * rows) * sizeof(float) : 0;
  const size_t w_bytes = static_cast<size_t>(rows) * kColsPerBlock * sizeof(float);
  const bool shared_w = u_bytes + w_bytes <= kSharedBudget;
  const size_t shared = u_bytes + (shared_w ? w_bytes : 0);
  allow_shared(group_rows_kernel<L>, shared);
  group_rows_kernel<L><<<ceil_div(out, kColsPerBlock), kRowBlock, shared, stream>>>(
      wp, u, e, codes, wq, scale_max, qs, err, partials, partial_count, grid, in, out, a, rows,
      block_begin, bits, shared_u, shared_w);
  const cudaError_t status = cudaGetLastError();
  if (status != cudaSuccess) {
    char what[160];
    std::snprintf(what, sizeof(what),
                  "group_rows_kernel<%d> launch: %lld rows, %zu bytes shared, %u blocks", L,
                  static_cast<long long>(rows), shared, ceil_div(out, kColsPerBlock));
    exq::cuda::throw_cuda_error(status, what, __FILE__, __LINE__);
  }
}

}  // namespace

void group_rows_cuda(float* wp, const float* u, float* e, uint8_t* codes, __half* wq,
                     uint16_t* scale_max, const uint8_t* qs, const double* err,
                     const float* partials, int64_t partial_count, const GptqGrid& grid,
                     int64_t in, int64_t out, int64_t a, int64_t rows, int64_t block_begin,
                     int bits, cudaStream_t stream) {
  int lanes = 1;
  while (lanes < 32 && out * lanes * 2 <= kTargetThreads) lanes *= 2;
#define EXQ_ROWS_CASE(L)                                                                        \
  case L:                                                                                     \
    launch_rows<L>(wp, u, e, codes, wq, scale_max, qs, err, partials, partial_count, grid, in, \
                   out, a, rows, block_begin, bits, stream);                                  \
    break;
  switch (lanes) {
    EXQ_ROWS_CASE(1)
    EXQ_ROWS_CASE(2)
    EXQ_ROWS_CASE(4)
    EXQ_ROWS_CASE(8)
    EXQ_ROWS_CASE(16)
    EXQ_ROWS_CASE(32)
  }
#undef EXQ_ROWS_CASE
}

}  // namespace exq::quant::cuda
