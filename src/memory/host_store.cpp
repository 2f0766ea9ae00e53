#include "memory/host_store.h"

#include <fcntl.h>
#include <fmt/format.h>
#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <mutex>
#include <system_error>
#include <utility>

#include "core/error.h"

namespace exq::memory {
namespace fs = std::filesystem;

namespace detail {

struct Accounts {
  std::mutex mu;
  HostStoreStats stats;
  int64_t next_file = 0;

  void add(Tier tier, size_t bytes) {
    std::lock_guard<std::mutex> lock(mu);
    const auto n = static_cast<int64_t>(bytes);
    if (tier == Tier::kRam) {
      stats.ram_bytes += n;
      stats.peak_ram_bytes = std::max(stats.peak_ram_bytes, stats.ram_bytes);
    } else {
      stats.file_bytes += n;
      stats.peak_file_bytes = std::max(stats.peak_file_bytes, stats.file_bytes);
      ++stats.spilled_buffers;
      stats.spilled_bytes += n;
    }
    stats.peak_bytes = std::max(stats.peak_bytes, stats.ram_bytes + stats.file_bytes);
  }
  void remove(Tier tier, size_t bytes) {
    std::lock_guard<std::mutex> lock(mu);
    (tier == Tier::kRam ? stats.ram_bytes : stats.file_bytes) -= static_cast<int64_t>(bytes);
  }
};

}  // namespace detail

const char* tier_name(Tier tier) { return tier == Tier::kRam ? "ram" : "file"; }

HostBuffer::~HostBuffer() { reset(); }

HostBuffer::HostBuffer(HostBuffer&& other) noexcept
    : accounts_(std::move(other.accounts_)),
      ram_(std::move(other.ram_)),
      data_(std::exchange(other.data_, nullptr)),
      bytes_(std::exchange(other.bytes_, 0)),
      tier_(other.tier_),
      dtype_(other.dtype_),
      shape_(std::move(other.shape_)) {}

HostBuffer& HostBuffer::operator=(HostBuffer&& other) noexcept {
  if (this != &other) {
    reset();
    accounts_ = std::move(other.accounts_);
    ram_ = std::move(other.ram_);
    data_ = std::exchange(other.data_, nullptr);
    bytes_ = std::exchange(other.bytes_, 0);
    tier_ = other.tier_;
    dtype_ = other.dtype_;
    shape_ = std::move(other.shape_);
  }
  return *this;
}

void HostBuffer::reset() noexcept {
  if (data_ == nullptr) return;
  if (tier_ == Tier::kFile) ::munmap(data_, bytes_);
  ram_ = Tensor();
  if (accounts_) accounts_->remove(tier_, bytes_);
  accounts_.reset();
  data_ = nullptr;
  bytes_ = 0;
  shape_.clear();
}

TensorView HostBuffer::view() const {
  if (data_ == nullptr) return TensorView();
  return TensorView(data_, dtype_, shape_);
}

HostStore::HostStore(HostStoreOptions options)
    : options_(std::move(options)), accounts_(std::make_shared<detail::Accounts>()) {}

bool HostStore::fits_ram(size_t bytes) const {
  if (options_.ram_budget_bytes < 0) return true;
  std::lock_guard<std::mutex> lock(accounts_->mu);
  return accounts_->stats.ram_bytes + static_cast<int64_t>(bytes) <= options_.ram_budget_bytes;
}

HostBuffer HostStore::allocate(DType dtype, Shape shape) {
  const int64_t n = shape_numel(shape);
  EXQ_CHECK(n > 0, "host store: cannot allocate an empty buffer of shape {}", shape_str(shape));
  const size_t bytes = static_cast<size_t>(n) * dtype_size(dtype);
  if (!fits_ram(bytes)) return map_file(dtype, std::move(shape), bytes);
  HostBuffer b;
  b.ram_ = Tensor(dtype, shape);
  b.data_ = b.ram_.raw();
  b.bytes_ = bytes;
  b.tier_ = Tier::kRam;
  b.dtype_ = dtype;
  b.shape_ = std::move(shape);
  b.accounts_ = accounts_;
  accounts_->add(Tier::kRam, bytes);
  return b;
}

HostBuffer HostStore::adopt(Tensor tensor) {
  EXQ_CHECK(!tensor.empty() && tensor.numel() > 0, "host store: cannot adopt an empty tensor");
  const size_t bytes = tensor.nbytes();
  if (!fits_ram(bytes)) {
    HostBuffer b = map_file(tensor.dtype(), tensor.shape(), bytes);
    std::memcpy(b.data_, tensor.raw(), bytes);
    return b;
  }
  HostBuffer b;
  b.data_ = tensor.raw();
  b.bytes_ = bytes;
  b.tier_ = Tier::kRam;
  b.dtype_ = tensor.dtype();
  b.shape_ = tensor.shape();
  b.ram_ = std::move(tensor);
  b.accounts_ = accounts_;
  accounts_->add(Tier::kRam, bytes);
  return b;
}

HostBuffer HostStore::copy_of(const TensorView& view) {
  if (view.is_contiguous()) {
    HostBuffer b = allocate(view.dtype(), view.shape());
    std::memcpy(b.data_, view.raw(), b.bytes_);
    return b;
  }
  return adopt(Tensor::copy_of(view));
}

HostBuffer HostStore::map_file(DType dtype, Shape shape, size_t bytes) {
  EXQ_CHECK(!options_.spill_dir.empty(),
            "host store: {} bytes exceed the RAM budget of {} bytes and no spill folder is set",
            bytes, options_.ram_budget_bytes);
  std::error_code ec;
  fs::create_directories(options_.spill_dir, ec);
  int64_t id = 0;
  {
    std::lock_guard<std::mutex> lock(accounts_->mu);
    id = accounts_->next_file++;
  }
  const fs::path path = options_.spill_dir / fmt::format("spill-{}-{}.bin", ::getpid(), id);
  auto fail = [&](const std::string& what, int err) {
    return Error(fmt::format("host store: cannot {} spill file {} ({} bytes): {}", what,
                             path.string(), bytes, std::strerror(err)),
                 ErrorContext{.file = path.string()});
  };
  const int fd = ::open(path.c_str(), O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
  if (fd < 0) throw fail("create", errno);
  // Reserve the blocks now: writing through a mapping of a sparse file on a full disk is a SIGBUS.
  const int rc = ::posix_fallocate(fd, 0, static_cast<off_t>(bytes));
  void* p = rc == 0 ? ::mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0) : MAP_FAILED;
  const int map_err = errno;
  ::close(fd);
  ::unlink(path.c_str());  // the mapping keeps the data; the name is not needed
  if (rc != 0) throw fail("reserve", rc);
  if (p == MAP_FAILED) throw fail("map", map_err);
  HostBuffer b;
  b.data_ = p;
  b.bytes_ = bytes;
  b.tier_ = Tier::kFile;
  b.dtype_ = dtype;
  b.shape_ = std::move(shape);
  b.accounts_ = accounts_;
  accounts_->add(Tier::kFile, bytes);
  return b;
}

HostStoreStats HostStore::stats() const {
  std::lock_guard<std::mutex> lock(accounts_->mu);
  return accounts_->stats;
}

int64_t default_host_budget() {
  const long pages = ::sysconf(_SC_PHYS_PAGES);
  const long page = ::sysconf(_SC_PAGESIZE);
  if (pages <= 0 || page <= 0) return 8LL << 30;
  return static_cast<int64_t>(pages) * page / 2;
}

}  // namespace exq::memory
