// AVX2 + FMA + F16C EXL2 kernels. The words of 8 neighbouring output columns sit side by side
// in q_weight, so one vector holds one code row of 8 columns; 32 rows of b-bit codes are
// exactly b word rows, so each 32-row chunk is unrolled with compile-time shifts. Weights are
// (q - z) * scale in float32 (exact: at most 8 + 11 significant bits), then rounded to fp16
// and back with F16C (ties to even, as float_to_half). Compiled for baseline x86-64 with
// target attributes and only called after the runtime check in matmul_kernel.cpp.
#include <immintrin.h>

#include <algorithm>
#include <utility>

#include "backend/cpu/exl2_matmul_kernel.h"

#define EXQ_AVX2 __attribute__((target("avx2,fma,f16c")))
#define EXQ_AVX2_INLINE __attribute__((target("avx2,fma,f16c"), always_inline)) inline

namespace exq::cpu::exl2 {
namespace {

template <int N>
using Seq = std::make_integer_sequence<int, N>;

EXQ_AVX2_INLINE __m256i load_words(const uint32_t* p) {
  return _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p));
}

// Rounded to fp16 (nearest, ties to even) and back, exactly like half_to_float(float_to_half(v)).
EXQ_AVX2_INLINE __m256 round_half(__m256 v) {
  return _mm256_cvtph_ps(_mm256_cvtps_ph(v, _MM_FROUND_TO_NEAREST_INT));
}

// fp16(qs * qs * m) for the 8 columns whose 4-bit codes qs - 1 are packed in `word`.
EXQ_AVX2_INLINE __m256 scales8(uint32_t word, float m) {
  const __m256i shifts = _mm256_setr_epi32(0, 4, 8, 12, 16, 20, 24, 28);
  const __m256i nib = _mm256_and_si256(
      _mm256_srlv_epi32(_mm256_set1_epi32(static_cast<int>(word)), shifts), _mm256_set1_epi32(15));
  const __m256 qs = _mm256_cvtepi32_ps(_mm256_add_epi32(nib, _mm256_set1_epi32(1)));
  return round_half(_mm256_mul_ps(_mm256_mul_ps(qs, qs), _mm256_set1_ps(m)));
}

// Codes of row R of a 32-row chunk whose first word row is at p (rows `stride` words apart).
template <int B, int R>
EXQ_AVX2_INLINE __m256i code(const uint32_t* p, int64_t stride) {
  constexpr int off = R * B, wi = off / 32, sh = off % 32;
  __m256i v = load_words(p + wi * stride);
  if constexpr (sh != 0) v = _mm256_srli_epi32(v, sh);
  if constexpr (sh + B > 32)
    v = _mm256_or_si256(v, _mm256_slli_epi32(load_words(p + (wi + 1) * stride), 32 - sh));
  if constexpr (sh + B != 32) v = _mm256_and_si256(v, _mm256_set1_epi32((1 << B) - 1));
  return v;
}

// Codes of row k of a group whose first word row is at p (tail rows outside whole chunks).
EXQ_AVX2_INLINE __m256i code_at(const uint32_t* p, int64_t stride, int64_t k, int bits) {
  const int64_t off = k * bits;
  const int sh = static_cast<int>(off & 31);
  const uint32_t* w = p + (off >> 5) * stride;
  __m256i v = _mm256_srl_epi32(load_words(w), _mm_cvtsi32_si128(sh));
  if (sh + bits > 32)
    v = _mm256_or_si256(v, _mm256_sll_epi32(load_words(w + stride), _mm_cvtsi32_si128(32 - sh)));
  return _mm256_and_si256(v, _mm256_set1_epi32((1 << bits) - 1));
}

// The fp16 weight (q - zero) * s, as float. The integer subtraction keeps the sign of zero
// of float(q - zero) * s.
EXQ_AVX2_INLINE __m256 weight(__m256i q, __m256i zero, __m256 s) {
  return round_half(_mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_sub_epi32(q, zero)), s));
}

