// Raw launchers of the CUDA runtime's own kernels (decode_kernels.cu): the fused residual add +
// RMSNorm of prefill, an f32 bias add, and the single-token step's small kernels (one block or
// one element per thread), which may be launched with programmatic dependent launch (`pdl`,
// backend/cuda/pdl.h) inside the decode graph. The decode attention with its fused rotary and
// KV append is the backend's (backend/cuda/attention_decode.h). Free of exq/fmt headers (nvcc
// cannot compile fmt's consteval format strings); no validation here.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime_api.h>

#include <cstddef>
#include <cstdint>

namespace exq::runtime::cuda {

// residual[rows, dim] += delta * delta_scale (when delta is not null), then out =
// RMSNorm(residual) * weight, all f32 arithmetic as exq::cuda::rmsnorm. W in {float, __half,
// __nv_bfloat16}. With `post` (gemma2 / 3), delta = RMSNorm(delta) * post first, in place.
// delta_scale: granite's residual multiplier; 1 adds delta as it is, bit for bit.
template <typename W>
void add_rmsnorm_cuda(float* residual, float* delta, const W* weight, float* out, int rows,
                      int dim, float eps, cudaStream_t stream, const float* post = nullptr,
                      float delta_scale = 1.0f);

// x[n] *= s; x[n] = cap * tanh(x / cap) (gemma's embedding scale and gemma2's logit softcap).
void scale_f32_cuda(float* x, int64_t n, float s, cudaStream_t stream);
void softcap_f32_cuda(float* x, int64_t n, float cap, cudaStream_t stream);

// y[rows, n] += bias[n] (f32).
void add_bias_f32_cuda(float* y, const float* bias, int rows, int n, cudaStream_t stream);

// One token: x[dim] += delta * delta_scale (when not null), out = RMSNorm(x) * weight (f32
// weight); then *increment += 1 when `increment` is set (the step's last norm advances the
// position: every kernel that reads it has finished by then). `post`, delta_scale: as
// add_rmsnorm_cuda's.
void decode_add_rmsnorm_cuda(float* x, float* delta, const float* weight, float* out,
                             int dim, float eps, int32_t* increment, bool pdl, cudaStream_t stream,
                             const float* post = nullptr, float delta_scale = 1.0f);

// x[dim] = table[ids[0]] as f32 times `scale` (NaN row for an id outside [0, vocab)), out =
// RMSNorm(x) * weight. T in {float, __half, __nv_bfloat16}.
template <typename T>
void decode_embed_rmsnorm_cuda(const int32_t* ids, const T* table, int vocab, float* x,
                               const float* weight, float* out, int dim, float eps, bool pdl,
                               cudaStream_t stream, float scale = 1.0f);

// out[n] = silu(gate) * up, or gelu_tanh(gate) * up (out may alias gate or up).
void decode_swiglu_cuda(const float* gate, const float* up, float* out, int n, bool pdl,
                        cudaStream_t stream, bool gelu = false);

}  // namespace exq::runtime::cuda
