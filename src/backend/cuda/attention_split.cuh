// What the two decode attention kernels (attention_decode.cu, attention_decode_mma.cu) share
// for their split-K merge: the workspace holds per (head, split) o [head_dim], m, l
// (attention_decode.h); the last block of a kv head to finish merges the splits in split order.
// Included only by .cu files.
#pragma once

#include <cmath>

#include "backend/cuda/attention_decode.h"
#include "backend/cuda/kernel_utils.cuh"

namespace exq::cuda {

__host__ __device__ constexpr int div_up(int a, int b) { return (a + b - 1) / b; }

// The keys [k0, k1) of split `split` when kv_len keys are cut into `splits` parts of a multiple
// of `granule` keys each; the first `used` splits hold keys (split >= used: none).
struct SplitKeys {
  int k0, k1, used;
};
__device__ __forceinline__ SplitKeys split_keys(int kv_len, int splits, int granule, int split) {
  const int per = div_up(div_up(kv_len, splits), granule) * granule;
  const int k0 = split * per;
  return {k0, min(k0 + per, kv_len), div_up(kv_len, per)};
}

// Called by the whole block after it wrote its split states: true in the last of `count`
// blocks counting on `counter` (which then sees the others' states); `flag` is shared memory.
__device__ __forceinline__ bool last_of_splits(unsigned* counter, unsigned count, int* flag) {
  __threadfence();
  __syncthreads();
  if (threadIdx.x == 0) *flag = atomicAdd(counter, 1u) == count - 1;
  __syncthreads();
  const bool last = *flag != 0;
  if (last) __threadfence();
  return last;
}

// One warp: w[s] = f(m_s - m) / sum_t f(m_t - m) l_t for the `used` splits of one head, whose
// states' (m, l) start at `ml` (`stride` floats apart); f = exp2 (BASE2) or exp.
template <bool BASE2>
__device__ __forceinline__ void split_merge_weights(const float* ml, int stride, int used, float* w) {
  const int lane = threadIdx.x & 31;
  constexpr int kPer = kDecodeMaxSplits / 32;
  float ms[kPer], ls[kPer];
  float m_all = -INFINITY;
#pragma unroll
  for (int i = 0; i < kPer; ++i) {
    const int sp = lane + 32 * i;
    ms[i] = -INFINITY;
    ls[i] = 0.0f;
    if (sp < used) {
      ms[i] = __ldcg(ml + sp * stride);
      ls[i] = __ldcg(ml + sp * stride + 1);
    }
    m_all = fmaxf(m_all, ms[i]);
  }
  m_all = warp_max(m_all);
  float f[kPer], l_all = 0.0f;
#pragma unroll
  for (int i = 0; i < kPer; ++i) {
    f[i] = lane + 32 * i < used ? (BASE2 ? exp2f(ms[i] - m_all) : expf(ms[i] - m_all)) : 0.0f;
    l_all += ls[i] * f[i];
  }
  l_all = warp_sum(l_all);
#pragma unroll
  for (int i = 0; i < kPer; ++i)
    if (lane + 32 * i < used) w[lane + 32 * i] = f[i] / l_all;
}

}  // namespace exq::cuda
