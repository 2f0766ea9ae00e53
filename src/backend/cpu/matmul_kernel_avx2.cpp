// AVX2 + FMA + F16C kernels. Compiled for baseline x86-64 with target attributes and only
// called after the runtime check in matmul_kernel.cpp.
#include <immintrin.h>

#include <algorithm>
#include <cmath>

#include "backend/cpu/matmul_kernel.h"
#include "core/half.h"

#define EXQ_AVX2 __attribute__((target("avx2,fma,f16c")))

namespace exq::cpu::kernel::detail {
namespace {

// Register blocking of the dot-product kernel: MR rows of x times NR rows of W kept in
// 12 accumulators, plus NR weight vectors and one x vector: exactly the 16 ymm registers.
constexpr int kMR = 4;
constexpr int kNR = 3;

template <DType W>
EXQ_AVX2 inline __m256 load8(const void* w, int64_t i) {
  if constexpr (W == DType::F32) {
    return _mm256_loadu_ps(static_cast<const float*>(w) + i);
  } else {
    const __m128i h = _mm_loadu_si128(reinterpret_cast<const __m128i*>(static_cast<const uint16_t*>(w) + i));
    if constexpr (W == DType::F16) return _mm256_cvtph_ps(h);
    else return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16));
  }
}

template <DType W>
inline float load1(const void* w, int64_t i) {
  if constexpr (W == DType::F32) return static_cast<const float*>(w)[i];
  else if constexpr (W == DType::F16) return half_to_float(static_cast<const uint16_t*>(w)[i]);
  else return bf16_to_float(static_cast<const uint16_t*>(w)[i]);
}

EXQ_AVX2 inline float hsum(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}

// y[MR x NR block] = x[MR rows] . w[NR rows], each of length k.
template <DType W, int MR, int NR>
EXQ_AVX2 void block(const float* x, int64_t ldx, const void* w, int64_t k, float* y, int64_t ldy) {
  __m256 acc[MR][NR];
#pragma GCC unroll 4
  for (int i = 0; i < MR; ++i)
#pragma GCC unroll 4
    for (int j = 0; j < NR; ++j) acc[i][j] = _mm256_setzero_ps();
  int64_t p = 0;
  for (; p + 8 <= k; p += 8) {
    __m256 wv[NR];
#pragma GCC unroll 4
    for (int j = 0; j < NR; ++j) wv[j] = load8<W>(w, j * k + p);
#pragma GCC unroll 4
    for (int i = 0; i < MR; ++i) {
      const __m256 xv = _mm256_loadu_ps(x + i * ldx + p);
#pragma GCC unroll 4
      for (int j = 0; j < NR; ++j) acc[i][j] = _mm256_fmadd_ps(xv, wv[j], acc[i][j]);
    }
  }
  for (int i = 0; i < MR; ++i) {
    for (int j = 0; j < NR; ++j) {
      float s = hsum(acc[i][j]);
      // Fused explicitly: left to the compiler, the contraction of this tail differed between
      // instances (f16 weights in registers vs converted to f32), so a row's result depended
      // on the batch it came in (Matmul.RowByRowEqualsBatched on an AVX2-only CPU).
      for (int64_t q = p; q < k; ++q) s = std::fma(x[i * ldx + q], load1<W>(w, j * k + q), s);
      y[i * ldy + j] = s;
    }
  }
}

template <DType W, int MR>
EXQ_AVX2 void block_nr(int nr, const float* x, int64_t ldx, const void* w, int64_t k, float* y, int64_t ldy) {
  switch (nr) {
    case 1: block<W, MR, 1>(x, ldx, w, k, y, ldy); break;
    case 2: block<W, MR, 2>(x, ldx, w, k, y, ldy); break;
    default: block<W, MR, 3>(x, ldx, w, k, y, ldy); break;
  }
}

template <DType W>
EXQ_AVX2 void gemm_t(const float* x, int64_t ldx, int64_t T, const void* w, int64_t n, int64_t k,
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

void gemm_avx2(const float* x, int64_t ldx, int64_t T, const void* w, DType wtype, int64_t n,
               int64_t k, float* y, int64_t ldy) {
  switch (wtype) {
    case DType::F16: return gemm_t<DType::F16>(x, ldx, T, w, n, k, y, ldy);
    case DType::BF16: return gemm_t<DType::BF16>(x, ldx, T, w, n, k, y, ldy);
    default: return gemm_t<DType::F32>(x, ldx, T, w, n, k, y, ldy);
  }
}

EXQ_AVX2 void convert_avx2(const uint16_t* w, DType dtype, int64_t count, float* dst) {
  int64_t i = 0;
  if (dtype == DType::F16) {
    for (; i + 8 <= count; i += 8) _mm256_storeu_ps(dst + i, load8<DType::F16>(w, i));
    for (; i < count; ++i) dst[i] = half_to_float(w[i]);
  } else {
    for (; i + 8 <= count; i += 8) _mm256_storeu_ps(dst + i, load8<DType::BF16>(w, i));
    for (; i < count; ++i) dst[i] = bf16_to_float(w[i]);
  }
}

}  // namespace exq::cpu::kernel::detail
