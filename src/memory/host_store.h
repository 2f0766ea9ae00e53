// Host-side tiered store for the converter's big buffers (the calibration states of a pass:
// 3.3 GB per copy for an 8B model at 100 x 2048 rows). Buffers live in RAM while the store's
// RAM budget allows, beyond it in file-backed shared mappings in a spill folder (the work
// folder), so a TensorView over either works the same and the kernel pages spilled data out
// instead of the OOM killer ending the job. Spill files are unlinked as soon as they are
// mapped: a killed job leaves nothing behind. Accounting per tier (now and peak) feeds the
// status output. Thread-safe; buffers may outlive the store.
#pragma once

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <memory>

#include "core/tensor.h"

namespace exq::memory {

enum class Tier { kRam, kFile };
const char* tier_name(Tier tier);  // "ram", "file"

struct HostStoreStats {
  int64_t ram_bytes = 0;         // held now in RAM buffers
  int64_t file_bytes = 0;        // held now in file-backed buffers
  int64_t peak_ram_bytes = 0;
  int64_t peak_file_bytes = 0;
  int64_t peak_bytes = 0;        // both tiers together
  int64_t spilled_buffers = 0;   // buffers ever placed in the file tier
  int64_t spilled_bytes = 0;     // their bytes (what went to disk)
};

struct HostStoreOptions {
  int64_t ram_budget_bytes = -1;      // bytes of RAM buffers at once; < 0: no limit
  std::filesystem::path spill_dir;    // created on the first spill
};

namespace detail {
struct Accounts;
}

// One buffer of the store: owning, move-only, contiguous, 64-byte aligned (RAM) or page
// aligned (file). Releasing it (destructor, reset, move-assign) returns its bytes to its tier.
class HostBuffer {
 public:
  HostBuffer() = default;
  ~HostBuffer();
  HostBuffer(HostBuffer&& other) noexcept;
  HostBuffer& operator=(HostBuffer&& other) noexcept;
  HostBuffer(const HostBuffer&) = delete;
  HostBuffer& operator=(const HostBuffer&) = delete;

  TensorView view() const;
  operator TensorView() const { return view(); }
  bool empty() const { return data_ == nullptr; }
  Tier tier() const { return tier_; }
  DType dtype() const { return dtype_; }
  const Shape& shape() const { return shape_; }
  size_t nbytes() const { return bytes_; }
  void reset() noexcept;

 private:
  friend class HostStore;
  std::shared_ptr<detail::Accounts> accounts_;
  Tensor ram_;             // kRam storage
  void* data_ = nullptr;   // ram_'s data or the mapping
  size_t bytes_ = 0;
  Tier tier_ = Tier::kRam;
  DType dtype_ = DType::F32;
  Shape shape_;
};

class HostStore {
 public:
  explicit HostStore(HostStoreOptions options);

  // Uninitialized buffer: RAM when ram_bytes + its size fits the budget, else a spill file.
  // Throws exq::Error naming the spill file when it cannot be created, sized or mapped (e.g.
  // disk full: the space is reserved up front, so a full disk never becomes a SIGBUS later).
  HostBuffer allocate(DType dtype, Shape shape);
  // Takes a tensor over: kept as is (no copy) when it fits the RAM budget, else copied to a
  // spill file and freed.
  HostBuffer adopt(Tensor tensor);
  // Contiguous copy of any view into a new buffer.
  HostBuffer copy_of(const TensorView& view);

  HostStoreStats stats() const;
  int64_t ram_budget_bytes() const { return options_.ram_budget_bytes; }
  const std::filesystem::path& spill_dir() const { return options_.spill_dir; }

 private:
  bool fits_ram(size_t bytes) const;
  HostBuffer map_file(DType dtype, Shape shape, size_t bytes);

  HostStoreOptions options_;
  std::shared_ptr<detail::Accounts> accounts_;
};

// Default RAM budget for calibration states: half of the machine's physical memory (the rest
// is for weights, the engine's scratch and the page cache of the model files).
int64_t default_host_budget();

}  // namespace exq::memory
