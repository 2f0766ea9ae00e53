// Small float32 row ops of the Llama block: SwiGLU, residual add, embedding lookup,
// softmax and logsumexp. All parallel over rows or elements.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "core/tensor.h"

namespace exq::cpu {

// out = silu(gate) * up, silu(g) = g / (1 + exp(-g)). F32, same shapes; out may alias gate.
void swiglu(const TensorView& gate, const TensorView& up, const TensorView& out);

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
