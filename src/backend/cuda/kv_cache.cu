#include "backend/cuda/cuda_check.h"
#include "backend/cuda/kernel_utils.cuh"
#include "backend/cuda/launchers.h"

namespace exq::cuda {
namespace {

constexpr int kAppendThreads = 256;

// One thread per element of the new rows; reads are contiguous, writes contiguous per head.
template <typename C>
__global__ void kv_append_kernel(const float* __restrict__ k, const float* __restrict__ v,
                                 C* __restrict__ k_cache, C* __restrict__ v_cache, int64_t n,
                                 int kv_heads, int head_dim, int capacity, int start_pos,
                                 const int32_t* start_dev) {
  const int64_t idx = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (idx >= n) return;
  if (start_dev != nullptr) start_pos = *start_dev;
  const int64_t dst = kv_cache_slot(idx, kv_heads, head_dim, capacity, start_pos);
  k_cache[dst] = from_float<C>(k[idx]);
  v_cache[dst] = from_float<C>(v[idx]);
}

}  // namespace

template <typename C>
void kv_append_cuda(const float* k, const float* v, C* k_cache, C* v_cache, int tokens,
                    int kv_heads, int head_dim, int capacity, StartPos start, cudaStream_t stream) {
  const int64_t n = static_cast<int64_t>(tokens) * kv_heads * head_dim;
  if (n == 0) return;
  kv_append_kernel<C><<<ceil_div(n, kAppendThreads), kAppendThreads, 0, stream>>>(
      k, v, k_cache, v_cache, n, kv_heads, head_dim, capacity, start.host, start.device);
  CUDA_CHECK_LAUNCH();
}

template void kv_append_cuda<float>(const float*, const float*, float*, float*, int, int, int,
                                    int, StartPos, cudaStream_t);
template void kv_append_cuda<__half>(const float*, const float*, __half*, __half*, int, int, int,
                                    int, StartPos, cudaStream_t);

}  // namespace exq::cuda
