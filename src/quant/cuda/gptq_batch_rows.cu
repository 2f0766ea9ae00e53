// The row pass of batched GPTQ: gptq_rows.cu's kernel with the option in blockIdx.y, each
// option's group from the step table and the errors written to the option's ring (row r in
// slot r & ring_mask). Per column the arithmetic is the single-option kernel's exactly: the
// quantization of row r, then its error applied to the group's later rows in ascending r,
// whatever the lanes per column L.
#include <cstdio>

#include "quant/cuda/gptq_common.cuh"

namespace exq::quant::cuda {
namespace {

using exq::cuda::ceil_div;
using namespace detail;

// group_scale_prologue of gptq_rows.cu for option o.
__device__ void batch_scale_prologue(const GptqBatchBuffers& b, int o, int group,
                                     const GptqGrid& grid, float* s_m) {
  const int lane = threadIdx.x;
  const int best = best_grid_point(b.err + o * kGptqGrid, lane);
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

  const float q = valid ? static_cast<float>(b.qs[static_cast<int64_t>(group) * out + c]) : 1.0f;
  float* ring = b.ring + o * b.ring_stride + c;
  __half* wq = b.wq + o * b.wq_stride + c;
  uint8_t* codes = b.codes != nullptr ? b.codes + o * b.codes_stride + c : nullptr;
  row_pass<L>(
      ub, ldu, wb, ldw, rows, t, valid, bits, q, s_m,
      [&](int64_t r, float code, float rec) {
        if (codes != nullptr) codes[(a + r) * out] = static_cast<uint8_t>(code);
        wq[(a + r) * out] = __float2half_rn(rec);
      },
      [&](int64_t r, float er) { ring[((a + r) & b.ring_mask) * out] = er; });
}

template <int L>
void launch_rows(const GptqBatchBuffers& b, const GptqBatchStep& step, const float* u,
                 const GptqGrid& grid, int64_t max_rows, cudaStream_t stream) {
  const RowShared sh = row_shared<L>(max_rows);
  allow_shared(batch_rows_kernel<L>, sh.bytes);
  const dim3 blocks(ceil_div(b.out, kRowBlock / L), static_cast<unsigned>(b.count));
  batch_rows_kernel<L><<<blocks, kRowBlock, sh.bytes, stream>>>(b, step, u, grid, sh.shared_u,
                                                                sh.shared_w);
  const cudaError_t status = cudaGetLastError();
  if (status != cudaSuccess) {
    char what[160];
    std::snprintf(what, sizeof(what),
                  "batch_rows_kernel<%d> launch: %lld rows, %zu bytes shared, %u x %u blocks", L,
                  static_cast<long long>(max_rows), sh.bytes, blocks.x, blocks.y);
    exq::cuda::throw_cuda_error(status, what, __FILE__, __LINE__);
  }
}

}  // namespace

void batch_rows_cuda(const GptqBatchBuffers& b, const GptqBatchStep& step, const float* u,
                     const GptqGrid& grid, int max_rows, int active, cudaStream_t stream) {
  with_row_lanes(row_lanes(b.out * (active > 0 ? active : 1)), [&](auto lanes) {
    launch_rows<decltype(lanes)::value>(b, step, u, grid, max_rows, stream);
  });
}

}  // namespace exq::quant::cuda
