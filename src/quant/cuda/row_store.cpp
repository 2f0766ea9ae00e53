#include "quant/cuda/row_store.h"

#include <fmt/format.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstring>
#include <limits>

#include "core/error.h"
#include "core/thread_pool.h"
#include "quant/cuda/engine_kernels.h"

namespace exq::quant::cuda {
namespace {

constexpr size_t kFillChunk = size_t{1} << 20;  // bytes per thread-pool task while staging

}  // namespace

RowStore::RowStore(EngineContext& ctx, const TensorView& host_x, int64_t slots)
    : ctx_(ctx), host_x_(host_x), rows_(host_x.dim(0)) {
  EXQ_ASSERT(host_x.rank() == 3 && host_x.dtype() == DType::F32 && host_x.is_contiguous());
  slots_ = std::clamp<int64_t>(slots, 1, rows_);
  row_bytes_ = static_cast<size_t>(host_x.dim(1) * host_x.dim(2)) * sizeof(float);
  checked_.assign(static_cast<size_t>(rows_), 0);
}

RowStore::~RowStore() {
  try {
    release();
  } catch (...) {  // a failing device already reported its error elsewhere
  }
}

void RowStore::allocate() {
  if (allocated_) return;
  const Shape shape = {host_x_.dim(1), host_x_.dim(2)};
  slots_v_.clear();
  slots_v_.resize(static_cast<size_t>(slots_));
  for (Slot& s : slots_v_) {
    s.x = exq::cuda::DeviceTensor(DType::F32, shape, *ctx_.alloc, ctx_.compute);
    s.target = exq::cuda::DeviceTensor(DType::F32, shape, *ctx_.alloc, ctx_.compute);
    s.free.record(ctx_.compute);  // copies into a new block wait for its earlier users
    ctx_.ring.record(s.copied);
  }
  allocated_ = true;
}

void RowStore::release() {
  if (!allocated_) return;
  // Blocks return to the compute stream's pool: its later work must follow the copies too.
  exq::cuda::Event copies_done(false);
  ctx_.ring.record(copies_done);
  copies_done.wait_on(ctx_.compute);
  slots_v_.clear();
  allocated_ = false;
}

RowStore::Slot& RowStore::slot_of(int64_t r) {
  EXQ_ASSERT(allocated_ && r >= 0 && r < rows_);
  return slots_v_[static_cast<size_t>(r % slots_)];
}

void RowStore::fill_checked(int64_t r, void* dst, size_t offset, size_t bytes) const {
  const char* src =
      static_cast<const char*>(host_x_.raw()) + static_cast<size_t>(r) * row_bytes_ + offset;
  constexpr int64_t kNone = std::numeric_limits<int64_t>::max();
  std::atomic<int64_t> first_bad{kNone};
  const auto chunks = static_cast<int64_t>((bytes + kFillChunk - 1) / kFillChunk);
  parallel_for(chunks, [&](int64_t begin, int64_t end) {
    for (int64_t c = begin; c < end; ++c) {
      const size_t b = static_cast<size_t>(c) * kFillChunk;
      const size_t n = std::min(kFillChunk, bytes - b);
      char* d = static_cast<char*>(dst) + b;
      std::memcpy(d, src + b, n);
      const auto* f = reinterpret_cast<const float*>(d);
      bool bad = false;
      for (size_t i = 0; i < n / sizeof(float); ++i) bad |= !std::isfinite(f[i]);
      if (!bad) continue;
      for (size_t i = 0; i < n / sizeof(float); ++i) {
        if (std::isfinite(f[i])) continue;
        const auto at = static_cast<int64_t>((b + i * sizeof(float)) / sizeof(float));
        int64_t cur = first_bad.load();
        while (at < cur && !first_bad.compare_exchange_weak(cur, at)) {
        }
        break;
      }
    }
  });
  if (first_bad.load() != kNone) {
    const int64_t element = r * static_cast<int64_t>(row_bytes_ / sizeof(float)) +
                            static_cast<int64_t>(offset / sizeof(float)) + first_bad.load();
    throw Error(fmt::format("input states hold NaN/Inf (element {})", element));
  }
}

void RowStore::throw_non_finite() const {
  int64_t element = -1;
  has_non_finite(host_x_, &element);
  throw Error(fmt::format("input states hold NaN/Inf (element {})", element));
}

void RowStore::stage(int64_t r, const Tensor* host_target) {
  Slot& s = slot_of(r);
  bool queued = false;
  if (s.x_row != r) {
    s.x_row = -1;  // the slot's old row is gone once the copy starts
    const char* src = static_cast<const char*>(host_x_.raw()) + static_cast<size_t>(r) * row_bytes_;
    if (memory::cuda::StagingRing::is_pinned(src, row_bytes_)) {
      ctx_.ring.upload(s.x.raw(), src, row_bytes_, &s.free);  // direct; checked in acquire()
    } else {
      ctx_.ring.upload(
          s.x.raw(), row_bytes_,
          [this, r](void* dst, size_t offset, size_t n) { fill_checked(r, dst, offset, n); },
          &s.free);
      checked_[static_cast<size_t>(r)] = 1;
    }
    s.x_row = r;
    queued = true;
  }
  if (host_target && s.target_row != r) {
    s.target_row = -1;
    const char* src =
        static_cast<const char*>(host_target->raw()) + static_cast<size_t>(r) * row_bytes_;
    ctx_.ring.upload(s.target.raw(), src, row_bytes_, &s.free);
    s.target_row = r;
    queued = true;
  }
  if (queued) ctx_.ring.record(s.copied);
}

void RowStore::acquire(int64_t r) {
  Slot& s = slot_of(r);
  EXQ_ASSERT(s.x_row == r);
  s.copied.wait_on(ctx_.compute);
  if (!checked_[static_cast<size_t>(r)]) {
    count_non_finite_cuda(s.x.view().data<float>(), s.x.numel(), ctx_.input_counter(),
                          ctx_.compute);
    checked_[static_cast<size_t>(r)] = 1;
  }
}

exq::cuda::DeviceView RowStore::x(int64_t r) const {
  const Slot& s = slots_v_[static_cast<size_t>(r % slots_)];
  EXQ_ASSERT(s.x_row == r);
  return s.x.view();
}

exq::cuda::DeviceView RowStore::target(int64_t r) const {
  return slots_v_[static_cast<size_t>(r % slots_)].target.view();
}

void RowStore::release_row(int64_t r, bool target_written) {
  Slot& s = slot_of(r);
  s.free.record(ctx_.compute);
  if (target_written) s.target_row = r;
}

void RowStore::download_target(int64_t r, const TensorView& host_target) {
  Slot& s = slot_of(r);
  EXQ_ASSERT(s.target_row == r);
  char* dst = static_cast<char*>(host_target.raw()) + static_cast<size_t>(r) * row_bytes_;
  ctx_.ring.download(s.target.raw(), dst, row_bytes_, &s.free);
  ctx_.ring.record(s.copied);
}

}  // namespace exq::quant::cuda
