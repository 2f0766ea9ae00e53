// Device helpers shared by the GPTQ kernels (gptq_*.cu, hessian_kernels.cu): the CPU's rounding
// and quantization steps spelled with explicit __f*_rn intrinsics, so nvcc cannot contract them
// into FMAs the CPU does not use. Internal to quant/cuda; included only by .cu files.
#pragma once

#include <cuda_fp16.h>

#include <cstdint>

#include "backend/cuda/kernel_utils.cuh"

namespace exq::quant::cuda::detail {

using exq::cuda::warp_max;

constexpr float kBig = 4194304.0f;  // 2^22, as kernel::round_half_even clamps

__device__ __forceinline__ float round_half(float v) { return __half2float(__float2half_rn(v)); }

// kernel::round_half_even: clamp to +-2^22, round to nearest even.
__device__ __forceinline__ float round_even_clamped(float v) {
  return rintf(fminf(fmaxf(v, -kBig), kBig));
}

// clamp(round(w / s) + zero, 0, maxq): quant/gptq.cpp's quantize_value without the s == 0 case.
__device__ __forceinline__ float quantize_code(float w, float s, float zero, float maxq) {
  return fminf(fmaxf(__fadd_rn(round_even_clamped(__fdiv_rn(w, s)), zero), 0.0f), maxq);
}

// The grid search's term |w - (q - zero) * s|^3.5 as a*a*a*sqrt(a) (the CPU's order), with
// the reciprocal inv = RN(1/s) computed once per scale: the quotient is corrected by one FMA (Markstein), which gives the correctly
// rounded w / s, so every rounding decision is the CPU's. The CPU's clamp to +-2^22 never binds
// here (the group's scales bound |w / s| by about 2^9), and q - zero is clamped directly to
// [lo, hi] = [-zero, maxq - zero] (exact: the codes are small integers).
__device__ __forceinline__ float grid_term(float w, float s, float inv, float lo, float hi) {
  const float q0 = __fmul_rn(w, inv);
  const float q = __fmaf_rn(__fmaf_rn(-q0, s, w), inv, q0);
  const float qc = fminf(fmaxf(rintf(q), lo), hi);
  const float a = fabsf(__fsub_rn(w, __fmul_rn(qc, s)));
  return __fmul_rn(__fmul_rn(__fmul_rn(a, a), a), __fsqrt_rn(a));
}

// Round to the 10 mantissa bits of TF32, nearest even (finite inputs; inf/nan pass through).
__device__ __forceinline__ float round_tf32(float x) {
  const uint32_t u = __float_as_uint(x);
  if ((u & 0x7f800000u) == 0x7f800000u) return x;
  return __uint_as_float((u + 0xfffu + ((u >> 13) & 1u)) & ~0x1fffu);
}

// Max of the positive partial maxima over one warp (exact in any order); every lane gets it.
__device__ __forceinline__ float warp_max_of(const float* p, int64_t n, int lane) {
  float m = 0.0f;
  for (int64_t i = lane; i < n; i += 32) m = fmaxf(m, p[i]);
  return warp_max(m);
}

}  // namespace exq::quant::cuda::detail
