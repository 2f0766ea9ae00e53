// Raw launchers of the CUDA runtime's own kernels (decode_kernels.cu): the single-token
// decode ops that read the position from device memory, so one captured CUDA graph serves
// every step, plus the fused residual-add + RMSNorm and an f32 bias add. Free of exq/fmt
// headers (nvcc cannot compile fmt's consteval format strings); no validation here.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime_api.h>

#include <cstddef>
#include <cstdint>

namespace exq::runtime::cuda {

// One token at position *pos: q [heads, head_dim] rotated in place (HF rotate_half, cos/sin
// rows of the position); k rotated and v [kv_heads, head_dim] written to the caches
// [kv_heads, capacity, head_dim] at row *pos. C in {float, __half}.
template <typename C>
void rope_append_at_cuda(float* q, const float* k, const float* v, C* k_cache, C* v_cache,
                         const float* cos, const float* sin, int heads, int kv_heads,
                         int head_dim, int capacity, const int32_t* pos, cudaStream_t stream);

// Attention of one query token at position *pos over cache rows [0, *pos]: q, out [heads,
// head_dim] f32. The key range is split over blocks exactly as exq::cuda::attention_decode
// splits it for that length; the grid is sized for the longest, idle blocks return at once.
size_t attention_decode_at_workspace_floats(int heads, int head_dim);
template <typename C>
void attention_decode_at_cuda(const float* q, const C* k_cache, const C* v_cache, float* out,
                              float* workspace, int heads, int kv_heads, int head_dim,
                              int capacity, const int32_t* pos, float scale, cudaStream_t stream);

// residual[rows, dim] += delta (when delta is not null), then out = RMSNorm(residual) * weight,
// all f32 arithmetic as exq::cuda::rmsnorm. W in {float, __half, __nv_bfloat16}.
template <typename W>
void add_rmsnorm_cuda(float* residual, const float* delta, const W* weight, float* out, int rows,
                      int dim, float eps, cudaStream_t stream);

// y[rows, n] += bias[n] (f32).
void add_bias_f32_cuda(float* y, const float* bias, int rows, int n, cudaStream_t stream);

// *value += 1 (the decode graph's last node advances the position).
void increment_cuda(int32_t* value, cudaStream_t stream);

}  // namespace exq::runtime::cuda
