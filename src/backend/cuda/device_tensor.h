// DeviceView (non-owning, device address) and DeviceTensor (owning, move-only, memory from a
// CachingAllocator), plus host <-> device copies. DeviceView wraps a TensorView so shape and
// dtype checks are shared, but is a separate type so a host view can't reach a kernel.
#pragma once

#include <cuda_runtime_api.h>

#include <string>

#include "backend/cuda/allocator.h"
#include "backend/cuda/memory.h"
#include "core/tensor.h"

namespace exq::cuda {

class DeviceView {
 public:
  DeviceView() = default;
  DeviceView(void* data, DType dtype, Shape shape) : view_(data, dtype, std::move(shape)) {}

  DType dtype() const { return view_.dtype(); }
  const Shape& shape() const { return view_.shape(); }
  int64_t dim(int i) const { return view_.dim(i); }
  int rank() const { return view_.rank(); }
  int64_t numel() const { return view_.numel(); }
  size_t nbytes() const { return view_.nbytes(); }
  bool is_contiguous() const { return view_.is_contiguous(); }
  bool empty() const { return view_.empty(); }
  void* raw() const { return view_.raw(); }
  // Typed device pointer; throws when T does not match the dtype (f16/bf16 as uint16_t).
  template <typename T>
  T* data() const { return view_.data<T>(); }

  DeviceView slice0(int64_t begin, int64_t end) const { return DeviceView(view_.slice0(begin, end)); }
  DeviceView reshape(Shape shape) const { return DeviceView(view_.reshape(std::move(shape))); }
  // Throws exq::Error naming `what` when dtype or shape differ.
  void expect(DType dtype, const Shape& shape, const std::string& what) const {
    view_.expect(dtype, shape, what);
  }

 private:
  explicit DeviceView(TensorView view) : view_(std::move(view)) {}
  TensorView view_;  // its data pointer is a device address
};

class DeviceTensor {
 public:
  DeviceTensor() = default;
  // Uninitialized; memory from `allocator`, ordered on `stream`.
  DeviceTensor(DType dtype, Shape shape, CachingAllocator& allocator, cudaStream_t stream = nullptr);

  DeviceTensor(DeviceTensor&&) noexcept = default;
  DeviceTensor& operator=(DeviceTensor&&) noexcept = default;
  DeviceTensor(const DeviceTensor&) = delete;
  DeviceTensor& operator=(const DeviceTensor&) = delete;

  DeviceView view() const { return DeviceView(buffer_.data(), dtype_, shape_); }
  operator DeviceView() const { return view(); }
  DType dtype() const { return dtype_; }
  const Shape& shape() const { return shape_; }
  int64_t numel() const { return shape_numel(shape_); }
  size_t nbytes() const { return static_cast<size_t>(numel()) * dtype_size(dtype_); }
  bool empty() const { return buffer_.empty(); }
  void* raw() const { return buffer_.data(); }

 private:
  DeviceBuffer buffer_;
  DType dtype_ = DType::F32;
  Shape shape_;
};

// Asynchronous copies on `stream`; shapes and dtypes must match, both sides contiguous. Host
// memory must stay alive until the stream reaches the copy (pageable memory is staged at once).
void copy_to_device(const TensorView& host, const DeviceView& device, cudaStream_t stream);
void copy_to_host(const DeviceView& device, const TensorView& host, cudaStream_t stream);
void copy_device(const DeviceView& src, const DeviceView& dst, cudaStream_t stream);
// Convenience: new DeviceTensor holding `host`; and a host copy of `device` (synchronizes).
DeviceTensor to_device(const TensorView& host, CachingAllocator& allocator, cudaStream_t stream);
Tensor to_host(const DeviceView& device, cudaStream_t stream);

}  // namespace exq::cuda
