#include "backend/cpu/norm.h"

#include <cmath>

#include "core/thread_pool.h"

namespace exq::cpu {

void rms_norm(const TensorView& x, const TensorView& w, float eps, const TensorView& out) {
  EXQ_CHECK(x.rank() == 2 && x.dtype() == DType::F32 && x.is_contiguous(),
            "rms_norm: x must be contiguous F32 [T, d], got {} {}", dtype_name(x.dtype()), shape_str(x.shape()));
  EXQ_CHECK(out.dtype() == DType::F32 && out.shape() == x.shape() && out.is_contiguous(),
            "rms_norm: out must be F32 {}, got {}", shape_str(x.shape()), shape_str(out.shape()));
  EXQ_CHECK(w.dtype() == DType::F32 && w.rank() == 1 && w.dim(0) == x.dim(1),
            "rms_norm: weight must be F32 [{}], got {} {}", x.dim(1), dtype_name(w.dtype()), shape_str(w.shape()));
  const int64_t T = x.dim(0), d = x.dim(1);
  const float* xp = x.data<float>();
  const float* wp = w.data<float>();
  float* op = out.data<float>();
  parallel_for(T, [&](int64_t b, int64_t e) {
    for (int64_t t = b; t < e; ++t) {
      const float* xr = xp + t * d;
      float* orow = op + t * d;
      // Double accumulation: the residual stream reaches ~25,000, squares ~6e8.
      double ss = 0;
      for (int64_t i = 0; i < d; ++i) ss += static_cast<double>(xr[i]) * xr[i];
      const float r = static_cast<float>(1.0 / std::sqrt(ss / static_cast<double>(d) + eps));
      for (int64_t i = 0; i < d; ++i) orow[i] = wp[i] * (xr[i] * r);
    }
  }, 16);
}

}  // namespace exq::cpu
