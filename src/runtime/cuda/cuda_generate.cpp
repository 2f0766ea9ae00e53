#include "runtime/cuda/cuda_generate.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <string>

#include "backend/cuda/cuda_check.h"
#include "core/error.h"
#include "runtime/model_step.h"

namespace exq::runtime::cuda {

namespace gpu = exq::cuda;

namespace {

using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point t0) {
  return std::chrono::duration<double>(Clock::now() - t0).count();
}

// The sampler's pinned bytes: the id, then an aligned LogprobOut.
constexpr size_t kLogprobOffset = 64;
constexpr size_t kHostBytes = kLogprobOffset + sizeof(gpu::LogprobOut);
static_assert(gpu::kLogprobTopMax == kMaxTopLogprobs);

TokenLogprob from_device(const gpu::LogprobOut& r, int32_t id, int top_n) {
  TokenLogprob lp;
  lp.id = id;
  lp.logprob = r.logprob;
  for (int j = 0; j < top_n && r.top_ids[j] >= 0; ++j) lp.top.emplace_back(r.top_ids[j], r.top_logprobs[j]);
  return lp;
}

// score_prompt on the GPU: the prompt but its last token runs as a prefill whose chunks of
// logits are scored on the device (a block per row) as they finish; one wait at the end.
std::span<const int32_t> score_prompt_cuda(CudaLlama& model, std::span<const int32_t> rest,
                                           const GenerateOptions& options, GenerateResult& result) {
  if (!options.prompt_logprobs || options.logprobs < 0 || rest.size() < 2) return rest;
  const auto n = static_cast<int64_t>(rest.size()) - 1;
  cudaStream_t stream = model.stream();
  const TensorView next(const_cast<int32_t*>(rest.data() + 1), DType::I32, {n});
  const gpu::DeviceTensor ids = gpu::to_device(next, model.allocator(), stream);
  gpu::DeviceTensor scored(DType::U8, {n * static_cast<int64_t>(sizeof(gpu::LogprobOut))}, model.allocator(), stream);
  gpu::PinnedBuffer host(static_cast<size_t>(n) * sizeof(gpu::LogprobOut));
  auto* dev = static_cast<gpu::LogprobOut*>(scored.raw());
  model.forward_rows_to(rest.first(static_cast<size_t>(n)), [&](const gpu::DeviceView& rows, int64_t first) {
    const int64_t k = rows.dim(0);
    gpu::token_logprob(rows, ids.view().slice0(first, first + k), options.logprobs, dev + first, stream);
  });
  CUDA_CHECK(cudaMemcpyAsync(host.data(), dev, host.size(), cudaMemcpyDeviceToHost, stream));
  CUDA_CHECK(cudaStreamSynchronize(stream));
  const auto* out = host.as<gpu::LogprobOut>();
  for (int64_t i = 0; i < n; ++i) result.prompt_logprobs.push_back(from_device(out[i], next.data<int32_t>()[i], options.logprobs));
  return rest.last(1);
}

}  // namespace

std::span<const float> CudaStep::forward(std::span<const int32_t> tokens) {
  logits_ = model_.forward(tokens, /*all_logits=*/false);
  return logits_.span<const float>();
}

std::span<const float> CudaStep::forward_all(std::span<const int32_t> tokens) {
  logits_ = model_.forward(tokens, /*all_logits=*/true);
  return logits_.span<const float>();
}

gpu::SamplingParams sampling_params(const SamplerConfig& c) {
  gpu::SamplingParams p;
  p.temperature = c.temperature;
  p.top_k = c.top_k;
  p.top_p = c.top_p;
  p.min_p = c.min_p;
  p.repetition_penalty = c.repetition_penalty;
  return p;
}

