#include "quant/gptq.h"

#include <cblas.h>

#include <algorithm>
#include <cmath>

#include "backend/cpu/exl2_matmul.h"
#include "core/error.h"
#include "core/half.h"
#include "core/thread_pool.h"
#include "quant/gptq_kernel.h"

namespace exq::quant {
namespace {

constexpr int kScaleGrid = 97;  // p = 0.70 .. 1.20 in 96 steps
constexpr float kScaleMinP = 0.70f;
constexpr float kScaleMaxP = 1.20f;
constexpr float kErrorNorm = 3.5f;

float grid_p(int i) {
  return kScaleMinP + (kScaleMaxP - kScaleMinP) * static_cast<float>(i) / (kScaleGrid - 1);
}

inline float quantize_value(float w, float scale, float zero, float maxq) {
  if (scale == 0.0f) return zero;
  return std::clamp(kernel::round_half_even(w / scale) + zero, 0.0f, maxq);
}

}  // namespace

GroupScales search_group_scales(const float* x, int64_t rows, int64_t out, int bits) {
  static_assert(kErrorNorm == 3.5f, "kernel::scale_errors computes the 3.5 norm");
  const float maxq = static_cast<float>((1 << bits) - 1);
  const float zero = static_cast<float>(1 << (bits - 1));
  std::vector<float> base(static_cast<size_t>(out));
  float smax = 0.0f;
  for (int64_t c = 0; c < out; ++c) {
    float m = 0.0f;
    for (int64_t r = 0; r < rows; ++r) m = std::max(m, std::fabs(x[r * out + c]));
    base[c] = (m + 1e-12f) / (maxq / 2.0f);
    smax = std::max(smax, base[c]);
  }
  GroupScales s;
  s.qs.resize(static_cast<size_t>(out));
  std::vector<float> sw(static_cast<size_t>(out));  // qs^2/256 * smax
  for (int64_t c = 0; c < out; ++c) {
    const float q = std::clamp(std::nearbyint(std::sqrt(base[c] / smax) * 16.0f), 1.0f, 16.0f);
    s.qs[c] = static_cast<uint8_t>(q);
    sw[c] = q * q / 256.0f * smax;
  }

  // Error of each grid point per column (tiles of columns across threads), then summed in a
  // fixed order so the choice does not depend on the thread count.
  std::vector<float> col_err(static_cast<size_t>(kScaleGrid * out));
  float grid[kScaleGrid];
  for (int i = 0; i < kScaleGrid; ++i) grid[i] = grid_p(i);
  constexpr int64_t kTile = 64;  // columns per task: one AVX2 register tile
  parallel_for((out + kTile - 1) / kTile, [&](int64_t t0, int64_t t1) {
    kernel::scale_errors(x, rows, out, t0 * kTile, std::min(out, t1 * kTile), sw.data(), grid,
                         kScaleGrid, zero, maxq, col_err.data());
  });
  std::vector<double> err(kScaleGrid, 0.0);
  for (int i = 0; i < kScaleGrid; ++i)
    for (int64_t c = 0; c < out; ++c) err[i] += col_err[i * out + c];
  const int best = static_cast<int>(std::min_element(err.begin(), err.end()) - err.begin());

  s.scale_max = float_to_half(smax * grid_p(best));
  // The kernel's scales: fp16(qs^2 * fp16(q_scale_max / 256)) (see io/exl2.h).
  const float m = cpu::round_to_half(half_to_float(s.scale_max) / 256.0f);
  s.scale.resize(static_cast<size_t>(out));
  for (int64_t c = 0; c < out; ++c) {
    const float q = s.qs[c];
    s.scale[c] = cpu::round_to_half(q * q * m);
  }
  return s;
}

GptqResult gptq_quantize(const float* w, int64_t out, int64_t in, const PreparedHessian& h,
                         const QuantOption& option) {
  EXQ_CHECK(h.in == in && h.u.size() == static_cast<size_t>(in * in) &&
                h.perm.size() == static_cast<size_t>(in),
            "GPTQ: Hessian prepared for {} inputs, layer has {}", h.in, in);
  EXQ_CHECK(out > 0 && in > 0, "GPTQ: bad layer shape [{}, {}]", out, in);
  const std::vector<GroupSpan> layout = group_layout(option, in);

  // W' = W^T[perm]: row i is input channel perm[i], columns are outputs.
  std::vector<float> wp(static_cast<size_t>(in * out));
  for (int64_t i = 0; i < in; ++i)
    for (int64_t c = 0; c < out; ++c) wp[i * out + c] = w[c * in + h.perm[i]];

  GptqResult res;
  io::Exl2Linear& l = res.layer;
  l.in = in;
  l.out = out;
  std::vector<std::pair<int, int64_t>> bits_rows;
  for (const GroupSpan& g : layout) bits_rows.emplace_back(g.bits, g.rows);
  l.groups = io::exl2_group_table(bits_rows);
  l.q.resize(static_cast<size_t>(in * out));
  l.qs.resize(layout.size() * static_cast<size_t>(out));
  l.perm = h.perm;
  l.invperm.resize(static_cast<size_t>(in));
  for (int64_t i = 0; i < in; ++i) l.invperm[h.perm[i]] = static_cast<int32_t>(i);
  std::vector<float> wq(static_cast<size_t>(in * out));   // reconstructed, permuted
  std::vector<float> err(static_cast<size_t>(in * out));  // (w - q) / U[r, r]
  const float* u = h.u.data();

  for (size_t gi = 0; gi < layout.size(); ++gi) {
    const GroupSpan& g = layout[gi];
    const int64_t a = g.row_begin, b = g.row_begin + g.rows;
    const GroupScales s = search_group_scales(&wp[a * out], g.rows, out, g.bits);
    std::copy(s.qs.begin(), s.qs.end(), l.qs.begin() + static_cast<int64_t>(gi) * out);
    l.scale_max.push_back(s.scale_max);
    const float maxq = static_cast<float>((1 << g.bits) - 1);
    const float zero = static_cast<float>(1 << (g.bits - 1));
    for (int64_t r = a; r < b; ++r) {
      const float d = u[r * in + r];
      float* row = &wp[r * out];
      for (int64_t c = 0; c < out; ++c) {
        const float q = quantize_value(row[c], s.scale[c], zero, maxq);
        l.q[r * out + c] = static_cast<uint8_t>(q);
        wq[r * out + c] = cpu::round_to_half((q - zero) * s.scale[c]);
        err[r * out + c] = (row[c] - wq[r * out + c]) / d;
      }
      // Within the group: W[j] -= U[r, j] * e_r for the group's later rows.
      for (int64_t j = r + 1; j < b; ++j) {
        const float f = u[r * in + j];
        if (f == 0.0f) continue;
        float* rj = &wp[j * out];
        const float* e = &err[r * out];
        for (int64_t c = 0; c < out; ++c) rj[c] -= f * e[c];
      }
    }
    // Later groups: W[b:] -= U[a:b, b:]^T E[a:b].
    if (b < in)
      cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, static_cast<int>(in - b),
                  static_cast<int>(out), static_cast<int>(b - a), -1.0f, &u[a * in + b],
                  static_cast<int>(in), &err[a * out], static_cast<int>(out), 1.0f, &wp[b * out],
                  static_cast<int>(out));
  }

  res.weight.resize(static_cast<size_t>(in * out));
  for (int64_t i = 0; i < in; ++i)
    for (int64_t c = 0; c < out; ++c) res.weight[c * in + h.perm[i]] = wq[i * out + c];
  return res;
}

}  // namespace exq::quant
