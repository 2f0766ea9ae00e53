#include "runtime/sampler.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>

#include "core/error.h"

namespace exq::runtime {
namespace {

constexpr float kNegInf = -std::numeric_limits<float>::infinity();

// Turns masked logits (-inf = removed) into probabilities in place, in double for the sum.
void softmax_in_place(std::vector<float>& row) {
  float max_v = kNegInf;
  for (float v : row) max_v = std::max(max_v, v);
  double sum = 0.0;
  for (float& v : row) {
    v = v == kNegInf ? 0.0f : static_cast<float>(std::exp(static_cast<double>(v - max_v)));
    sum += v;
  }
  const double inv = 1.0 / sum;
  for (float& v : row) v = static_cast<float>(v * inv);
}

// Rejects rows the model should never produce; -inf is fine (masked tokens).
void check_logits(std::span<const float> logits) {
  EXQ_CHECK(!logits.empty(), "cannot sample from an empty logits row");
  bool any_finite = false;
  for (float v : logits) {
    EXQ_CHECK(!std::isnan(v) && v != std::numeric_limits<float>::infinity(),
              "logits contain NaN or +Inf (the model produced non-finite values)");
    any_finite = any_finite || v != kNegInf;
  }
  EXQ_CHECK(any_finite, "every logit is -inf: nothing to sample");
}

}  // namespace

void SamplerConfig::validate() const {
  EXQ_CHECK(std::isfinite(temperature) && temperature >= 0.0f,
            "temperature must be >= 0, got {}", temperature);
  EXQ_CHECK(top_k >= 0, "top-k must be >= 0, got {}", top_k);
  EXQ_CHECK(std::isfinite(top_p) && top_p > 0.0f && top_p <= 1.0f,
            "top-p must be in (0, 1], got {}", top_p);
  EXQ_CHECK(std::isfinite(min_p) && min_p >= 0.0f && min_p <= 1.0f,
            "min-p must be in [0, 1], got {}", min_p);
  EXQ_CHECK(std::isfinite(repetition_penalty) && repetition_penalty > 0.0f,
            "repetition penalty must be > 0, got {}", repetition_penalty);
  EXQ_CHECK(std::isfinite(presence_penalty) && std::abs(presence_penalty) <= 2.0f,
            "presence penalty must be in [-2, 2], got {}", presence_penalty);
  EXQ_CHECK(std::isfinite(frequency_penalty) && std::abs(frequency_penalty) <= 2.0f,
            "frequency penalty must be in [-2, 2], got {}", frequency_penalty);
  EXQ_CHECK(std::isfinite(top_n_sigma) && top_n_sigma >= 0.0f, "top-n-sigma must be >= 0, got {}", top_n_sigma);
  EXQ_CHECK(std::isfinite(typical_p) && typical_p > 0.0f && typical_p <= 1.0f,
            "typical-p must be in (0, 1], got {}", typical_p);
  EXQ_CHECK(std::isfinite(xtc_probability) && xtc_probability >= 0.0f && xtc_probability <= 1.0f,
            "XTC probability must be in [0, 1], got {}", xtc_probability);
  EXQ_CHECK(std::isfinite(xtc_threshold) && xtc_threshold > 0.0f && xtc_threshold <= 1.0f,
            "XTC threshold must be in (0, 1], got {}", xtc_threshold);
  EXQ_CHECK(std::isfinite(dry_multiplier) && dry_multiplier >= 0.0f, "DRY multiplier must be >= 0, got {}",
            dry_multiplier);
  EXQ_CHECK(std::isfinite(dry_base) && dry_base >= 1.0f, "DRY base must be >= 1, got {}", dry_base);
  EXQ_CHECK(dry_allowed_length >= 1, "DRY allowed length must be >= 1, got {}", dry_allowed_length);
  EXQ_CHECK(dry_range >= 0, "DRY range must be >= 0, got {}", dry_range);
  for (const int32_t id : dry_breakers) EXQ_CHECK(id >= 0, "DRY sequence breaker token {}: ids are >= 0", id);
  for (const LogitBias& b : logit_bias) {
    EXQ_CHECK(b.id >= 0, "logit bias for token {}: ids are >= 0", b.id);
    EXQ_CHECK(std::isfinite(b.bias) && std::abs(b.bias) <= 100.0f,
              "logit bias for token {} must be in [-100, 100], got {}", b.id, b.bias);
  }
}

void SamplerConfig::validate(int64_t vocab) const {
  validate();
  for (const LogitBias& b : logit_bias)
    EXQ_CHECK(b.id < vocab, "logit bias for token {}: the vocabulary has {} tokens", b.id, vocab);
}

int32_t argmax(std::span<const float> logits) {
  EXQ_CHECK(!logits.empty(), "cannot sample from an empty logits row");
  size_t best = 0;
  for (size_t i = 1; i < logits.size(); ++i) {
    if (logits[i] > logits[best] || (std::isnan(logits[best]) && !std::isnan(logits[i]))) best = i;
  }
  return static_cast<int32_t>(best);
}

void apply_repetition_penalty(std::span<float> logits, std::span<const int32_t> seen, float penalty) {
  if (penalty == 1.0f || seen.empty()) return;
  std::vector<int32_t> ids(seen.begin(), seen.end());
  std::sort(ids.begin(), ids.end());
  ids.erase(std::unique(ids.begin(), ids.end()), ids.end());
  for (int32_t id : ids) {
    if (id < 0 || static_cast<size_t>(id) >= logits.size()) continue;
    float& v = logits[static_cast<size_t>(id)];
    v = v < 0.0f ? v * penalty : v / penalty;
  }
}

void apply_dry(std::span<float> logits, std::span<const int32_t> history, const SamplerConfig& config) {
  if (config.dry_multiplier <= 0.0f || history.size() < 2) return;
  if (config.dry_range > 0 && history.size() > static_cast<size_t>(config.dry_range))
    history = history.last(static_cast<size_t>(config.dry_range));
  const auto breaker = [&](int32_t t) {
    return std::find(config.dry_breakers.begin(), config.dry_breakers.end(), t) != config.dry_breakers.end();
  };
  const size_t n = history.size();
  const int32_t last = history[n - 1];
  if (breaker(last)) return;
  // Longer matches would only overflow the penalty: a cap keeps a repetitive history linear.
  constexpr size_t kMaxMatch = 64;
  std::vector<std::pair<int32_t, size_t>> longest;  // next token, longest match before it
  for (size_t i = 0; i + 1 < n; ++i) {
    if (history[i] != last) continue;
    const int32_t next = history[i + 1];
    if (breaker(next)) continue;
    // history[i] matches the last token; extend backwards while the tokens before both agree.
    size_t len = 1;
    while (len < kMaxMatch && len <= i) {
      const int32_t prev = history[n - 1 - len];
      if (history[i - len] != prev || breaker(prev)) break;
      ++len;
    }
    auto it = std::find_if(longest.begin(), longest.end(), [&](const auto& e) { return e.first == next; });
    if (it == longest.end())
      longest.emplace_back(next, len);
    else
      it->second = std::max(it->second, len);
  }
  for (const auto& [token, len] : longest) {
    if (len < static_cast<size_t>(config.dry_allowed_length)) continue;
    if (token < 0 || static_cast<size_t>(token) >= logits.size()) continue;
    const double exponent = static_cast<double>(len) - config.dry_allowed_length;
    logits[static_cast<size_t>(token)] -= static_cast<float>(config.dry_multiplier * std::pow(config.dry_base, exponent));
  }
}

void apply_logit_adjustments(std::span<float> logits, std::span<const int32_t> generated,
                             const SamplerConfig& config) {
  const auto inside = [&](int32_t id) { return id >= 0 && static_cast<size_t>(id) < logits.size(); };
  for (const LogitBias& b : config.logit_bias)
    if (inside(b.id)) logits[static_cast<size_t>(b.id)] += b.bias;
  if (config.presence_penalty == 0.0f && config.frequency_penalty == 0.0f) return;
  std::vector<int32_t> ids(generated.begin(), generated.end());
  std::sort(ids.begin(), ids.end());
  for (size_t i = 0; i < ids.size();) {
    size_t j = i;
    while (j < ids.size() && ids[j] == ids[i]) ++j;
    if (inside(ids[i]))
      logits[static_cast<size_t>(ids[i])] -=
          config.presence_penalty + config.frequency_penalty * static_cast<float>(j - i);
    i = j;
  }
}

std::vector<float> sampling_probs(std::span<const float> logits, const SamplerConfig& config, double xtc_uniform) {
  check_logits(logits);
  const size_t n = logits.size();
  std::vector<float> row(n, 0.0f);
  if (config.greedy()) {
    row[static_cast<size_t>(argmax(logits))] = 1.0f;
    return row;
  }
  for (size_t i = 0; i < n; ++i) row[i] = logits[i] / config.temperature;

  // Top-n-sigma: max - n * sigma over the finite (scaled) logits, in double.
  if (config.top_n_sigma > 0.0f) {
    double sum = 0.0, sq = 0.0, count = 0.0;
    float top = kNegInf;
    for (const float v : row) {
      if (v == kNegInf) continue;
      sum += v;
      sq += static_cast<double>(v) * v;
      count += 1.0;
      top = std::max(top, v);
    }
    const double mean = sum / count;
    const double sigma = std::sqrt(std::max(0.0, sq / count - mean * mean));
    const double cut = static_cast<double>(top) - config.top_n_sigma * sigma;
    for (float& v : row)
      if (static_cast<double>(v) < cut) v = kNegInf;
  }

  // Top-k keeps every token whose logit reaches the k-th largest (ties included, as HF).
  if (config.top_k > 0 && static_cast<size_t>(config.top_k) < n) {
    std::vector<float> sorted(row);
    std::nth_element(sorted.begin(), sorted.begin() + (config.top_k - 1), sorted.end(),
                     std::greater<float>());
    const float threshold = sorted[static_cast<size_t>(config.top_k - 1)];
    for (float& v : row) {
      if (v < threshold) v = kNegInf;
    }
  }
  std::vector<float> masked(row);
  softmax_in_place(row);

  // Top-p as HF: sort ascending, drop tokens while the cumulative probability stays
  // <= 1 - top_p; the most likely token always stays.
  if (config.top_p < 1.0f) {
    std::vector<int32_t> order;
    for (size_t i = 0; i < n; ++i) {
      if (row[i] > 0.0f) order.push_back(static_cast<int32_t>(i));
    }
    std::stable_sort(order.begin(), order.end(),
                     [&](int32_t a, int32_t b) { return row[static_cast<size_t>(a)] < row[static_cast<size_t>(b)]; });
    double cum = 0.0;
    const double limit = 1.0 - static_cast<double>(config.top_p);
    for (size_t j = 0; j + 1 < order.size(); ++j) {
      cum += row[static_cast<size_t>(order[j])];
      if (cum > limit) break;
      masked[static_cast<size_t>(order[j])] = kNegInf;
    }
    row = masked;
    softmax_in_place(row);
  }

  // Min-p: drop tokens less likely than min_p times the most likely one.
  if (config.min_p > 0.0f) {
    const float top = *std::max_element(row.begin(), row.end());
    const float cut = config.min_p * top;
    for (size_t i = 0; i < n; ++i) {
      if (row[i] < cut) masked[i] = kNegInf;
    }
    row = masked;
    softmax_in_place(row);
  }

  // Typical-p as HF: order by |surprise - entropy| (ascending), keep tokens until their
  // cumulative probability reaches typical_p (the token that reaches it stays, and always one).
  if (config.typical_p < 1.0f) {
    double entropy = 0.0;
    for (const float p : row)
      if (p > 0.0f) entropy -= static_cast<double>(p) * std::log(static_cast<double>(p));
    std::vector<int32_t> order;
    std::vector<double> shift(n, 0.0);
    for (size_t i = 0; i < n; ++i) {
      if (row[i] <= 0.0f) continue;
      order.push_back(static_cast<int32_t>(i));
      shift[i] = std::abs(-std::log(static_cast<double>(row[i])) - entropy);
    }
    std::stable_sort(order.begin(), order.end(),
                     [&](int32_t a, int32_t b) { return shift[static_cast<size_t>(a)] < shift[static_cast<size_t>(b)]; });
    double cum = 0.0;
    size_t keep = order.size();
    for (size_t j = 0; j < order.size(); ++j) {
      cum += row[static_cast<size_t>(order[j])];
      if (cum >= config.typical_p) {
        keep = j + 1;
        break;
      }
    }
    for (size_t j = keep; j < order.size(); ++j) masked[static_cast<size_t>(order[j])] = kNegInf;
    row = masked;
    softmax_in_place(row);
  }

  // XTC: when its draw falls under xtc_probability, the tokens at least xtc_threshold likely
  // but the least likely of them go, if there are two or more.
  if (config.xtc_probability > 0.0f && xtc_uniform < config.xtc_probability) {
    std::vector<size_t> top;
    for (size_t i = 0; i < n; ++i)
      if (row[i] > 0.0f && row[i] >= config.xtc_threshold) top.push_back(i);
    if (top.size() >= 2) {
      const size_t least = *std::min_element(top.begin(), top.end(), [&](size_t a, size_t b) {
        return row[a] < row[b] || (row[a] == row[b] && a > b);
      });
      for (const size_t i : top)
        if (i != least) masked[i] = kNegInf;
      row = masked;
      softmax_in_place(row);
    }
  }
  return row;
}

double uniform_from_bits(uint64_t bits) {
  return static_cast<double>(bits >> 11) * (1.0 / 9007199254740992.0);  // 2^-53
}

Sampler::Sampler(SamplerConfig config)
    : config_(config), seed_(config.seed ? *config.seed : std::random_device{}()), rng_(seed_) {
  config_.validate();
}

int32_t Sampler::sample(std::span<const float> logits, std::span<const int32_t> history,
                        size_t generated_from, std::span<const uint8_t> allowed) {
  std::span<const float> row = logits;
  const bool penalize = config_.repetition_penalty != 1.0f && !history.empty();
  const bool dry = config_.dry_multiplier > 0.0f && history.size() >= 2;
  if (penalize || dry || config_.adjusts_logits() || !allowed.empty()) {
    scratch_.assign(logits.begin(), logits.end());
    const std::span<const int32_t> generated = history.subspan(std::min(generated_from, history.size()));
    apply_logit_adjustments(scratch_, generated, config_);
    if (penalize) apply_repetition_penalty(scratch_, history, config_.repetition_penalty);
    if (dry) apply_dry(scratch_, history, config_);
    if (!allowed.empty()) {
      EXQ_CHECK(allowed.size() == scratch_.size(), "the allowed-token mask has {} entries for {} logits",
                allowed.size(), scratch_.size());
      // Nothing allowed leaves every logit -inf, which check_logits refuses below.
      for (size_t i = 0; i < scratch_.size(); ++i)
        if (!allowed[i]) scratch_[i] = kNegInf;
    }
    row = scratch_;
  }
  if (config_.greedy()) {
    check_logits(row);
    return argmax(row);
  }
  const double xtc_u = config_.xtc_probability > 0.0f ? uniform_from_bits(rng_()) : 1.0;
  const std::vector<float> probs = sampling_probs(row, config_, xtc_u);
  const double u = uniform_from_bits(rng_());
  double cum = 0.0;
  int32_t last = -1;
  for (size_t i = 0; i < probs.size(); ++i) {
    if (probs[i] <= 0.0f) continue;
    cum += probs[i];
    last = static_cast<int32_t>(i);
    if (u < cum) return last;
  }
  return last;  // u fell past the rounded total: the last kept token
}

}  // namespace exq::runtime