CudaSampler::CudaSampler(const SamplerConfig& config, int64_t vocab, gpu::CachingAllocator& alloc,
                         cudaStream_t stream)
    : config_(config),
      params_(sampling_params(config)),
      seed_(config.seed ? *config.seed : std::random_device{}()),
      rng_(seed_),
      alloc_(alloc),
      stream_(stream),
      vocab_(vocab),
      host_(kHostBytes) {
  config_.validate(vocab);
  if (config_.host_only()) {
    SamplerConfig c = config_;
    c.seed = seed_;
    host_sampler_.emplace(c);
    row_host_ = gpu::PinnedBuffer(static_cast<size_t>(vocab) * sizeof(float));
    return;
  }
  workspace_ = gpu::DeviceTensor(DType::U8, {static_cast<int64_t>(gpu::sample_workspace_bytes(vocab))},
                                 alloc, stream);
  if (config_.repetition_penalty != 1.0f) {
    seen_ = gpu::DeviceTensor(DType::U8, {vocab}, alloc, stream);
    CUDA_CHECK(cudaMemsetAsync(seen_.raw(), 0, seen_.nbytes(), stream));
  }
  if (!config_.logit_bias.empty()) {
    // The CPU adds each entry in order: a repeated id adds up.
    std::vector<float> bias(static_cast<size_t>(vocab), 0.0f);
    for (const LogitBias& b : config_.logit_bias) bias[static_cast<size_t>(b.id)] += b.bias;
    bias_ = gpu::to_device(TensorView(bias.data(), DType::F32, {vocab}), alloc, stream);
    CUDA_CHECK(cudaStreamSynchronize(stream));  // `bias` is pageable and goes out of scope
  }
  if (config_.presence_penalty != 0.0f || config_.frequency_penalty != 0.0f) {
    counts_ = gpu::DeviceTensor(DType::I32, {vocab}, alloc, stream);
    CUDA_CHECK(cudaMemsetAsync(counts_.raw(), 0, counts_.nbytes(), stream));
  }
}

void CudaSampler::set_history(std::span<const int32_t> ids) {
  if (host_sampler_) {
    history_.assign(ids.begin(), ids.end());
    generated_from_ = ids.size();
    return;
  }
  if (!counts_.empty()) CUDA_CHECK(cudaMemsetAsync(counts_.raw(), 0, counts_.nbytes(), stream_));
  if (seen_.empty()) return;
  CUDA_CHECK(cudaMemsetAsync(seen_.raw(), 0, seen_.nbytes(), stream_));
  if (ids.empty()) return;
  const TensorView host(const_cast<int32_t*>(ids.data()), DType::I32, {static_cast<int64_t>(ids.size())});
  const gpu::DeviceTensor dev = gpu::to_device(host, alloc_, stream_);
  gpu::mark_seen(dev, seen_, stream_);
  CUDA_CHECK(cudaStreamSynchronize(stream_));  // before `dev` returns to the allocator's cache
}

int32_t CudaSampler::sample(const gpu::DeviceView& logits, const gpu::DeviceView& out) {
  return sample(logits, out, 0, nullptr);
}

gpu::DeviceView CudaSampler::row_for(const gpu::DeviceView& logits, bool masked) {
  if (!config_.adjusts_logits() && !masked) return logits;
  if (adjusted_.empty()) adjusted_ = gpu::DeviceTensor(DType::F32, {vocab_}, alloc_, stream_);
  gpu::LogitAdjust a;
  a.bias = bias_.view();
  a.counts = counts_.view();
  a.presence = config_.presence_penalty;
  a.frequency = config_.frequency_penalty;
  if (masked) a.allowed = allowed_.view();
  gpu::adjust_logits(logits, a, adjusted_, stream_);
  return adjusted_.view();
}

void CudaSampler::draw(const gpu::DeviceView& row, const gpu::DeviceView& out) {
  // As Sampler::sample: a random number only for a non-greedy draw.
  const double u = config_.greedy() ? 0.0 : uniform_from_bits(rng_());
  gpu::sample(row, params_, u, seen_.empty() ? gpu::DeviceView() : seen_.view(), workspace_, out, stream_);
}

