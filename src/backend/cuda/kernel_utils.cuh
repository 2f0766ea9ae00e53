// Device-side helpers shared by the kernels (conversions, warp/block reductions). Included
// only by .cu files; these are inline definitions by necessity.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>

namespace exq::cuda {

__device__ __forceinline__ float to_float(float x) { return x; }
__device__ __forceinline__ float to_float(__half x) { return __half2float(x); }
__device__ __forceinline__ float to_float(__nv_bfloat16 x) { return __bfloat162float(x); }

template <typename T>
__device__ __forceinline__ T from_float(float x);
template <>
__device__ __forceinline__ float from_float<float>(float x) { return x; }
template <>
__device__ __forceinline__ __half from_float<__half>(float x) { return __float2half_rn(x); }
template <>
__device__ __forceinline__ __nv_bfloat16 from_float<__nv_bfloat16>(float x) {
  return __float2bfloat16_rn(x);
}

// silu(g) * u: the MLP's SwiGLU. Every kernel that forms it calls this, so that prefill, decode,
// the EXL2 staging and the conversion produce the same bits. expf, not __expf: the fast path
// loses ~2 ulp, which adds up through 30 layers.
__device__ __forceinline__ float swiglu_value(float g, float u) { return g / (1.0f + expf(-g)) * u; }
// gelu_tanh(g) * u: gemma's GeGLU (transformers' gelu_pytorch_tanh), shared like swiglu_value.
__device__ __forceinline__ float geglu_value(float g, float u) {
  return 0.5f * g * (1.0f + tanhf(0.7978845608028654f * (g + 0.044715f * g * g * g))) * u;
}

// Element idx of new rows [tokens, kv_heads, head_dim] -> its place in a head-major cache
// [kv_heads, capacity, head_dim] whose first new row is start_pos.
__device__ __forceinline__ int64_t kv_cache_slot(int64_t idx, int kv_heads, int head_dim, int capacity,
                                                 int start_pos) {
  const int d = static_cast<int>(idx % head_dim);
  const int64_t token_head = idx / head_dim;
  const int h = static_cast<int>(token_head % kv_heads);
  const int64_t t = token_head / kv_heads;
  return (static_cast<int64_t>(h) * capacity + start_pos + t) * head_dim + d;
}

__device__ __forceinline__ float warp_sum(float v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}

__device__ __forceinline__ float warp_max(float v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
  return v;
}

// Sum over the block (blockDim.x a multiple of 32, at most 1024); every thread gets the
// result. `scratch` holds 32 floats of shared memory; fixed order, so results are repeatable.
__device__ __forceinline__ float block_sum(float v, float* scratch) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int warps = blockDim.x >> 5;
  v = warp_sum(v);
  __syncthreads();  // scratch may still be read by a previous call
  if (lane == 0) scratch[warp] = v;
  __syncthreads();
  v = lane < warps ? scratch[lane] : 0.0f;
  return warp_sum(v);
}

__device__ __forceinline__ float block_max(float v, float* scratch) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int warps = blockDim.x >> 5;
  v = warp_max(v);
  __syncthreads();
  if (lane == 0) scratch[warp] = v;
  __syncthreads();
  v = lane < warps ? scratch[lane] : -INFINITY;
  return warp_max(v);
}

// The power of two a row of max |x| = amax is divided by before rounding to f16 (matmul.cu's
// rule): 1 when amax lies in [2^-4, 2^14), else the scale that brings it into [2^13, 2^14).
__device__ __forceinline__ float f16_row_scale(float amax) {
  constexpr int kRowMaxExponent = 14, kRowMinExponent = -4;
  if (!(amax > 0.0f) || !isfinite(amax)) return 1.0f;
  int e = 0;
  frexpf(amax, &e);  // amax = f * 2^e with f in [0.5, 1)
  return e - 1 < kRowMinExponent || e > kRowMaxExponent ? ldexpf(1.0f, e - kRowMaxExponent) : 1.0f;
}

inline unsigned ceil_div(long long a, long long b) { return static_cast<unsigned>((a + b - 1) / b); }

// The first key a query at `pos` attends with a sliding window of `window` keys (itself included);
// 0 without a window. The rule of every attention kernel (and of cpu::attention).
__device__ __forceinline__ int window_first_key(int pos, int window) {
  return window > 0 ? max(0, pos - window + 1) : 0;
}

}  // namespace exq::cuda
