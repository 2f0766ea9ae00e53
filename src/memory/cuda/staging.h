// StagingRing: host <-> device transfers that overlap compute. A ring of pinned host buffers
// (slots) and one copy stream: the host fills a slot (memcpy, conversion, checks: the caller's
// function), the copy stream moves it to the device, and streams that need the data wait on an
// event, never the host. Transfers larger than a slot go through several slots in turn, so the
// host fills slot i+1 while slot i is on the bus. Downloads run the other way; their host side
// (drain) runs when the slot is needed again or at flush(), in order.
//
// Host memory that is already page-locked (cudaHostAlloc, cudaHostRegister) skips the slots: the
// copy engine reads or writes it directly and the host does no work at all.
//
// Ordering is the caller's job: `after` events say when a device destination may be overwritten
// (upload) or a source is complete (download); record() gives an event for "all copies so far".
// Every copy is timed (copy_spans()) so callers can report how much of it compute hid.
// One thread; not copyable.
#pragma once

#include <cuda_runtime_api.h>

#include <cstddef>
#include <cstdint>
#include <functional>
#include <vector>

#include "backend/cuda/memory.h"
#include "backend/cuda/stream.h"
#include "memory/cuda/span_recorder.h"

namespace exq::memory::cuda {

class StagingRing {
 public:
  // Writes bytes [offset, offset + bytes) of the transfer into `dst` (pinned).
  using Fill = std::function<void(void* dst, size_t offset, size_t bytes)>;
  // Consumes bytes [offset, offset + bytes) of the transfer from `src` (pinned).
  using Drain = std::function<void(const void* src, size_t offset, size_t bytes)>;

  static constexpr size_t kDefaultSlotBytes = size_t{16} << 20;  // large enough for full PCIe rate
  static constexpr int kDefaultSlots = 4;

  explicit StagingRing(size_t slot_bytes = kDefaultSlotBytes, int slots = kDefaultSlots);
  ~StagingRing();  // waits for the copy stream; pending drains are dropped
  StagingRing(const StagingRing&) = delete;
  StagingRing& operator=(const StagingRing&) = delete;

  cudaStream_t stream() const { return stream_.get(); }
  size_t slot_bytes() const { return slot_bytes_; }

  // Host -> device_dst. The copy starts after `after` (when given). May block the host until a
  // slot's previous copy has finished.
  void upload(void* device_dst, size_t bytes, const Fill& fill,
              const exq::cuda::Event* after = nullptr);
  // Plain copy from host memory (parallel memcpy into the slots, or direct when pinned).
  void upload(void* device_dst, const void* host_src, size_t bytes,
              const exq::cuda::Event* after = nullptr);
  // device_src -> host, after `after` (when given). `drain` runs later on this thread.
  void download(const void* device_src, size_t bytes, Drain drain,
                const exq::cuda::Event* after = nullptr);
  void download(const void* device_src, void* host_dst, size_t bytes,
                const exq::cuda::Event* after = nullptr);

  // True when [p, p + bytes) lies in page-locked host memory known to CUDA.
  static bool is_pinned(const void* p, size_t bytes);

  // `event` completes once every copy queued so far is done.
  void record(exq::cuda::Event& event);
  // Waits for every queued download and runs the pending drains in order (no wait when the
  // copies are already done, e.g. after the caller waited for an event recorded after them).
  void flush();
  // Waits for the copy stream and drops pending drains (their destinations may be gone, e.g.
  // while unwinding after an error).
  void discard();

  // Since the last reset_stats(): bytes moved, host seconds spent filling/draining/waiting,
  // and the copies as timed spans (read them after the copies completed, e.g. after flush()).
  size_t bytes_h2d() const { return bytes_h2d_; }
  size_t bytes_d2h() const { return bytes_d2h_; }
  double host_seconds() const { return host_s_; }
  // Times the host blocked on the copy stream: a slot still in use (the ring's few pinned
  // buffers are recycled), or flush()/discard() before the copies were done.
  int waits() const { return waits_; }
  const SpanRecorder& copy_spans() const { return spans_; }
  void reset_stats();

 private:
  struct Slot {
    exq::cuda::PinnedBuffer buffer;
    exq::cuda::Event done{false};  // the slot's last copy finished
    bool busy = false;             // a copy was queued since the slot was last free
    Drain drain;                   // pending download consumer
    size_t offset = 0;
    size_t bytes = 0;
  };
  Slot& acquire();  // next slot in ring order, free (its pending drain has run)
  void release(Slot& slot);
  void direct(void* dst, const void* src, size_t bytes, cudaMemcpyKind kind);
  void wait(const exq::cuda::Event& done);  // blocks (and counts) unless done
  void wait_stream();                       // the same for the whole copy stream

  size_t slot_bytes_;
  exq::cuda::Stream stream_;
  std::vector<Slot> slots_;
  size_t next_ = 0;
  bool direct_pending_ = false;  // a direct download since the last flush()
  SpanRecorder spans_;
  size_t bytes_h2d_ = 0;
  size_t bytes_d2h_ = 0;
  double host_s_ = 0;
  int waits_ = 0;
};

// memcpy split over the thread pool for large sizes (host-to-pinned staging is memory bound).
void parallel_memcpy(void* dst, const void* src, size_t bytes);

}  // namespace exq::memory::cuda
