#include "core/tensor.h"

#include <cmath>
#include <cstdlib>
#include <cstring>
#include <fmt/ranges.h>

#include "core/half.h"

namespace exq {

int64_t shape_numel(const Shape& shape) {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

std::string shape_str(const Shape& shape) { return fmt::format("[{}]", fmt::join(shape, ", ")); }

Shape contiguous_strides(const Shape& shape) {
  Shape s(shape.size());
  int64_t acc = 1;
  for (size_t i = shape.size(); i-- > 0;) {
    s[i] = acc;
    acc *= shape[i];
  }
  return s;
}

TensorView::TensorView(void* data, DType dtype, Shape shape)
    : data_(data), dtype_(dtype), shape_(std::move(shape)), strides_(contiguous_strides(shape_)) {
  for (int64_t d : shape_) EXQ_CHECK(d >= 0, "negative dimension in shape {}", shape_str(shape_));
}

TensorView::TensorView(void* data, DType dtype, Shape shape, Shape strides)
    : data_(data), dtype_(dtype), shape_(std::move(shape)), strides_(std::move(strides)) {
  EXQ_CHECK(shape_.size() == strides_.size(), "shape {} and strides {} differ in rank",
            shape_str(shape_), shape_str(strides_));
}

int64_t TensorView::dim(int i) const {
  const int r = rank();
  const int k = i < 0 ? i + r : i;
  EXQ_CHECK(k >= 0 && k < r, "dimension {} out of range for shape {}", i, shape_str(shape_));
  return shape_[static_cast<size_t>(k)];
}

bool TensorView::is_contiguous() const { return strides_ == contiguous_strides(shape_); }

void TensorView::check_access(size_t elem_size, int half_ok, DType want) const {
  const bool ok = half_ok ? (dtype_ == DType::F16 || dtype_ == DType::BF16) : dtype_ == want;
  EXQ_CHECK(ok && elem_size == dtype_size(dtype_), "tensor of dtype {} accessed as {}",
            dtype_name(dtype_), dtype_name(want));
}

TensorView TensorView::slice0(int64_t begin, int64_t end) const {
  EXQ_CHECK(rank() >= 1 && begin >= 0 && begin <= end && end <= shape_[0],
            "slice [{}, {}) out of range for shape {}", begin, end, shape_str(shape_));
  Shape s = shape_;
  s[0] = end - begin;
  auto* p = static_cast<char*>(data_) + begin * strides_[0] * static_cast<int64_t>(dtype_size(dtype_));
  return TensorView(p, dtype_, std::move(s), strides_);
}

TensorView TensorView::reshape(Shape shape) const {
  EXQ_CHECK(is_contiguous(), "reshape of a non-contiguous tensor");
  EXQ_CHECK(shape_numel(shape) == numel(), "cannot reshape {} to {}", shape_str(shape_),
            shape_str(shape));
  return TensorView(data_, dtype_, std::move(shape));
}

void TensorView::expect(DType dtype, const Shape& shape, const std::string& what) const {
  if (dtype_ != dtype || shape_ != shape)
    throw Error(fmt::format("expected {} {}, got {} {}", dtype_name(dtype), shape_str(shape),
                            dtype_name(dtype_), shape_str(shape_)),
                ErrorContext{.tensor = what});
}

void Tensor::Free::operator()(void* p) const { std::free(p); }

Tensor::Tensor(DType dtype, Shape shape) : dtype_(dtype), shape_(std::move(shape)) {
  for (int64_t d : shape_) EXQ_CHECK(d >= 0, "negative dimension in shape {}", shape_str(shape_));
  const size_t bytes = nbytes();
  const size_t rounded = (bytes + 63) / 64 * 64;
  void* p = std::aligned_alloc(64, rounded == 0 ? 64 : rounded);
  EXQ_CHECK(p != nullptr, "out of host memory allocating {} bytes for a {} tensor", bytes,
            shape_str(shape_));
  data_.reset(p);
}

Tensor Tensor::zeros(DType dtype, Shape shape) {
  Tensor t(dtype, std::move(shape));
  std::memset(t.raw(), 0, t.nbytes());
  return t;
}

Tensor Tensor::copy_of(const TensorView& view) {
  Tensor t(view.dtype(), view.shape());
  if (view.is_contiguous()) {
    if (t.nbytes()) std::memcpy(t.raw(), view.raw(), t.nbytes());
    return t;
  }
  // Generic strided copy, element by element.
  const size_t es = dtype_size(view.dtype());
  const int r = view.rank();
  std::vector<int64_t> idx(static_cast<size_t>(r), 0);
  auto* dst = static_cast<char*>(t.raw());
  const auto* src = static_cast<const char*>(view.raw());
  for (int64_t n = 0; n < t.numel(); ++n) {
    int64_t off = 0;
    for (int k = 0; k < r; ++k) off += idx[static_cast<size_t>(k)] * view.strides()[static_cast<size_t>(k)];
    std::memcpy(dst + n * static_cast<int64_t>(es), src + off * static_cast<int64_t>(es), es);
    for (int k = r - 1; k >= 0; --k) {
      auto& i = idx[static_cast<size_t>(k)];
      if (++i < view.shape()[static_cast<size_t>(k)]) break;
      i = 0;
    }
  }
  return t;
}

Tensor to_f32(const TensorView& view) {
  Tensor c = view.is_contiguous() ? Tensor() : Tensor::copy_of(view);
  const TensorView v = c.empty() ? view : c.view();
  Tensor out(DType::F32, v.shape());
  float* dst = out.data<float>();
  const int64_t n = v.numel();
  switch (v.dtype()) {
    case DType::F32:
      if (n) std::memcpy(dst, v.raw(), static_cast<size_t>(n) * 4);
      break;
    case DType::F16: {
      const auto* s = static_cast<const uint16_t*>(v.raw());
      for (int64_t i = 0; i < n; ++i) dst[i] = half_to_float(s[i]);
      break;
    }
    case DType::BF16: {
      const auto* s = static_cast<const uint16_t*>(v.raw());
      for (int64_t i = 0; i < n; ++i) dst[i] = bf16_to_float(s[i]);
      break;
    }
    default:
      throw Error(fmt::format("cannot convert {} tensor to F32", dtype_name(v.dtype())));
  }
  return out;
}

bool has_non_finite(const TensorView& view, int64_t* index) {
  const Tensor f = to_f32(view);
  const float* p = f.data<float>();
  for (int64_t i = 0; i < f.numel(); ++i) {
    if (!std::isfinite(p[i])) {
      if (index) *index = i;
      return true;
    }
  }
  return false;
}

}  // namespace exq
