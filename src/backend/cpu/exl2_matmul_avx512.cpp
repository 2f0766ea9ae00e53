// AVX-512 fused EXL2 kernel: the AVX2 scheme (exl2_matmul_avx2.cpp) with 16 output columns
// per vector; one token keeps two accumulator sets (even and odd rows) so enough FMA chains
// are in flight. Compiled with target attributes, called after the runtime check.
// GCC 12's AVX-512 intrinsics use _mm512_undefined_*(), which it then reports as
// uninitialized when inlined into target-attribute functions (GCC bug 105593).
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif
#include <immintrin.h>

#include <algorithm>
#include <utility>

#include "backend/cpu/exl2_matmul_kernel.h"

#define EXQ_AVX512 __attribute__((target("avx512f,avx512bw,avx512vl,fma,f16c,avx2")))
#define EXQ_AVX512_INLINE \
  __attribute__((target("avx512f,avx512bw,avx512vl,fma,f16c,avx2"), always_inline)) inline

namespace exq::cpu::exl2 {
namespace {

// Column vectors per block: kFusedColumns / 16.
constexpr int kNC = 2;

EXQ_AVX512_INLINE __m512i load_words(const uint32_t* p) { return _mm512_loadu_si512(p); }

// Rounded to fp16 (nearest, ties to even) and back, exactly like half_to_float(float_to_half(v)).
EXQ_AVX512_INLINE __m512 round_half(__m512 v) {
  return _mm512_cvtph_ps(_mm512_cvtps_ph(v, _MM_FROUND_TO_NEAREST_INT));
}

// fp16(qs * qs * m) for 16 columns whose 4-bit codes qs - 1 are packed in qs[0], qs[1].
EXQ_AVX512_INLINE __m512 scales16(const uint32_t* qs, float m) {
  const __m512i words = _mm512_inserti64x4(
      _mm512_castsi256_si512(_mm256_set1_epi32(static_cast<int>(qs[0]))),
      _mm256_set1_epi32(static_cast<int>(qs[1])), 1);
  const __m512i shifts =
      _mm512_setr_epi32(0, 4, 8, 12, 16, 20, 24, 28, 0, 4, 8, 12, 16, 20, 24, 28);
  const __m512i nib = _mm512_and_si512(_mm512_srlv_epi32(words, shifts), _mm512_set1_epi32(15));
  const __m512 q = _mm512_cvtepi32_ps(_mm512_add_epi32(nib, _mm512_set1_epi32(1)));
  return round_half(_mm512_mul_ps(_mm512_mul_ps(q, q), _mm512_set1_ps(m)));
}

// Codes of row R of a 32-row chunk whose first word row is at p (rows `stride` words apart).
template <int B, int R>
EXQ_AVX512_INLINE __m512i code(const uint32_t* p, int64_t stride) {
  constexpr int off = R * B, wi = off / 32, sh = off % 32;
  __m512i v = load_words(p + wi * stride);
  if constexpr (sh != 0) v = _mm512_srli_epi32(v, sh);
  if constexpr (sh + B > 32)
    v = _mm512_or_si512(v, _mm512_slli_epi32(load_words(p + (wi + 1) * stride), 32 - sh));
  if constexpr (sh + B != 32) v = _mm512_and_si512(v, _mm512_set1_epi32((1 << B) - 1));
  return v;
}

// Codes of row k of a group whose first word row is at p (tail rows outside whole chunks).
EXQ_AVX512_INLINE __m512i code_at(const uint32_t* p, int64_t stride, int64_t k, int bits) {
  const int64_t off = k * bits;
  const int sh = static_cast<int>(off & 31);
  const uint32_t* w = p + (off >> 5) * stride;
  __m512i v = _mm512_srl_epi32(load_words(w), _mm_cvtsi32_si128(sh));
  if (sh + bits > 32)
    v = _mm512_or_si512(v, _mm512_sll_epi32(load_words(w + stride), _mm_cvtsi32_si128(32 - sh)));
  return _mm512_and_si512(v, _mm512_set1_epi32((1 << bits) - 1));
}

// The fp16 weight (q - zero) * s as float (integer subtraction: float(q - zero) * s exactly).
EXQ_AVX512_INLINE __m512 weight(__m512i q, __m512i zero, __m512 s) {
  return round_half(_mm512_mul_ps(_mm512_cvtepi32_ps(_mm512_sub_epi32(q, zero)), s));
}

// Accumulator sets: one token alternates two sets by row parity, more tokens use one each.
template <int MT>
constexpr int kSets = MT == 1 ? 2 : 1;

template <int MT>
EXQ_AVX512_INLINE void fma_row(__m512 (&acc)[MT * kSets<MT>][kNC], int set,
                               const __m512 (&wv)[kNC], const float* x, int64_t ldx) {
#pragma GCC unroll 8
  for (int t = 0; t < MT; ++t) {
    const __m512 xb = _mm512_set1_ps(x[t * ldx]);
#pragma GCC unroll 2
    for (int j = 0; j < kNC; ++j)
      acc[t + set][j] = _mm512_fmadd_ps(wv[j], xb, acc[t + set][j]);
  }
}

template <int B, int MT, int R>
EXQ_AVX512_INLINE void fused_row(__m512 (&acc)[MT * kSets<MT>][kNC], const uint32_t* p,
                                 int64_t stride, const __m512 (&s)[kNC], const float* x,
                                 int64_t ldx) {
  const __m512i zero = _mm512_set1_epi32(1 << (B - 1));
  __m512 wv[kNC];
#pragma GCC unroll 2
  for (int j = 0; j < kNC; ++j) wv[j] = weight(code<B, R>(p + 16 * j, stride), zero, s[j]);
  fma_row<MT>(acc, kSets<MT> == 2 ? (R & 1) : 0, wv, x + R, ldx);
}

template <int B, int MT, int... R>
EXQ_AVX512_INLINE void fused_chunk(std::integer_sequence<int, R...>,
                                   __m512 (&acc)[MT * kSets<MT>][kNC], const uint32_t* p,
                                   int64_t stride, const __m512 (&s)[kNC], const float* x,
                                   int64_t ldx) {
  (fused_row<B, MT, R>(acc, p, stride, s, x, ldx), ...);
}

// One group's rows for 32 columns; a = [MT][32] partials (see exl2_matmul_avx2.cpp).
template <int B, int MT>
EXQ_AVX512 void fused_group(float* a, const uint32_t* p, int64_t stride, int64_t rows,
                            const uint32_t* qs, float m, const float* x, int64_t ldx) {
  constexpr int kAcc = MT * kSets<MT>;
  __m512 acc[kAcc][kNC], s[kNC];
  for (int j = 0; j < kNC; ++j) s[j] = scales16(qs + 2 * j, m);
  for (int t = 0; t < kAcc; ++t)
    for (int j = 0; j < kNC; ++j)
      acc[t][j] = t < MT ? _mm512_loadu_ps(a + t * kFusedColumns + 16 * j) : _mm512_setzero_ps();
  int64_t k = 0;
  for (; k + 32 <= rows; k += 32)
    fused_chunk<B, MT>(std::make_integer_sequence<int, 32>(), acc, p + (k / 32) * B * stride,
                       stride, s, x + k, ldx);
  const __m512i zero = _mm512_set1_epi32(1 << (B - 1));
  for (; k < rows; ++k) {
    __m512 wv[kNC];
    for (int j = 0; j < kNC; ++j) wv[j] = weight(code_at(p + 16 * j, stride, k, B), zero, s[j]);
    fma_row<MT>(acc, 0, wv, x + k, ldx);
  }
  for (int j = 0; j < kNC; ++j) {
    if constexpr (kSets<MT> == 2) acc[0][j] = _mm512_add_ps(acc[0][j], acc[1][j]);
    for (int t = 0; t < MT; ++t) _mm512_storeu_ps(a + t * kFusedColumns + 16 * j, acc[t][j]);
  }
}

template <int MT>
EXQ_AVX512 void fused_block(const Exl2MatmulWeight& w, const float* m, const float* x, int64_t c,
                            float* a) {
  for (int t = 0; t < MT; ++t) std::fill_n(a + t * kFusedColumns, kFusedColumns, 0.0f);
  for (int64_t gi = 0; gi < w.num_groups; ++gi) {
    const Exl2MatmulGroup& g = w.groups[gi];
    const uint32_t* p = w.q_weight + g.word_begin * w.out_pad + c;
    const uint32_t* qs = w.q_scale + gi * (w.out_pad / 8) + c / 8;
    const float* xg = x + g.row_begin;
    switch (g.bits) {
      case 2: fused_group<2, MT>(a, p, w.out_pad, g.rows, qs, m[gi], xg, w.in); break;
      case 3: fused_group<3, MT>(a, p, w.out_pad, g.rows, qs, m[gi], xg, w.in); break;
      case 4: fused_group<4, MT>(a, p, w.out_pad, g.rows, qs, m[gi], xg, w.in); break;
      case 5: fused_group<5, MT>(a, p, w.out_pad, g.rows, qs, m[gi], xg, w.in); break;
      case 6: fused_group<6, MT>(a, p, w.out_pad, g.rows, qs, m[gi], xg, w.in); break;
      default: fused_group<8, MT>(a, p, w.out_pad, g.rows, qs, m[gi], xg, w.in); break;
    }
  }
}

}  // namespace

EXQ_AVX512 void fused_avx512(const Exl2MatmulWeight& w, const float* m, const float* xp,
                             int64_t tokens, int64_t c0, float* acc) {
  // Tokens in even chunks of at most 4 (6 = 3 + 3, not 4 + 2).
  const int64_t chunks = (tokens + 3) / 4;
  for (int64_t i = 0, t = 0; i < chunks; ++i) {
    const int64_t mt = (tokens - t) / (chunks - i) + ((tokens - t) % (chunks - i) != 0);
    const float* x = xp + t * w.in;
    float* a = acc + t * kFusedColumns;
    t += mt;
    switch (mt) {
      case 1: fused_block<1>(w, m, x, c0, a); break;
      case 2: fused_block<2>(w, m, x, c0, a); break;
      case 3: fused_block<3>(w, m, x, c0, a); break;
      default: fused_block<4>(w, m, x, c0, a); break;
    }
  }
}

}  // namespace exq::cpu::exl2
