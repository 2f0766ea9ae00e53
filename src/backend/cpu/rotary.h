// Rotary position embedding in Hugging Face's "rotate_half" layout: within each head the
// first and second halves of the rotary dimensions R form the rotated pairs (i, i + R/2); R is
// the head dim D, or less for a partial rotary (dimensions R..D-1 pass unrotated).
// The inverse frequencies (incl. linear / llama3 / yarn scaling) come from the model config;
// this file only tabulates cos/sin and applies them.
#pragma once

#include <span>

#include "core/tensor.h"

namespace exq::cpu {

// cos/sin of position * inv_freq[i], F32 [positions, R/2], computed like HF: the angle is a
// float32 product, its cos/sin rounded to float32, then multiplied by `scale` (YaRN's attention
// factor; 1 for other ropes).
struct RopeTable {
  Tensor cos;  // [positions, R/2]
  Tensor sin;  // [positions, R/2]
  int64_t positions() const { return cos.empty() ? 0 : cos.dim(0); }
  int64_t half_dim() const { return cos.empty() ? 0 : cos.dim(1); }
};

RopeTable make_rope_table(std::span<const float> inv_freq, int64_t positions, float scale = 1.0f);

// Rotates x: F32 [T, heads, D] in place (its first 2 * half_dim() dimensions); row t is at
// position start + t.
void apply_rotary(const TensorView& x, const RopeTable& table, int64_t start);

}  // namespace exq::cpu
