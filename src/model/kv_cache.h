// Per-layer key/value cache of a decoder: K and V rows [max_len, kv_heads, head_dim] float32,
// filled in position order by LlamaModel::forward. Not thread-safe; one sequence per cache.
// KvQuant::kQ8 / kQ4: rows hold the values a q8 / q4 cache reads back (kv_quant.h), still as f32
// (the same numbers as the CUDA cache, not its memory).
#pragma once

#include <cstdint>
#include <vector>

#include "core/tensor.h"
#include "model/kv_quant.h"

namespace exq::model {

class KvCache {
 public:
  KvCache() = default;
  KvCache(int64_t num_layers, int64_t max_len, int64_t kv_heads, int64_t head_dim,
          KvQuant quant = KvQuant::kNone);

  int64_t length() const { return length_; }  // positions filled
  int64_t max_len() const { return max_len_; }
  int64_t num_layers() const { return static_cast<int64_t>(keys_.size()); }
  int64_t kv_heads() const { return kv_heads_; }
  int64_t head_dim() const { return head_dim_; }
  KvQuant quant() const { return quant_; }

  void reset() { length_ = 0; }
  // Keeps the first n positions (n <= length()), e.g. to rewind a speculative continuation.
  void truncate(int64_t n);

  // The whole buffer of one layer, [max_len, kv_heads, head_dim]; rows >= length() are stale.
  TensorView keys(int64_t layer) const;
  TensorView values(int64_t layer) const;

  // Called after a forward pass wrote rows [begin, end) of a layer, before it reads them: a q8
  // or q4 cache rounds them as it stores them.
  void finish_rows(int64_t layer, int64_t begin, int64_t end) const;

  // Marks positions [length(), n) as filled; called by the forward pass after writing them.
  void commit(int64_t n);

 private:
  std::vector<Tensor> keys_;    // per layer [max_len, kv_heads, head_dim]
  std::vector<Tensor> values_;  // per layer [max_len, kv_heads, head_dim]
  int64_t max_len_ = 0;
  int64_t kv_heads_ = 0;
  int64_t head_dim_ = 0;
  int64_t length_ = 0;
  KvQuant quant_ = KvQuant::kNone;
};

}  // namespace exq::model
