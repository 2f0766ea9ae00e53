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
#include <cstdio>

#include "quant/cuda/gptq_common.cuh"

namespace exq::quant::cuda {
namespace {

using exq::cuda::ceil_div;
using namespace detail;

// Warp 0 of a row-pass block: the best grid point, the group's fp16 scale maximum (written
// once, by block 0) and the kernel's m = fp16(scale_max / 256) into *s_m.
__device__ void group_scale_prologue(const double* __restrict__ err,
                                     const float* __restrict__ partials, int64_t partial_count,
                                     const GptqGrid& grid, uint16_t* __restrict__ scale_max,
                                     float* s_m) {
  const int lane = threadIdx.x;
  const int best = best_grid_point(err, lane);
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
  const float q = valid ? static_cast<float>(qs[c]) : 1.0f;
  float* ecol = e + (a - block_begin) * out + c;
  row_pass<L>(
      ub, ldu, wb, ldw, rows, t, valid, bits, q, s_m,
      [&](int64_t r, float code, float rec) {
        codes[(a + r) * out + c] = static_cast<uint8_t>(code);
        wq[(a + r) * out + c] = __float2half_rn(rec);
      },
      [&](int64_t r, float er) { ecol[r * out] = er; });
}

template <int L>
void launch_rows(float* wp, const float* u, float* e, uint8_t* codes, __half* wq,
                 uint16_t* scale_max, const uint8_t* qs, const double* err,
                 const float* partials, int64_t partial_count, const GptqGrid& grid, int64_t in,
                 int64_t out, int64_t a, int64_t rows, int64_t block_begin, int bits,
                 cudaStream_t stream) {
  constexpr int kColsPerBlock = kRowBlock / L;
  const RowShared sh = row_shared<L>(rows);
  allow_shared(group_rows_kernel<L>, sh.bytes);
  group_rows_kernel<L><<<ceil_div(out, kColsPerBlock), kRowBlock, sh.bytes, stream>>>(
      wp, u, e, codes, wq, scale_max, qs, err, partials, partial_count, grid, in, out, a, rows,
      block_begin, bits, sh.shared_u, sh.shared_w);
  const cudaError_t status = cudaGetLastError();
  if (status != cudaSuccess) {
    char what[160];
    std::snprintf(what, sizeof(what),
                  "group_rows_kernel<%d> launch: %lld rows, %zu bytes shared, %u blocks", L,
                  static_cast<long long>(rows), sh.bytes, ceil_div(out, kColsPerBlock));
    exq::cuda::throw_cuda_error(status, what, __FILE__, __LINE__);
  }
}

}  // namespace

void group_rows_cuda(float* wp, const float* u, float* e, uint8_t* codes, __half* wq,
                     uint16_t* scale_max, const uint8_t* qs, const double* err,
                     const float* partials, int64_t partial_count, const GptqGrid& grid,
                     int64_t in, int64_t out, int64_t a, int64_t rows, int64_t block_begin,
                     int bits, cudaStream_t stream) {
  with_row_lanes(row_lanes(out), [&](auto lanes) {
    launch_rows<decltype(lanes)::value>(wp, u, e, codes, wq, scale_max, qs, err, partials,
                                        partial_count, grid, in, out, a, rows, block_begin, bits,
                                        stream);
  });
}

}  // namespace exq::quant::cuda
