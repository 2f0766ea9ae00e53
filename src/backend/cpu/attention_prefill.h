// Causal grouped-query attention of a whole sequence from position 0 (prefill of long rows, as
// in calibration), float32, built from cpu::matmul: per query head and block of query rows,
// S = Q K^T over the keys the block can see, a masked softmax, then O = P V. Same result as
// cpu::attention with start = 0 up to float rounding, at GEMM speed on the AVX2 kernel.
#pragma once

#include "core/tensor.h"

namespace exq::cpu {

// q: F32 [T, H, D]; k, v: F32 [T, KVH, D] (keys/values of the same T positions); out: F32
// [T, H, D], must not alias q, k or v. Query head h reads kv head h / (H / KVH); scores are
// scaled by 1/sqrt(D); row t sees keys 0..t. All contiguous.
void attention_prefill(const TensorView& q, const TensorView& k, const TensorView& v,
                       const TensorView& out);

}  // namespace exq::cpu
