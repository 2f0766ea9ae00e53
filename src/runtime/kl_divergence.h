// How far a model's next-token distributions are from a reference model's on the same token
// windows (the windows of runtime/perplexity): per scored position the KL divergence
// KL(P_base || P_test) in nats, whether both put the same token first, and the change in the
// probability of the token that follows; each model's perplexity comes with it. The statistics
// are the ones llama.cpp's perplexity tool prints for quantized models.
#pragma once

#include <cstdint>
#include <functional>
#include <span>
#include <vector>

#include "model/llama.h"
#include "runtime/perplexity.h"

namespace exq::runtime {

// One scored position of both models.
struct PositionCompare {
  double kl = 0.0;        // KL(P_base || P_test), nats; rounding below 0 is reported as 0
  bool same_top = false;  // both argmaxes (first index on ties) equal
  double p_base = 0.0;    // probability of the next token under each model
  double p_test = 0.0;
  double nll_base = 0.0;  // -log of those probabilities
  double nll_test = 0.0;
};

// Compares one row of logits of each model (same vocabulary); next is the token that follows.
// Throws exq::Error on sizes that differ, an empty row, next out of range or a non-finite logit.
PositionCompare compare_position(std::span<const float> base, std::span<const float> test, int32_t next);

struct KlResult {
  PerplexityResult base, test;  // each model's perplexity on the windows
  int64_t tokens = 0;           // positions scored
  double kl_mean = 0.0, kl_stderr = 0.0;  // standard error of the mean over positions
  // Nearest-rank percentiles of the per-position KL, and its largest value.
  double kl_median = 0.0, kl_p90 = 0.0, kl_p99 = 0.0, kl_p999 = 0.0, kl_max = 0.0;
  double same_top = 0.0, same_top_stderr = 0.0;  // fraction of positions
  double dp_mean = 0.0, dp_rms = 0.0;            // p_test - p_base of the next token
  // Mean of nll_test - nll_base, i.e. ln(ppl_test / ppl_base), with its standard error.
  double ln_ppl_ratio = 0.0, ln_ppl_ratio_stderr = 0.0;
  std::vector<double> window_kl;  // mean KL of each window
};

// Scores every window (each needs >= 2 tokens) with both models' logits (WindowLogits as in
// perplexity.h). on_window(index, so_far), when set, is called after each window; so_far holds
// the per-window figures up to it (window_kl, base / test window_ppl).
using KlProgress = std::function<void(int64_t window, const KlResult& so_far)>;
KlResult compare_windows(const std::vector<std::vector<int32_t>>& windows, int64_t vocab, const WindowLogits& base,
                         const WindowLogits& test, const KlProgress& on_window = {});

// The vocabulary size both models share; throws exq::Error when they differ.
int64_t common_vocab(const io::ModelConfig& base, const io::ModelConfig& test);

// Both models on the CPU; their vocabularies must match.
KlResult kl_divergence(model::LlamaModel& base, model::LlamaModel& test,
                       const std::vector<std::vector<int32_t>>& windows,
                       const KlProgress& on_window = {});

}  // namespace exq::runtime
