// Perplexity of a model on fixed token windows, the way the fixtures (and exllamav2 / HF
// evaluation scripts) define it: each window runs from a fresh cache, its tokens 1..n-1 are
// scored from the logits of the tokens before them, and ppl = exp(mean NLL over all of them).
#pragma once

#include <cstdint>
#include <functional>
#include <span>
#include <vector>

#include "model/llama.h"

namespace exq::runtime {

struct PerplexityResult {
  double ppl = 0.0;                // exp(nll)
  double nll = 0.0;                // mean negative log-likelihood (nats) per scored token
  int64_t tokens = 0;              // tokens scored
  std::vector<double> window_ppl;  // exp(mean NLL) of each window
};

// Non-overlapping windows [i*window, (i+1)*window) of ids, at most max_windows of them
// (0: all); a shorter tail is dropped. Throws exq::Error for window < 2.
std::vector<std::vector<int32_t>> split_windows(std::span<const int32_t> ids, int64_t window,
                                                int64_t max_windows = 0);

// Scores every window (each needs >= 2 tokens). on_window(index, window_ppl), when set, is
// called after each window (progress output).
PerplexityResult perplexity(model::LlamaModel& model, const std::vector<std::vector<int32_t>>& windows,
                            const std::function<void(int64_t, double)>& on_window = {});

// The scoring shared by every device: logits(w, inputs) runs tokens 0..n-2 of window w from a
// fresh cache and returns their F32 logits [n - 1, vocab].
using WindowLogits = std::function<Tensor(size_t window, std::span<const int32_t> inputs)>;
PerplexityResult score_windows(const std::vector<std::vector<int32_t>>& windows, int64_t vocab,
                               const WindowLogits& logits,
                               const std::function<void(int64_t, double)>& on_window = {});

// A CPU model's WindowLogits (the model must outlive it).
WindowLogits window_logits(model::LlamaModel& model);

}  // namespace exq::runtime
