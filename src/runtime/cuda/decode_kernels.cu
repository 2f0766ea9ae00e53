// Kernels of the CUDA runtime (decode_launchers.h): the residual add + RMSNorm of prefill and
// the single-token step's small kernels, launched with programmatic dependent launch (pdl.cuh)
// so each is resident before the previous kernel ends. The decode attention is the backend's
// (attention_decode.cu).
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <type_traits>

#include "backend/cuda/cuda_check.h"
#include "backend/cuda/kernel_utils.cuh"
#include "backend/cuda/pdl.cuh"
#include "runtime/cuda/decode_launchers.h"

namespace exq::runtime::cuda {
namespace {

using exq::cuda::block_sum;
using exq::cuda::ceil_div;
using exq::cuda::launch_pdl;
using exq::cuda::pdl_trigger;
using exq::cuda::pdl_wait;
using exq::cuda::geglu_value;
using exq::cuda::swiglu_value;
using exq::cuda::to_float;

constexpr int kNormThreads = 1024;
constexpr int kNormVec = 4;  // float4s a thread holds in registers: rows up to 16384

__device__ __forceinline__ float4 ld4(const float* p) { return *reinterpret_cast<const float4*>(p); }
__device__ __forceinline__ void st4(float* p, float4 v) { *reinterpret_cast<float4*>(p) = v; }

// One block of kNormThreads: one token's residual row. x += delta * ds (when given; ds = 1 adds
// delta exactly, as __fmul_rn(d, 1) is d), out = RMSNorm(x) * weight. Rows of a multiple of 4
// up to 4 * kNormVec * kNormThreads take one pass:
// each thread's float4s (the weights loaded before `wait`: pdl_wait, so they overlap the
// previous kernel) stay in registers, so every load is one round trip. Prefill and decode both
// use this, so they agree bit for bit.
template <typename W>
__device__ __forceinline__ void norm_row(float* __restrict__ x, const float* __restrict__ delta,
                                         const W* __restrict__ weight, float* __restrict__ out,
                                         int dim, float eps, float* scratch, bool wait,
                                         float ds) {
  if constexpr (std::is_same_v<W, float>) {
    if (dim % 4 == 0 && dim <= 4 * kNormVec * static_cast<int>(blockDim.x)) {
      float4 w[kNormVec], v[kNormVec];
#pragma unroll
      for (int k = 0; k < kNormVec; ++k) {
        const int i = 4 * (threadIdx.x + k * blockDim.x);
        if (i < dim) w[k] = ld4(weight + i);
      }
      if (wait) exq::cuda::pdl_wait();
      float ss = 0.0f;
#pragma unroll
      for (int k = 0; k < kNormVec; ++k) {
        const int i = 4 * (threadIdx.x + k * blockDim.x);
        if (i < dim) {
          v[k] = ld4(x + i);
          if (delta) {
            const float4 d = ld4(delta + i);
            v[k] = make_float4(v[k].x + __fmul_rn(d.x, ds), v[k].y + __fmul_rn(d.y, ds),
                               v[k].z + __fmul_rn(d.z, ds), v[k].w + __fmul_rn(d.w, ds));
            st4(x + i, v[k]);
          }
          ss += v[k].x * v[k].x;
          ss += v[k].y * v[k].y;
          ss += v[k].z * v[k].z;
          ss += v[k].w * v[k].w;
        }
      }
      ss = block_sum(ss, scratch);
      const float inv = rsqrtf(ss / static_cast<float>(dim) + eps);
#pragma unroll
      for (int k = 0; k < kNormVec; ++k) {
        const int i = 4 * (threadIdx.x + k * blockDim.x);
        if (i < dim)
          st4(out + i, make_float4(v[k].x * inv * w[k].x, v[k].y * inv * w[k].y,
                                   v[k].z * inv * w[k].z, v[k].w * inv * w[k].w));
      }
      return;
    }
  }
  if (wait) exq::cuda::pdl_wait();
  float ss = 0.0f;
  for (int i = threadIdx.x; i < dim; i += blockDim.x) {
    float v = x[i];
    if (delta) {
      v += __fmul_rn(delta[i], ds);
      x[i] = v;
    }
    ss += v * v;
  }
  ss = block_sum(ss, scratch);
  const float inv = rsqrtf(ss / static_cast<float>(dim) + eps);
  for (int i = threadIdx.x; i < dim; i += blockDim.x) out[i] = x[i] * inv * to_float(weight[i]);
}

// gemma2 / 3: delta = RMSNorm(delta) * post (the sublayer's output norm), in place, before the
// residual add.
__device__ __forceinline__ void post_norm(float* __restrict__ delta, const float* __restrict__ post, int dim,
                                          float eps, float* scratch) {
  float ss = 0.0f;
  for (int i = threadIdx.x; i < dim; i += blockDim.x) ss += delta[i] * delta[i];
  ss = block_sum(ss, scratch);
  const float inv = rsqrtf(ss / static_cast<float>(dim) + eps);
  for (int i = threadIdx.x; i < dim; i += blockDim.x) delta[i] = delta[i] * inv * post[i];
  __syncthreads();
}

// One block per row.
template <typename W>
__global__ void __launch_bounds__(kNormThreads)
    add_rmsnorm_kernel(float* __restrict__ residual, float* __restrict__ delta,
                       const W* __restrict__ weight, float* __restrict__ out, int dim, float eps,
                       const float* __restrict__ post, float ds) {
  __shared__ float scratch[32];
  const size_t row = blockIdx.x;
  if (post) post_norm(delta + row * dim, post, dim, eps, scratch);
  norm_row(residual + row * dim, delta ? delta + row * dim : nullptr, weight, out + row * dim, dim,
           eps, scratch, false, ds);
}

__global__ void add_bias_f32_kernel(float* __restrict__ y, const float* __restrict__ bias,
                                    int64_t total, int n) {
  const int64_t idx = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (idx < total) y[idx] += bias[idx % n];
}

__global__ void __launch_bounds__(kNormThreads) decode_add_rmsnorm_kernel(float* __restrict__ x, float* __restrict__ delta,
                                          const float* __restrict__ weight, float* __restrict__ out,
                                          int dim, float eps, int32_t* __restrict__ increment,
                                          const float* __restrict__ post, float ds) {
  __shared__ float scratch[32];
  pdl_trigger();
  if (post) {
    pdl_wait();
    post_norm(delta, post, dim, eps, scratch);
  }
  norm_row(x, delta, weight, out, dim, eps, scratch, post == nullptr, ds);
  // Every kernel reading the position finished before pdl_wait (in norm_row) returned.
  if (increment && threadIdx.x == 0) *increment += 1;
}

// The token's embedding row (NaN for an id outside the vocabulary, as embedding_kernel) into x,
// then the first RMSNorm.
template <typename T>
__global__ void decode_embed_rmsnorm_kernel(const int32_t* __restrict__ ids, const T* __restrict__ table,
                                            int vocab, float* __restrict__ x,
                                            const float* __restrict__ weight, float* __restrict__ out,
                                            int dim, float eps, float scale) {
  __shared__ float scratch[32];
  pdl_trigger();
  pdl_wait();  // the id may come from the sampler kernel
  const int id = ids[0];
  if (id < 0 || id >= vocab) {
    for (int d = threadIdx.x; d < dim; d += blockDim.x) x[d] = __int_as_float(0x7fc00000);
  } else {
    const T* row = table + static_cast<size_t>(id) * dim;
    for (int d = threadIdx.x; d < dim; d += blockDim.x) x[d] = to_float(row[d]) * scale;
  }
  __syncthreads();  // the norm reads x in its own order
  norm_row(x, static_cast<const float*>(nullptr), weight, out, dim, eps, scratch, false, 1.0f);
}

// out = silu(gate) * up, swiglu_kernel's arithmetic (gelu: geglu_kernel's).
__global__ void decode_swiglu_kernel(const float* gate, const float* up, float* out, int n, bool gelu) {
  pdl_trigger();
  pdl_wait();
  const int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i < n) {
    out[i] = gelu ? geglu_value(gate[i], up[i]) : swiglu_value(gate[i], up[i]);
  }
}

__global__ void scale_f32_kernel(float* x, int64_t n, float s) {
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x)
    x[i] *= s;
}

