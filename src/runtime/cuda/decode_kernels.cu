// Kernels of the CUDA runtime (decode_launchers.h). The decode attention is the backend's
// flash-decoding kernel (backend/cuda/attention.cu) with the KV length read from device
// memory: the same split of keys over blocks, so a graph captured once is valid at every
// position and gives what attention_decode gives.
#include <cmath>

#include "backend/cuda/cuda_check.h"
#include "backend/cuda/kernel_utils.cuh"
#include "runtime/cuda/decode_launchers.h"

namespace exq::runtime::cuda {
namespace {

using exq::cuda::block_sum;
using exq::cuda::ceil_div;
using exq::cuda::from_float;
using exq::cuda::to_float;
using exq::cuda::warp_max;
using exq::cuda::warp_sum;

constexpr unsigned kFull = 0xffffffffu;
constexpr int kWarps = 4;
constexpr int kThreads = kWarps * 32;
// As attention.cu: blocks wanted per launch, keys per warp step of a block.
constexpr int kDecodeTargetBlocks = 256;
constexpr int kDecodeKeysPerStep = kWarps * 32;
constexpr int kRopeThreads = 256;
constexpr int kNormThreads = 256;

template <typename C>
__global__ void rope_append_at_kernel(float* __restrict__ q, const float* __restrict__ k,
                                      const float* __restrict__ v, C* __restrict__ k_cache,
                                      C* __restrict__ v_cache, const float* __restrict__ cos_table,
                                      const float* __restrict__ sin_table, int heads, int kv_heads,
                                      int head_dim, int capacity, const int32_t* __restrict__ pos) {
  const int half = head_dim / 2;
  const int p = *pos;
  int idx = blockIdx.x * blockDim.x + threadIdx.x;
  const float* cr = cos_table + static_cast<size_t>(p) * half;
  const float* sr = sin_table + static_cast<size_t>(p) * half;
  if (idx < heads * half) {
    const int h = idx / half, i = idx % half;
    float* x = q + static_cast<size_t>(h) * head_dim;
    const float c = cr[i], s = sr[i], x1 = x[i], x2 = x[i + half];
    x[i] = x1 * c - x2 * s;
    x[i + half] = x2 * c + x1 * s;
    return;
  }
  idx -= heads * half;
  if (idx < kv_heads * half) {
    const int h = idx / half, i = idx % half;
    const float* x = k + static_cast<size_t>(h) * head_dim;
    C* dst = k_cache + (static_cast<size_t>(h) * capacity + p) * head_dim;
    const float c = cr[i], s = sr[i], x1 = x[i], x2 = x[i + half];
    dst[i] = from_float<C>(x1 * c - x2 * s);
    dst[i + half] = from_float<C>(x2 * c + x1 * s);
    return;
  }
  idx -= kv_heads * half;
  if (idx < kv_heads * head_dim) {
    const int h = idx / head_dim, d = idx % head_dim;
    v_cache[(static_cast<size_t>(h) * capacity + p) * head_dim + d] = from_float<C>(v[idx]);
  }
}

__host__ __device__ int decode_max_splits(int heads) {
  const int s = kDecodeTargetBlocks / heads;
  return s < 1 ? 1 : s;
}

struct DecodeSplit {
  int splits;
  int chunk;
};

// attention.cu's decode_split, evaluated on the device.
__device__ DecodeSplit decode_split(int kv_len, int heads) {
  const int steps = (kv_len + kDecodeKeysPerStep - 1) / kDecodeKeysPerStep;
  int splits = steps < decode_max_splits(heads) ? steps : decode_max_splits(heads);
  const int steps_per_split = (steps + splits - 1) / splits;
  const int chunk = steps_per_split * kDecodeKeysPerStep;
  splits = (kv_len + chunk - 1) / chunk;
  return {splits, chunk};
}

__device__ __forceinline__ float softmax_step(float s, float& m, float& l, float& corr) {
  const float m_new = fmaxf(m, warp_max(s));  // finite: lane 0's key is always valid
  const float p = expf(s - m_new);
  corr = expf(m - m_new);
  l = l * corr + warp_sum(p);
  m = m_new;
  return p;
}

// grid (max splits, heads); smem: q_s [hd], w_ml [kWarps][2], w_o [kWarps][hd].
template <typename C, int DPL>
__global__ void __launch_bounds__(kThreads)
    attention_decode_at_kernel(const float* __restrict__ q, const C* __restrict__ k_cache,
                               const C* __restrict__ v_cache, float* __restrict__ out,
                               float* __restrict__ partial, int heads, int kv_heads, int head_dim,
                               int capacity, const int32_t* __restrict__ pos, float scale) {
  extern __shared__ float smem[];
  const int kv_len = *pos + 1;
  const DecodeSplit split_of = decode_split(kv_len, heads);
  const int split = blockIdx.x;
  if (split >= split_of.splits) return;
  float* q_s = smem;
  float* w_ml = q_s + head_dim;
  float* w_o = w_ml + 2 * kWarps;
  const int head = blockIdx.y;
  const int kv_head = head / (heads / kv_heads);
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const int key_begin = split * split_of.chunk;
  const int key_end = min(key_begin + split_of.chunk, kv_len);

  for (int d = threadIdx.x; d < head_dim; d += kThreads) q_s[d] = q[head * head_dim + d] * scale;
  __syncthreads();

  const C* k_head = k_cache + static_cast<size_t>(kv_head) * capacity * head_dim;
  const C* v_head = v_cache + static_cast<size_t>(kv_head) * capacity * head_dim;
  float m = -INFINITY, l = 0.0f, o[DPL];
#pragma unroll
  for (int i = 0; i < DPL; ++i) o[i] = 0.0f;

  for (int k0 = key_begin + warp * 32; k0 < key_end; k0 += kDecodeKeysPerStep) {
    const int key = k0 + lane;
    float s = -INFINITY;
    if (key < key_end) {
      const C* kr = k_head + static_cast<size_t>(key) * head_dim;
      float acc = 0.0f;
      for (int d = 0; d < head_dim; ++d) acc = fmaf(q_s[d], to_float(kr[d]), acc);
      s = acc;
    }
    float corr;
    const float p = softmax_step(s, m, l, corr);
#pragma unroll
    for (int i = 0; i < DPL; ++i) o[i] *= corr;
    const int valid = min(32, key_end - k0);
    for (int j = 0; j < valid; ++j) {
      const float pj = __shfl_sync(kFull, p, j);
      const C* vr = v_head + static_cast<size_t>(k0 + j) * head_dim;
#pragma unroll
      for (int i = 0; i < DPL; ++i) {
        const int d = lane + 32 * i;
        if (d < head_dim) o[i] = fmaf(pj, to_float(vr[d]), o[i]);
      }
    }
  }

  if (lane == 0) {
    w_ml[2 * warp] = m;
    w_ml[2 * warp + 1] = l;
  }
#pragma unroll
  for (int i = 0; i < DPL; ++i) {
    const int d = lane + 32 * i;
    if (d < head_dim) w_o[warp * head_dim + d] = o[i];
  }
  __syncthreads();

  float m_all = -INFINITY;
#pragma unroll
  for (int w = 0; w < kWarps; ++w) m_all = fmaxf(m_all, w_ml[2 * w]);
  float weight[kWarps];
  float l_all = 0.0f;
#pragma unroll
  for (int w = 0; w < kWarps; ++w) {
    weight[w] = w_ml[2 * w] == -INFINITY ? 0.0f : expf(w_ml[2 * w] - m_all);
    l_all += w_ml[2 * w + 1] * weight[w];
  }
  const bool final_output = split_of.splits == 1;
  float* dst = final_output
                   ? out + static_cast<size_t>(head) * head_dim
                   : partial + (static_cast<size_t>(head) * split_of.splits + split) * (head_dim + 2);
  for (int d = threadIdx.x; d < head_dim; d += kThreads) {
    float acc = 0.0f;
#pragma unroll
    for (int w = 0; w < kWarps; ++w) acc += w_o[w * head_dim + d] * weight[w];
    if (final_output)
      dst[d] = acc / l_all;
    else
      dst[2 + d] = acc;
  }
  if (!final_output && threadIdx.x == 0) {
    dst[0] = m_all;
    dst[1] = l_all;
  }
}

// grid heads: merges the splits' (m, l, o); nothing to do when one split wrote the output.
__global__ void attention_combine_at_kernel(const float* __restrict__ partial,
                                            float* __restrict__ out, int heads, int head_dim,
                                            const int32_t* __restrict__ pos) {
  const int splits = decode_split(*pos + 1, heads).splits;
  if (splits == 1) return;
  const int head = blockIdx.x;
  const float* p = partial + static_cast<size_t>(head) * splits * (head_dim + 2);
  float m_all = -INFINITY;
  for (int s = 0; s < splits; ++s) m_all = fmaxf(m_all, p[s * (head_dim + 2)]);
  float l_all = 0.0f;
  for (int s = 0; s < splits; ++s) {
    const float* ps = p + s * (head_dim + 2);
    l_all += ps[1] * expf(ps[0] - m_all);
  }
  const float inv = 1.0f / l_all;
  for (int d = threadIdx.x; d < head_dim; d += blockDim.x) {
    float acc = 0.0f;
    for (int s = 0; s < splits; ++s) {
      const float* ps = p + s * (head_dim + 2);
      acc += ps[2 + d] * expf(ps[0] - m_all);
    }
    out[static_cast<size_t>(head) * head_dim + d] = acc * inv;
  }
}

template <typename C, int DPL>
void launch_decode_at(const float* q, const C* k_cache, const C* v_cache, float* out,
                      float* workspace, int heads, int kv_heads, int head_dim, int capacity,
                      const int32_t* pos, float scale, cudaStream_t stream) {
  const size_t smem = sizeof(float) * (head_dim + 2 * kWarps + kWarps * head_dim);
  auto kernel = attention_decode_at_kernel<C, DPL>;
  if (smem > 48 * 1024)
    CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                    static_cast<int>(smem)));
  // The most blocks any length up to the capacity splits into.
  const int steps = (capacity + kDecodeKeysPerStep - 1) / kDecodeKeysPerStep;
  const int max_splits = steps < decode_max_splits(heads) ? steps : decode_max_splits(heads);
  const dim3 grid(max_splits < 1 ? 1 : max_splits, heads);
  kernel<<<grid, kThreads, smem, stream>>>(q, k_cache, v_cache, out, workspace, heads, kv_heads,
                                           head_dim, capacity, pos, scale);
  CUDA_CHECK_LAUNCH();
  if (max_splits > 1) {
    attention_combine_at_kernel<<<heads, kThreads, 0, stream>>>(workspace, out, heads, head_dim,
                                                                pos);
    CUDA_CHECK_LAUNCH();
  }
}

