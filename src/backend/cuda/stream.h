// RAII CUDA streams and events. Non-copyable; moving transfers ownership.
#pragma once

#include <cuda_runtime_api.h>

namespace exq::cuda {

class Stream {
 public:
  // A non-blocking stream: it does not synchronize with the legacy default stream.
  Stream();
  ~Stream();
  Stream(Stream&& other) noexcept;
  Stream& operator=(Stream&& other) noexcept;
  Stream(const Stream&) = delete;
  Stream& operator=(const Stream&) = delete;

  cudaStream_t get() const { return stream_; }
  operator cudaStream_t() const { return stream_; }
  void synchronize() const;

 private:
  cudaStream_t stream_ = nullptr;
};

class Event {
 public:
  // timing=false makes a lighter event for ordering only.
  explicit Event(bool timing = true);
  ~Event();
  Event(Event&& other) noexcept;
  Event& operator=(Event&& other) noexcept;
  Event(const Event&) = delete;
  Event& operator=(const Event&) = delete;

  cudaEvent_t get() const { return event_; }
  void record(cudaStream_t stream);
  void synchronize() const;
  bool done() const;  // true once all work before record() has finished
  // Makes `stream` wait for this event without blocking the host.
  void wait_on(cudaStream_t stream) const;
  // Milliseconds between two recorded timing events (end must be complete).
  static float elapsed_ms(const Event& start, const Event& end);

 private:
  cudaEvent_t event_ = nullptr;
};

}  // namespace exq::cuda
