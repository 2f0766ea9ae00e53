// A draft model (runtime/draft_model.h) on the GPU: its guesses are picked on the device (argmax,
// and the guess's log-probability for p_min), so only an id and a float come to the host per
// guess, and each guess runs from the token slot the argmax wrote (the decode step's graph).
#pragma once

#include <cstdint>
#include <span>

#include "backend/cuda/device_tensor.h"
#include "backend/cuda/memory.h"
#include "runtime/cuda/cuda_llama.h"
#include "runtime/draft_model.h"

namespace exq::runtime::cuda {

class CudaDraftModel final : public DraftModel {
 public:
  // The model must outlive this object; its context is emptied first.
  CudaDraftModel(CudaLlama& model, int64_t model_vocab);

 protected:
  Guess run(std::span<const int32_t> tokens) override;
  void truncate(int64_t n) override { model_.truncate(n); }
  int64_t max_context() const override { return model_.max_context(); }

 private:
  CudaLlama& model_;
  exq::cuda::DeviceTensor logprob_;  // LogprobOut of the guess
  exq::cuda::PinnedBuffer host_;     // the guess's id, then its LogprobOut
};

}  // namespace exq::runtime::cuda
