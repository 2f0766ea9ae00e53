// The CUDA runtime behind generation and perplexity: a StepFunction over CudaLlama (for
// runtime::generate), the GPU sampler (runtime::Sampler's semantics and random stream, on
// the device), generation that feeds each sampled token back on the device (only the id comes
// to the host, for stop checks and text), and perplexity and KL divergence from CUDA logits.
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>
#include <functional>
#include <optional>
#include <random>
#include <span>
#include <vector>

#include "backend/cuda/device_tensor.h"
#include "backend/cuda/memory.h"
#include "backend/cuda/sampling.h"
#include "runtime/cuda/cuda_llama.h"
#include "runtime/generator.h"
#include "runtime/kl_divergence.h"
#include "runtime/model_step.h"
#include "runtime/perplexity.h"
#include "runtime/prompt_cache.h"
#include "runtime/sampler.h"
#include "tokenizer/tokenizer.h"

namespace exq::runtime::cuda {

// CudaLlama as a runtime::StepFunction (host logits each step). The model must outlive it.
class CudaStep : public StepFunction {
 public:
  explicit CudaStep(CudaLlama& model) : model_(model) {}
  std::span<const float> forward(std::span<const int32_t> tokens) override;
  std::span<const float> forward_all(std::span<const int32_t> tokens) override;  // one pass
  int64_t position() const override { return model_.position(); }
  int64_t max_context() const override { return model_.max_context(); }
  void reset() override { model_.reset(); }
  void truncate(int64_t n) override { model_.truncate(n); }

 private:
  CudaLlama& model_;
  Tensor logits_;  // [1, vocab] or [T, vocab] of the last forward
};

// The settings the device sampler takes for a SamplerConfig.
exq::cuda::SamplingParams sampling_params(const SamplerConfig& config);

// runtime::Sampler on the device: the same config and seed pick the same tokens from the same
// logits (and draw the same random numbers: one per non-greedy sample, two when a grammar
// refuses the first draw). Settings the kernel lacks (SamplerConfig::host_only: typical-p,
// top-n-sigma, XTC) sample on the host instead: the row comes down, runtime::Sampler draws, the
// id goes up.
class CudaSampler {
 public:
  // Throws exq::Error for an invalid config (SamplerConfig::validate with the vocabulary).
  CudaSampler(const SamplerConfig& config, int64_t vocab, exq::cuda::CachingAllocator& alloc,
              cudaStream_t stream);
  uint64_t seed() const { return seed_; }
  // The tokens the repetition penalty applies to: exactly `ids` (prompt + generated so far).
  // The presence / frequency penalties count only the tokens sampled after it.
  void set_history(std::span<const int32_t> ids);
  // Samples from logits [1, vocab] (device) into `out` ([1] I32 on the device, e.g.
  // CudaLlama::token_slot()), adds it to the history and returns it (waits for the stream).
  // Throws the CPU sampler's exq::Error for NaN / +Inf logits or nothing to sample.
  int32_t sample(const exq::cuda::DeviceView& logits, const exq::cuda::DeviceView& out);
  // The same, and with `lp`: the token's log-probability under the raw logits and its top_n
  // alternatives (runtime::token_logprob's, computed on the device; one wait for both). With a
  // constraint, a token it refuses is drawn again from the allowed ones (its mask goes up).
  int32_t sample(const exq::cuda::DeviceView& logits, const exq::cuda::DeviceView& out, int top_n,
                 TokenLogprob* lp, const TokenConstraint* constraint = nullptr);

 private:
  // The row the draw reads: `logits`, or the adjusted copy (bias, counts, `allowed`).
  exq::cuda::DeviceView row_for(const exq::cuda::DeviceView& logits, bool masked);
  void draw(const exq::cuda::DeviceView& row, const exq::cuda::DeviceView& out);

  SamplerConfig config_;
  exq::cuda::SamplingParams params_;
  uint64_t seed_;
  std::mt19937_64 rng_;
  exq::cuda::CachingAllocator& alloc_;
  cudaStream_t stream_;
  int64_t vocab_;
  exq::cuda::DeviceTensor seen_;       // [vocab] U8, only with a repetition penalty
  exq::cuda::DeviceTensor workspace_;  // sample_workspace_bytes(vocab)
  exq::cuda::PinnedBuffer host_;       // the sampled id, then a LogprobOut when asked
  exq::cuda::DeviceTensor logprob_;    // LogprobOut bytes, allocated on first use
  exq::cuda::DeviceTensor bias_;       // [vocab] F32, only with a logit bias
  exq::cuda::DeviceTensor counts_;     // [vocab] I32, only with presence / frequency penalties
  exq::cuda::DeviceTensor adjusted_;   // [vocab] F32, the adjusted row (allocated on first use)
  exq::cuda::DeviceTensor allowed_;    // [vocab] U8, a grammar's mask (allocated on first use)
  exq::cuda::PinnedBuffer allowed_host_;
  // Host sampling (config.host_only()): the CPU sampler on the same seed, its history, the row.
  std::optional<Sampler> host_sampler_;
  std::vector<int32_t> history_;
  size_t generated_from_ = 0;
  exq::cuda::PinnedBuffer row_host_;
  int32_t sample_on_host(const exq::cuda::DeviceView& logits, const exq::cuda::DeviceView& out, int top_n,
                         TokenLogprob* lp, const TokenConstraint* constraint);
};

// runtime::generate on the GPU: the same stop rules, stream, drafts and result, with GPU
// sampling (a draft's rows are sampled on the device one after another).
GenerateResult generate_cuda(CudaLlama& model, TextDecoder* decoder, std::span<const int32_t> prompt,
                             const GenerateOptions& options, const TextCallback& on_text = {});

// runtime::generate_text on a CudaLlama (its cache is reset first): checks the prompt ids and
// streams text through the tokenizer.
GenerateResult generate_text_cuda(CudaLlama& model, const tokenizer::Tokenizer& tok,
                                  std::span<const int32_t> prompt, const GenerateOptions& options,
                                  const TextCallback& on_text = {});

// runtime::LlamaSession on a CudaLlama: generations over its KV cache kept between calls, a
// prompt that begins with what the cache holds running only from where the two differ (with
// `reuse`). The model and tokenizer must outlive it.
class CudaSession {
 public:
  CudaSession(CudaLlama& model, const tokenizer::Tokenizer& tok);
  GenerateResult generate(std::span<const int32_t> prompt, const GenerateOptions& options, bool reuse,
                          const TextCallback& on_text = {});
  std::span<const int32_t> context_tokens() const { return cache_.tokens(); }

 private:
  CudaLlama& model_;
  CudaStep step_;
  TokenizerTextDecoder decoder_;
  PromptCache cache_;
};

// runtime::perplexity with CUDA logits; every window (>= 2 tokens) must fit max_context() + 1.
PerplexityResult perplexity_cuda(CudaLlama& model, const std::vector<std::vector<int32_t>>& windows,
                                 const std::function<void(int64_t, double)>& on_window = {});

// CudaLlama's WindowLogits (the model must outlive it).
WindowLogits window_logits_cuda(CudaLlama& model);

// runtime::kl_divergence with both models on the GPU (same window limits as perplexity_cuda).
KlResult kl_divergence_cuda(CudaLlama& base, CudaLlama& test, const std::vector<std::vector<int32_t>>& windows,
                            const KlProgress& on_window = {});

}  // namespace exq::runtime::cuda
