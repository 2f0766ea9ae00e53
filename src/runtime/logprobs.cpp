#include "runtime/logprobs.h"

#include <algorithm>
#include <cmath>

#include "core/error.h"

namespace exq::runtime {

TokenLogprob token_logprob(std::span<const float> logits, int32_t id, int top_n) {
  const auto n = static_cast<int64_t>(logits.size());
  EXQ_CHECK(id >= 0 && id < n, "logprobs: token id {} is outside the vocabulary of {}", id, n);
  EXQ_CHECK(top_n >= 0 && top_n <= kMaxTopLogprobs, "logprobs: {} alternatives asked, at most {}", top_n,
            kMaxTopLogprobs);
  float mx = -INFINITY;
  for (int64_t i = 0; i < n; ++i) {
    EXQ_CHECK(std::isfinite(logits[i]) || logits[i] == -INFINITY, "logprobs: logit of token {} is {}", i,
              logits[i]);
    mx = std::max(mx, logits[i]);
  }
  EXQ_CHECK(mx > -INFINITY, "logprobs: every logit is -inf");
  // As cpu::logsumexp_rows (the perplexity's): float exponentials, a double sum in index order.
  double sum = 0.0;
  for (const float v : logits) sum += std::exp(v - mx);
  const double lse = static_cast<double>(mx) + std::log(sum);

  TokenLogprob r;
  r.id = id;
  r.logprob = static_cast<float>(logits[id] - lse);
  // The top_n largest by a bounded insertion: O(vocab * top_n) at worst, top_n <= 20.
  std::vector<int32_t> top;
  const auto before = [&](int32_t a, int32_t b) { return logits[a] > logits[b] || (logits[a] == logits[b] && a < b); };
  for (int32_t i = 0; i < n && top_n > 0; ++i) {
    if (static_cast<int>(top.size()) == top_n && !before(i, top.back())) continue;
    if (static_cast<int>(top.size()) == top_n) top.pop_back();
    top.insert(std::upper_bound(top.begin(), top.end(), i, before), i);
  }
  for (const int32_t t : top) r.top.emplace_back(t, static_cast<float>(logits[t] - lse));
  return r;
}

}  // namespace exq::runtime