// ---- fused: acc[t][j] (MT tokens x NC vectors of 8 columns) += x[t, row] * W[row, cols] ----

template <int MT, int NC>
EXQ_AVX2_INLINE void fma_row(__m256 (&acc)[MT][NC], const __m256 (&wv)[NC], const float* x,
                             int64_t ldx) {
#pragma GCC unroll 4
  for (int t = 0; t < MT; ++t) {
    const __m256 xb = _mm256_broadcast_ss(x + t * ldx);
#pragma GCC unroll 4
    for (int j = 0; j < NC; ++j) acc[t][j] = _mm256_fmadd_ps(wv[j], xb, acc[t][j]);
  }
}

template <int B, int MT, int NC, int R>
EXQ_AVX2_INLINE void fused_row(__m256 (&acc)[MT][NC], const uint32_t* p, int64_t stride,
                               const __m256 (&s)[NC], const float* x, int64_t ldx) {
  const __m256i zero = _mm256_set1_epi32(1 << (B - 1));
  __m256 wv[NC];
#pragma GCC unroll 4
  for (int j = 0; j < NC; ++j) wv[j] = weight(code<B, R>(p + 8 * j, stride), zero, s[j]);
  fma_row<MT, NC>(acc, wv, x + R, ldx);
}

template <int B, int MT, int NC, int... R>
EXQ_AVX2_INLINE void fused_chunk(std::integer_sequence<int, R...>, __m256 (&acc)[MT][NC],
                                 const uint32_t* p, int64_t stride, const __m256 (&s)[NC],
                                 const float* x, int64_t ldx) {
  (fused_row<B, MT, NC, R>(acc, p, stride, s, x, ldx), ...);
}

// One group's rows for NC * 8 columns: p = its first word row at the first column, qs = its
// q_scale words of these columns, x = its first permuted row of token 0; a = [MT][32] partials.
template <int B, int MT, int NC>
EXQ_AVX2 void fused_group(float* a, const uint32_t* p, int64_t stride, int64_t rows,
                          const uint32_t* qs, float m, const float* x, int64_t ldx) {
  __m256 acc[MT][NC], s[NC];
  for (int j = 0; j < NC; ++j) s[j] = scales8(qs[j], m);
  for (int t = 0; t < MT; ++t)
    for (int j = 0; j < NC; ++j) acc[t][j] = _mm256_loadu_ps(a + t * kFusedColumns + 8 * j);
  int64_t k = 0;
  for (; k + 32 <= rows; k += 32)
    fused_chunk<B, MT, NC>(Seq<32>(), acc, p + (k / 32) * B * stride, stride, s, x + k, ldx);
  const __m256i zero = _mm256_set1_epi32(1 << (B - 1));
  for (; k < rows; ++k) {
    __m256 wv[NC];
    for (int j = 0; j < NC; ++j) wv[j] = weight(code_at(p + 8 * j, stride, k, B), zero, s[j]);
    fma_row<MT, NC>(acc, wv, x + k, ldx);
  }
  for (int t = 0; t < MT; ++t)
    for (int j = 0; j < NC; ++j) _mm256_storeu_ps(a + t * kFusedColumns + 8 * j, acc[t][j]);
}

