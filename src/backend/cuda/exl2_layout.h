// Bit arrangement of one EXL2 unit-column (32 b-bit values in b words) in the device layout,
// host and device. Row r < 16 sits in the low 16 bits of the words, row r + 16 at the same
// place in the high 16 bits, so pair j = (row j, row j + 16) is extracted with 32-bit ops as
// two halves at once: (w >> sh) & (mask << o) | 0x6400 gives half2(1024 + q * 2^o), and a
// field lies in bits 0..9 of a half after at most one shift. Per half-word (16 values):
//   2 bits: word j/8, field j%8 at bit 2f (f >= 5: after >> 10)
//   3 bits: j < 15: word j/5, bit 3f (f >= 3: after >> 9); j = 15: bit k in bit 15 of word k
//   4 bits: word j/4, bit 4f (f >= 2: after >> 8)
//   5 bits: j < 15: word j/3, bit 5f (f = 2: after >> 10); j = 15: bit k in bit 15 of word k
//   6 bits: j < 12: word j/2 at bit 0 or 10 (after >> 10); j = 12 + e: bits 0-3 in bits 6-9 of
//           word e, bits 4-5 in bits 6-7 (e even) or 8-9 (e odd) of word 4 + e/2
//   8 bits: word j/2, byte j%2 (taken with one byte permute)
#pragma once

#include <cstdint>

#if defined(__CUDACC__)
#define EXQ_EXL2_HD __host__ __device__ __forceinline__
#else
#define EXQ_EXL2_HD inline
#endif

