// Flat hash tables behind BpeModel's hot loop: the merge-rank table (pair of ids -> rank and
// merged id, open addressing) and the per-word result cache, which readers probe without
// taking a lock (slots are written once, under a mutex, and published with release stores).
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <mutex>
#include <span>
#include <string_view>
#include <vector>

namespace exq::tokenizer {

class MergeTable {
 public:
  struct Entry {
    uint64_t key = kEmpty;
    int32_t rank = 0;
    int32_t new_id = 0;
  };

  // Sets (a, b) -> (rank, new_id); a repeated pair keeps the last value.
  void insert(int32_t a, int32_t b, int32_t rank, int32_t new_id);
  const Entry* find(int32_t a, int32_t b) const {
    if (slots_.empty()) return nullptr;
    const uint64_t key = pair_key(a, b);
    for (size_t i = slot_of(key);; i = (i + 1) & mask_) {
      const Entry& e = slots_[i];
      if (e.key == key) return &e;
      if (e.key == kEmpty) return nullptr;
    }
  }
  bool empty() const { return size_ == 0; }

 private:
  static constexpr uint64_t kEmpty = ~uint64_t{0};  // ids are < 2^24, so never a real key
  static uint64_t pair_key(int32_t a, int32_t b) {
    return (static_cast<uint64_t>(static_cast<uint32_t>(a)) << 32) | static_cast<uint32_t>(b);
  }
  size_t slot_of(uint64_t key) const { return static_cast<size_t>((key * 0x9E3779B97F4A7C15ull) >> shift_); }
  void grow();

  std::vector<Entry> slots_;
  size_t mask_ = 0, size_ = 0;
  int shift_ = 64;
};

// Fixed-capacity cache of BPE results for short words, allocated on first insert. Thread-safe:
// find() is lock-free, insert() serializes writers. Words or results too long for a slot are
// simply not cached.
class WordCache {
 public:
  static constexpr size_t kMaxKeyBytes = 22;
  static constexpr size_t kMaxIds = 8;

  explicit WordCache(size_t slots_log2 = 16) : mask_((size_t{1} << slots_log2) - 1) {}
  ~WordCache() { delete[] slots_.load(std::memory_order_relaxed); }
  WordCache(const WordCache&) = delete;
  WordCache& operator=(const WordCache&) = delete;
  // Appends the cached ids of `word` to `out` and returns true on a hit.
  bool find(std::string_view word, std::vector<int32_t>& out) const;
  void insert(std::string_view word, std::span<const int32_t> ids);

 private:
  struct alignas(64) Slot {
    std::atomic<uint32_t> tag{0};  // 0: empty; otherwise high hash bits | 1, set last
    uint8_t key_len = 0;
    uint8_t n_ids = 0;
    char key[kMaxKeyBytes];
    int32_t ids[kMaxIds];
  };
  static constexpr int kProbes = 8;

  std::atomic<Slot*> slots_{nullptr};  // published once, under write_mutex_
  size_t mask_;
  size_t count_ = 0;  // guarded by write_mutex_
  std::mutex write_mutex_;
};

}  // namespace exq::tokenizer
