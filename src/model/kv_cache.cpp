#include "model/kv_cache.h"

namespace exq::model {

KvCache::KvCache(int64_t num_layers, int64_t max_len, int64_t kv_heads, int64_t head_dim, KvQuant quant)
    : max_len_(max_len), kv_heads_(kv_heads), head_dim_(head_dim), quant_(quant) {
  EXQ_CHECK(num_layers > 0 && max_len > 0 && kv_heads > 0 && head_dim > 0,
            "KvCache: invalid size (layers {}, max_len {}, kv_heads {}, head_dim {})", num_layers,
            max_len, kv_heads, head_dim);
  check_kv_quant(quant, head_dim);
  // Left uninitialized: attention only reads rows that a forward pass wrote, and untouched
  // pages of a long cache then cost no memory.
  for (int64_t l = 0; l < num_layers; ++l) {
    keys_.emplace_back(DType::F32, Shape{max_len, kv_heads, head_dim});
    values_.emplace_back(DType::F32, Shape{max_len, kv_heads, head_dim});
  }
}

void KvCache::truncate(int64_t n) {
  EXQ_CHECK(n >= 0 && n <= length_, "KvCache::truncate({}) outside [0, {}]", n, length_);
  length_ = n;
}

TensorView KvCache::keys(int64_t layer) const {
  EXQ_CHECK(layer >= 0 && layer < num_layers(), "KvCache: layer {} of {}", layer, num_layers());
  return keys_[static_cast<size_t>(layer)].view();
}

TensorView KvCache::values(int64_t layer) const {
  EXQ_CHECK(layer >= 0 && layer < num_layers(), "KvCache: layer {} of {}", layer, num_layers());
  return values_[static_cast<size_t>(layer)].view();
}

void KvCache::finish_rows(int64_t layer, int64_t begin, int64_t end) const {
  if (quant_ == KvQuant::kNone) return;
  EXQ_CHECK(begin >= 0 && begin <= end && end <= max_len_, "KvCache::finish_rows({}, {}) outside [0, {}]", begin,
            end, max_len_);
  const int64_t n = (end - begin) * kv_heads_ * head_dim_;
  const auto round = quant_ == KvQuant::kQ4 ? kv_q4_round : kv_q8_round;
  round(keys(layer).slice0(begin, end).data<float>(), n);
  round(values(layer).slice0(begin, end).data<float>(), n);
}

void KvCache::commit(int64_t n) {
  EXQ_CHECK(n >= length_ && n <= max_len_, "KvCache::commit({}) outside [{}, {}]", n, length_, max_len_);
  length_ = n;
}

}  // namespace exq::model
