#include "runtime/kl_divergence.h"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>

#include "core/error.h"
#include "core/thread_pool.h"

namespace exq::runtime {
namespace {

// Nearest-rank percentile of sorted values: the smallest value with at least q of them at or below it.
double percentile(const std::vector<double>& sorted, double q) {
  const auto n = static_cast<double>(sorted.size());
  const auto rank = static_cast<size_t>(std::max(1.0, std::ceil(q * n)));
  return sorted[std::min(rank, sorted.size()) - 1];
}

double stderr_of_mean(double sum, double sum_sq, int64_t n) {
  if (n < 2) return 0.0;
  const double mean = sum / static_cast<double>(n);
  const double var = std::max(0.0, (sum_sq - mean * sum) / static_cast<double>(n - 1));
  return std::sqrt(var / static_cast<double>(n));
}

}  // namespace

PositionCompare compare_position(std::span<const float> base, std::span<const float> test, int32_t next) {
  EXQ_CHECK(base.size() == test.size(), "KL divergence: rows of {} and {} logits (vocabularies differ)", base.size(),
            test.size());
  EXQ_CHECK(!base.empty(), "KL divergence: empty logit rows");
  EXQ_CHECK(next >= 0 && static_cast<size_t>(next) < base.size(), "KL divergence: next token {} outside the vocabulary of {}",
            next, base.size());
  size_t top_b = 0, top_t = 0;
  for (size_t i = 0; i < base.size(); ++i) {
    EXQ_CHECK(std::isfinite(base[i]), "the reference model's logit of token id {} is {}", i, base[i]);
    EXQ_CHECK(std::isfinite(test[i]), "the compared model's logit of token id {} is {}", i, test[i]);
    if (base[i] > base[top_b]) top_b = i;
    if (test[i] > test[top_t]) top_t = i;
  }
  const float mb = base[top_b], mt = test[top_t];
  // sum p_i (log p_i - log q_i) = sum_i e^(b_i - mb) (b_i - t_i) / sum_b - lse_b + lse_t.
  double sum_b = 0.0, sum_t = 0.0, cross = 0.0;
  for (size_t i = 0; i < base.size(); ++i) {
    const double eb = std::exp(base[i] - mb);
    sum_b += eb;
    sum_t += std::exp(test[i] - mt);
    cross += eb * (static_cast<double>(base[i]) - static_cast<double>(test[i]));
  }
  const double lse_b = static_cast<double>(mb) + std::log(sum_b);
  const double lse_t = static_cast<double>(mt) + std::log(sum_t);
  PositionCompare c;
  c.kl = std::max(0.0, cross / sum_b - lse_b + lse_t);
  c.same_top = top_b == top_t;
  c.nll_base = lse_b - base[static_cast<size_t>(next)];
  c.nll_test = lse_t - test[static_cast<size_t>(next)];
  c.p_base = std::exp(-c.nll_base);
  c.p_test = std::exp(-c.nll_test);
  return c;
}

KlResult compare_windows(const std::vector<std::vector<int32_t>>& windows, int64_t vocab, const WindowLogits& base_of,
                         const WindowLogits& test_of, const KlProgress& on_window) {
  EXQ_CHECK(!windows.empty(), "KL divergence: no token windows");
  KlResult r;
  std::vector<double> kls;
  double nll_b = 0, nll_t = 0, kl_sum = 0, kl_sq = 0, same = 0, dp = 0, dp_sq = 0, dn = 0, dn_sq = 0;
  for (size_t w = 0; w < windows.size(); ++w) {
    const std::vector<int32_t>& ids = windows[w];
    const int64_t n = static_cast<int64_t>(ids.size());
    EXQ_CHECK(n >= 2, "KL divergence: window {} has {} tokens, need at least 2", w, n);
    const auto inputs = std::span(ids).first(static_cast<size_t>(n - 1));
    const Tensor lb = base_of(w, inputs);
    const Tensor lt = test_of(w, inputs);
    for (const Tensor* l : {&lb, &lt})
      EXQ_ASSERT(l->dtype() == DType::F32 && l->shape().size() == 2 && l->dim(0) == n - 1 && l->dim(1) == vocab);
    std::vector<PositionCompare> pos(static_cast<size_t>(n - 1));
    parallel_for(n - 1, [&](int64_t b, int64_t e) {
      for (int64_t t = b; t < e; ++t) {
        const auto row = [&](const Tensor& l) {
          return std::span<const float>(l.data<float>() + t * vocab, static_cast<size_t>(vocab));
        };
        try {
          pos[static_cast<size_t>(t)] = compare_position(row(lb), row(lt), ids[static_cast<size_t>(t + 1)]);
        } catch (const Error& err) {
          throw Error(fmt::format("KL divergence, window {} position {}: {}", w, t, err.message()));
        }
      }
    });
    double win_b = 0, win_t = 0, win_kl = 0;
    for (const PositionCompare& c : pos) {
      win_b += c.nll_base;
      win_t += c.nll_test;
      win_kl += c.kl;
      kl_sq += c.kl * c.kl;
      kls.push_back(c.kl);
      same += c.same_top ? 1.0 : 0.0;
      dp += c.p_test - c.p_base;
      dp_sq += (c.p_test - c.p_base) * (c.p_test - c.p_base);
      dn += c.nll_test - c.nll_base;
      dn_sq += (c.nll_test - c.nll_base) * (c.nll_test - c.nll_base);
    }
    const auto m = static_cast<double>(n - 1);
    nll_b += win_b;
    nll_t += win_t;
    kl_sum += win_kl;
    r.base.window_ppl.push_back(std::exp(win_b / m));
    r.test.window_ppl.push_back(std::exp(win_t / m));
    r.window_kl.push_back(win_kl / m);
    r.tokens += n - 1;
    if (on_window) on_window(static_cast<int64_t>(w), r);
  }
  const auto count = static_cast<double>(r.tokens);
  r.base.tokens = r.test.tokens = r.tokens;
  r.base.nll = nll_b / count;
  r.test.nll = nll_t / count;
  r.base.ppl = std::exp(r.base.nll);
  r.test.ppl = std::exp(r.test.nll);

  r.kl_mean = kl_sum / count;
  r.kl_stderr = stderr_of_mean(kl_sum, kl_sq, r.tokens);
  std::sort(kls.begin(), kls.end());
  r.kl_median = percentile(kls, 0.5);
  r.kl_p90 = percentile(kls, 0.9);
  r.kl_p99 = percentile(kls, 0.99);
  r.kl_p999 = percentile(kls, 0.999);
  r.kl_max = kls.back();
  r.same_top = same / count;
  r.same_top_stderr = std::sqrt(r.same_top * (1.0 - r.same_top) / count);
  r.dp_mean = dp / count;
  r.dp_rms = std::sqrt(dp_sq / count);
  r.ln_ppl_ratio = dn / count;
  r.ln_ppl_ratio_stderr = stderr_of_mean(dn, dn_sq, r.tokens);
  return r;
}

int64_t common_vocab(const io::ModelConfig& base, const io::ModelConfig& test) {
  EXQ_CHECK(test.vocab_size == base.vocab_size, "KL divergence: the models' vocabularies differ ({} and {} tokens)",
            base.vocab_size, test.vocab_size);
  return base.vocab_size;
}

KlResult kl_divergence(model::LlamaModel& base, model::LlamaModel& test, const std::vector<std::vector<int32_t>>& windows,
                       const KlProgress& on_window) {
  return compare_windows(windows, common_vocab(base.config(), test.config()), window_logits(base),
                         window_logits(test), on_window);
}

}  // namespace exq::runtime
