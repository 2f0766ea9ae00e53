#include "backend/cuda/device_tensor.h"

#include "backend/cuda/cuda_check.h"
#include "core/error.h"

namespace exq::cuda {
namespace {

void check_pair(DType a_dtype, const Shape& a_shape, bool a_contig, DType b_dtype,
                const Shape& b_shape, bool b_contig, const char* what) {
  EXQ_CHECK(a_dtype == b_dtype && shape_numel(a_shape) == shape_numel(b_shape),
            "{}: source {} {} does not match destination {} {}", what, dtype_name(a_dtype),
            shape_str(a_shape), dtype_name(b_dtype), shape_str(b_shape));
  EXQ_CHECK(a_contig && b_contig, "{}: both sides must be contiguous", what);
}

}  // namespace

DeviceTensor::DeviceTensor(DType dtype, Shape shape, CachingAllocator& allocator,
                           cudaStream_t stream)
    : dtype_(dtype), shape_(std::move(shape)) {
  for (int64_t d : shape_) EXQ_CHECK(d >= 0, "negative dimension in shape {}", shape_str(shape_));
  buffer_ = allocator.allocate(nbytes(), stream);
}

void copy_to_device(const TensorView& host, const DeviceView& device, cudaStream_t stream) {
  check_pair(host.dtype(), host.shape(), host.is_contiguous(), device.dtype(), device.shape(),
             device.is_contiguous(), "copy to device");
  if (host.nbytes() == 0) return;
  CUDA_CHECK(cudaMemcpyAsync(device.raw(), host.raw(), host.nbytes(), cudaMemcpyHostToDevice, stream));
}

void copy_to_host(const DeviceView& device, const TensorView& host, cudaStream_t stream) {
  check_pair(device.dtype(), device.shape(), device.is_contiguous(), host.dtype(), host.shape(),
             host.is_contiguous(), "copy to host");
  if (host.nbytes() == 0) return;
  CUDA_CHECK(cudaMemcpyAsync(host.raw(), device.raw(), host.nbytes(), cudaMemcpyDeviceToHost, stream));
}

void copy_device(const DeviceView& src, const DeviceView& dst, cudaStream_t stream) {
  check_pair(src.dtype(), src.shape(), src.is_contiguous(), dst.dtype(), dst.shape(),
             dst.is_contiguous(), "device copy");
  if (src.nbytes() == 0) return;
  CUDA_CHECK(cudaMemcpyAsync(dst.raw(), src.raw(), src.nbytes(), cudaMemcpyDeviceToDevice, stream));
}

DeviceTensor to_device(const TensorView& host, CachingAllocator& allocator, cudaStream_t stream) {
  DeviceTensor t(host.dtype(), host.shape(), allocator, stream);
  copy_to_device(host, t.view(), stream);
  return t;
}

Tensor to_host(const DeviceView& device, cudaStream_t stream) {
  Tensor t(device.dtype(), device.shape());
  copy_to_host(device, t.view(), stream);
  CUDA_CHECK(cudaStreamSynchronize(stream));
  return t;
}

}  // namespace exq::cuda