// One block per row.
template <typename W>
__global__ void add_rmsnorm_kernel(float* __restrict__ residual, const float* __restrict__ delta,
                                   const W* __restrict__ weight, float* __restrict__ out, int dim,
                                   float eps) {
  __shared__ float scratch[32];
  const size_t row = blockIdx.x;
  float* xr = residual + row * dim;
  float ss = 0.0f;
  if (delta) {
    const float* dr = delta + row * dim;
    for (int i = threadIdx.x; i < dim; i += blockDim.x) {
      const float v = xr[i] + dr[i];
      xr[i] = v;
      ss += v * v;
    }
  } else {
    for (int i = threadIdx.x; i < dim; i += blockDim.x) ss += xr[i] * xr[i];
  }
  ss = block_sum(ss, scratch);
  const float inv = rsqrtf(ss / static_cast<float>(dim) + eps);
  float* orow = out + row * dim;
  for (int i = threadIdx.x; i < dim; i += blockDim.x) orow[i] = xr[i] * inv * to_float(weight[i]);
}

__global__ void add_bias_f32_kernel(float* __restrict__ y, const float* __restrict__ bias,
                                    int64_t total, int n) {
  const int64_t idx = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (idx < total) y[idx] += bias[idx % n];
}

__global__ void increment_kernel(int32_t* value) { *value += 1; }

}  // namespace

