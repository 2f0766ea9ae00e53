// The tensor-core attention kernels' shared steps (flash_prefill.cu, attention_decode_mma.cu,
// quant/cuda/flash_attention.cu): S = Q K^T and O += P V on mma.m16n8k16 fragments of one warp
// (16 query rows; rows gid and gid + 8 per lane, mma_utils.cuh) and the online softmax between
// them, in base 2 (q carries log2(e)). Operands come as NQ / NP parts whose products add up (one
// part: f16 values; two: f16 hi + lo of f32 values); each K or V fragment is loaded once for all
// parts. Included only by .cu files.
#pragma once

#include <cuda_fp16.h>

#include <cstdint>

#include "backend/cuda/mma_utils.cuh"

namespace exq::cuda {

constexpr float kLog2e = 1.4426950408889634f;  // q's factor for the base-2 softmax

// s[NT][4] += Q K^T for k-step kk (dims 16 kk .. 16 kk + 15): a[NQ][4] the q parts' A fragments
// of that step, K rows (keys) at `ks` with `pitch` halves per row; NT n-tiles of 8 keys (NT even).
template <int NQ, int NT>
__device__ __forceinline__ void mma_qk_step(float (&s)[NT][4], const uint32_t (&a)[NQ][4], const __half* ks,
                                            int pitch, int kk) {
  const int lane = threadIdx.x & 31, sel = lane >> 3, r8 = lane & 7;
#pragma unroll
  for (int nt = 0; nt < NT; nt += 2) {
    uint32_t b[4];
    ldmatrix_x4(b, ks + (nt * 8 + r8 + (sel >> 1) * 8) * pitch + kk * 16 + (sel & 1) * 8);
#pragma unroll
    for (int p = 0; p < NQ; ++p) {
      mma_16816(s[nt], a[p], b[0], b[1]);
      mma_16816(s[nt + 1], a[p], b[2], b[3]);
    }
  }
}

// s[NT][4] += Q K^T over KS k-steps of 16 dims: q[NQ][KS][4] A fragments in registers.
template <int NQ, int KS, int NT>
__device__ __forceinline__ void mma_qk(float (&s)[NT][4], const uint32_t (&q)[NQ][KS][4],
                                       const __half* ks, int pitch) {
#pragma unroll
  for (int kk = 0; kk < KS; ++kk) {
    uint32_t a[NQ][4];
#pragma unroll
    for (int p = 0; p < NQ; ++p)
#pragma unroll
      for (int r = 0; r < 4; ++r) a[p][r] = q[p][kk][r];
    mma_qk_step(s, a, ks, pitch, kk);
  }
}

// The same with q's fragments read from shared memory at each k-step instead of held in
// registers (head_dim 256: the output's 128 registers a lane leave no room for q's): part p of
// the 16 q rows at q_s + p * q_part, `pitch` halves per row as the keys.
template <int NQ, int KS, int NT>
__device__ __forceinline__ void mma_qk_smem(float (&s)[NT][4], const __half* q_s, int q_part,
                                            const __half* ks, int pitch) {
  const int lane = threadIdx.x & 31, sel = lane >> 3, r8 = lane & 7;
#pragma unroll
  for (int kk = 0; kk < KS; ++kk) {
    uint32_t a[NQ][4];
#pragma unroll
    for (int p = 0; p < NQ; ++p)
      ldmatrix_x4(a[p], q_s + p * q_part + (r8 + (sel & 1) * 8) * pitch + kk * 16 + (sel >> 1) * 8);
    mma_qk_step(s, a, ks, pitch, kk);
  }
}

// Gemma 2's attention softcap on an S tile whose q carried the scale but not log2(e): each score
// x becomes cap * tanh(x / cap), times log2(e) for the base-2 softmax. tanh(y) = 1 - 2 / (e^2y + 1)
// (an exp2 and a fast divide: tanhf's registers would spill the kernels that never cap; the
// result is within ~1e-6 of cap of tanhf's, 0 and +-1 at the ends). The factors out = cap *
// log2(e) and in = 2 log2(e) / cap come as kernel parameters (softcap_factors), which the
// instructions read from the constant bank instead of holding them in registers.
struct SoftcapFactors {
  float out = 0.0f, in = 0.0f;  // in == 0: no cap
};
inline SoftcapFactors softcap_factors(float cap) {
  return cap > 0.0f ? SoftcapFactors{cap * kLog2e, 2.0f * kLog2e / cap} : SoftcapFactors{};
}
template <int NT>
__device__ __forceinline__ void softcap_scores(float (&s)[NT][4], float out, float in) {
#pragma unroll
  for (int nt = 0; nt < NT; ++nt)
#pragma unroll
    for (int e = 0; e < 4; ++e) s[nt][e] = out - __fdividef(2.0f * out, exp2f(s[nt][e] * in) + 1.0f);
}

// The rows' maxima over an S tile and their running maxima (each row lives in a quad of lanes).
template <int NT>
__device__ __forceinline__ void quad_row_max(const float (&s)[NT][4], const float (&row_max)[2],
                                             float (&mx)[2]) {
  mx[0] = row_max[0];
  mx[1] = row_max[1];
#pragma unroll
  for (int nt = 0; nt < NT; ++nt) {
    mx[0] = fmaxf(mx[0], fmaxf(s[nt][0], s[nt][1]));
    mx[1] = fmaxf(mx[1], fmaxf(s[nt][2], s[nt][3]));
  }
#pragma unroll
  for (int r = 0; r < 2; ++r) {
    mx[r] = fmaxf(mx[r], __shfl_xor_sync(0xffffffffu, mx[r], 1));
    mx[r] = fmaxf(mx[r], __shfl_xor_sync(0xffffffffu, mx[r], 2));
  }
}

// After a tile's p = 2^(s - mx), `sum` holding each lane's part of the rows' sums: the running
// sums and maxima advance and the output is rescaled by corr = 2^(old max - mx).
template <int NO>
__device__ __forceinline__ void softmax_advance(float (&o)[NO][4], float (&row_sum)[2],
                                                float (&row_max)[2], float (&sum)[2],
                                                const float (&mx)[2], const float (&corr)[2]) {
#pragma unroll
  for (int r = 0; r < 2; ++r) {
    sum[r] += __shfl_xor_sync(0xffffffffu, sum[r], 1);
    sum[r] += __shfl_xor_sync(0xffffffffu, sum[r], 2);
    row_sum[r] = row_sum[r] * corr[r] + sum[r];
    row_max[r] = mx[r];
  }
#pragma unroll
  for (int dt = 0; dt < NO; ++dt) {
    o[dt][0] *= corr[0];
    o[dt][1] *= corr[0];
    o[dt][2] *= corr[1];
    o[dt][3] *= corr[1];
  }
}

// o[NO][4] += P V over KK k-steps of 16 keys: p[NP][KK][4] A fragments (the S tile's C
// fragments packed to f16), V rows (keys) at `vs` with `pitch` halves per row; NO n-tiles of 8
// dims (NO even).
template <int NP, int KK, int NO>
__device__ __forceinline__ void mma_pv(float (&o)[NO][4], const uint32_t (&p)[NP][KK][4],
                                       const __half* vs, int pitch) {
  const int lane = threadIdx.x & 31, sel = lane >> 3, r8 = lane & 7;
#pragma unroll
  for (int kk = 0; kk < KK; ++kk) {
#pragma unroll
    for (int dt = 0; dt < NO; dt += 2) {
      uint32_t b[4];
      ldmatrix_x4_trans(b, vs + (kk * 16 + r8 + (sel & 1) * 8) * pitch + dt * 8 + (sel >> 1) * 8);
#pragma unroll
      for (int i = 0; i < NP; ++i) {
        mma_16816(o[dt], p[i][kk], b[0], b[1]);
        mma_16816(o[dt + 1], p[i][kk], b[2], b[3]);
      }
    }
  }
}

}  // namespace exq::cuda
