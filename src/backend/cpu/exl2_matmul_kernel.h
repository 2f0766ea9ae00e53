// Per-instruction-set kernels behind cpu::exl2_matmul (internal to backend/cpu). They take
// a layer exl2_matmul has validated, the per-group multipliers m[g] = fp16(q_scale_max[g] /
// 256) as float, and x already gathered into permuted row order (xp[t * in + i]). No
// threading here: the caller splits the output columns.
#pragma once

#include <cstdint>

#include "backend/cpu/exl2_matmul.h"

namespace exq::cpu::exl2 {

// Output columns of one fused call; out_pad is a multiple of it, so no read runs past q_weight.
inline constexpr int64_t kFusedColumns = 32;

// acc[t * kFusedColumns + j] = sum_i xp[t * in + i] * W[c0 + j, i] for t < tokens,
// j < kFusedColumns (padded columns included), W in permuted row order; c0 % 32 == 0.
void fused_portable(const Exl2MatmulWeight& w, const float* m, const float* xp, int64_t tokens,
                    int64_t c0, float* acc);
void fused_avx2(const Exl2MatmulWeight& w, const float* m, const float* xp, int64_t tokens,
                int64_t c0, float* acc);
void fused_avx512(const Exl2MatmulWeight& w, const float* m, const float* xp, int64_t tokens,
                  int64_t c0, float* acc);

// tile[j * in + i] = W[c0 + j, i] (float32, permuted row order) for j < n; c0 and n are
// multiples of 8 and c0 + n <= out_pad. (AVX2 serves AVX-512 CPUs too: the tile is a small
// part of a prefill.)
void tile_portable(const Exl2MatmulWeight& w, const float* m, int64_t c0, int64_t n, float* tile);
void tile_avx2(const Exl2MatmulWeight& w, const float* m, int64_t c0, int64_t n, float* tile);

}  // namespace exq::cpu::exl2
