// The q8 KV cache's append (the attention kernels read it: attention_decode_mma.cu, flash_prefill.cu).
#include "backend/cuda/cuda_check.h"
#include "backend/cuda/kernel_utils.cuh"
#include "backend/cuda/kv_q8.cuh"
#include "backend/cuda/launchers.h"

namespace exq::cuda {
namespace {

constexpr int kThreads = 256;

// A warp per group of 32 values of a k or v row (head_dim is a multiple of 32).
__global__ void kv_append_q8_kernel(const float* __restrict__ k, const float* __restrict__ v, int8_t* k_cache,
                                    __half* k_scale, int8_t* v_cache, __half* v_scale, int64_t n, int kv_heads,
                                    int head_dim, int capacity, int start_pos, const int32_t* start_dev) {
  const int64_t idx = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if ((idx & ~int64_t{31}) >= n) return;  // whole warps: n is a multiple of 32
  if (start_dev != nullptr) start_pos = *start_dev;
  const int64_t dst = kv_cache_slot(idx, kv_heads, head_dim, capacity, start_pos);
  const Q8Lane kq = q8_quantize_warp(k[idx]);
  const Q8Lane vq = q8_quantize_warp(v[idx]);
  k_cache[dst] = kq.q;
  v_cache[dst] = vq.q;
  if ((threadIdx.x & 31) == 0) {
    k_scale[dst / kQ8Group] = kq.scale;
    v_scale[dst / kQ8Group] = vq.scale;
  }
}

}  // namespace

void kv_append_q8_cuda(const float* k, const float* v, int8_t* k_cache, __half* k_scale, int8_t* v_cache,
                       __half* v_scale, int tokens, int kv_heads, int head_dim, int capacity, StartPos start,
                       cudaStream_t stream) {
  const int64_t n = static_cast<int64_t>(tokens) * kv_heads * head_dim;
  if (n == 0) return;
  kv_append_q8_kernel<<<ceil_div(n, kThreads), kThreads, 0, stream>>>(
      k, v, k_cache, k_scale, v_cache, v_scale, n, kv_heads, head_dim, capacity, start.host, start.device);
  CUDA_CHECK_LAUNCH();
}

}  // namespace exq::cuda
