// Tensor-core variant of the split-K decode attention (attention_decode_mma.cu) for the f16
// cache (and the only one of the q8 and q4 caches): same arguments, workspace and results (within f32 rounding) as the SIMT kernel, which
// attention_decode_cuda falls back to where this one does not apply.
#pragma once

#include <cuda_runtime_api.h>

#include "backend/cuda/attention_decode.h"

namespace exq::cuda {

// head_dim 64, 96, 128, or 256 where a block may hold 155 KB of shared memory (sm_80, sm_90), at most
// 16 q heads per kv head, 16-byte aligned caches, out and workspace.
bool attention_decode_mma_supports(int heads, int kv_heads, int head_dim, const void* k_cache,
                                   const void* v_cache, const void* out, const void* workspace);

// `splits`: blocks per kv head asked for (attention_decode_splits); at most as many as are
// resident at once are launched.
void attention_decode_mma_cuda(const DecodeAttention<__half>& args, int splits, cudaStream_t stream);
// The q8 cache (k_scale, v_scale set): chunks are dequantized to f16 as they are loaded.
void attention_decode_mma_cuda(const DecodeAttention<int8_t>& args, int splits, cudaStream_t stream);
// The q4 cache (k_scale, v_scale: the (step, minimum) pairs): the same, q rotated and the output
// rotated back (kv_q4.cuh).
void attention_decode_mma_cuda(const DecodeAttention<uint8_t>& args, int splits, cudaStream_t stream);

}  // namespace exq::cuda