__global__ void softcap_f32_kernel(float* x, int64_t n, float cap) {
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x)
    x[i] = cap * tanhf(x[i] / cap);
}

unsigned grid_for(int64_t n) { return static_cast<unsigned>(std::min<int64_t>(ceil_div(n, 256), 4096)); }

}  // namespace

template <typename W>
void add_rmsnorm_cuda(float* residual, float* delta, const W* weight, float* out, int rows,
                      int dim, float eps, cudaStream_t stream, const float* post, float delta_scale) {
  if (rows == 0 || dim == 0) return;
  add_rmsnorm_kernel<W><<<rows, kNormThreads, 0, stream>>>(residual, delta, weight, out, dim, eps, post,
                                                           delta_scale);
  CUDA_CHECK_LAUNCH();
}

void scale_f32_cuda(float* x, int64_t n, float s, cudaStream_t stream) {
  if (n == 0) return;
  scale_f32_kernel<<<grid_for(n), 256, 0, stream>>>(x, n, s);
  CUDA_CHECK_LAUNCH();
}

void softcap_f32_cuda(float* x, int64_t n, float cap, cudaStream_t stream) {
  if (n == 0) return;
  softcap_f32_kernel<<<grid_for(n), 256, 0, stream>>>(x, n, cap);
  CUDA_CHECK_LAUNCH();
}

