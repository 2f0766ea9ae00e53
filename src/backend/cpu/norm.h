// RMSNorm as in Hugging Face LlamaRMSNorm, all float32:
// out[t, :] = w * (x[t, :] * rsqrt(mean(x[t, :]^2) + eps)).
#pragma once

#include "core/tensor.h"

namespace exq::cpu {

// x, out: F32 [T, d] (may be the same tensor); w: F32 [d]. Rows are normalized in parallel.
void rms_norm(const TensorView& x, const TensorView& w, float eps, const TensorView& out);

}  // namespace exq::cpu