// MT tokens x NC * 8 columns from column c over every group.
template <int MT, int NC>
EXQ_AVX2 void fused_block(const Exl2MatmulWeight& w, const float* m, const float* x, int64_t c,
                          float* a) {
  for (int t = 0; t < MT; ++t) std::fill_n(a + t * kFusedColumns, NC * 8, 0.0f);
  for (int64_t gi = 0; gi < w.num_groups; ++gi) {
    const Exl2MatmulGroup& g = w.groups[gi];
    const uint32_t* p = w.q_weight + g.word_begin * w.out_pad + c;
    const uint32_t* qs = w.q_scale + gi * (w.out_pad / 8) + c / 8;
    const float* xg = x + g.row_begin;
    switch (g.bits) {
      case 2: fused_group<2, MT, NC>(a, p, w.out_pad, g.rows, qs, m[gi], xg, w.in); break;
      case 3: fused_group<3, MT, NC>(a, p, w.out_pad, g.rows, qs, m[gi], xg, w.in); break;
      case 4: fused_group<4, MT, NC>(a, p, w.out_pad, g.rows, qs, m[gi], xg, w.in); break;
      case 5: fused_group<5, MT, NC>(a, p, w.out_pad, g.rows, qs, m[gi], xg, w.in); break;
      case 6: fused_group<6, MT, NC>(a, p, w.out_pad, g.rows, qs, m[gi], xg, w.in); break;
      default: fused_group<8, MT, NC>(a, p, w.out_pad, g.rows, qs, m[gi], xg, w.in); break;
    }
  }
}

// ---- tile: 8 rows x 8 columns decoded, transposed, stored as 8 column runs ----

EXQ_AVX2_INLINE void transpose8(__m256 (&r)[8]) {
  const __m256 t0 = _mm256_unpacklo_ps(r[0], r[1]), t1 = _mm256_unpackhi_ps(r[0], r[1]);
  const __m256 t2 = _mm256_unpacklo_ps(r[2], r[3]), t3 = _mm256_unpackhi_ps(r[2], r[3]);
  const __m256 t4 = _mm256_unpacklo_ps(r[4], r[5]), t5 = _mm256_unpackhi_ps(r[4], r[5]);
  const __m256 t6 = _mm256_unpacklo_ps(r[6], r[7]), t7 = _mm256_unpackhi_ps(r[6], r[7]);
  const __m256 s0 = _mm256_shuffle_ps(t0, t2, _MM_SHUFFLE(1, 0, 1, 0));
  const __m256 s1 = _mm256_shuffle_ps(t0, t2, _MM_SHUFFLE(3, 2, 3, 2));
  const __m256 s2 = _mm256_shuffle_ps(t1, t3, _MM_SHUFFLE(1, 0, 1, 0));
  const __m256 s3 = _mm256_shuffle_ps(t1, t3, _MM_SHUFFLE(3, 2, 3, 2));
  const __m256 s4 = _mm256_shuffle_ps(t4, t6, _MM_SHUFFLE(1, 0, 1, 0));
  const __m256 s5 = _mm256_shuffle_ps(t4, t6, _MM_SHUFFLE(3, 2, 3, 2));
  const __m256 s6 = _mm256_shuffle_ps(t5, t7, _MM_SHUFFLE(1, 0, 1, 0));
  const __m256 s7 = _mm256_shuffle_ps(t5, t7, _MM_SHUFFLE(3, 2, 3, 2));
  r[0] = _mm256_permute2f128_ps(s0, s4, 0x20);
  r[1] = _mm256_permute2f128_ps(s1, s5, 0x20);
  r[2] = _mm256_permute2f128_ps(s2, s6, 0x20);
  r[3] = _mm256_permute2f128_ps(s3, s7, 0x20);
  r[4] = _mm256_permute2f128_ps(s0, s4, 0x31);
  r[5] = _mm256_permute2f128_ps(s1, s5, 0x31);
  r[6] = _mm256_permute2f128_ps(s2, s6, 0x31);
  r[7] = _mm256_permute2f128_ps(s3, s7, 0x31);
}

// Rows R0..R0+7 of a 32-row chunk into dst[c * ld + r] (c < 8, r < 8).
template <int B, int R0, int... I>
EXQ_AVX2_INLINE void tile_rows8(std::integer_sequence<int, I...>, const uint32_t* p, int64_t stride,
                                __m256 s, float* dst, int64_t ld) {
  const __m256i zero = _mm256_set1_epi32(1 << (B - 1));
  __m256 v[8] = {weight(code<B, R0 + I>(p, stride), zero, s)...};
  transpose8(v);
#pragma GCC unroll 8
  for (int c = 0; c < 8; ++c) _mm256_storeu_ps(dst + c * ld, v[c]);
}

