// CudaLlama's several sequences (CudaOptions::sequences) as a runtime::SequenceModel, for
// concurrent generations through runtime::Batcher (exq serve --parallel on a GPU). The logits
// come to the host, where each generation samples its own row.
#pragma once

#include <span>

#include "core/tensor.h"
#include "runtime/batch.h"
#include "runtime/cuda/cuda_llama.h"

namespace exq::runtime::cuda {

class CudaSequences : public SequenceModel {
 public:
  explicit CudaSequences(CudaLlama& model) : model_(model) {}  // the model must outlive this
  int sequences() const override { return model_.sequences(); }
  int max_batch() const override { return CudaLlama::kMaxBatchRows; }
  int64_t max_context() const override { return model_.max_context(); }
  int64_t vocab() const override { return model_.config().vocab_size; }
  void truncate(int seq, int64_t n) override;
  std::span<const float> forward(int seq, std::span<const int32_t> tokens, bool all) override;
  std::span<const float> decode(std::span<const int> seqs, std::span<const int32_t> tokens) override;

 private:
  CudaLlama& model_;
  Tensor logits_;
};

}  // namespace exq::runtime::cuda
