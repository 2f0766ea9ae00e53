// EXL2-quantized linear layers on the CPU: the packed tensors (usually views into an mmapped
// safetensors file) are validated once and multiplied in place by cpu::exl2_matmul, so no
// dequantized copy of the weight is kept. Also the bits-per-weight accounting of a layer.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "backend/cpu/exl2_matmul.h"
#include "io/exl2.h"
#include "model/linear.h"

namespace exq::model {

// Bits of one stored EXL2 layer, counted as exllamav2 does (docs exl2.md section 4): the
// codes, per group 16 (q_scale_max) + 32 (q_groups) + 4*out (scales), 32*in (q_invperm),
// 16*out for a bias; out is the true output size.
struct Exl2Bits {
  int64_t weights = 0;      // in * out
  double total_bits = 0.0;  // everything above
  double code_bits = 0.0;   // the quantized values alone
  double bpw() const { return weights > 0 ? total_bits / static_cast<double>(weights) : 0.0; }
};
Exl2Bits exl2_bits(const std::vector<io::Exl2Group>& groups, int64_t in, int64_t out, bool bias);

class Exl2Linear final : public Linear {
 public:
  // Validates `t` against the HF shape [out, in] (io::validate_exl2); errors name `key`.<tensor>.
  // The views must outlive this object. Tensors that are not 4-byte aligned in the file are
  // copied (the matmul reads 32-bit words); everything else is used in place.
  Exl2Linear(const io::Exl2Tensors& t, int64_t in, int64_t out, const std::string& key);
  Exl2Linear(const Exl2Linear&) = delete;
  Exl2Linear& operator=(const Exl2Linear&) = delete;

  int64_t in_features() const override { return weight_.in; }
  int64_t out_features() const override { return weight_.out; }
  void forward(const TensorView& x, const TensorView& y) const override;

  const std::vector<io::Exl2Group>& groups() const { return groups_; }
  Exl2Bits bits() const { return exl2_bits(groups_, weight_.in, weight_.out, weight_.bias != nullptr); }
  // The description cpu::exl2_matmul takes; pointers stay valid while this object lives.
  const cpu::Exl2MatmulWeight& matmul_weight() const { return weight_; }

 private:
  std::vector<io::Exl2Group> groups_;
  std::vector<cpu::Exl2MatmulGroup> matmul_groups_;
  std::vector<int32_t> perm_;  // argsort(q_invperm)
  std::vector<Tensor> copies_;  // realigned tensors, only when the file's were not aligned
  cpu::Exl2MatmulWeight weight_;
};

}  // namespace exq::model
