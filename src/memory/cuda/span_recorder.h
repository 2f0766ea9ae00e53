// Timed spans of GPU work: pairs of CUDA timing events recorded on any stream, read back as
// intervals relative to one origin event once the work has completed. Used for the copy and
// compute timelines whose overlap (overlap.h) says how much transfer time was hidden.
// Not thread-safe; events are reused after clear().
#pragma once

#include <cuda_runtime_api.h>

#include <cstddef>
#include <vector>

#include "backend/cuda/stream.h"
#include "memory/cuda/overlap.h"

namespace exq::memory::cuda {

class SpanRecorder {
 public:
  // Starts a span at this point of `stream`'s queue; end() closes it (same or another stream).
  void begin(cudaStream_t stream);
  void end(cudaStream_t stream);
  bool open() const { return open_; }
  size_t size() const { return used_ / 2; }

  // Closed spans in seconds since `origin`. Every event must have completed (synchronize
  // the streams first); origin must have been recorded before the spans' streams reached them.
  std::vector<Interval> intervals(const exq::cuda::Event& origin) const;
  // Sum of the closed spans' lengths in seconds (same precondition).
  double total_seconds() const;
  void clear();

 private:
  exq::cuda::Event& next_event();

  std::vector<exq::cuda::Event> events_;  // [2 * span] begin, end
  size_t used_ = 0;
  bool open_ = false;
};

}  // namespace exq::memory::cuda
