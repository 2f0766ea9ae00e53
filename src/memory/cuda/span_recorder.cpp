#include "memory/cuda/span_recorder.h"

#include "core/error.h"

namespace exq::memory::cuda {

exq::cuda::Event& SpanRecorder::next_event() {
  if (used_ == events_.size()) events_.emplace_back(true);
  return events_[used_++];
}

void SpanRecorder::begin(cudaStream_t stream) {
  EXQ_ASSERT(!open_);
  next_event().record(stream);
  open_ = true;
}

void SpanRecorder::end(cudaStream_t stream) {
  EXQ_ASSERT(open_);
  next_event().record(stream);
  open_ = false;
}

std::vector<Interval> SpanRecorder::intervals(const exq::cuda::Event& origin) const {
  std::vector<Interval> out;
  for (size_t p = 0; p < size(); ++p) {
    const double b = exq::cuda::Event::elapsed_ms(origin, events_[2 * p]) * 1e-3;
    const double e = exq::cuda::Event::elapsed_ms(origin, events_[2 * p + 1]) * 1e-3;
    out.push_back({b, e});
  }
  return out;
}

double SpanRecorder::total_seconds() const {
  double total = 0;
  for (size_t p = 0; p < size(); ++p)
    total += exq::cuda::Event::elapsed_ms(events_[2 * p], events_[2 * p + 1]) * 1e-3;
  return total;
}

void SpanRecorder::clear() {
  used_ = 0;
  open_ = false;
}

}  // namespace exq::memory::cuda
