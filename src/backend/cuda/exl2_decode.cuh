// Device-side decoding of EXL2 q_weight runs into bit-exact fp16 weights, shared by the GEMV
// and the dequantize kernels. Included only by .cu files.
//
// A unit is 32 permuted input rows of one column: b q_weight words holding a little-endian
// b-bit stream. Values are produced in pairs (row p, row p + 16), p = 0..15, packed as
// half2(1024 + q[p], 1024 + q[p + 16]): the code sits in the low mantissa bits of 1024
// (0x6400), so no integer-to-float conversion is needed. Subtracting half2(1024 + 2^(b-1))
// is exact and gives q - z; one rounding multiply by the fp16 scale then gives exactly
// exllamav2's w = fp16((q - z) * fp16(qs^2 * m)).
#pragma once

#include <cuda_fp16.h>

#include <cstdint>
#include <cstring>

namespace exq::cuda::exl2 {

constexpr uint32_t kMagic = 0x64006400u;  // half2(1024, 1024)
constexpr int kPairs = 16;                // pairs per unit and column

template <int B, int N>
__device__ __forceinline__ uint32_t extract_value(const uint32_t (&w)[N], int k) {
  constexpr uint32_t kMask = (1u << B) - 1u;
  const int bit = k * B;
  const int i = bit >> 5, sh = bit & 31;
  if (sh + B <= 32) return (w[i] >> sh) & kMask;
  return __funnelshift_r(w[i], w[i + 1], sh) & kMask;
}

// half2(1024 + q[p], 1024 + q[p + 16]) as bits; p must be a compile-time constant after
// unrolling so that w stays in registers.
template <int B, int N>
__device__ __forceinline__ uint32_t extract_pair(const uint32_t (&w)[N], int p) {
  static_assert(N >= B, "a unit of b-bit values spans b words");
  if constexpr (B == 2 || B == 4 || B == 8) {
    // q[p + 16] sits B/2 words after q[p], at the same bit: one byte permute puts both 16-bit
    // halves side by side, then one shift and mask extract the pair.
    constexpr uint32_t kMask = ((1u << B) - 1u) * 0x10001u;
    const int bit = p * B;
    const int i = bit >> 5;
    const uint32_t r = __byte_perm(w[i], w[i + B / 2], (bit & 16) ? 0x7632 : 0x5410);
    return ((r >> (bit & 15)) & kMask) | kMagic;
  } else {
    return extract_value<B>(w, p) | (extract_value<B>(w, p + 16) << 16) | kMagic;
  }
}

__device__ __forceinline__ __half2 as_half2(uint32_t u) {
  __half2 h;
  memcpy(&h, &u, sizeof(h));
  return h;
}

__device__ __forceinline__ uint32_t as_u32(__half2 h) {
  uint32_t u;
  memcpy(&u, &h, sizeof(u));
  return u;
}

// half2(1024 + 2^(B-1)) as bits, the value subtracted from a magic pair.
template <int B>
__device__ __forceinline__ __half2 zero_pair() {
  return as_half2((0x6400u + (1u << (B - 1))) * 0x10001u);
}

// The two fp16 weights of one pair: fp16((q - z) * scale), single rounding.
__device__ __forceinline__ uint32_t dequant_pair(uint32_t pair, __half2 zero, __half2 scale) {
  return as_u32(__hmul2_rn(__hsub2_rn(as_half2(pair), zero), scale));
}

// scale = fp16(qs^2 * m) for the 4-bit code `nibble` (qs = nibble + 1), one rounding.
__device__ __forceinline__ __half2 scale_pair(uint32_t nibble, __half m) {
  const uint32_t qs = nibble + 1u;
  return __half2half2(__hmul_rn(__uint2half_rn(qs * qs), m));
}

}  // namespace exq::cuda::exl2
