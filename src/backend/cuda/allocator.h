// CachingAllocator: all budgeted device memory goes through here. It keeps freed blocks for
// reuse (cudaMalloc/cudaFree synchronize and are slow), enforces a byte budget on what it has
// reserved from the device, and tracks peaks so runs can report VRAM use.
//
// Stream semantics: a block is reused only for the stream it was allocated on, so stream order
// alone makes reuse safe. Using a buffer on another stream needs an Event between them.
// Thread-safe. Must outlive every DeviceBuffer it hands out.
#pragma once

#include <cuda_runtime_api.h>

#include <cstddef>
#include <cstdint>
#include <limits>
#include <map>
#include <mutex>
#include <string>
#include <unordered_map>

#include "backend/cuda/memory.h"

namespace exq::cuda {

class CachingAllocator {
 public:
  static constexpr size_t kUnlimited = std::numeric_limits<size_t>::max();

  explicit CachingAllocator(size_t budget_bytes = kUnlimited);
  ~CachingAllocator();
  CachingAllocator(const CachingAllocator&) = delete;
  CachingAllocator& operator=(const CachingAllocator&) = delete;

  // Throws exq::Error "VRAM budget of X GB exceeded ..." when the block does not fit the budget
  // even after the cache is emptied, or when the device itself is out of memory.
  DeviceBuffer allocate(size_t bytes, cudaStream_t stream = nullptr);
  // Returns cached (unused) blocks to the device. Synchronizes the device.
  void empty_cache();

  size_t budget() const { return budget_; }
  size_t in_use() const;         // bytes in live buffers (rounded block sizes)
  size_t reserved() const;       // bytes obtained from cudaMalloc: live + cached
  size_t peak_in_use() const;
  size_t peak_reserved() const;
  void reset_peaks();
  std::string stats() const;  // one line for logs

  // Block sizes are rounded so freed blocks fit later requests of similar size.
  static size_t round_size(size_t bytes);

 private:
  friend class DeviceBuffer;
  struct Block {
    size_t size = 0;
    cudaStream_t stream = nullptr;
  };
  void release(void* ptr) noexcept;
  void free_cached_locked() noexcept;

  const size_t budget_;
  mutable std::mutex mutex_;
  std::unordered_map<void*, Block> live_;
  std::multimap<size_t, std::pair<void*, cudaStream_t>> cached_;  // by block size
  size_t in_use_ = 0;
  size_t reserved_ = 0;
  size_t peak_in_use_ = 0;
  size_t peak_reserved_ = 0;
};

}  // namespace exq::cuda