namespace exq::cuda::exl2 {

constexpr uint32_t kMagic = 0x64006400u;  // half2(1024, 1024)
constexpr int kPairs = 16;

EXQ_EXL2_HD uint32_t byte_perm(uint32_t a, uint32_t b, uint32_t s) {
#if defined(__CUDA_ARCH__)
  return __byte_perm(a, b, s);
#else
  const uint64_t v = static_cast<uint64_t>(b) << 32 | a;
  uint32_t r = 0;
  for (int n = 0; n < 4; ++n)
    r |= static_cast<uint32_t>((v >> (8 * ((s >> (4 * n)) & 7))) & 0xff) << (8 * n);
  return r;
#endif
}

// (x & mask) | c in one LOP3 (with two immediates the compiler emits two).
template <uint32_t kMask>
EXQ_EXL2_HD uint32_t and_or(uint32_t x, uint32_t c) {
#if defined(__CUDA_ARCH__)
  uint32_t r;
  asm("lop3.b32 %0, %1, %2, %3, 0xEA;" : "=r"(r) : "r"(x), "n"(kMask), "r"(c));
  return r;
#else
  return (x & kMask) | c;
#endif
}

template <int B, int SH, int O, uint32_t M = kMagic>
EXQ_EXL2_HD uint32_t field(uint32_t w) {
  return and_or<(((1u << B) - 1u) << O) * 0x10001u>(w >> SH, M);
}

// Pair J of a unit-column as magic bits half2(1024 + q[J] * 2^o, 1024 + q[J + 16] * 2^o), with
// o = pair_offset<B, J>(). Another M puts other exponent bits around the same fields
// (offset_magic below; 8-bit fields sit at o = 0, where that is the 1024 magic).
template <int B, int J, uint32_t M = kMagic>
EXQ_EXL2_HD uint32_t pair_bits(const uint32_t* w) {
  static_assert(J >= 0 && J < kPairs);
  if constexpr (B == 2) {
    constexpr int i = J / 8, f = J % 8;
    if constexpr (f <= 4) return field<2, 0, 2 * f, M>(w[i]);
    else return field<2, 10, 2 * (f - 5), M>(w[i]);
  } else if constexpr (B == 3) {
    if constexpr (J < 15) {
      constexpr int i = J / 5, f = J % 5;
      if constexpr (f <= 2) return field<3, 0, 3 * f, M>(w[i]);
      else return field<3, 9, 3 * (f - 3), M>(w[i]);
    } else {
      const uint32_t p = and_or<0x00020002u>(w[1] >> 14, and_or<0x00010001u>(w[0] >> 15, M));
      return and_or<0x00040004u>(w[2] >> 13, p);
    }
  } else if constexpr (B == 4) {
    constexpr int i = J / 4, f = J % 4;
    if constexpr (f <= 1) return field<4, 0, 4 * f, M>(w[i]);
    else return field<4, 8, 4 * (f - 2), M>(w[i]);
  } else if constexpr (B == 5) {
    if constexpr (J < 15) {
      constexpr int i = J / 3, f = J % 3;
      if constexpr (f <= 1) return field<5, 0, 5 * f, M>(w[i]);
      else return field<5, 10, 0, M>(w[i]);
    } else {
      uint32_t p = and_or<0x00010001u>(w[0] >> 15, M);
      p = and_or<0x00020002u>(w[1] >> 14, p);
      p = and_or<0x00040004u>(w[2] >> 13, p);
      p = and_or<0x00080008u>(w[3] >> 12, p);
      return and_or<0x00100010u>(w[4] >> 11, p);
    }
  } else if constexpr (B == 6) {
    if constexpr (J < 12) {
      constexpr int i = J / 2;
      if constexpr (J % 2 == 0) return field<6, 0, 0, M>(w[i]);
      else return field<6, 10, 0, M>(w[i]);
    } else {
      constexpr int e = J - 12;
      const uint32_t lo = and_or<0x000f000fu>(w[e] >> 6, M);
      return and_or<0x00300030u>(w[4 + e / 2] >> (e % 2 ? 4 : 2), lo);
    }
  } else {
    static_assert(B == 8 && M == kMagic);
    return byte_perm(w[J / 2], 0x64646464u, J % 2 ? 0x4341u : 0x4240u);
  }
}

// The bit offset o of pair J's field in each half (the lowest bit of q sits at bit o).
EXQ_EXL2_HD constexpr int pair_offset_of(int B, int J) {
  if (B == 2) return J % 8 <= 4 ? 2 * (J % 8) : 2 * (J % 8 - 5);
  if (B == 3) return J < 15 ? (J % 5 <= 2 ? 3 * (J % 5) : 3 * (J % 5 - 3)) : 0;
  if (B == 4) return J % 4 <= 1 ? 4 * (J % 4) : 4 * (J % 4 - 2);
  if (B == 5) return J < 15 && J % 3 == 1 ? 5 : 0;
  return 0;
}

template <int B, int J>
constexpr int pair_offset() {
  return pair_offset_of(B, J);
}

// Kernel 2's offset decode (exl2_gemv_v2.cu): with M = offset_magic(o) a half whose field sits
// at bit o reads as 2^(10 - o) + q exactly (exponent 25 - o: the field's lowest bit is worth 1),
// one LOP3 per pair and no floating-point operation. The constant 2^(10 - o) + z of a row
// (z = 2^(B-1), the zero point) is offset_const.
EXQ_EXL2_HD constexpr uint32_t offset_magic(int o) {
  return (static_cast<uint32_t>(25 - o) << 10) * 0x10001u;
}
EXQ_EXL2_HD constexpr float offset_const(int B, int J) {
  return static_cast<float>((1 << (10 - pair_offset_of(B, J))) + (1 << (B - 1)));
}

// The 32 values v (v[r] < 2^bits) of one unit-column into `bits` words w (inverse of
// pair_bits); rows past a short unit must hold the zero code.
EXQ_EXL2_HD void encode_unit(int bits, const uint32_t* v, uint32_t* w) {
  for (int i = 0; i < bits; ++i) w[i] = 0u;
  for (int h = 0; h < 2; ++h)
    for (int r = 0; r < kPairs; ++r) {
      const uint32_t q = v[r + 16 * h];
      const int base = 16 * h;
      switch (bits) {
        case 2: w[r / 8] |= q << (base + 2 * (r % 8)); break;
        case 4: w[r / 4] |= q << (base + 4 * (r % 4)); break;
        case 8: w[r / 2] |= q << (base + 8 * (r % 2)); break;
        case 3:
        case 5:
          if (r < 15) {
            const int per = bits == 3 ? 5 : 3;
            w[r / per] |= q << (base + bits * (r % per));
          } else {
            for (int k = 0; k < bits; ++k) w[k] |= ((q >> k) & 1u) << (base + 15);
          }
          break;
        default:  // 6
          if (r < 12) {
            w[r / 2] |= q << (base + (r % 2 ? 10 : 0));
          } else {
            const int e = r - 12;
            w[e] |= (q & 15u) << (base + 6);
            w[4 + e / 2] |= (q >> 4) << (base + (e % 2 ? 8 : 6));
          }
          break;
      }
    }
}

// Value k (bits wide) of exllamav2's little-endian stream `s` of a unit-column.
EXQ_EXL2_HD uint32_t stream_value(const uint32_t* s, int bits, int k) {
  const int bit = k * bits, i = bit >> 5, sh = bit & 31;
  uint64_t v = s[i] >> sh;
  if (sh + bits > 32) v |= static_cast<uint64_t>(s[i + 1]) << (32 - sh);
  return static_cast<uint32_t>(v) & ((1u << bits) - 1u);
}

}  // namespace exq::cuda::exl2
