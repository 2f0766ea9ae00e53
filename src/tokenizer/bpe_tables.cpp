#include "tokenizer/bpe_tables.h"

#include <algorithm>
#include <cstring>

namespace exq::tokenizer {
namespace {

// A fast 64-bit string hash (8-byte blocks, multiply-xorshift mixing).
uint64_t hash_bytes(std::string_view s) {
  constexpr uint64_t kMul = 0x9E3779B97F4A7C15ull;
  uint64_t h = s.size() * kMul;
  size_t i = 0;
  for (; i + 8 <= s.size(); i += 8) {
    uint64_t v;
    std::memcpy(&v, s.data() + i, 8);
    h = (h ^ v) * kMul;
    h ^= h >> 29;
  }
  if (i < s.size()) {
    uint64_t v = 0;
    std::memcpy(&v, s.data() + i, s.size() - i);
    h = (h ^ v) * kMul;
    h ^= h >> 29;
  }
  h *= kMul;
  return h ^ (h >> 32);
}

}  // namespace

void MergeTable::insert(int32_t a, int32_t b, int32_t rank, int32_t new_id) {
  if ((size_ + 1) * 2 > slots_.size()) grow();
  const uint64_t key = pair_key(a, b);
  for (size_t i = slot_of(key);; i = (i + 1) & mask_) {
    Entry& e = slots_[i];
    if (e.key == key || e.key == kEmpty) {
      if (e.key == kEmpty) ++size_;
      e = Entry{key, rank, new_id};
      return;
    }
  }
}

void MergeTable::grow() {
  std::vector<Entry> old = std::move(slots_);
  const size_t n = old.empty() ? 1024 : old.size() * 2;
  slots_.assign(n, Entry{});
  mask_ = n - 1;
  shift_ = 64 - __builtin_ctzll(n);
  size_ = 0;
  for (const Entry& e : old)
    if (e.key != kEmpty)
      insert(static_cast<int32_t>(e.key >> 32), static_cast<int32_t>(e.key & 0xFFFFFFFFu), e.rank, e.new_id);
}

bool WordCache::find(std::string_view word, std::vector<int32_t>& out) const {
  const Slot* slots = slots_.load(std::memory_order_acquire);
  if (!slots || word.size() > kMaxKeyBytes) return false;
  const uint64_t h = hash_bytes(word);
  const uint32_t tag = static_cast<uint32_t>(h >> 32) | 1u;
  for (int p = 0; p < kProbes; ++p) {
    const Slot& s = slots[(h + static_cast<uint64_t>(p)) & mask_];
    const uint32_t t = s.tag.load(std::memory_order_acquire);
    if (t == 0) return false;
    if (t == tag && s.key_len == word.size() && std::memcmp(s.key, word.data(), word.size()) == 0) {
      out.insert(out.end(), s.ids, s.ids + s.n_ids);
      return true;
    }
  }
  return false;
}

void WordCache::insert(std::string_view word, std::span<const int32_t> ids) {
  if (word.size() > kMaxKeyBytes || ids.size() > kMaxIds) return;
  const uint64_t h = hash_bytes(word);
  const uint32_t tag = static_cast<uint32_t>(h >> 32) | 1u;
  std::lock_guard<std::mutex> lock(write_mutex_);
  Slot* slots = slots_.load(std::memory_order_relaxed);
  if (!slots) {
    slots = new Slot[mask_ + 1];
    slots_.store(slots, std::memory_order_release);
  }
  if (count_ * 4 >= (mask_ + 1) * 3) return;  // full enough: stop caching
  for (int p = 0; p < kProbes; ++p) {
    Slot& s = slots[(h + static_cast<uint64_t>(p)) & mask_];
    const uint32_t t = s.tag.load(std::memory_order_relaxed);
    if (t == tag && s.key_len == word.size() && std::memcmp(s.key, word.data(), word.size()) == 0) return;
    if (t != 0) continue;
    s.key_len = static_cast<uint8_t>(word.size());
    s.n_ids = static_cast<uint8_t>(ids.size());
    std::memcpy(s.key, word.data(), word.size());
    std::copy(ids.begin(), ids.end(), s.ids);
    s.tag.store(tag, std::memory_order_release);
    ++count_;
    return;
  }
}

}  // namespace exq::tokenizer
