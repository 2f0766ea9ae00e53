// Prefill attention (the exact f32 path; tensor cores: flash_prefill.cu; decode:
// attention_decode.cu). One warp per query row at a time with lanes split over keys for the
// scores and over head dims for the output, and an online softmax (running max m, running sum
// l, unnormalized output o), so no score matrix is ever materialized.
#include <cmath>

#include "backend/cuda/cuda_check.h"
#include "backend/cuda/kernel_utils.cuh"
#include "backend/cuda/launchers.h"

namespace exq::cuda {
namespace {

constexpr int kWarps = 4;
constexpr int kThreads = kWarps * 32;
constexpr unsigned kFull = 0xffffffffu;

// Prefill tiles: 16 queries (4 per warp) share each 32-key K/V tile staged in shared memory.
constexpr int kQPerWarp = 4;
constexpr int kQTile = kWarps * kQPerWarp;
constexpr int kKTile = 32;

size_t prefill_smem_bytes(int head_dim) {
  // K tile padded by one float per row so lane-per-key reads hit distinct banks.
  return sizeof(float) * (static_cast<size_t>(kKTile) * (head_dim + 1) +
                          static_cast<size_t>(kKTile) * head_dim +
                          static_cast<size_t>(kQTile) * head_dim);
}

// One online-softmax step for a warp: lane j holds score s of key j (or -inf); folds the
// 32 scores into (m, l) and returns p_j = exp(s_j - m_new); o must be scaled by `corr`.
__device__ __forceinline__ float softmax_step(float s, float& m, float& l, float& corr) {
  const float m_new = fmaxf(m, warp_max(s));  // finite: the caller skips tiles without a visible key
  const float p = expf(s - m_new);
  corr = expf(m - m_new);
  l = l * corr + warp_sum(p);
  m = m_new;
  return p;
}

// grid (ceil(tokens / kQTile), heads); smem: k_s [kKTile][hd+1], v_s [kKTile][hd], q_s [kQTile][hd].
template <typename C, int DPL>
__global__ void __launch_bounds__(kThreads)
    attention_prefill_kernel(const float* __restrict__ q, const C* __restrict__ k_cache,
                             const C* __restrict__ v_cache, float* __restrict__ out, int tokens,
                             int heads, int kv_heads, int head_dim, int capacity, int start_pos,
                             const int32_t* start_dev, float scale, int window, float softcap) {
  extern __shared__ float smem[];
  if (start_dev != nullptr) start_pos = *start_dev;
  const int ldk = head_dim + 1;
  float* k_s = smem;
  float* v_s = k_s + kKTile * ldk;
  float* q_s = v_s + kKTile * head_dim;
  const int head = blockIdx.y;
  const int kv_head = head / (heads / kv_heads);
  const int t0 = blockIdx.x * kQTile;
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;

  for (int i = threadIdx.x; i < kQTile * head_dim; i += kThreads) {
    const int t = t0 + i / head_dim, d = i % head_dim;
    q_s[i] = t < tokens ? q[(static_cast<size_t>(t) * heads + head) * head_dim + d] * scale : 0.0f;
  }

  float m[kQPerWarp], l[kQPerWarp], o[kQPerWarp][DPL];
#pragma unroll
  for (int qq = 0; qq < kQPerWarp; ++qq) {
    m[qq] = -INFINITY;
    l[qq] = 0.0f;
#pragma unroll
    for (int i = 0; i < DPL; ++i) o[qq][i] = 0.0f;
  }

  const int t_last = min(t0 + kQTile, tokens) - 1;
  const int kv_end = start_pos + t_last + 1;  // keys this block's last query can see
  // A sliding window: the block's first query sees the earliest keys.
  const int kv_begin = window_first_key(start_pos + t0, window) / kKTile * kKTile;
  const C* k_head = k_cache + static_cast<size_t>(kv_head) * capacity * head_dim;
  const C* v_head = v_cache + static_cast<size_t>(kv_head) * capacity * head_dim;

  for (int k0 = kv_begin; k0 < kv_end; k0 += kKTile) {
    __syncthreads();  // the previous tile is consumed (and q_s is written on the first pass)
    for (int i = threadIdx.x; i < kKTile * head_dim; i += kThreads) {
      const int j = i / head_dim, d = i % head_dim;
      const int key = k0 + j;
      float kv = 0.0f, vv = 0.0f;
      if (key < kv_end) {
        kv = to_float(k_head[static_cast<size_t>(key) * head_dim + d]);
        vv = to_float(v_head[static_cast<size_t>(key) * head_dim + d]);
      }
      k_s[j * ldk + d] = kv;
      v_s[j * head_dim + d] = vv;
    }
    __syncthreads();

#pragma unroll
    for (int qq = 0; qq < kQPerWarp; ++qq) {
      const int qi = warp * kQPerWarp + qq;
      const int pos = start_pos + t0 + qi, lo = window_first_key(pos, window);
      // Warp-uniform; a tile the query sees at least one key of keeps the max finite.
      if (t0 + qi >= tokens || k0 > pos || k0 + kKTile <= lo) continue;
      const int key = k0 + lane;
      float s = -INFINITY;
      if (key <= pos && key >= lo) {  // causal mask, sliding window
        const float* qv = q_s + qi * head_dim;
        const float* kv = k_s + lane * ldk;
        float acc = 0.0f;
        for (int d = 0; d < head_dim; ++d) acc = fmaf(qv[d], kv[d], acc);
        s = softcap > 0.0f ? softcap * tanhf(acc / softcap) : acc;  // gemma2
      }
      float corr;
      const float p = softmax_step(s, m[qq], l[qq], corr);
#pragma unroll
      for (int i = 0; i < DPL; ++i) o[qq][i] *= corr;
#pragma unroll 8
      for (int j = 0; j < kKTile; ++j) {
        const float pj = __shfl_sync(kFull, p, j);
#pragma unroll
        for (int i = 0; i < DPL; ++i) {
          const int d = lane + 32 * i;
          if (d < head_dim) o[qq][i] = fmaf(pj, v_s[j * head_dim + d], o[qq][i]);
        }
      }
    }
  }

#pragma unroll
  for (int qq = 0; qq < kQPerWarp; ++qq) {
    const int t = t0 + warp * kQPerWarp + qq;
    if (t >= tokens) continue;
    float* orow = out + (static_cast<size_t>(t) * heads + head) * head_dim;
    const float inv = 1.0f / l[qq];
#pragma unroll
    for (int i = 0; i < DPL; ++i) {
      const int d = lane + 32 * i;
      if (d < head_dim) orow[d] = o[qq][i] * inv;
    }
  }
}

template <typename Kernel>
void set_smem_limit(Kernel kernel, size_t bytes) {
  if (bytes > 48 * 1024)
    CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                    static_cast<int>(bytes)));
}

