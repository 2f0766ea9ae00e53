// Causal grouped-query attention over the KV cache (kv_cache.h layout). Prefill processes a
// chunk of tokens with tiled K/V in shared memory; decode handles one token and splits the KV
// length over blocks (flash-decoding, attention_decode.h), then combines. Both use an online
// softmax in f32. Launchers: launchers.h and attention_decode.h.
#pragma once

#include <cuda_runtime_api.h>

#include "backend/cuda/attention_decode.h"
#include "backend/cuda/device_tensor.h"
#include "backend/cuda/launchers.h"

namespace exq::cuda {

// Cache F16 or F32, head_dim up to kAttentionMaxHeadDim.
bool attention_supports(DType cache, int64_t head_dim);

// q, out: [tokens, heads, head_dim] F32; token t sits at position start + t and sees keys
// [0, start + t]. The caches [kv_heads, capacity, head_dim] already hold positions
// [0, start + tokens). heads must be a multiple of kv_heads. scale: usually 1/sqrt(hd).
// start may live in device memory (StartPos, launchers.h), as for rotary and kv_append.
// window > 0: a sliding window, token t sees only its `window` latest keys. softcap > 0: each
// scaled score s becomes softcap * tanh(s / softcap) (gemma2).
void attention_prefill(const DeviceView& q, const DeviceView& k_cache, const DeviceView& v_cache,
                       const DeviceView& out, StartPos start, float scale, cudaStream_t stream,
                       int window = 0, float softcap = 0.0f);

// Tensor-core attention_prefill (flash_prefill.cu): q and k/v rounded to fp16, f32 accumulation
// and softmax, about 1e-3 relative error against attention_prefill. F16 cache, head_dim 64,
// 128 or 256 (256: a GPU with 99 KB of shared memory a block), q/out 16-byte aligned:
// attention_prefill_fast_supports(); same arguments otherwise.
bool attention_prefill_fast_supports(DType cache, int64_t head_dim);
// EXQ_PREFILL_ATTN=generic: callers that would take attention_prefill_fast (the runtime's prefill,
// the converter's head_dim 96 / 256 attention) take the f32 attention_prefill instead (A/B timing).
bool attention_prefill_generic_forced();
void attention_prefill_fast(const DeviceView& q, const DeviceView& k_cache,
                            const DeviceView& v_cache, const DeviceView& out, StartPos start,
                            float scale, cudaStream_t stream, int window = 0, float softcap = 0.0f);

// attention_prefill_fast over the q8 cache (model/kv_quant.h): caches I8 [kv_heads, capacity,
// head_dim] with their F16 scales [kv_heads, capacity, head_dim / 32]; head_dim as
// attention_prefill_fast; the keys and values as the cache reads them back. Any number of tokens.
void attention_prefill_q8(const DeviceView& q, const DeviceView& k_cache, const DeviceView& k_scale,
                          const DeviceView& v_cache, const DeviceView& v_scale, const DeviceView& out,
                          StartPos start, float scale, cudaStream_t stream, int window = 0, float softcap = 0.0f);
// The same over the q4 cache (model/kv_quant.h): caches U8 [kv_heads, capacity, head_dim / 2],
// steps F16 [kv_heads, capacity, head_dim / 16] ((step, minimum) per 32 values).
void attention_prefill_q4(const DeviceView& q, const DeviceView& k_cache, const DeviceView& k_step,
                          const DeviceView& v_cache, const DeviceView& v_step, const DeviceView& out,
                          StartPos start, float scale, cudaStream_t stream, int window = 0, float softcap = 0.0f);

// q, out: [1, heads, head_dim] F32 at position start_pos (keys [0, start_pos], or the `window`
// latest); softcap as attention_prefill.
// workspace: F32 with at least attention_decode_workspace_floats(heads, head_dim) elements
// (its counters are zeroed by each call). splits: KV splits per kv head, 0 for the default.
void attention_decode(const DeviceView& q, const DeviceView& k_cache, const DeviceView& v_cache,
                      const DeviceView& out, int start_pos, float scale,
                      const DeviceView& workspace, cudaStream_t stream, int splits = 0, int window = 0,
                      float softcap = 0.0f);

}  // namespace exq::cuda
