// Small float32 row ops of the Llama block: SwiGLU, residual add, embedding lookup,
// softmax and logsumexp. All parallel over rows or elements.
#pragma once

#include <cmath>
#include <cstdint>
#include <span>
#include <vector>

#include "core/tensor.h"

namespace exq::cpu {

// out = silu(gate) * up, silu(g) = g / (1 + exp(-g)). F32, same shapes; out may alias gate.
void swiglu(const TensorView& gate, const TensorView& up, const TensorView& out);

// GELU, tanh-approximated ("gelu_pytorch_tanh"), as transformers computes it in float32.
inline float gelu_tanh(float g) {
  return 0.5f * g * (1.0f + std::tanh(0.7978845608028654f * (g + 0.044715f * g * g * g)));
}
// out = gelu_tanh(gate) * up (gemma's GeGLU). F32, same shapes; out may alias gate.
void geglu(const TensorView& gate, const TensorView& up, const TensorView& out);
// x *= s; x = cap * tanh(x / cap) (gemma2's logit softcap). F32 contiguous.
void scale_inplace(const TensorView& x, float s);
void softcap_inplace(const TensorView& x, float cap);
// x += y (residual add), F32 contiguous, same shapes.
void add_inplace(const TensorView& x, const TensorView& y);

// out[t, :] = float(table[ids[t], :]); table [V, d] in F32/F16/BF16, out F32 [T, d].
// An id outside [0, V) throws exq::Error naming it.
void embedding(const TensorView& table, std::span<const int32_t> ids, const TensorView& out);

// In-place softmax over each row of F32 [T, n].
void softmax_rows(const TensorView& x);

// log(sum(exp(row))) of each row of F32 [T, n], accumulated in double.
std::vector<double> logsumexp_rows(const TensorView& x);

}  // namespace exq::cpu