template <typename C>
void rope_append_at_cuda(float* q, const float* k, const float* v, C* k_cache, C* v_cache,
                         const float* cos, const float* sin, int heads, int kv_heads,
                         int head_dim, int capacity, const int32_t* pos, cudaStream_t stream) {
  const int half = head_dim / 2;
  const int items = heads * half + kv_heads * half + kv_heads * head_dim;
  if (items == 0) return;
  rope_append_at_kernel<C><<<ceil_div(items, kRopeThreads), kRopeThreads, 0, stream>>>(
      q, k, v, k_cache, v_cache, cos, sin, heads, kv_heads, head_dim, capacity, pos);
  CUDA_CHECK_LAUNCH();
}

size_t attention_decode_at_workspace_floats(int heads, int head_dim) {
  return static_cast<size_t>(heads) * decode_max_splits(heads) * (head_dim + 2);
}

template <typename C>
void attention_decode_at_cuda(const float* q, const C* k_cache, const C* v_cache, float* out,
                              float* workspace, int heads, int kv_heads, int head_dim,
                              int capacity, const int32_t* pos, float scale, cudaStream_t stream) {
  if (heads == 0 || capacity == 0) return;
  if (head_dim <= 64)
    launch_decode_at<C, 2>(q, k_cache, v_cache, out, workspace, heads, kv_heads, head_dim,
                           capacity, pos, scale, stream);
  else if (head_dim <= 128)
    launch_decode_at<C, 4>(q, k_cache, v_cache, out, workspace, heads, kv_heads, head_dim,
                           capacity, pos, scale, stream);
  else
    launch_decode_at<C, 8>(q, k_cache, v_cache, out, workspace, heads, kv_heads, head_dim,
                           capacity, pos, scale, stream);
}

