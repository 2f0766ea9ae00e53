// Owning device and pinned-host buffers (RAII, move-only). A DeviceBuffer either owns a plain
// cudaMalloc block or borrows one from a CachingAllocator and hands it back when destroyed.
#pragma once

#include <cstddef>

namespace exq::cuda {

class CachingAllocator;

class DeviceBuffer {
 public:
  DeviceBuffer() = default;
  // Plain cudaMalloc, outside any budget. Throws exq::Error when the device is out of memory.
  explicit DeviceBuffer(size_t bytes);
  ~DeviceBuffer();
  DeviceBuffer(DeviceBuffer&& other) noexcept;
  DeviceBuffer& operator=(DeviceBuffer&& other) noexcept;
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;

  void* data() const { return data_; }
  template <typename T>
  T* as() const { return static_cast<T*>(data_); }
  size_t size() const { return size_; }  // bytes requested
  bool empty() const { return data_ == nullptr; }
  // Frees now (or returns the block to its allocator).
  void reset();

 private:
  friend class CachingAllocator;
  DeviceBuffer(void* data, size_t size, CachingAllocator* owner)
      : data_(data), size_(size), owner_(owner) {}

  void* data_ = nullptr;
  size_t size_ = 0;
  CachingAllocator* owner_ = nullptr;  // null: plain cudaMalloc block
};

// Page-locked host memory, for asynchronous copies that really overlap with kernels.
class PinnedBuffer {
 public:
  PinnedBuffer() = default;
  explicit PinnedBuffer(size_t bytes);
  ~PinnedBuffer();
  PinnedBuffer(PinnedBuffer&& other) noexcept;
  PinnedBuffer& operator=(PinnedBuffer&& other) noexcept;
  PinnedBuffer(const PinnedBuffer&) = delete;
  PinnedBuffer& operator=(const PinnedBuffer&) = delete;

  void* data() const { return data_; }
  template <typename T>
  T* as() const { return static_cast<T*>(data_); }
  size_t size() const { return size_; }
  bool empty() const { return data_ == nullptr; }
  void reset();

 private:
  void* data_ = nullptr;
  size_t size_ = 0;
};

}  // namespace exq::cuda
