// Causal GQA attention on tensor cores for the CUDA engine's module forwards (FlashAttention-2
// scheme: 64 queries per block, 16 per warp, 64-key tiles double-buffered in shared memory
// with cp.async, online softmax in f32, mma.sync m16n8k16 with fp16 inputs and f32
// accumulation). q/k/v are rounded to fp16, the level of rounding the f16 matmuls already apply
// to activations: about 3e-4 relative error against the f32 kernel of backend/cuda/attention.h
// (which the engine keeps for other head sizes and CudaEngineOptions::exact_attention).
// Launchers only (raw pointers, explicit stream; block_runner.cpp checks shapes); free of fmt
// for nvcc.
#pragma once

#include <cuda_fp16.h>
#include <cuda_runtime_api.h>

namespace exq::quant::cuda {

// head_dim 64 or 128.
bool flash_attention_supports(int head_dim);

// dst[h][t][d] = fp16(src[t][h][d] * scale): [tokens, heads, head_dim] f32 to head-major f16.
void head_major_f16_cuda(const float* src, __half* dst, int tokens, int heads, int head_dim,
                         float scale, cudaStream_t stream);

// q: [heads, T, D] f16 already multiplied by softmax_scale * log2(e); k, v: [kv_heads, T, D]
// f16; out: [T, heads, D] f32. Query t attends to keys 0..t; heads % kv_heads == 0.
// softcap2 > 0 (gemma2's softcap times log2(e), the scores' base-2 scale): each score s becomes
// softcap2 * tanh(s / softcap2) before the softmax; 0: off.
void flash_attention_cuda(const __half* q, const __half* k, const __half* v, float* out, int tokens,
                          int heads, int kv_heads, int head_dim, float softcap2, cudaStream_t stream);

}  // namespace exq::quant::cuda
