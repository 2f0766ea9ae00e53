#include "backend/cpu/rotary.h"

#include <cmath>

#include "core/thread_pool.h"

namespace exq::cpu {

RopeTable make_rope_table(std::span<const float> inv_freq, int64_t positions, float scale) {
  EXQ_CHECK(!inv_freq.empty() && positions >= 0 && std::isfinite(scale) && scale > 0.0f,
            "make_rope_table: empty frequencies, negative length or a scale of {}", scale);
  const int64_t half = static_cast<int64_t>(inv_freq.size());
  RopeTable t{Tensor(DType::F32, {positions, half}), Tensor(DType::F32, {positions, half})};
  float* c = t.cos.data<float>();
  float* s = t.sin.data<float>();
  for (int64_t p = 0; p < positions; ++p) {
    for (int64_t i = 0; i < half; ++i) {
      const float angle = static_cast<float>(p) * inv_freq[static_cast<size_t>(i)];
      c[p * half + i] = static_cast<float>(std::cos(static_cast<double>(angle))) * scale;
      s[p * half + i] = static_cast<float>(std::sin(static_cast<double>(angle))) * scale;
    }
  }
  return t;
}

void apply_rotary(const TensorView& x, const RopeTable& table, int64_t start) {
  EXQ_CHECK(x.rank() == 3 && x.dtype() == DType::F32 && x.is_contiguous(),
            "apply_rotary: x must be contiguous F32 [T, heads, D], got {} {}", dtype_name(x.dtype()),
            shape_str(x.shape()));
  // A table narrower than the head turns its first 2 * half dimensions (partial rotary).
  const int64_t T = x.dim(0), heads = x.dim(1), D = x.dim(2), half = table.half_dim();
  EXQ_CHECK(half >= 1 && 2 * half <= D, "apply_rotary: head dim {} is below the table's {}", D, 2 * half);
  EXQ_CHECK(start >= 0 && start + T <= table.positions(),
            "apply_rotary: positions [{}, {}) exceed the table's {}", start, start + T, table.positions());
  float* xp = x.data<float>();
  const float* cp = table.cos.data<float>();
  const float* sp = table.sin.data<float>();
  parallel_for(T, [&](int64_t b, int64_t e) {
    for (int64_t t = b; t < e; ++t) {
      const float* c = cp + (start + t) * half;
      const float* s = sp + (start + t) * half;
      for (int64_t h = 0; h < heads; ++h) {
        float* v = xp + (t * heads + h) * D;
        for (int64_t i = 0; i < half; ++i) {
          const float a = v[i], b2 = v[i + half];
          v[i] = a * c[i] - b2 * s[i];
          v[i + half] = b2 * c[i] + a * s[i];
        }
      }
    }
  }, 16);
}

}  // namespace exq::cpu
