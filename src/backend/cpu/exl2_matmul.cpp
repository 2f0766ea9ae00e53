#include "backend/cpu/exl2_matmul.h"

#include <algorithm>
#include <vector>

#include "core/error.h"
#include "core/half.h"
#include "core/thread_pool.h"

namespace exq::cpu {
namespace {

// Output columns per parallel task: a multiple of 8 so q_scale words are never shared.
constexpr int64_t kTileColumns = 64;

}  // namespace

float round_to_half(float v) {
  const uint32_t u = float_to_bits(v);
  const uint32_t sign = u & 0x80000000u;
  const uint32_t a = u & 0x7fffffffu;
  if (a < 0x38800000u) {
    // fp16 subnormal range: round to a multiple of 2^-24 by adding a float whose ulp is 2^-24.
    const float r = (bits_to_float(a) + 0.75f) - 0.75f;
    return bits_to_float(float_to_bits(r) | sign);
  }
  if (a >= 0x7f800000u) return v;                                  // inf, nan
  if (a >= 0x477ff000u) return bits_to_float(sign | 0x7f800000u);  // rounds past 65504
  // Keep 10 mantissa bits, round to nearest even (same bit trick as float_to_half).
  return bits_to_float(sign | ((a + 0xfffu + ((a >> 13) & 1u)) & ~0x1fffu));
}

void exl2_matmul(const Exl2MatmulWeight& w, const float* x, int64_t tokens, float* y) {
  EXQ_CHECK(w.in > 0 && w.out > 0 && w.out_pad >= w.out && w.out_pad % 32 == 0 &&
                w.num_groups > 0 && w.q_weight && w.q_scale && w.q_scale_max && w.q_perm &&
                w.groups,
            "exl2_matmul: inconsistent weight description (in {}, out {}, out_pad {}, groups {})",
            w.in, w.out, w.out_pad, w.num_groups);
  EXQ_CHECK(tokens >= 0, "exl2_matmul: negative token count {}", tokens);
  if (tokens == 0) return;
  int64_t rows = 0, max_rows = 0;
  for (int64_t g = 0; g < w.num_groups; ++g) {
    EXQ_CHECK(w.groups[g].row_begin == rows && w.groups[g].rows > 0,
              "exl2_matmul: group {} does not continue at row {}", g, rows);
    rows += w.groups[g].rows;
    max_rows = std::max(max_rows, w.groups[g].rows);
  }
  EXQ_CHECK(rows == w.in, "exl2_matmul: groups cover {} rows, expected {}", rows, w.in);

  // x in the permuted channel order, so each group reads a contiguous slice.
  std::vector<float> xp(static_cast<size_t>(tokens * w.in));
  for (int64_t t = 0; t < tokens; ++t)
    for (int64_t i = 0; i < w.in; ++i) xp[t * w.in + i] = x[t * w.in + w.q_perm[i]];

  const int64_t tiles = (w.out + kTileColumns - 1) / kTileColumns;
  parallel_for(tiles, [&](int64_t tile_begin, int64_t tile_end) {
    std::vector<float> acc(static_cast<size_t>(tokens * kTileColumns));
    std::vector<float> wt(static_cast<size_t>(max_rows * kTileColumns));  // decoded weights
    float scale[kTileColumns];
    for (int64_t tile = tile_begin; tile < tile_end; ++tile) {
      const int64_t c0 = tile * kTileColumns;
      const int64_t nc = std::min(kTileColumns, w.out - c0);
      std::fill(acc.begin(), acc.end(), 0.0f);
      for (int64_t gi = 0; gi < w.num_groups; ++gi) {
        const Exl2MatmulGroup& g = w.groups[gi];
        // Same roundings as exllamav2's half-precision reconstruction (see io/exl2.h).
        const float m = round_to_half(half_to_float(w.q_scale_max[gi]) / 256.0f);
        const uint32_t* qs_row = w.q_scale + gi * (w.out_pad / 8);
        for (int64_t c = 0; c < nc; ++c) {
          const float qs =
              static_cast<float>(((qs_row[(c0 + c) / 8] >> (4 * ((c0 + c) % 8))) & 15u) + 1u);
          scale[c] = round_to_half(qs * qs * m);
        }
        const uint32_t mask = (1u << g.bits) - 1u;
        const float zero = static_cast<float>(1 << (g.bits - 1));
        const uint32_t* words = w.q_weight + g.word_begin * w.out_pad + c0;
        for (int64_t k = 0; k < g.rows; ++k) {
          const int64_t off = k * g.bits;
          const uint32_t* w0 = words + (off >> 5) * w.out_pad;
          const int sh = static_cast<int>(off & 31);
          float* dst = &wt[k * kTileColumns];
          if (sh + g.bits > 32) {
            for (int64_t c = 0; c < nc; ++c) {
              const uint32_t q = ((w0[c] >> sh) | (w0[c + w.out_pad] << (32 - sh))) & mask;
              dst[c] = round_to_half((static_cast<float>(q) - zero) * scale[c]);
            }
          } else {
            for (int64_t c = 0; c < nc; ++c) {
              const uint32_t q = (w0[c] >> sh) & mask;
              dst[c] = round_to_half((static_cast<float>(q) - zero) * scale[c]);
            }
          }
        }
        for (int64_t t = 0; t < tokens; ++t) {
          float* a = &acc[t * kTileColumns];
          const float* xr = &xp[t * w.in + g.row_begin];
          for (int64_t k = 0; k < g.rows; ++k) {
            const float xv = xr[k];
            const float* src = &wt[k * kTileColumns];
            for (int64_t c = 0; c < nc; ++c) a[c] += src[c] * xv;
          }
        }
      }
      for (int64_t t = 0; t < tokens; ++t)
        for (int64_t c = 0; c < nc; ++c)
          y[t * w.out + c0 + c] =
              acc[t * kTileColumns + c] + (w.bias ? half_to_float(w.bias[c0 + c]) : 0.0f);
    }
  });
}

}  // namespace exq::cpu
