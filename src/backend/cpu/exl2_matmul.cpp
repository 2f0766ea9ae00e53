#include "backend/cpu/exl2_matmul.h"

#include <algorithm>
#include <vector>

#include "backend/cpu/exl2_matmul_kernel.h"
#include "backend/cpu/matmul_kernel.h"
#include "core/error.h"
#include "core/half.h"
#include "core/thread_pool.h"

namespace exq::cpu {
namespace {

void validate(const Exl2MatmulWeight& w) {
  EXQ_CHECK(w.in > 0 && w.out > 0 && w.out_pad >= w.out && w.out_pad % 32 == 0 &&
                w.num_groups > 0 && w.q_weight && w.q_scale && w.q_scale_max && w.q_perm &&
                w.groups,
            "exl2_matmul: inconsistent weight description (in {}, out {}, out_pad {}, groups {})",
            w.in, w.out, w.out_pad, w.num_groups);
  int64_t rows = 0;
  for (int64_t g = 0; g < w.num_groups; ++g) {
    const Exl2MatmulGroup& grp = w.groups[g];
    EXQ_CHECK(grp.row_begin == rows && grp.rows > 0,
              "exl2_matmul: group {} does not continue at row {}", g, rows);
    EXQ_CHECK(grp.bits == 2 || grp.bits == 3 || grp.bits == 4 || grp.bits == 5 || grp.bits == 6 ||
                  grp.bits == 8,
              "exl2_matmul: group {} has {} bits, expected 2, 3, 4, 5, 6 or 8", g, grp.bits);
    rows += grp.rows;
  }
  EXQ_CHECK(rows == w.in, "exl2_matmul: groups cover {} rows, expected {}", rows, w.in);
}

// m[g] = fp16(q_scale_max[g] / 256), the same roundings as exllamav2 (see io/exl2.h).
std::vector<float> group_multipliers(const Exl2MatmulWeight& w) {
  std::vector<float> m(static_cast<size_t>(w.num_groups));
  for (int64_t g = 0; g < w.num_groups; ++g)
    m[static_cast<size_t>(g)] = round_to_half(half_to_float(w.q_scale_max[g]) / 256.0f);
  return m;
}

bool use_avx2() { return kernel::active_isa() >= kernel::Isa::Avx2; }

// `n` floats from `buffer`, grown as needed, starting on a 64-byte line: unaligned 512-bit
// loads of x or of a tile would straddle two lines each.
float* aligned_floats(std::vector<float>& buffer, int64_t n) {
  if (buffer.size() < static_cast<size_t>(n + 16)) buffer.resize(static_cast<size_t>(n + 16));
  const auto addr = reinterpret_cast<uintptr_t>(buffer.data());
  return buffer.data() + ((64 - addr % 64) % 64) / sizeof(float);
}

// Output columns per dequantized tile: a multiple of 8 whose float32 tile stays around
// 128 KiB (reread from L2 for every block of x rows, as in cpu::matmul), with at least four
// tiles per thread so small layers still balance.
int64_t tile_columns(int64_t out, int64_t in) {
  const int64_t by_cache = std::max<int64_t>(8, (32768 / in + 4) / 8 * 8);
  const int64_t tasks = 4 * static_cast<int64_t>(num_threads());
  const int64_t by_balance = std::max<int64_t>(8, ((out + tasks - 1) / tasks + 7) / 8 * 8);
  return std::min(by_cache, by_balance);
}

// Runs fn(c0, tile, n) for the column tiles of the layer in parallel; tile holds the float32
// weights of the n output columns [c0, c0 + n) in permuted row order (decoded up to the next
// multiple of 8, within out_pad), 64-byte aligned.
template <typename Fn>
void for_each_tile(const Exl2MatmulWeight& w, const float* m, Fn fn) {
  const int64_t cols = tile_columns(w.out, w.in);
  const int64_t tiles = (w.out + cols - 1) / cols;
  const bool avx2 = use_avx2();
  parallel_for(tiles, [&](int64_t begin, int64_t end) {
    thread_local std::vector<float> buffer;
    float* const tile = aligned_floats(buffer, cols * w.in);
    for (int64_t i = begin; i < end; ++i) {
      const int64_t c0 = i * cols, n = std::min(cols, (w.out - c0 + 7) / 8 * 8);
      if (avx2)
        exl2::tile_avx2(w, m, c0, n, tile);
      else
        exl2::tile_portable(w, m, c0, n, tile);
      fn(c0, tile, std::min(n, w.out - c0));
    }
  });
}

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

namespace exl2 {

void tile_portable(const Exl2MatmulWeight& w, const float* m, int64_t c0, int64_t n, float* tile) {
  std::vector<float> scale(static_cast<size_t>(n));
  for (int64_t gi = 0; gi < w.num_groups; ++gi) {
    const Exl2MatmulGroup& g = w.groups[gi];
    const uint32_t* qs_row = w.q_scale + gi * (w.out_pad / 8);
    for (int64_t j = 0; j < n; ++j) {
      const int64_t c = c0 + j;
      const float qs = static_cast<float>(((qs_row[c / 8] >> (4 * (c % 8))) & 15u) + 1u);
      scale[static_cast<size_t>(j)] = round_to_half(qs * qs * m[gi]);
    }
    const uint32_t mask = (1u << g.bits) - 1u;
    const int zero = 1 << (g.bits - 1);
    const uint32_t* words = w.q_weight + g.word_begin * w.out_pad + c0;
    for (int64_t k = 0; k < g.rows; ++k) {
      const int64_t off = k * g.bits;
      const uint32_t* w0 = words + (off >> 5) * w.out_pad;
      const int sh = static_cast<int>(off & 31);
      const bool straddles = sh + g.bits > 32;
      float* dst = tile + g.row_begin + k;
      for (int64_t j = 0; j < n; ++j) {
        uint32_t q = w0[j] >> sh;
        if (straddles) q |= w0[j + w.out_pad] << (32 - sh);
        const int v = static_cast<int>(q & mask) - zero;
        dst[j * w.in] = round_to_half(static_cast<float>(v) * scale[static_cast<size_t>(j)]);
      }
    }
  }
}

void fused_portable(const Exl2MatmulWeight& w, const float* m, const float* xp, int64_t tokens,
                    int64_t c0, float* acc) {
  thread_local std::vector<float> tile;
  tile.resize(static_cast<size_t>(kFusedColumns * w.in));
  tile_portable(w, m, c0, kFusedColumns, tile.data());
  for (int64_t t = 0; t < tokens; ++t)
    for (int64_t j = 0; j < kFusedColumns; ++j) {
      const float* wr = &tile[static_cast<size_t>(j * w.in)];
      const float* xr = xp + t * w.in;
      float s = 0.0f;
      for (int64_t i = 0; i < w.in; ++i) s += xr[i] * wr[i];
      acc[t * kFusedColumns + j] = s;
    }
}

}  // namespace exl2

int64_t exl2_dequantize_min_tokens() {
  // Per-token CPU time of the fused path is flat (weights are decoded again for every 4
  // tokens), the tile path's falls with T; they cross near 10 (AVX-512) and 8 (AVX2) tokens
  // on the SmolLM2 fixture layers. The portable fused path is the tile path with a slower dot.
  switch (kernel::active_isa()) {
    case kernel::Isa::Avx512: return 10;
    case kernel::Isa::Avx2: return 8;
    case kernel::Isa::Portable: break;
  }
  return 1;
}

void exl2_matmul(const Exl2MatmulWeight& w, const float* x, int64_t tokens, float* y,
                 Exl2Path path) {
  validate(w);
  EXQ_CHECK(tokens >= 0, "exl2_matmul: negative token count {}", tokens);
  if (tokens == 0) return;
  const std::vector<float> m = group_multipliers(w);

  // x in the permuted channel order, so each group reads a contiguous slice. Up to 16 MiB the
  // buffer is kept per calling thread (a prefill's x is megabytes: no fresh pages per call);
  // workers reach it through the pointer, never through the thread_local's name.
  thread_local std::vector<float> xp_kept;
  std::vector<float> xp_once;
  float* const xp = aligned_floats(tokens * w.in <= (1 << 22) ? xp_kept : xp_once, tokens * w.in);
  auto gather = [&](int64_t t0, int64_t t1) {
    for (int64_t t = t0; t < t1; ++t)
      for (int64_t i = 0; i < w.in; ++i) xp[t * w.in + i] = x[t * w.in + w.q_perm[i]];
  };
  if (tokens * w.in >= (1 << 16))
    parallel_for(tokens, gather);
  else
    gather(0, tokens);

  auto store = [&](int64_t t, int64_t c0, int64_t n, const float* src) {
    float* dst = y + t * w.out + c0;
    if (w.bias)
      for (int64_t j = 0; j < n; ++j) dst[j] = src[j] + half_to_float(w.bias[c0 + j]);
    else
      std::copy_n(src, n, dst);
  };

  if (path == Exl2Path::Fused ||
      (path == Exl2Path::Auto && tokens < exl2_dequantize_min_tokens())) {
    const kernel::Isa isa = kernel::active_isa();
    const int64_t blocks = (w.out + exl2::kFusedColumns - 1) / exl2::kFusedColumns;
    parallel_for(blocks, [&](int64_t begin, int64_t end) {
      std::vector<float> acc(static_cast<size_t>(tokens * exl2::kFusedColumns));
      for (int64_t b = begin; b < end; ++b) {
        const int64_t c0 = b * exl2::kFusedColumns;
        if (isa == kernel::Isa::Avx512)
          exl2::fused_avx512(w, m.data(), xp, tokens, c0, acc.data());
        else if (isa == kernel::Isa::Avx2)
          exl2::fused_avx2(w, m.data(), xp, tokens, c0, acc.data());
        else
          exl2::fused_portable(w, m.data(), xp, tokens, c0, acc.data());
        const int64_t n = std::min(exl2::kFusedColumns, w.out - c0);
        for (int64_t t = 0; t < tokens; ++t) store(t, c0, n, &acc[t * exl2::kFusedColumns]);
      }
    });
    return;
  }

  for_each_tile(w, m.data(), [&](int64_t c0, const float* tile, int64_t n) {
    kernel::gemm(xp, w.in, tokens, tile, DType::F32, n, w.in, y + c0, w.out);
    if (w.bias)
      for (int64_t t = 0; t < tokens; ++t)
        for (int64_t j = 0; j < n; ++j) y[t * w.out + c0 + j] += half_to_float(w.bias[c0 + j]);
  });
}

void exl2_dequantize(const Exl2MatmulWeight& w, uint16_t* dst) {
  validate(w);
  const std::vector<float> m = group_multipliers(w);
  for_each_tile(w, m.data(), [&](int64_t c0, const float* tile, int64_t n) {
    for (int64_t j = 0; j < n; ++j)
      for (int64_t i = 0; i < w.in; ++i)
        dst[(c0 + j) * w.in + w.q_perm[i]] = float_to_half(tile[j * w.in + i]);
  });
}

}  // namespace exq::cpu
