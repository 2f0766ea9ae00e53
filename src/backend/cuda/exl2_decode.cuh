// Device-side decoding of the EXL2 device layout (exl2_layout.h) into bit-exact fp16 weights,
// shared by the GEMV and the dequantize kernels. Included only by .cu files.
//
// pair_bits gives half2(1024 + q * 2^o) for a pair of rows (j, j + 16). One exact f16
// operation turns it into q - z (z = 2^(b-1)): a subtraction of 1024 + z when o = 0, else
// fma(p, 2^-o, -(2^(10-o) + z)) (the exact result q - z is representable, so the single
// rounding changes nothing). One rounding multiply by the fp16 scale then gives exactly
// exllamav2's w = fp16((q - z) * fp16(qs^2 * m)).
#pragma once

#include <cuda_fp16.h>

#include <cstdint>
#include <cstring>
#include <utility>

#include "backend/cuda/exl2_layout.h"

namespace exq::cuda::exl2 {

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

// fp16 bits of an integer 1 <= v < 2048 (exact).
constexpr uint32_t half_bits_of_int(uint32_t v) {
  int e = 0;
  while ((v >> (e + 1)) != 0) ++e;
  return static_cast<uint32_t>(e + 15) << 10 | (((v << (10 - e)) - 1024u) & 0x3ffu);
}

// q - z for pair J, exact.
template <int B, int J>
__device__ __forceinline__ __half2 pair_qz(const uint32_t (&w)[B]) {
  constexpr int o = pair_offset<B, J>();
  constexpr uint32_t z = 1u << (B - 1);
  const __half2 p = as_half2(pair_bits<B, J>(w));
  if constexpr (o == 0) {
    constexpr uint32_t zero = half_bits_of_int(1024u + z) * 0x10001u;
    return __hsub2_rn(p, as_half2(zero));
  } else {
    constexpr uint32_t mul = (static_cast<uint32_t>(15 - o) << 10) * 0x10001u;
    constexpr uint32_t sub = (0x8000u | half_bits_of_int((1024u >> o) + z)) * 0x10001u;
    return __hfma2(p, as_half2(mul), as_half2(sub));
  }
}

// The two fp16 weights of pair J: fp16((q - z) * scale), one rounding.
template <int B, int J>
__device__ __forceinline__ uint32_t pair_weights(const uint32_t (&w)[B], __half2 scale) {
  return as_u32(__hmul2_rn(pair_qz<B, J>(w), scale));
}

// scale = fp16(qs^2 * m) for the 4-bit code `nibble` (qs = nibble + 1), one rounding.
__device__ __forceinline__ __half2 scale_pair(uint32_t nibble, __half m) {
  const uint32_t qs = nibble + 1u;
  return __half2half2(__hmul_rn(__uint2half_rn(qs * qs), m));
}

// Calls f(std::integral_constant<int, I>) for I = 0 .. N-1 (compile-time indices, so register
// arrays stay in registers).
template <typename F, int... I>
__device__ __forceinline__ void static_for_impl(F&& f, std::integer_sequence<int, I...>) {
  (f(std::integral_constant<int, I>{}), ...);
}
template <int N, typename F>
__device__ __forceinline__ void static_for(F&& f) {
  static_for_impl(f, std::make_integer_sequence<int, N>{});
}

// The 32 fp16 weights of one unit-column (b words wv, one scale), rows 0..31 in order as four
// 16-byte stores: dst[0] rows 0-7 ... dst[3] rows 24-31 (the dequantize and expert GEMM tiles).
template <int B>
__device__ __forceinline__ void dequant_unit_perm(const uint32_t* wv, __half2 scale, uint4* dst) {
  uint32_t w[B];
#pragma unroll
  for (int i = 0; i < B; ++i) w[i] = wv[i];
  uint32_t v[kPairs];
  static_for<kPairs>([&](auto j_) {
    constexpr int J = decltype(j_)::value;
    v[J] = pair_weights<B, J>(w, scale);
  });
  // Pair J holds rows (J, J + 16): rows 0-15 from the low halves, 16-31 from the high.
  uint32_t lo[8], hi[8];
#pragma unroll
  for (int m = 0; m < 8; ++m) {
    lo[m] = __byte_perm(v[2 * m], v[2 * m + 1], 0x5410);
    hi[m] = __byte_perm(v[2 * m], v[2 * m + 1], 0x7632);
  }
  dst[0] = make_uint4(lo[0], lo[1], lo[2], lo[3]);
  dst[1] = make_uint4(lo[4], lo[5], lo[6], lo[7]);
  dst[2] = make_uint4(hi[0], hi[1], hi[2], hi[3]);
  dst[3] = make_uint4(hi[4], hi[5], hi[6], hi[7]);
}

// Same for a width known at run time (2, 3, 4, 5, 6 or 8).
__device__ __forceinline__ void dequant_unit_rows(int bits, const uint32_t* wv, __half2 scale, uint4* dst) {
  switch (bits) {
    case 2: dequant_unit_perm<2>(wv, scale, dst); break;
    case 3: dequant_unit_perm<3>(wv, scale, dst); break;
    case 4: dequant_unit_perm<4>(wv, scale, dst); break;
    case 5: dequant_unit_perm<5>(wv, scale, dst); break;
    case 6: dequant_unit_perm<6>(wv, scale, dst); break;
    default: dequant_unit_perm<8>(wv, scale, dst); break;
  }
}

}  // namespace exq::cuda::exl2