template <typename C, int DPL>
void launch_prefill(const float* q, const C* k_cache, const C* v_cache, float* out, int tokens,
                    int heads, int kv_heads, int head_dim, int capacity, StartPos start,
                    float scale, cudaStream_t stream, int window, float softcap) {
  const size_t smem = prefill_smem_bytes(head_dim);
  auto kernel = attention_prefill_kernel<C, DPL>;
  set_smem_limit(kernel, smem);
  const dim3 grid(ceil_div(tokens, kQTile), heads);
  kernel<<<grid, kThreads, smem, stream>>>(q, k_cache, v_cache, out, tokens, heads, kv_heads,
                                           head_dim, capacity, start.host, start.device, scale, window,
                                           softcap);
  CUDA_CHECK_LAUNCH();
}

}  // namespace

template <typename C>
void attention_prefill_cuda(const float* q, const C* k_cache, const C* v_cache, float* out,
                            int tokens, int heads, int kv_heads, int head_dim, int capacity,
                            StartPos start, float scale, cudaStream_t stream, int window,
                            float softcap) {
  if (tokens == 0 || heads == 0) return;
  if (head_dim <= 64)
    launch_prefill<C, 2>(q, k_cache, v_cache, out, tokens, heads, kv_heads, head_dim, capacity,
                         start, scale, stream, window, softcap);
  else if (head_dim <= 128)
    launch_prefill<C, 4>(q, k_cache, v_cache, out, tokens, heads, kv_heads, head_dim, capacity,
                         start, scale, stream, window, softcap);
  else
    launch_prefill<C, 8>(q, k_cache, v_cache, out, tokens, heads, kv_heads, head_dim, capacity,
                         start, scale, stream, window, softcap);
}

template void attention_prefill_cuda<float>(const float*, const float*, const float*, float*, int,
                                            int, int, int, int, StartPos, float, cudaStream_t, int,
                                            float);
template void attention_prefill_cuda<__half>(const float*, const __half*, const __half*, float*,
                                             int, int, int, int, int, StartPos, float, cudaStream_t, int,
                                            float);

}  // namespace exq::cuda
