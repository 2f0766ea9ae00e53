#include "runtime/cuda/cuda_draft.h"

#include <cmath>

#include "backend/cuda/cuda_check.h"
#include "backend/cuda/sampling.h"

namespace exq::runtime::cuda {

namespace gpu = exq::cuda;

namespace {
constexpr size_t kLogprobOffset = 16;  // the LogprobOut after the id in the pinned buffer
}  // namespace

CudaDraftModel::CudaDraftModel(CudaLlama& model, int64_t model_vocab)
    : DraftModel(model_vocab),
      model_(model),
      logprob_(DType::U8, {static_cast<int64_t>(sizeof(gpu::LogprobOut))}, model.allocator(), model.stream()),
      host_(kLogprobOffset + sizeof(gpu::LogprobOut)) {
  *host_.as<int32_t>() = -1;
  model_.reset();
}

DraftModel::Guess CudaDraftModel::run(std::span<const int32_t> tokens) {
  const cudaStream_t s = model_.stream();
  // A single token that is the last guess is already in the token slot (the argmax wrote it).
  const bool in_slot = tokens.size() == 1 && model_.position() > 0 && tokens[0] == *host_.as<int32_t>();
  // A few tokens (the last guess and the model's next one) run as a graph-replayed pass, not as
  // a prefill: a small draft model is launch-bound.
  const auto t = static_cast<int64_t>(tokens.size());
  gpu::DeviceView logits;
  if (in_slot)
    logits = model_.decode_slot();
  else if (t >= 2 && t <= CudaLlama::kMaxRowsOnDevice)
    logits = model_.forward_rows(tokens).slice0(t - 1, t);
  else
    logits = model_.forward_last(tokens);
  const gpu::DeviceView slot = model_.token_slot();
  gpu::argmax(logits, slot, s);
  auto* dev = static_cast<gpu::LogprobOut*>(logprob_.raw());
  gpu::token_logprob(logits, slot, 0, dev, s);
  auto* lp = reinterpret_cast<gpu::LogprobOut*>(host_.as<char>() + kLogprobOffset);
  CUDA_CHECK(cudaMemcpyAsync(lp, dev, sizeof(gpu::LogprobOut), cudaMemcpyDeviceToHost, s));
  CUDA_CHECK(cudaMemcpyAsync(host_.data(), slot.raw(), sizeof(int32_t), cudaMemcpyDeviceToHost, s));
  CUDA_CHECK(cudaStreamSynchronize(s));
  Guess g;
  g.id = *host_.as<int32_t>();
  g.p = std::isfinite(lp->logprob) ? std::exp(lp->logprob) : 0.0f;
  return g;
}

}  // namespace exq::runtime::cuda
