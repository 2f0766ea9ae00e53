#include "backend/cuda/memory.h"

#include <cuda_runtime_api.h>
#include <fmt/format.h>

#include <utility>

#include "backend/cuda/allocator.h"
#include "backend/cuda/cuda_check.h"
#include "core/error.h"

namespace exq::cuda {

DeviceBuffer::DeviceBuffer(size_t bytes) : size_(bytes) {
  if (bytes == 0) return;
  const cudaError_t status = cudaMalloc(&data_, bytes);
  if (status != cudaSuccess) {
    cudaGetLastError();
    data_ = nullptr;
    throw Error(fmt::format("cudaMalloc of {:.1f} MB failed: {} ({})",
                            static_cast<double>(bytes) / 1e6, cudaGetErrorName(status),
                            cudaGetErrorString(status)));
  }
}

DeviceBuffer::~DeviceBuffer() { reset(); }

DeviceBuffer::DeviceBuffer(DeviceBuffer&& other) noexcept
    : data_(std::exchange(other.data_, nullptr)),
      size_(std::exchange(other.size_, 0)),
      owner_(std::exchange(other.owner_, nullptr)) {}

DeviceBuffer& DeviceBuffer::operator=(DeviceBuffer&& other) noexcept {
  if (this != &other) {
    reset();
    data_ = std::exchange(other.data_, nullptr);
    size_ = std::exchange(other.size_, 0);
    owner_ = std::exchange(other.owner_, nullptr);
  }
  return *this;
}

void DeviceBuffer::reset() {
  if (data_) {
    if (owner_)
      owner_->release(data_);
    else
      cudaFree(data_);  // destructors must not throw; a failure here means a dead context
  }
  data_ = nullptr;
  size_ = 0;
  owner_ = nullptr;
}

PinnedBuffer::PinnedBuffer(size_t bytes) : size_(bytes) {
  if (bytes == 0) return;
  const cudaError_t status = cudaHostAlloc(&data_, bytes, cudaHostAllocDefault);
  if (status != cudaSuccess) {
    cudaGetLastError();
    data_ = nullptr;
    throw Error(fmt::format("cudaHostAlloc of {:.1f} MB pinned memory failed: {} ({})",
                            static_cast<double>(bytes) / 1e6, cudaGetErrorName(status),
                            cudaGetErrorString(status)));
  }
}

PinnedBuffer::~PinnedBuffer() { reset(); }

PinnedBuffer::PinnedBuffer(PinnedBuffer&& other) noexcept
    : data_(std::exchange(other.data_, nullptr)), size_(std::exchange(other.size_, 0)) {}

PinnedBuffer& PinnedBuffer::operator=(PinnedBuffer&& other) noexcept {
  if (this != &other) {
    reset();
    data_ = std::exchange(other.data_, nullptr);
    size_ = std::exchange(other.size_, 0);
  }
  return *this;
}

void PinnedBuffer::reset() {
  if (data_) cudaFreeHost(data_);
  data_ = nullptr;
  size_ = 0;
}

}  // namespace exq::cuda
