#include "backend/cuda/rotary.h"

#include <cmath>
#include <vector>

#include "backend/cuda/launchers.h"
#include "backend/cuda/validate.h"
#include "core/error.h"

namespace exq::cuda {

RotaryTable make_rotary_table(int head_dim, int positions, double theta) {
  EXQ_CHECK(head_dim > 0 && head_dim % 2 == 0, "rotary: head_dim must be even and positive, got {}",
            head_dim);
  EXQ_CHECK(theta > 0.0, "rotary: rope_theta must be positive, got {}", theta);
  std::vector<double> inv_freq(static_cast<size_t>(head_dim / 2));
  for (int i = 0; i < head_dim / 2; ++i)
    inv_freq[static_cast<size_t>(i)] = 1.0 / std::pow(theta, 2.0 * i / head_dim);
  return make_rotary_table(inv_freq, positions);
}

RotaryTable make_rotary_table(std::span<const double> inv_freq, int positions) {
  EXQ_CHECK(!inv_freq.empty(), "rotary: empty frequency list");
  EXQ_CHECK(positions > 0, "rotary: positions must be positive, got {}", positions);
  const auto half = static_cast<int64_t>(inv_freq.size());
  RotaryTable t{Tensor(DType::F32, {positions, half}), Tensor(DType::F32, {positions, half})};
  float* c = t.cos.data<float>();
  float* s = t.sin.data<float>();
  for (int64_t p = 0; p < positions; ++p) {
    for (int64_t i = 0; i < half; ++i) {
      const double angle = static_cast<double>(p) * inv_freq[static_cast<size_t>(i)];
      c[p * half + i] = static_cast<float>(std::cos(angle));
      s[p * half + i] = static_cast<float>(std::sin(angle));
    }
  }
  return t;
}

void rotary(const DeviceView& x, const DeviceView& cos, const DeviceView& sin, StartPos start,
            cudaStream_t stream) {
  constexpr const char* op = "rotary";
  const int start_pos = start.host;
  check_dtype(x, DType::F32, op, "x");
  check_rank(x, 3, op, "x");
  check_dense(x, op, "x");
  const int64_t head_dim = x.dim(2);
  EXQ_CHECK(head_dim % 2 == 0, "cuda rotary: head_dim must be even, got {}", head_dim);
  check_dtype(cos, DType::F32, op, "cos");
  check_rank(cos, 2, op, "cos");
  check_dense(cos, op, "cos");
  check_dtype(sin, DType::F32, op, "sin");
  check_shape(sin, cos.shape(), op, "sin");
  check_dense(sin, op, "sin");
  // A narrower table rotates the first 2 * cos.dim(1) dimensions (partial rotary).
  EXQ_CHECK(cos.dim(1) >= 1 && cos.dim(1) <= head_dim / 2,
            "cuda rotary: table has {} frequencies, head_dim {} takes 1..{}", cos.dim(1), head_dim, head_dim / 2);
  EXQ_CHECK(start_pos >= 0 && start_pos + x.dim(0) <= cos.dim(0),
            "cuda rotary: positions [{}, {}) exceed the table's {} positions", start_pos,
            start_pos + x.dim(0), cos.dim(0));
  rotary_cuda(x.data<float>(), cos.data<float>(), sin.data<float>(),
              checked_int(x.dim(0), op, "tokens"), checked_int(x.dim(1), op, "heads"),
              checked_int(head_dim, op, "head_dim"), static_cast<int>(cos.dim(1)), start, stream);
}

}  // namespace exq::cuda