void add_bias_f32_cuda(float* y, const float* bias, int rows, int n, cudaStream_t stream) {
  const int64_t total = static_cast<int64_t>(rows) * n;
  if (total == 0) return;
  add_bias_f32_kernel<<<ceil_div(total, 256), 256, 0, stream>>>(y, bias, total, n);
  CUDA_CHECK_LAUNCH();
}

void decode_add_rmsnorm_cuda(float* x, float* delta, const float* weight, float* out,
                             int dim, float eps, int32_t* increment, bool pdl,
                             cudaStream_t stream, const float* post, float delta_scale) {
  launch_pdl(pdl, decode_add_rmsnorm_kernel, dim3(1), dim3(kNormThreads), 0, stream, x, delta,
             weight, out, dim, eps, increment, post, delta_scale);
}

template <typename T>
void decode_embed_rmsnorm_cuda(const int32_t* ids, const T* table, int vocab, float* x,
                               const float* weight, float* out, int dim, float eps, bool pdl,
                               cudaStream_t stream, float scale) {
  launch_pdl(pdl, decode_embed_rmsnorm_kernel<T>, dim3(1), dim3(kNormThreads), 0, stream, ids,
             table, vocab, x, weight, out, dim, eps, scale);
}

void decode_swiglu_cuda(const float* gate, const float* up, float* out, int n, bool pdl,
                        cudaStream_t stream, bool gelu) {
  if (n == 0) return;
  launch_pdl(pdl, decode_swiglu_kernel, dim3(ceil_div(n, 256)), dim3(256), 0, stream, gate, up,
             out, n, gelu);
}

template void add_rmsnorm_cuda<float>(float*, float*, const float*, float*, int, int, float,
                                      cudaStream_t, const float*, float);
template void add_rmsnorm_cuda<__half>(float*, float*, const __half*, float*, int, int, float,
                                       cudaStream_t, const float*, float);
template void add_rmsnorm_cuda<__nv_bfloat16>(float*, float*, const __nv_bfloat16*, float*,
                                              int, int, float, cudaStream_t, const float*, float);
template void decode_embed_rmsnorm_cuda<float>(const int32_t*, const float*, int, float*,
                                               const float*, float*, int, float, bool, cudaStream_t,
                                               float);
template void decode_embed_rmsnorm_cuda<__half>(const int32_t*, const __half*, int, float*,
                                                const float*, float*, int, float, bool, cudaStream_t,
                                               float);
template void decode_embed_rmsnorm_cuda<__nv_bfloat16>(const int32_t*, const __nv_bfloat16*, int,
                                                       float*, const float*, float*, int, float,
                                                       bool, cudaStream_t, float);

}  // namespace exq::runtime::cuda
