// AVX-512 (F, BW, VL) kernels: the AVX2 kernel's scheme at twice the width, with masked
// loads for the tail of k. Compiled with target attributes, called after the runtime check.
// GCC 12's AVX-512 intrinsics use _mm512_undefined_*(), which it then reports as
// uninitialized when inlined into target-attribute functions (GCC bug 105593).
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif
#include <immintrin.h>

#include <algorithm>

#include "backend/cpu/matmul_kernel.h"

#define EXQ_AVX512 __attribute__((target("avx512f,avx512bw,avx512vl,fma,f16c,avx2")))

namespace exq::cpu::kernel::detail {
namespace {

// 4 x 4 blocks: 16 accumulators + 4 weight vectors + 1 x vector of the 32 zmm registers.
constexpr int kMR = 4;
constexpr int kNR = 4;

// 16 weights from element i (only the lanes in `m` are read; the others are zero).
template <DType W>
EXQ_AVX512 inline __m512 load16(const void* w, int64_t i, __mmask16 m) {
  if constexpr (W == DType::F32) {
    return _mm512_maskz_loadu_ps(m, static_cast<const float*>(w) + i);
  } else {
    const __m256i h = _mm256_maskz_loadu_epi16(m, static_cast<const uint16_t*>(w) + i);
    if constexpr (W == DType::F16) return _mm512_cvtph_ps(h);
    else return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
  }
}

// 512 -> 256 bits: lower half plus upper half.
EXQ_AVX512 inline __m256 fold(__m512 v) {
  return _mm256_add_ps(_mm512_castps512_ps256(v), _mm512_castps512_ps256(_mm512_shuffle_f32x4(v, v, 0xee)));
}

// y[j] = sum of the lanes of acc[j], j < NR, with the four sums finished together.
template <int NR>
EXQ_AVX512 inline void reduce_row(const __m512 (&acc)[NR], float* y) {
  __m256 s[4];
#pragma GCC unroll 4
  for (int j = 0; j < 4; ++j) s[j] = j < NR ? fold(acc[j < NR ? j : 0]) : _mm256_setzero_ps();
  const __m256 h = _mm256_hadd_ps(_mm256_hadd_ps(s[0], s[1]), _mm256_hadd_ps(s[2], s[3]));
  alignas(16) float out[4];
  _mm_store_ps(out, _mm_add_ps(_mm256_castps256_ps128(h), _mm256_extractf128_ps(h, 1)));
#pragma GCC unroll 4
  for (int j = 0; j < NR; ++j) y[j] = out[j];
}

// acc[i][j] += x[i, p..p+16) . w[j, p..p+16), lanes outside `m` skipped.
template <DType W, int MR, int NR>
EXQ_AVX512 __attribute__((always_inline)) inline void step(__m512 (&acc)[MR][NR], const float* x, int64_t ldx,
                                                           const void* w, int64_t k, int64_t p, __mmask16 m) {
  __m512 wv[NR];
#pragma GCC unroll 4
  for (int j = 0; j < NR; ++j) wv[j] = load16<W>(w, j * k + p, m);
#pragma GCC unroll 4
  for (int i = 0; i < MR; ++i) {
    const __m512 xv = _mm512_maskz_loadu_ps(m, x + i * ldx + p);
#pragma GCC unroll 4
    for (int j = 0; j < NR; ++j) acc[i][j] = _mm512_fmadd_ps(xv, wv[j], acc[i][j]);
  }
}

template <DType W, int MR, int NR>
EXQ_AVX512 void block(const float* x, int64_t ldx, const void* w, int64_t k, float* y, int64_t ldy) {
  __m512 acc[MR][NR];
#pragma GCC unroll 4
  for (int i = 0; i < MR; ++i)
#pragma GCC unroll 4
    for (int j = 0; j < NR; ++j) acc[i][j] = _mm512_setzero_ps();
  int64_t p = 0;
  for (; p + 16 <= k; p += 16) step<W, MR, NR>(acc, x, ldx, w, k, p, 0xffff);
  if (p < k) step<W, MR, NR>(acc, x, ldx, w, k, p, static_cast<__mmask16>((1u << (k - p)) - 1));
#pragma GCC unroll 4
  for (int i = 0; i < MR; ++i) reduce_row<NR>(acc[i], y + i * ldy);
}

template <DType W, int MR>
EXQ_AVX512 void block_nr(int nr, const float* x, int64_t ldx, const void* w, int64_t k, float* y, int64_t ldy) {
  switch (nr) {
    case 1: block<W, MR, 1>(x, ldx, w, k, y, ldy); break;
    case 2: block<W, MR, 2>(x, ldx, w, k, y, ldy); break;
    case 3: block<W, MR, 3>(x, ldx, w, k, y, ldy); break;
    default: block<W, MR, 4>(x, ldx, w, k, y, ldy); break;
  }
}

template <DType W>
EXQ_AVX512 void gemm_t(const float* x, int64_t ldx, int64_t T, const void* w, int64_t n, int64_t k,
                       float* y, int64_t ldy) {
  const size_t es = W == DType::F32 ? 4 : 2;
  for (int64_t t = 0; t < T; t += kMR) {
    const int mr = static_cast<int>(std::min<int64_t>(kMR, T - t));
    const float* xt = x + t * ldx;
    float* yt = y + t * ldy;
    for (int64_t o = 0; o < n; o += kNR) {
      const int nr = static_cast<int>(std::min<int64_t>(kNR, n - o));
      const void* wo = static_cast<const char*>(w) + static_cast<size_t>(o * k) * es;
      switch (mr) {
        case 1: block_nr<W, 1>(nr, xt, ldx, wo, k, yt + o, ldy); break;
        case 2: block_nr<W, 2>(nr, xt, ldx, wo, k, yt + o, ldy); break;
        case 3: block_nr<W, 3>(nr, xt, ldx, wo, k, yt + o, ldy); break;
        default: block_nr<W, 4>(nr, xt, ldx, wo, k, yt + o, ldy); break;
      }
    }
  }
}

}  // namespace

void gemm_avx512(const float* x, int64_t ldx, int64_t T, const void* w, DType wtype, int64_t n,
                 int64_t k, float* y, int64_t ldy) {
  switch (wtype) {
    case DType::F16: return gemm_t<DType::F16>(x, ldx, T, w, n, k, y, ldy);
    case DType::BF16: return gemm_t<DType::BF16>(x, ldx, T, w, n, k, y, ldy);
    default: return gemm_t<DType::F32>(x, ldx, T, w, n, k, y, ldy);
  }
}

}  // namespace exq::cpu::kernel::detail
