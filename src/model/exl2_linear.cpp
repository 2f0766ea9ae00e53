#include "model/exl2_linear.h"

#include <fmt/format.h>


namespace exq::model {
namespace {

// `v` itself when its data is aligned to `align` bytes, else a copy kept in `copies`.
TensorView aligned(const TensorView& v, size_t align, std::vector<Tensor>& copies) {
  if (v.empty() || reinterpret_cast<uintptr_t>(v.raw()) % align == 0) return v;
  copies.push_back(Tensor::copy_of(v));
  return copies.back().view();
}

}  // namespace

Exl2Bits exl2_bits(const std::vector<io::Exl2Group>& groups, int64_t in, int64_t out, bool bias) {
  Exl2Bits b;
  b.weights = in * out;
  for (const io::Exl2Group& g : groups) {
    b.code_bits += static_cast<double>(g.rows) * static_cast<double>(out) * g.bits;
    b.total_bits += 16.0 + 32.0 + 4.0 * static_cast<double>(out);
  }
  b.total_bits += b.code_bits + 32.0 * static_cast<double>(in);
  if (bias) b.total_bits += 16.0 * static_cast<double>(out);
  return b;
}

Exl2Linear::Exl2Linear(const io::Exl2Tensors& stored, int64_t in, int64_t out,
                       const std::string& key)
    : groups_(io::validate_exl2(stored, in, out, key)) {
  // Realign what the matmul reads as 16/32-bit words (safetensors offsets need not be aligned).
  io::Exl2Tensors t = stored;
  t.q_weight = aligned(t.q_weight, 4, copies_);
  t.q_scale = aligned(t.q_scale, 4, copies_);
  t.q_scale_max = aligned(t.q_scale_max, 2, copies_);
  t.q_invperm = aligned(t.q_invperm, 4, copies_);
  t.bias = aligned(t.bias, 2, copies_);
  if (!t.bias.empty()) {
    const auto b = t.bias.span<uint16_t>();
    for (size_t i = 0; i < b.size(); ++i)
      if ((b[i] & 0x7c00) == 0x7c00)
        throw Error(fmt::format("non-finite value (NaN or Inf) at element {}", i),
                    ErrorContext{.tensor = key + ".bias"});
  }

  for (const io::Exl2Group& g : groups_)
    matmul_groups_.push_back({g.bits, g.row_begin, g.rows, g.word_begin});
  // validate_exl2 has checked that q_invperm is a permutation of 0..in-1.
  perm_.resize(static_cast<size_t>(in));
  const int32_t* inv = t.q_invperm.data<int32_t>();
  for (int64_t i = 0; i < in; ++i) perm_[static_cast<size_t>(inv[i])] = static_cast<int32_t>(i);

  weight_.q_weight = reinterpret_cast<const uint32_t*>(t.q_weight.data<int32_t>());
  weight_.q_scale = reinterpret_cast<const uint32_t*>(t.q_scale.data<int32_t>());
  weight_.q_scale_max = t.q_scale_max.data<uint16_t>();
  weight_.q_perm = perm_.data();
  weight_.groups = matmul_groups_.data();
  weight_.num_groups = static_cast<int64_t>(matmul_groups_.size());
  weight_.bias = t.bias.empty() ? nullptr : t.bias.data<uint16_t>();
  weight_.in = in;
  weight_.out = out;
  weight_.out_pad = io::exl2_out_pad(out);
}

void Exl2Linear::forward(const TensorView& x, const TensorView& y) const {
  EXQ_CHECK(x.dtype() == DType::F32 && y.dtype() == DType::F32 && x.rank() == 2 && y.rank() == 2 &&
                x.dim(1) == weight_.in && y.dim(1) == weight_.out && x.dim(0) == y.dim(0),
            "EXL2 linear [{}, {}]: expected x F32 [T, {}] and y F32 [T, {}], got {} {} and {} {}",
            weight_.out, weight_.in, weight_.in, weight_.out, dtype_name(x.dtype()),
            shape_str(x.shape()), dtype_name(y.dtype()), shape_str(y.shape()));
  const int64_t tokens = x.dim(0);
  // The kernel takes packed rows; strided views (not used by the forward today) go through copies.
  Tensor xc, yc;
  const float* xp = x.is_contiguous() ? x.data<float>() : (xc = Tensor::copy_of(x)).data<float>();
  if (!y.is_contiguous()) yc = Tensor(DType::F32, {tokens, weight_.out});
  float* yp = y.is_contiguous() ? y.data<float>() : yc.data<float>();
  cpu::exl2_matmul(weight_, xp, tokens, yp);
  if (!yc.empty()) {
    float* dst = y.data<float>();
    const float* src = yc.data<float>();
    for (int64_t r = 0; r < tokens; ++r)
      for (int64_t c = 0; c < weight_.out; ++c)
        dst[r * y.strides()[0] + c * y.strides()[1]] = src[r * weight_.out + c];
  }
}

}  // namespace exq::model