template <typename W>
void add_rmsnorm_cuda(float* residual, const float* delta, const W* weight, float* out, int rows,
                      int dim, float eps, cudaStream_t stream) {
  if (rows == 0 || dim == 0) return;
  add_rmsnorm_kernel<W><<<rows, kNormThreads, 0, stream>>>(residual, delta, weight, out, dim, eps);
  CUDA_CHECK_LAUNCH();
}

void add_bias_f32_cuda(float* y, const float* bias, int rows, int n, cudaStream_t stream) {
  const int64_t total = static_cast<int64_t>(rows) * n;
  if (total == 0) return;
  add_bias_f32_kernel<<<ceil_div(total, 256), 256, 0, stream>>>(y, bias, total, n);
  CUDA_CHECK_LAUNCH();
}

void increment_cuda(int32_t* value, cudaStream_t stream) {
  increment_kernel<<<1, 1, 0, stream>>>(value);
  CUDA_CHECK_LAUNCH();
}

template void rope_append_at_cuda<float>(float*, const float*, const float*, float*, float*,
                                         const float*, const float*, int, int, int, int,
                                         const int32_t*, cudaStream_t);
template void rope_append_at_cuda<__half>(float*, const float*, const float*, __half*, __half*,
                                          const float*, const float*, int, int, int, int,
                                          const int32_t*, cudaStream_t);
template void attention_decode_at_cuda<float>(const float*, const float*, const float*, float*,
                                              float*, int, int, int, int, const int32_t*, float,
                                              cudaStream_t);
template void attention_decode_at_cuda<__half>(const float*, const __half*, const __half*, float*,
                                               float*, int, int, int, int, const int32_t*, float,
                                               cudaStream_t);
template void add_rmsnorm_cuda<float>(float*, const float*, const float*, float*, int, int, float,
                                      cudaStream_t);
template void add_rmsnorm_cuda<__half>(float*, const float*, const __half*, float*, int, int, float,
                                       cudaStream_t);
template void add_rmsnorm_cuda<__nv_bfloat16>(float*, const float*, const __nv_bfloat16*, float*,
                                              int, int, float, cudaStream_t);

}  // namespace exq::runtime::cuda
