// Causal grouped-query attention of new query rows against a key/value cache, float32.
#pragma once

#include "core/tensor.h"

namespace exq::cpu {

// q: F32 [T, H, D], query row t at position start + t.
// k, v: F32 [L, KVH, D] with L >= start + T (the cache, already holding rows 0..start+T-1).
// out: F32 [T, H, D]. Query head h reads kv head h / (H / KVH); scores are scaled by 1/sqrt(D)
// and row t sees keys 0..start+t, or with a sliding `window` > 0 the `window` latest of them
// (start+t-window+1 ..start+t). Many rows (prefill) run as blocked GEMMs on cpu::matmul, few
// (decode) row by row; out must not alias q, k or v.
// scale > 0 replaces 1/sqrt(D); softcap > 0 caps each scaled score s to softcap * tanh(s / softcap)
// before the softmax (gemma2).
void attention(const TensorView& q, const TensorView& k, const TensorView& v, int64_t start,
               const TensorView& out, int64_t window = 0, float scale = 0.0f, float softcap = 0.0f);

}  // namespace exq::cpu
