// The row pass of batched GPTQ: gptq_rows.cu's kernel with the option in blockIdx.y, each
// option's group from the step table and the errors written to the option's ring (row r in
// slot r & ring_mask). Per column the arithmetic is the single-option kernel's exactly: the
// quantization of row r, then its error applied to the group's later rows in ascending r,
// whatever the lanes per column L.
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

constexpr int kRowBlock = 256;            // threads per block: 256 / L columns
constexpr int kTargetThreads = 32768;     // L grows until columns * L reaches this
constexpr int64_t kSharedURows = 128;     // U's group block in shared memory up to 64 KB
constexpr size_t kSharedBudget = 200 * 1024;
constexpr int kDefaultSharedBytes = 48 * 1024;

// group_scale_prologue of gptq_rows.cu for option o.
__device__ void batch_scale_prologue(const GptqBatchBuffers& b, int o, int group,
                                     const GptqGrid& grid, float* s_m) {
  const int lane = threadIdx.x;
  const double* err = b.err + o * kGptqGrid;
  double best_err = err[lane];
  int best = lane;
  for (int i = lane + 32; i < kGptqGrid; i += 32)
    if (err[i] < best_err) best_err = err[i], best = i;
  for (int k = 16; k > 0; k >>= 1) {
    const double other_err = __shfl_xor_sync(0xffffffffu, best_err, k);
    const int other = __shfl_xor_sync(0xffffffffu, best, k);
    if (other_err < best_err || (other_err == best_err && other < best))
      best_err = other_err, best = other;
  }
  const float smax = warp_max_of(b.partials + o * b.parts, b.parts, lane);
  if (lane == 0) {
    const __half h = __float2half_rn(__fmul_rn(smax, grid.p[best]));
    *s_m = round_half(__fdiv_rn(__half2float(h), 256.0f));
    if (blockIdx.x == 0) b.scale_max[group] = __half_as_ushort(h);
  }
}

template <int L>
__global__ void __launch_bounds__(kRowBlock)
    batch_rows_kernel(const __grid_constant__ GptqBatchBuffers b,
                      const __grid_constant__ GptqBatchStep step,
                      const float* __restrict__ u, const __grid_constant__ GptqGrid grid,
                      bool shared_u, bool shared_w) {
  constexpr int kColsPerBlock = kRowBlock / L;
  extern __shared__ float smem[];  // [rows, rows] U block if shared_u, then [rows, cols] W
  __shared__ float s_m;
  const int o = blockIdx.y;
  const int64_t a = step.row_begin[o];
  if (a < 0) return;  // uniform over the block
  const int64_t rows = step.rows[o];
  const int bits = step.bits[o];
  const int group = step.group[o];
  if (threadIdx.x < 32) batch_scale_prologue(b, o, group, grid, &s_m);
  const int64_t in = b.in, out = b.out;
  const int cb = threadIdx.x / L, t = threadIdx.x % L;
  const int64_t c = static_cast<int64_t>(blockIdx.x) * kColsPerBlock + cb;
  const bool valid = c < out;
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
  float* wb = b.wp + o * b.wp_stride + a * out + c;
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
  const float q = valid ? static_cast<float>(b.qs[static_cast<int64_t>(group) * out + c]) : 1.0f;
  const float scale = round_half(__fmul_rn(__fmul_rn(q, q), s_m));
  float* ring = b.ring + o * b.ring_stride + c;
  __half* wq = b.wq + o * b.wq_stride + c;
  uint8_t* codes = b.codes != nullptr ? b.codes + o * b.codes_stride + c : nullptr;
  // Every lane runs every step (the shuffles need the whole warp); `valid` guards memory.
  for (int64_t r = 0; r < rows; ++r) {
    const float* urow = ub + r * ldu;
    float er = 0.0f;
    if (t == 0 && valid) {
      const float w = wb[r * ldw];
      const float code = scale == 0.0f ? zero : quantize_code(w, scale, zero, maxq);
      const float rec = round_half(__fmul_rn(__fsub_rn(code, zero), scale));
      if (codes != nullptr) codes[(a + r) * out] = static_cast<uint8_t>(code);
      wq[(a + r) * out] = __float2half_rn(rec);
      er = __fdiv_rn(__fsub_rn(w, rec), urow[r]);
      ring[((a + r) & b.ring_mask) * out] = er;
    }
    if constexpr (L > 1) er = __shfl_sync(0xffffffffu, er, 0, L);
    // Later rows j = r + 1 + t + k L, four at a time, all loads before the stores.
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
    if constexpr (L > 1) __syncwarp();
  }
}

template <typename Kernel>
void allow_shared(Kernel kernel, size_t bytes) {
  if (bytes > static_cast<size_t>(kDefaultSharedBytes) / 2)
    CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                    static_cast<int>(bytes)));
}

template <int L>
void launch_rows(const GptqBatchBuffers& b, const GptqBatchStep& step, const float* u,
                 const GptqGrid& grid, int64_t max_rows, cudaStream_t stream) {
  constexpr int kColsPerBlock = kRowBlock / L;
  const bool shared_u = max_rows <= kSharedURows;
  const size_t u_bytes = shared_u ? static_cast<size_t>(max_rows * max_rows) * sizeof(float) : 0;
  const size_t w_bytes = static_cast<size_t>(max_rows) * kColsPerBlock * sizeof(float);
  const bool shared_w = u_bytes + w_bytes <= kSharedBudget;
  const size_t shared = u_bytes + (shared_w ? w_bytes : 0);
  allow_shared(batch_rows_kernel<L>, shared);
  const dim3 blocks(ceil_div(b.out, kColsPerBlock), static_cast<unsigned>(b.count));
  batch_rows_kernel<L><<<blocks, kRowBlock, shared, stream>>>(b, step, u, grid, shared_u,
                                                              shared_w);
  const cudaError_t status = cudaGetLastError();
  if (status != cudaSuccess) {
    char what[160];
    std::snprintf(what, sizeof(what),
                  "batch_rows_kernel<%d> launch: %lld rows, %zu bytes shared, %u x %u blocks", L,
                  static_cast<long long>(max_rows), shared, blocks.x, blocks.y);
    exq::cuda::throw_cuda_error(status, what, __FILE__, __LINE__);
  }
}

}  // namespace

void batch_rows_cuda(const GptqBatchBuffers& b, const GptqBatchStep& step, const float* u,
                     const GptqGrid& grid, int max_rows, int active, cudaStream_t stream) {
  const int64_t columns = b.out * (active > 0 ? active : 1);
  int lanes = 1;
  while (lanes < 32 && columns * lanes * 2 <= kTargetThreads) lanes *= 2;
#define EXQ_BATCH_ROWS_CASE(L)                            \
  case L:                                                 \
    launch_rows<L>(b, step, u, grid, max_rows, stream);   \
    break;
  switch (lanes) {
    EXQ_BATCH_ROWS_CASE(1)
    EXQ_BATCH_ROWS_CASE(2)
    EXQ_BATCH_ROWS_CASE(4)
    EXQ_BATCH_ROWS_CASE(8)
    EXQ_BATCH_ROWS_CASE(16)
    EXQ_BATCH_ROWS_CASE(32)
  }
#undef EXQ_BATCH_ROWS_CASE
}

}  // namespace exq::quant::cuda
