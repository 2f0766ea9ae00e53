// The q8 KV cache's append and its dequantization to f16 for the prefill attention.
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

// 8 values a thread; rows [0, start + tokens) of each kv head.
__global__ void kv_dequant_q8_kernel(const int8_t* __restrict__ cache, const __half* __restrict__ scale,
                                     __half* __restrict__ out, int capacity, int head_dim, int tokens,
                                     int start_pos, const int32_t* start_dev) {
  if (start_dev != nullptr) start_pos = *start_dev;
  const int64_t i = (static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x) * 8;
  if (i >= static_cast<int64_t>(start_pos + tokens) * head_dim) return;
  const int64_t e = static_cast<int64_t>(blockIdx.y) * capacity * head_dim + i;
  const uint2 raw = *reinterpret_cast<const uint2*>(cache + e);
  const __half2 s2 = __half2half2(scale[e / kQ8Group]);
  uint4 v;
  q8_dequant4(raw.x, s2, v.x, v.y);
  q8_dequant4(raw.y, s2, v.z, v.w);
  *reinterpret_cast<uint4*>(out + e) = v;
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

void kv_dequant_q8_cuda(const int8_t* cache, const __half* scale, __half* out, int kv_heads, int capacity,
                        int head_dim, int tokens, StartPos start, cudaStream_t stream) {
  // Sized for the whole capacity: with a device start the end is known only there.
  const int64_t per_head = static_cast<int64_t>(capacity) * head_dim / 8;
  if (per_head == 0 || kv_heads == 0) return;
  const dim3 grid(static_cast<unsigned>(ceil_div(per_head, kThreads)), static_cast<unsigned>(kv_heads));
  kv_dequant_q8_kernel<<<grid, kThreads, 0, stream>>>(cache, scale, out, capacity, head_dim, tokens, start.host,
                                                      start.device);
  CUDA_CHECK_LAUNCH();
}

}  // namespace exq::cuda