int32_t CudaSampler::sample_on_host(const gpu::DeviceView& logits, const gpu::DeviceView& out, int top_n,
                                    TokenLogprob* lp, const TokenConstraint* constraint) {
  EXQ_CHECK(logits.numel() == vocab_, "sample: {} logits for a vocabulary of {}", logits.numel(), vocab_);
  CUDA_CHECK(cudaMemcpyAsync(row_host_.data(), logits.raw(), row_host_.size(), cudaMemcpyDeviceToHost, stream_));
  CUDA_CHECK(cudaStreamSynchronize(stream_));
  const std::span<const float> row(row_host_.as<float>(), static_cast<size_t>(vocab_));
  // As constrained_sample on the CPU: a draw the grammar refuses is drawn again under its mask.
  int32_t t = host_sampler_->sample(row, history_, generated_from_);
  if (constraint && !constraint->allows(t)) t = host_sampler_->sample(row, history_, generated_from_, constraint->allowed());
  history_.push_back(t);
  if (lp) *lp = runtime::token_logprob(row, t, top_n);
  *host_.as<int32_t>() = t;
  // Stream-ordered before the next D2H copy and its wait, so host_ is free again by then.
  CUDA_CHECK(cudaMemcpyAsync(out.raw(), host_.data(), sizeof(int32_t), cudaMemcpyHostToDevice, stream_));
  return t;
}

int32_t CudaSampler::sample(const gpu::DeviceView& logits, const gpu::DeviceView& out, int top_n, TokenLogprob* lp,
                            const TokenConstraint* constraint) {
  if (host_sampler_) return sample_on_host(logits, out, top_n, lp, constraint);
  draw(row_for(logits, false), out);
  if (constraint) {
    // The grammar checks the draw on the host; a refused one is drawn again under its mask.
    CUDA_CHECK(cudaMemcpyAsync(host_.data(), out.raw(), sizeof(int32_t), cudaMemcpyDeviceToHost, stream_));
    CUDA_CHECK(cudaStreamSynchronize(stream_));
    if (!constraint->allows(gpu::sampled_token(*host_.as<int32_t>()))) {
      const std::vector<uint8_t>& mask = constraint->allowed();
      EXQ_CHECK(static_cast<int64_t>(mask.size()) == vocab_, "grammar: the vocabulary has {} tokens, the logits {}",
                mask.size(), vocab_);
      if (allowed_.empty()) {
        allowed_ = gpu::DeviceTensor(DType::U8, {vocab_}, alloc_, stream_);
        allowed_host_ = gpu::PinnedBuffer(mask.size());
      }
      std::copy(mask.begin(), mask.end(), allowed_host_.as<uint8_t>());
      CUDA_CHECK(cudaMemcpyAsync(allowed_.raw(), allowed_host_.data(), mask.size(), cudaMemcpyHostToDevice, stream_));
      draw(row_for(logits, true), out);
    }
  }
  if (!seen_.empty()) gpu::mark_seen(out, seen_, stream_);
  if (!counts_.empty()) gpu::count_token(out, counts_, stream_);
  auto* result = reinterpret_cast<gpu::LogprobOut*>(host_.as<char>() + kLogprobOffset);
  if (lp) {
    if (logprob_.empty())
      logprob_ = gpu::DeviceTensor(DType::U8, {static_cast<int64_t>(sizeof(gpu::LogprobOut))}, alloc_, stream_);
    auto* dev = static_cast<gpu::LogprobOut*>(logprob_.raw());
    gpu::token_logprob(logits, out, top_n, dev, stream_);
    CUDA_CHECK(cudaMemcpyAsync(result, dev, sizeof(gpu::LogprobOut), cudaMemcpyDeviceToHost, stream_));
  }
  CUDA_CHECK(cudaMemcpyAsync(host_.data(), out.raw(), sizeof(int32_t), cudaMemcpyDeviceToHost, stream_));
  CUDA_CHECK(cudaStreamSynchronize(stream_));
  const int32_t id = gpu::sampled_token(*host_.as<int32_t>());
  if (lp) *lp = from_device(*result, id, top_n);
  return id;
}

