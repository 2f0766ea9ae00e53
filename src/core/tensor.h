// Tensor (owning, move-only, host memory, 64-byte aligned) and TensorView (non-owning,
// strided). Shapes are row-major, outermost first, as in safetensors and PyTorch.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "core/dtype.h"
#include "core/error.h"

namespace exq {

using Shape = std::vector<int64_t>;

int64_t shape_numel(const Shape& shape);
std::string shape_str(const Shape& shape);  // "[3, 4]"
Shape contiguous_strides(const Shape& shape);  // in elements

template <typename T>
constexpr DType dtype_of();
template <> constexpr DType dtype_of<float>() { return DType::F32; }
template <> constexpr DType dtype_of<int8_t>() { return DType::I8; }
template <> constexpr DType dtype_of<int16_t>() { return DType::I16; }
template <> constexpr DType dtype_of<int32_t>() { return DType::I32; }
template <> constexpr DType dtype_of<uint8_t>() { return DType::U8; }

// Non-owning view. Strides are in elements. Const-ness of the data is the caller's promise:
// views of read-only mmapped files must not be written through.
class TensorView {
 public:
  TensorView() = default;
  TensorView(void* data, DType dtype, Shape shape);
  TensorView(void* data, DType dtype, Shape shape, Shape strides);

  DType dtype() const { return dtype_; }
  const Shape& shape() const { return shape_; }
  const Shape& strides() const { return strides_; }
  int64_t dim(int i) const;  // negative i counts from the end
  int rank() const { return static_cast<int>(shape_.size()); }
  int64_t numel() const { return shape_numel(shape_); }
  size_t nbytes() const { return static_cast<size_t>(numel()) * dtype_size(dtype_); }
  bool is_contiguous() const;
  bool empty() const { return data_ == nullptr; }

  void* raw() const { return data_; }
  // Typed access; throws when T does not match the dtype (f16/bf16 are read as uint16_t).
  template <typename T>
  T* data() const {
    check_access(sizeof(T), is_half_type<T>() ? 2 : 0, dtype_of_or_half<T>());
    return static_cast<T*>(data_);
  }
  template <typename T>
  std::span<T> span() const {
    return std::span<T>(data<T>(), static_cast<size_t>(numel()));
  }

  // Views of a slice along dim 0 and of a reshaped contiguous tensor.
  TensorView slice0(int64_t begin, int64_t end) const;
  TensorView reshape(Shape shape) const;

  // Throws exq::Error naming `what` when dtype or shape differ.
  void expect(DType dtype, const Shape& shape, const std::string& what) const;

 private:
  template <typename T>
  static constexpr bool is_half_type() { return std::is_same_v<T, uint16_t>; }
  template <typename T>
  static constexpr DType dtype_of_or_half() {
    if constexpr (std::is_same_v<T, uint16_t>) return DType::F16;
    else return dtype_of<std::remove_const_t<T>>();
  }
  void check_access(size_t elem_size, int half_ok, DType want) const;

  void* data_ = nullptr;
  DType dtype_ = DType::F32;
  Shape shape_;
  Shape strides_;
};

// Owning tensor in 64-byte aligned host memory. Move-only.
class Tensor {
 public:
  Tensor() = default;
  Tensor(DType dtype, Shape shape);  // uninitialized
  static Tensor zeros(DType dtype, Shape shape);
  static Tensor copy_of(const TensorView& view);  // contiguous copy

  Tensor(Tensor&&) noexcept = default;
  Tensor& operator=(Tensor&&) noexcept = default;
  Tensor(const Tensor&) = delete;
  Tensor& operator=(const Tensor&) = delete;

  TensorView view() const { return TensorView(data_.get(), dtype_, shape_); }
  operator TensorView() const { return view(); }

  DType dtype() const { return dtype_; }
  const Shape& shape() const { return shape_; }
  int64_t dim(int i) const { return view().dim(i); }
  int64_t numel() const { return shape_numel(shape_); }
  size_t nbytes() const { return static_cast<size_t>(numel()) * dtype_size(dtype_); }
  bool empty() const { return !data_; }
  void* raw() const { return data_.get(); }
  template <typename T>
  T* data() const { return view().data<T>(); }
  template <typename T>
  std::span<T> span() const { return view().span<T>(); }

 private:
  struct Free {
    void operator()(void* p) const;
  };
  std::unique_ptr<void, Free> data_;
  DType dtype_ = DType::F32;
  Shape shape_;
};

// Float conversion helpers used across io/model/tests.
// Converts any float dtype (f32/f16/bf16) view to a new contiguous f32 tensor.
Tensor to_f32(const TensorView& view);
// True when a float tensor (f32/f16/bf16) holds NaN or Inf; `index` gets the first one.
bool has_non_finite(const TensorView& view, int64_t* index = nullptr);

}  // namespace exq
