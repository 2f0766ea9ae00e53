#include "backend/cuda/allocator.h"

#include <fmt/format.h>

#include <algorithm>

#include "backend/cuda/cuda_check.h"
#include "core/error.h"

namespace exq::cuda {
namespace {

constexpr size_t kMiB = size_t{1} << 20;
constexpr double kGB = 1e9;  // as --vram-budget reads GB

double mb(size_t bytes) { return static_cast<double>(bytes) / static_cast<double>(kMiB); }

}  // namespace

CachingAllocator::CachingAllocator(size_t budget_bytes) : budget_(budget_bytes) {}

CachingAllocator::~CachingAllocator() {
  std::lock_guard lock(mutex_);
  free_cached_locked();
  // Live blocks at this point are a caller bug (buffers outliving the allocator); they are
  // left to the driver, which frees them with the context.
}

size_t CachingAllocator::round_size(size_t bytes) {
  // Small blocks to 512 B (keeps 16-byte vector alignment and packs scratch); large ones to
  // 2 MiB, the granularity the driver maps anyway.
  if (bytes < kMiB) return std::max<size_t>(512, (bytes + 511) / 512 * 512);
  return (bytes + 2 * kMiB - 1) / (2 * kMiB) * (2 * kMiB);
}

DeviceBuffer CachingAllocator::allocate(size_t bytes, cudaStream_t stream) {
  if (bytes == 0) return DeviceBuffer();
  const size_t size = round_size(bytes);
  std::lock_guard lock(mutex_);

  // Best fit among cached blocks of this stream, wasting at most 1/8 (or 2x for small ones).
  const size_t limit = size < kMiB ? 2 * size : size + size / 8;
  for (auto it = cached_.lower_bound(size); it != cached_.end() && it->first <= limit; ++it) {
    if (it->second.second != stream) continue;
    void* ptr = it->second.first;
    const size_t block = it->first;
    cached_.erase(it);
    live_[ptr] = Block{block, stream};
    in_use_ += block;
    peak_in_use_ = std::max(peak_in_use_, in_use_);
    return DeviceBuffer(ptr, bytes, this);
  }

  if (budget_ != kUnlimited && reserved_ + size > budget_) free_cached_locked();
  if (budget_ != kUnlimited && reserved_ + size > budget_)
    throw Error(fmt::format(
        "VRAM budget of {:.2f} GB exceeded: allocating {:.1f} MiB with {:.1f} MiB in use "
        "(peak {:.1f} MiB); raise the budget or lower batch/context size",
        static_cast<double>(budget_) / kGB, mb(size), mb(in_use_), mb(peak_in_use_)));

  void* ptr = nullptr;
  cudaError_t status = cudaMalloc(&ptr, size);
  if (status == cudaErrorMemoryAllocation) {
    cudaGetLastError();
    free_cached_locked();
    status = cudaMalloc(&ptr, size);
  }
  if (status != cudaSuccess) {
    cudaGetLastError();
    throw Error(fmt::format("device out of memory allocating {:.1f} MiB ({:.1f} MiB in use by "
                            "exq): {} ({})",
                            mb(size), mb(in_use_), cudaGetErrorName(status),
                            cudaGetErrorString(status)));
  }
  live_[ptr] = Block{size, stream};
  in_use_ += size;
  reserved_ += size;
  peak_in_use_ = std::max(peak_in_use_, in_use_);
  peak_reserved_ = std::max(peak_reserved_, reserved_);
  return DeviceBuffer(ptr, bytes, this);
}

void CachingAllocator::release(void* ptr) noexcept {
  std::lock_guard lock(mutex_);
  auto it = live_.find(ptr);
  if (it == live_.end()) return;  // not ours: nothing safe to do in a destructor path
  in_use_ -= it->second.size;
  cached_.emplace(it->second.size, std::make_pair(ptr, it->second.stream));
  live_.erase(it);
}

void CachingAllocator::free_cached_locked() noexcept {
  if (cached_.empty()) return;
  // Cached blocks may still be read by queued kernels of their stream.
  cudaDeviceSynchronize();
  for (auto& [size, entry] : cached_) {
    cudaFree(entry.first);
    reserved_ -= size;
  }
  cached_.clear();
}

void CachingAllocator::empty_cache() {
  std::lock_guard lock(mutex_);
  free_cached_locked();
}

size_t CachingAllocator::in_use() const {
  std::lock_guard lock(mutex_);
  return in_use_;
}

size_t CachingAllocator::reserved() const {
  std::lock_guard lock(mutex_);
  return reserved_;
}

size_t CachingAllocator::peak_in_use() const {
  std::lock_guard lock(mutex_);
  return peak_in_use_;
}

size_t CachingAllocator::peak_reserved() const {
  std::lock_guard lock(mutex_);
  return peak_reserved_;
}

void CachingAllocator::reset_peaks() {
  std::lock_guard lock(mutex_);
  peak_in_use_ = in_use_;
  peak_reserved_ = reserved_;
}

std::string CachingAllocator::stats() const {
  std::lock_guard lock(mutex_);
  return fmt::format("VRAM: {:.1f} MiB in use (peak {:.1f}), {:.1f} MiB reserved (peak {:.1f}){}",
                     mb(in_use_), mb(peak_in_use_), mb(reserved_), mb(peak_reserved_),
                     budget_ == kUnlimited
                         ? std::string()
                         : fmt::format(", budget {:.2f} GB", static_cast<double>(budget_) / kGB));
}

}  // namespace exq::cuda
