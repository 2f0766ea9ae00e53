#include "runtime/cuda/cuda_sequences.h"

#include "backend/cuda/device_tensor.h"

namespace exq::runtime::cuda {

void CudaSequences::truncate(int seq, int64_t n) {
  model_.select_sequence(seq);
  model_.truncate(n);
}

std::span<const float> CudaSequences::forward(int seq, std::span<const int32_t> tokens, bool all) {
  model_.select_sequence(seq);
  logits_ = model_.forward(tokens, all);
  return logits_.span<const float>();
}

std::span<const float> CudaSequences::decode(std::span<const int> seqs, std::span<const int32_t> tokens) {
  logits_ = exq::cuda::to_host(model_.decode_batch(seqs, tokens), model_.stream());
  return logits_.span<const float>();
}

}  // namespace exq::runtime::cuda
