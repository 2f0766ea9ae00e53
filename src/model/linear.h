// The seam between the forward pass and how a linear layer's weight is stored. The forward
// only calls Linear::forward; dense 16/32-bit weights are DenseLinear, and quantized formats
// (EXL2) add their own subclass without touching the forward.
#pragma once

#include <cstdint>
#include <memory>

#include "core/tensor.h"

namespace exq::model {

class Linear {
 public:
  virtual ~Linear() = default;
  virtual int64_t in_features() const = 0;
  virtual int64_t out_features() const = 0;
  // y[T, out] = x[T, in] @ W^T (+ bias). x, y: F32 with contiguous rows. Thread-compatible:
  // concurrent calls are fine, the layer holds no mutable state.
  virtual void forward(const TensorView& x, const TensorView& y) const = 0;
};

// W [out, in] in its file dtype (F32/F16/BF16), used in place (e.g. a view into an mmapped
// safetensors file that must outlive this object); optional bias [out].
class DenseLinear final : public Linear {
 public:
  explicit DenseLinear(TensorView weight, TensorView bias = {});
  int64_t in_features() const override { return weight_.dim(1); }
  int64_t out_features() const override { return weight_.dim(0); }
  void forward(const TensorView& x, const TensorView& y) const override;
  const TensorView& weight() const { return weight_; }
  const Tensor& bias() const { return bias_; }  // F32 [out], empty without bias

 private:
  TensorView weight_;  // [out, in]
  Tensor bias_;        // [out] F32, empty without bias
};

}  // namespace exq::model
