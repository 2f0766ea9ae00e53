// GPTQ's second-order statistics for one linear layer: the Hessian proxy H = 2/B * sum_b X_b^T X_b
// over calibration batches (exllamav2's scaling), then act-order, damping and the upper
// Cholesky factor of H^-1 that GPTQ propagates errors with (docs exl2.md section 3).
#pragma once

#include <cstdint>
#include <vector>

namespace exq::quant {

class HessianAccumulator {
 public:
  explicit HessianAccumulator(int64_t in);

  // x: f32 [rows, in] contiguous, the layer inputs of one calibration batch.
  void add_batch(const float* x, int64_t rows);

  int64_t in() const { return in_; }
  int64_t batches() const { return batches_; }
  // Full symmetric [in, in], divided by the batch count. Throws when no batch was added.
  std::vector<float> hessian() const;

 private:
  int64_t in_;
  int64_t batches_ = 0;
  std::vector<float> upper_;  // [in, in], upper triangle accumulated
};

// Shared by every option quantized against the same inputs (q/k/v share one, gate/up one).
struct PreparedHessian {
  int64_t in = 0;
  std::vector<int32_t> perm;  // [in] act-order: channels by diag(H), largest first (stable)
  std::vector<float> u;       // [in, in] row-major upper U with U^T U = inv(H_perm + damping)
  float damp = 0.0f;          // one damping step: max(percdamp * mean(diag H), 1e-5)
  int dampings = 0;           // steps applied; more than 1 means the Cholesky failed before
};

// h: [in, in] symmetric. Adds `damp` to the diagonal and retries (up to 10 steps in all) while
// a Cholesky factorization fails or yields NaN, like exllamav2; throws exq::Error after that.
PreparedHessian prepare_hessian(const std::vector<float>& h, int64_t in, float percdamp = 0.12f);

// No statistics: identity perm and U = I, so GPTQ becomes plain round-to-nearest.
PreparedHessian identity_hessian(int64_t in);

}  // namespace exq::quant