template <int B>
EXQ_AVX2 void tile_group(const uint32_t* p, int64_t stride, int64_t rows, __m256 s, float* dst,
                         int64_t ld) {
  int64_t k = 0;
  for (; k + 32 <= rows; k += 32) {
    const uint32_t* pc = p + (k / 32) * B * stride;
    tile_rows8<B, 0>(Seq<8>(), pc, stride, s, dst + k, ld);
    tile_rows8<B, 8>(Seq<8>(), pc, stride, s, dst + k + 8, ld);
    tile_rows8<B, 16>(Seq<8>(), pc, stride, s, dst + k + 16, ld);
    tile_rows8<B, 24>(Seq<8>(), pc, stride, s, dst + k + 24, ld);
  }
  const __m256i zero = _mm256_set1_epi32(1 << (B - 1));
  for (; k < rows; ++k) {
    alignas(32) float v[8];
    _mm256_store_ps(v, weight(code_at(p, stride, k, B), zero, s));
    for (int c = 0; c < 8; ++c) dst[c * ld + k] = v[c];
  }
}

}  // namespace

EXQ_AVX2 void fused_avx2(const Exl2MatmulWeight& w, const float* m, const float* xp,
                         int64_t tokens, int64_t c0, float* acc) {
  // Up to 2 tokens: 4 column vectors (enough independent FMA chains for one token); 3 or 4
  // tokens: 2 column vectors, so the accumulators stay within the 16 registers. More tokens
  // go in even chunks of at most 4 (6 = 3 + 3, not 4 + 2).
  const int64_t chunks = (tokens + 3) / 4;
  for (int64_t i = 0, t = 0; i < chunks; ++i) {
    const int64_t mt = (tokens - t) / (chunks - i) + ((tokens - t) % (chunks - i) != 0);
    const float* x = xp + t * w.in;
    float* a = acc + t * kFusedColumns;
    t += mt;
    switch (mt) {
      case 1: fused_block<1, 4>(w, m, x, c0, a); break;
      case 2: fused_block<2, 4>(w, m, x, c0, a); break;
      case 3:
        fused_block<3, 2>(w, m, x, c0, a);
        fused_block<3, 2>(w, m, x, c0 + 16, a + 16);
        break;
      default:
        fused_block<4, 2>(w, m, x, c0, a);
        fused_block<4, 2>(w, m, x, c0 + 16, a + 16);
        break;
    }
  }
}

EXQ_AVX2 void tile_avx2(const Exl2MatmulWeight& w, const float* m, int64_t c0, int64_t n,
                        float* tile) {
  for (int64_t cb = c0; cb < c0 + n; cb += 8) {
    float* dst = tile + (cb - c0) * w.in;
    for (int64_t gi = 0; gi < w.num_groups; ++gi) {
      const Exl2MatmulGroup& g = w.groups[gi];
      const uint32_t* p = w.q_weight + g.word_begin * w.out_pad + cb;
      const __m256 s = scales8(w.q_scale[gi * (w.out_pad / 8) + cb / 8], m[gi]);
      float* d = dst + g.row_begin;
      switch (g.bits) {
        case 2: tile_group<2>(p, w.out_pad, g.rows, s, d, w.in); break;
        case 3: tile_group<3>(p, w.out_pad, g.rows, s, d, w.in); break;
        case 4: tile_group<4>(p, w.out_pad, g.rows, s, d, w.in); break;
        case 5: tile_group<5>(p, w.out_pad, g.rows, s, d, w.in); break;
        case 6: tile_group<6>(p, w.out_pad, g.rows, s, d, w.in); break;
        default: tile_group<8>(p, w.out_pad, g.rows, s, d, w.in); break;
      }
    }
  }
}

}  // namespace exq::cpu::exl2
