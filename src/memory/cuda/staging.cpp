#include "memory/cuda/staging.h"

#include <algorithm>
#include <chrono>
#include <cstring>

#include "backend/cuda/cuda_check.h"
#include "core/error.h"
#include "core/thread_pool.h"

namespace exq::memory::cuda {
namespace {

using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point t0) {
  return std::chrono::duration<double>(Clock::now() - t0).count();
}

constexpr size_t kParallelChunk = size_t{1} << 20;  // below this a single memcpy wins

}  // namespace

void parallel_memcpy(void* dst, const void* src, size_t bytes) {
  if (bytes < 2 * kParallelChunk) {
    std::memcpy(dst, src, bytes);
    return;
  }
  const auto chunks = static_cast<int64_t>((bytes + kParallelChunk - 1) / kParallelChunk);
  parallel_for(chunks, [&](int64_t begin, int64_t end) {
    const size_t b = static_cast<size_t>(begin) * kParallelChunk;
    const size_t e = std::min(bytes, static_cast<size_t>(end) * kParallelChunk);
    std::memcpy(static_cast<char*>(dst) + b, static_cast<const char*>(src) + b, e - b);
  });
}

StagingRing::StagingRing(size_t slot_bytes, int slots) : slot_bytes_(slot_bytes) {
  EXQ_CHECK(slot_bytes > 0 && slots >= 2, "staging ring: need >= 2 slots of > 0 bytes, got {} x {}",
            slots, slot_bytes);
  slots_.resize(static_cast<size_t>(slots));
  for (Slot& s : slots_) s.buffer = exq::cuda::PinnedBuffer(slot_bytes);
}

StagingRing::~StagingRing() {
  if (stream_.get()) cudaStreamSynchronize(stream_.get());  // no throw from a destructor
}

void StagingRing::wait(const exq::cuda::Event& done) {
  if (done.done()) return;
  ++waits_;
  done.synchronize();
}

StagingRing::Slot& StagingRing::acquire() {
  Slot& slot = slots_[next_];
  next_ = (next_ + 1) % slots_.size();
  if (slot.busy) {
    const auto t0 = Clock::now();
    wait(slot.done);
    if (slot.drain) slot.drain(slot.buffer.data(), slot.offset, slot.bytes);
    host_s_ += seconds_since(t0);
    release(slot);
  }
  return slot;
}

void StagingRing::release(Slot& slot) {
  slot.busy = false;
  slot.drain = nullptr;
  slot.offset = slot.bytes = 0;
}

void StagingRing::upload(void* device_dst, size_t bytes, const Fill& fill,
                         const exq::cuda::Event* after) {
  if (bytes == 0) return;
  if (after) after->wait_on(stream());
  for (size_t offset = 0; offset < bytes; offset += slot_bytes_) {
    const size_t n = std::min(slot_bytes_, bytes - offset);
    Slot& slot = acquire();
    const auto t0 = Clock::now();
    fill(slot.buffer.data(), offset, n);
    host_s_ += seconds_since(t0);
    spans_.begin(stream());
    CUDA_CHECK(cudaMemcpyAsync(static_cast<char*>(device_dst) + offset, slot.buffer.data(), n,
                               cudaMemcpyHostToDevice, stream()));
    spans_.end(stream());
    slot.done.record(stream());
    slot.busy = true;
  }
  bytes_h2d_ += bytes;
}

bool StagingRing::is_pinned(const void* p, size_t bytes) {
  if (p == nullptr || bytes == 0) return false;
  for (const void* q : {p, static_cast<const void*>(static_cast<const char*>(p) + bytes - 1)}) {
    cudaPointerAttributes a{};
    if (cudaPointerGetAttributes(&a, q) != cudaSuccess) {
      cudaGetLastError();  // not an error worth keeping: the memory is simply not CUDA's
      return false;
    }
    if (a.type != cudaMemoryTypeHost) return false;
  }
  return true;
}

void StagingRing::direct(void* dst, const void* src, size_t bytes, cudaMemcpyKind kind) {
  spans_.begin(stream());
  CUDA_CHECK(cudaMemcpyAsync(dst, src, bytes, kind, stream()));
  spans_.end(stream());
}

void StagingRing::upload(void* device_dst, const void* host_src, size_t bytes,
                         const exq::cuda::Event* after) {
  if (bytes != 0 && is_pinned(host_src, bytes)) {
    if (after) after->wait_on(stream());
    direct(device_dst, host_src, bytes, cudaMemcpyHostToDevice);
    bytes_h2d_ += bytes;
    return;
  }
  upload(
      device_dst, bytes,
      [host_src](void* dst, size_t offset, size_t n) {
        parallel_memcpy(dst, static_cast<const char*>(host_src) + offset, n);
      },
      after);
}

void StagingRing::download(const void* device_src, size_t bytes, Drain drain,
                           const exq::cuda::Event* after) {
  if (bytes == 0) return;
  if (after) after->wait_on(stream());
  for (size_t offset = 0; offset < bytes; offset += slot_bytes_) {
    const size_t n = std::min(slot_bytes_, bytes - offset);
    Slot& slot = acquire();
    spans_.begin(stream());
    CUDA_CHECK(cudaMemcpyAsync(slot.buffer.data(), static_cast<const char*>(device_src) + offset, n,
                               cudaMemcpyDeviceToHost, stream()));
    spans_.end(stream());
    slot.done.record(stream());
    slot.busy = true;
    slot.drain = drain;
    slot.offset = offset;
    slot.bytes = n;
  }
  bytes_d2h_ += bytes;
}

void StagingRing::download(const void* device_src, void* host_dst, size_t bytes,
                           const exq::cuda::Event* after) {
  if (bytes != 0 && is_pinned(host_dst, bytes)) {
    if (after) after->wait_on(stream());
    direct(host_dst, device_src, bytes, cudaMemcpyDeviceToHost);
    bytes_d2h_ += bytes;
    direct_pending_ = true;
    return;
  }
  download(
      device_src, bytes,
      [host_dst](const void* src, size_t offset, size_t n) {
        parallel_memcpy(static_cast<char*>(host_dst) + offset, src, n);
      },
      after);
}

void StagingRing::record(exq::cuda::Event& event) { event.record(stream()); }

void StagingRing::flush() {
  if (direct_pending_) {
    const auto t0 = Clock::now();
    wait_stream();
    host_s_ += seconds_since(t0);
    direct_pending_ = false;
  }
  // Ring order from next_ is the order the slots were filled.
  for (size_t i = 0; i < slots_.size(); ++i) {
    Slot& slot = slots_[(next_ + i) % slots_.size()];
    if (!slot.busy) continue;
    const auto t0 = Clock::now();
    wait(slot.done);
    if (slot.drain) slot.drain(slot.buffer.data(), slot.offset, slot.bytes);
    host_s_ += seconds_since(t0);
    release(slot);
  }
}

void StagingRing::wait_stream() {
  const cudaError_t state = cudaStreamQuery(stream());
  if (state == cudaSuccess) return;
  if (state != cudaErrorNotReady) CUDA_CHECK(state);
  ++waits_;
  CUDA_CHECK(cudaStreamSynchronize(stream()));
}

void StagingRing::discard() {
  wait_stream();
  direct_pending_ = false;
  for (Slot& slot : slots_) release(slot);
}

void StagingRing::reset_stats() {
  spans_.clear();
  bytes_h2d_ = bytes_d2h_ = 0;
  host_s_ = 0;
  waits_ = 0;
}

}  // namespace exq::memory::cuda
