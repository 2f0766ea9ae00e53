#include "quant/gptq_kernel.h"

#include <immintrin.h>

#include <algorithm>
#include <cmath>

namespace exq::quant::kernel {
namespace {

// Adding 1.5 * 2^23 leaves no fraction bits, so the sum rounds to an integer (ties to even).
constexpr float kMagic = 12582912.0f;
constexpr float kBig = 4194304.0f;  // 2^22: the trick is exact below it

inline float term(float w, float s, float zero, float maxq) {
  const float q = std::min(std::max(round_half_even(w / s) + zero, 0.0f), maxq);
  const float a = std::fabs(w - (q - zero) * s);
  return a * a * a * std::sqrt(a);
}

void scale_errors_portable(const float* x, int64_t rows, int64_t out, int64_t c0, int64_t c1,
                           const float* sw, const float* p, int grid, float zero, float maxq,
                           float* err) {
  for (int i = 0; i < grid; ++i)
    for (int64_t c = c0; c < c1; ++c) {
      const float s = sw[c] * p[i];
      float e = 0.0f;
      for (int64_t r = 0; r < rows; ++r) e += term(x[r * out + c], s, zero, maxq);
      err[i * out + c] = e;
    }
}

#define EXQ_AVX2 __attribute__((target("avx2")))

// V vectors of 8 columns from c: the accumulators stay in registers over all rows.
template <int V>
EXQ_AVX2 void tile_avx2(const float* x, int64_t rows, int64_t out, int64_t c, const float* sw,
                        const float* p, int grid, float zero, float maxq, float* err) {
  const __m256 vzero = _mm256_set1_ps(zero), vmaxq = _mm256_set1_ps(maxq);
  const __m256 vmagic = _mm256_set1_ps(kMagic), vbig = _mm256_set1_ps(kBig);
  const __m256 vnbig = _mm256_set1_ps(-kBig), v0 = _mm256_setzero_ps();
  const __m256 absmask = _mm256_castsi256_ps(_mm256_set1_epi32(0x7fffffff));
  for (int i = 0; i < grid; ++i) {
    const __m256 pi = _mm256_set1_ps(p[i]);
    __m256 s[V], acc[V];
    for (int v = 0; v < V; ++v) {
      s[v] = _mm256_mul_ps(_mm256_loadu_ps(sw + c + 8 * v), pi);
      acc[v] = _mm256_setzero_ps();
    }
    for (int64_t r = 0; r < rows; ++r) {
      const float* row = x + r * out + c;
      for (int v = 0; v < V; ++v) {
        const __m256 w = _mm256_loadu_ps(row + 8 * v);
        __m256 q = _mm256_div_ps(w, s[v]);
        q = _mm256_min_ps(_mm256_max_ps(q, vnbig), vbig);
        q = _mm256_sub_ps(_mm256_add_ps(q, vmagic), vmagic);
        q = _mm256_min_ps(_mm256_max_ps(_mm256_add_ps(q, vzero), v0), vmaxq);
        const __m256 d = _mm256_sub_ps(w, _mm256_mul_ps(_mm256_sub_ps(q, vzero), s[v]));
        const __m256 a = _mm256_and_ps(d, absmask);
        const __m256 t = _mm256_mul_ps(_mm256_mul_ps(_mm256_mul_ps(a, a), a), _mm256_sqrt_ps(a));
        acc[v] = _mm256_add_ps(acc[v], t);
      }
    }
    for (int v = 0; v < V; ++v) _mm256_storeu_ps(err + i * out + c + 8 * v, acc[v]);
  }
}

EXQ_AVX2 void scale_errors_avx2(const float* x, int64_t rows, int64_t out, int64_t c0,
                                int64_t c1, const float* sw, const float* p, int grid,
                                float zero, float maxq, float* err) {
  int64_t c = c0;
  for (; c + 64 <= c1; c += 64) tile_avx2<8>(x, rows, out, c, sw, p, grid, zero, maxq, err);
  for (; c + 8 <= c1; c += 8) tile_avx2<1>(x, rows, out, c, sw, p, grid, zero, maxq, err);
  if (c < c1) scale_errors_portable(x, rows, out, c, c1, sw, p, grid, zero, maxq, err);
}

bool has_avx2() {
  static const bool yes = [] {
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx2") != 0;
  }();
  return yes;
}

}  // namespace

float round_half_even(float v) {
  v = std::min(std::max(v, -kBig), kBig);
  return (v + kMagic) - kMagic;
}

void scale_errors(const float* x, int64_t rows, int64_t out, int64_t c0, int64_t c1,
                  const float* sw, const float* p, int grid, float zero, float maxq, float* err) {
  if (has_avx2())
    scale_errors_avx2(x, rows, out, c0, c1, sw, p, grid, zero, maxq, err);
  else
    scale_errors_portable(x, rows, out, c0, c1, sw, p, grid, zero, maxq, err);
}

}  // namespace exq::quant::kernel
