#include <climits>

#include "backend/cuda/cuda_check.h"
#include "backend/cuda/kernel_utils.cuh"
#include "backend/cuda/launchers.h"

namespace exq::cuda {
namespace {

constexpr int kArgmaxThreads = 1024;

// (value, index) is better when larger, or equal with a smaller index: the first maximum wins,
// as std::max_element does on the CPU.
__device__ __forceinline__ void take_better(float& v, int& i, float ov, int oi) {
  if (ov > v || (ov == v && oi < i)) {
    v = ov;
    i = oi;
  }
}

// One block per row.
__global__ void argmax_kernel(const float* __restrict__ logits, int32_t* __restrict__ out,
                              int vocab) {
  __shared__ float sv[32];
  __shared__ int si[32];
  const float* row = logits + static_cast<size_t>(blockIdx.x) * vocab;
  float best = -INFINITY;
  int best_i = INT_MAX;
  for (int i = threadIdx.x; i < vocab; i += blockDim.x) {
    const float v = row[i];
    if (v == v) take_better(best, best_i, v, i);  // v != v: NaN, skipped
  }
#pragma unroll
  for (int o = 16; o > 0; o >>= 1)
    take_better(best, best_i, __shfl_xor_sync(0xffffffffu, best, o),
                __shfl_xor_sync(0xffffffffu, best_i, o));
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  if (lane == 0) {
    sv[warp] = best;
    si[warp] = best_i;
  }
  __syncthreads();
  if (warp == 0) {
    const int warps = blockDim.x >> 5;
    best = lane < warps ? sv[lane] : -INFINITY;
    best_i = lane < warps ? si[lane] : INT_MAX;
#pragma unroll
    for (int o = 16; o > 0; o >>= 1)
      take_better(best, best_i, __shfl_xor_sync(0xffffffffu, best, o),
                  __shfl_xor_sync(0xffffffffu, best_i, o));
    if (lane == 0) out[blockIdx.x] = best_i == INT_MAX ? 0 : best_i;
  }
}

}  // namespace

void argmax_cuda(const float* logits, int32_t* out, int rows, int vocab, cudaStream_t stream) {
  if (rows == 0) return;
  argmax_kernel<<<rows, kArgmaxThreads, 0, stream>>>(logits, out, vocab);
  CUDA_CHECK_LAUNCH();
}

}  // namespace exq::cuda
