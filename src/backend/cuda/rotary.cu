#include "backend/cuda/cuda_check.h"
#include "backend/cuda/kernel_utils.cuh"
#include "backend/cuda/launchers.h"

namespace exq::cuda {
namespace {

constexpr int kRotaryThreads = 256;

// One thread per rotated pair (i, i + half) of one head of one token; half <= head_dim / 2
// (partial rotary: the dimensions past 2 * half are left alone).
__global__ void rotary_kernel(float* __restrict__ x, const float* __restrict__ cos_table,
                              const float* __restrict__ sin_table, int64_t pairs, int heads,
                              int head_dim, int half, int start_pos, const int32_t* start_dev) {
  const int64_t idx = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (idx >= pairs) return;
  if (start_dev != nullptr) start_pos = *start_dev;
  const int i = static_cast<int>(idx % half);
  const int64_t token_head = idx / half;
  const int64_t pos = start_pos + token_head / heads;
  const float c = cos_table[pos * half + i];
  const float s = sin_table[pos * half + i];
  float* v = x + token_head * head_dim;
  const float x1 = v[i], x2 = v[i + half];
  v[i] = x1 * c - x2 * s;
  v[i + half] = x2 * c + x1 * s;
}

}  // namespace

void rotary_cuda(float* x, const float* cos, const float* sin, int tokens, int heads,
                 int head_dim, int rot_half, StartPos start, cudaStream_t stream) {
  const int64_t pairs = static_cast<int64_t>(tokens) * heads * rot_half;
  if (pairs == 0) return;
  rotary_kernel<<<ceil_div(pairs, kRotaryThreads), kRotaryThreads, 0, stream>>>(
      x, cos, sin, pairs, heads, head_dim, rot_half, start.host, start.device);
  CUDA_CHECK_LAUNCH();
}

}  // namespace exq::cuda
