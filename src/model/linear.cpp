#include "model/linear.h"

#include "backend/cpu/matmul.h"

namespace exq::model {

DenseLinear::DenseLinear(TensorView weight, TensorView bias) : weight_(std::move(weight)) {
  EXQ_CHECK(weight_.rank() == 2, "linear weight must be 2-D, got {}", shape_str(weight_.shape()));
  if (!bias.empty()) {
    EXQ_CHECK(bias.rank() == 1 && bias.dim(0) == weight_.dim(0), "linear bias must be [{}], got {}",
              weight_.dim(0), shape_str(bias.shape()));
    bias_ = to_f32(bias);
  }
}

void DenseLinear::forward(const TensorView& x, const TensorView& y) const {
  cpu::matmul(x, weight_, y);
  if (!bias_.empty()) cpu::add_bias(y, bias_);
}

}  // namespace exq::model
