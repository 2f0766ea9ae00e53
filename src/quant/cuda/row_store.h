// The calibration states of one module on the device: `slots` row buffers, each holding one
// row's input x and reference output (target), F32 [T, hidden]. With as many slots as rows the
// states are copied once and stay; with fewer, rows rotate through the slots: the copy of row
// r + slots - 1 overlaps the compute of row r (events order the copy stream against the
// compute stream in both directions; the host never waits for the GPU except for a free
// pinned staging buffer). Input rows are checked for NaN/Inf while they are staged, or, when the
// host states are pinned and copied directly, on the device (EngineContext::input_counter()).
#pragma once

#include <cstdint>
#include <vector>

#include "backend/cuda/device_tensor.h"
#include "backend/cuda/stream.h"
#include "core/tensor.h"
#include "quant/cuda/engine_context.h"

namespace exq::quant::cuda {

class RowStore {
 public:
  // host_x: F32 [rows, T, hidden] contiguous, alive as long as the store.
  RowStore(EngineContext& ctx, const TensorView& host_x, int64_t slots);
  ~RowStore();  // orders the compute stream after the queued copies, then frees
  RowStore(const RowStore&) = delete;
  RowStore& operator=(const RowStore&) = delete;

  int64_t rows() const { return rows_; }
  int64_t slots() const { return slots_; }
  size_t row_bytes() const { return row_bytes_; }

  void allocate();  // slot buffers; a fresh allocation holds no row
  void release();   // frees them; later compute-stream work is ordered after their copies

  // Queues the copies row r needs unless its slot holds them: x from the host states, and the
  // target from host_target ([rows, T, hidden]) when given. Throws exq::Error for NaN/Inf in x
  // found while staging.
  void stage(int64_t r, const Tensor* host_target);
  // Compute stream waits for row r's copies (and counts non-finite values of a directly copied
  // x the first time). Then x(r), target(r) may be used on it.
  void acquire(int64_t r);
  // After the device counts: throws exq::Error naming the first non-finite input element.
  void throw_non_finite() const;
  exq::cuda::DeviceView x(int64_t r) const;
  exq::cuda::DeviceView target(int64_t r) const;
  // After the compute using row r is queued: its slot may be refilled once that work is done.
  // target_written: the compute wrote row r's target into the slot.
  void release_row(int64_t r, bool target_written);
  // Queues the download of row r's target (after release_row) into host_target.
  void download_target(int64_t r, const TensorView& host_target);

 private:
  struct Slot {
    exq::cuda::DeviceTensor x, target;  // F32 [T, hidden]
    int64_t x_row = -1, target_row = -1;
    exq::cuda::Event free{false};    // compute is done with the slot
    exq::cuda::Event copied{false};  // the slot's copies so far are done
  };
  Slot& slot_of(int64_t r);
  void fill_checked(int64_t r, void* dst, size_t offset, size_t bytes) const;

  EngineContext& ctx_;
  TensorView host_x_;
  int64_t rows_, slots_;
  size_t row_bytes_;
  std::vector<Slot> slots_v_;
  std::vector<char> checked_;  // per row: x was checked for NaN/Inf
  bool allocated_ = false;
};

}  // namespace exq::quant::cuda