GenerateResult generate_cuda(CudaLlama& model, TextDecoder* decoder, std::span<const int32_t> prompt,
                             const GenerateOptions& options, const TextCallback& on_text) {
  std::span<const int32_t> rest = prompt_to_run(prompt, options, model.position(), model.max_context());
  Drafter drafter(options.draft, options.prediction);  // validates: a pass fits forward_rows

  GenerateResult result;
  CudaSampler sampler(options.sampler, model.config().vocab_size, model.allocator(), model.stream());
  result.seed = sampler.seed();
  result.prompt_tokens = static_cast<int64_t>(prompt.size());
  result.cached_tokens = options.cached_prompt_tokens;
  auto t0 = Clock::now();
  rest = score_prompt_cuda(model, rest, options, result);
  if (options.max_new_tokens == 0) {
    result.prefill_seconds = seconds_since(t0);
    return result;
  }
  GenerationOutput out(result, decoder, options, on_text);
  sampler.set_history(prompt);
  std::vector<int32_t> history(prompt.begin(), prompt.end());  // the drafts' (the sampler keeps its own)

  check_vocab_settings(options, model.config().vocab_size);
  // With logprobs the device computes them beside the draw, behind the same wait.
  auto sample = [&](const gpu::DeviceView& row) {
    if (!out.scoring()) return sampler.sample(row, model.token_slot(), 0, nullptr, out.constraint());
    TokenLogprob lp;
    const int32_t t = sampler.sample(row, model.token_slot(), options.logprobs, &lp, out.constraint());
    out.record(std::move(lp));
    return t;
  };

  gpu::DeviceView logits = model.forward_last(rest);
  int32_t next = sample(logits);
  result.prefill_seconds = seconds_since(t0);

  t0 = Clock::now();
  for (;;) {
    history.push_back(next);
    if (out.add(next)) break;
    if (model.position() >= model.max_context()) {
      result.stop = StopReason::ContextFull;
      break;
    }
    const std::vector<int32_t> draft =
        drafter.enabled() ? drafter.propose(history, out.draft_room(model.position(), model.max_context()))
                          : std::vector<int32_t>();
    ++result.decode_steps;
    if (draft.empty()) {
      logits = model.decode_slot();  // the sampler left `next` in the token slot
      next = sample(logits);
      continue;
    }
    std::vector<int32_t> pass{next};
    pass.insert(pass.end(), draft.begin(), draft.end());
    const int64_t base = model.position();
    const gpu::DeviceView rows = model.forward_rows(pass);
    const DraftCheck c = check_draft(draft, drafter, out, history, [&](size_t i) {
      const auto r = static_cast<int64_t>(i);
      return sample(rows.slice0(r, r + 1));
    });
    model.truncate(base + c.keep);
    if (c.stopped) break;
    next = c.next;  // also in the token slot: the last token sampled
  }
  result.decode_seconds = result.decode_steps > 0 ? seconds_since(t0) : 0.0;
  out.finish();
  return result;
}

GenerateResult generate_text_cuda(CudaLlama& model, const tokenizer::Tokenizer& tok,
                                  std::span<const int32_t> prompt, const GenerateOptions& options,
                                  const TextCallback& on_text) {
  check_prompt_ids(prompt, model.config().vocab_size);
  model.reset();
  TokenizerTextDecoder decoder(tok);
  return generate_cuda(model, &decoder, prompt, options, on_text);
}

CudaSession::CudaSession(CudaLlama& model, const tokenizer::Tokenizer& tok)
    : model_(model), step_(model), decoder_(tok) {}

GenerateResult CudaSession::generate(std::span<const int32_t> prompt, const GenerateOptions& options,
                                     bool reuse, const TextCallback& on_text) {
  check_prompt_ids(prompt, model_.config().vocab_size);
  return cache_.generate(step_, prompt, options, reuse,
                         [&](std::span<const int32_t> p, const GenerateOptions& o) {
                           return generate_cuda(model_, &decoder_, p, o, on_text);
                         });
}

WindowLogits window_logits_cuda(CudaLlama& model) {
  return [&model](size_t w, std::span<const int32_t> inputs) {
    const auto n = static_cast<int64_t>(inputs.size()) + 1;
    EXQ_CHECK(n - 1 <= model.max_context(), "window {} of {} tokens exceeds the context of {}", w, n,
              model.max_context() + 1);
    model.reset();
    return model.forward(inputs, true);
  };
}

PerplexityResult perplexity_cuda(CudaLlama& model, const std::vector<std::vector<int32_t>>& windows,
                                 const std::function<void(int64_t, double)>& on_window) {
  return score_windows(windows, model.config().vocab_size, window_logits_cuda(model), on_window);
}

KlResult kl_divergence_cuda(CudaLlama& base, CudaLlama& test, const std::vector<std::vector<int32_t>>& windows,
                            const KlProgress& on_window) {
  return compare_windows(windows, common_vocab(base.config(), test.config()), window_logits_cuda(base),
                         window_logits_cuda(test), on_window);
}

}  // namespace exq::runtime::cuda
