#include "runtime/perplexity.h"

#include <cmath>

#include "backend/cpu/elementwise.h"

namespace exq::runtime {

std::vector<std::vector<int32_t>> split_windows(std::span<const int32_t> ids, int64_t window,
                                                int64_t max_windows) {
  EXQ_CHECK(window >= 2, "perplexity window must be at least 2 tokens, got {}", window);
  std::vector<std::vector<int32_t>> out;
  const int64_t n = static_cast<int64_t>(ids.size());
  for (int64_t b = 0; b + window <= n; b += window) {
    if (max_windows > 0 && static_cast<int64_t>(out.size()) == max_windows) break;
    out.emplace_back(ids.begin() + b, ids.begin() + b + window);
  }
  return out;
}

PerplexityResult score_windows(const std::vector<std::vector<int32_t>>& windows, int64_t vocab,
                               const WindowLogits& logits_of,
                               const std::function<void(int64_t, double)>& on_window) {
  EXQ_CHECK(!windows.empty(), "perplexity: no token windows");
  PerplexityResult r;
  double total = 0.0;
  for (size_t w = 0; w < windows.size(); ++w) {
    const std::vector<int32_t>& ids = windows[w];
    const int64_t n = static_cast<int64_t>(ids.size());
    EXQ_CHECK(n >= 2, "perplexity: window {} has {} tokens, need at least 2", w, n);
    // Logits of positions 0..n-2 predict tokens 1..n-1; the last position predicts nothing.
    const Tensor logits = logits_of(w, std::span(ids).first(static_cast<size_t>(n - 1)));
    const std::vector<double> lse = cpu::logsumexp_rows(logits);
    double sum = 0.0;
    for (int64_t t = 0; t + 1 < n; ++t) sum += lse[static_cast<size_t>(t)] - logits.data<float>()[t * vocab + ids[t + 1]];
    total += sum;
    r.tokens += n - 1;
    r.window_ppl.push_back(std::exp(sum / static_cast<double>(n - 1)));
    if (on_window) on_window(static_cast<int64_t>(w), r.window_ppl.back());
  }
  r.nll = total / static_cast<double>(r.tokens);
  r.ppl = std::exp(r.nll);
  return r;
}

WindowLogits window_logits(model::LlamaModel& model) {
  return [&model](size_t, std::span<const int32_t> inputs) {
    model::KvCache cache = model.make_cache(static_cast<int64_t>(inputs.size()) + 1);
    return model.forward(inputs, cache, true);
  };
}

PerplexityResult perplexity(model::LlamaModel& model, const std::vector<std::vector<int32_t>>& windows,
                            const std::function<void(int64_t, double)>& on_window) {
  return score_windows(windows, model.config().vocab_size, window_logits(model), on_window);
}

}  // namespace exq::runtime
