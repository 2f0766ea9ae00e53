// The q4 KV cache's append (the attention kernels read it: attention_decode_mma.cu, flash_prefill.cu).
#include "backend/cuda/cuda_check.h"
#include "backend/cuda/kernel_utils.cuh"
#include "backend/cuda/kv_q4.cuh"
#include "backend/cuda/launchers.h"

namespace exq::cuda {
namespace {

constexpr int kThreads = 256;

// A warp per group of 32 values of a k or v row (head_dim is a multiple of 32).
__global__ void kv_append_q4_kernel(const float* __restrict__ k, const float* __restrict__ v, uint8_t* k_cache,
                                    __half2* k_step, uint8_t* v_cache, __half2* v_step, int64_t n, int kv_heads,
                                    int head_dim, int capacity, int start_pos, const int32_t* start_dev) {
  const int64_t idx = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if ((idx & ~int64_t{31}) >= n) return;  // whole warps: n is a multiple of 32
  if (start_dev != nullptr) start_pos = *start_dev;
  const int64_t dst = kv_cache_slot(idx, kv_heads, head_dim, capacity, start_pos);  // value index
  const Q4Lane kq = q4_quantize_warp(k[idx]);
  const Q4Lane vq = q4_quantize_warp(v[idx]);
  const int lane = static_cast<int>(threadIdx.x & 31);
  if ((lane & 7) == 0) {
    reinterpret_cast<uint32_t*>(k_cache)[dst / 8] = kq.word;
    reinterpret_cast<uint32_t*>(v_cache)[dst / 8] = vq.word;
  }
  if (lane == 0) {
    k_step[dst / kQ4Group] = kq.step;
    v_step[dst / kQ4Group] = vq.step;
  }
}

}  // namespace

void kv_append_q4_cuda(const float* k, const float* v, uint8_t* k_cache, __half2* k_step, uint8_t* v_cache,
                       __half2* v_step, int tokens, int kv_heads, int head_dim, int capacity, StartPos start,
                       cudaStream_t stream) {
  const int64_t n = static_cast<int64_t>(tokens) * kv_heads * head_dim;
  if (n == 0) return;
  kv_append_q4_kernel<<<ceil_div(n, kThreads), kThreads, 0, stream>>>(
      k, v, k_cache, k_step, v_cache, v_step, n, kv_heads, head_dim, capacity, start.host, start.device);
  CUDA_CHECK_LAUNCH();
}

}  // namespace exq::cuda
