#include "runtime/draft.h"

#include <algorithm>

#include "core/error.h"
#include "runtime/draft_model.h"

namespace exq::runtime {

void DraftOptions::validate() const {
  EXQ_CHECK(max_tokens >= 0 && max_tokens <= kMaxDraftTokens, "draft tokens must be in [0, {}], got {}",
            kMaxDraftTokens, max_tokens);
  EXQ_CHECK(ngram_min >= 1, "the draft n-gram minimum must be >= 1, got {}", ngram_min);
  EXQ_CHECK(ngram_max >= ngram_min, "the draft n-gram maximum ({}) is below its minimum ({})", ngram_max,
            ngram_min);
  EXQ_CHECK(p_min >= 0.0f && p_min <= 1.0f, "the draft's minimum probability must be in [0, 1], got {}", p_min);
}

std::vector<int32_t> lookup_draft(std::span<const int32_t> context, const DraftOptions& options, int limit) {
  const int want = std::min(options.max_tokens, limit);
  const auto n_ctx = static_cast<int64_t>(context.size());
  if (want <= 0) return {};
  for (int n = std::min<int64_t>(options.ngram_max, n_ctx - 1); n >= options.ngram_min; --n) {
    const std::span<const int32_t> suffix = context.subspan(static_cast<size_t>(n_ctx - n));
    // Latest occurrence that ends before the suffix itself starts to overlap its own end.
    for (int64_t start = n_ctx - n - 1; start >= 0; --start) {
      if (!std::equal(suffix.begin(), suffix.end(), context.begin() + start)) continue;
      const int64_t from = start + n;
      const int64_t take = std::min<int64_t>(want, n_ctx - from);
      return std::vector<int32_t>(context.begin() + from, context.begin() + from + take);
    }
  }
  return {};
}

Drafter::Drafter(const DraftOptions& options, std::span<const int32_t> prediction)
    : options_(options), length_(options.max_tokens), prediction_(prediction.begin(), prediction.end()) {
  options_.validate();
}

void Drafter::feedback(int64_t drafted, int64_t accepted) {
  if (drafted <= 0) return;
  length_ = accepted == drafted ? std::min(length_ + 2, options_.max_tokens) : std::max(length_ - 1, 1);
}

std::vector<int32_t> Drafter::propose(std::span<const int32_t> context, int limit) {
  const int want = std::min(limit, length_);  // length_ never exceeds max_tokens
  if (want <= 0) return {};
  const auto n_pred = static_cast<int64_t>(prediction_.size());
  const auto n_ctx = static_cast<int64_t>(context.size());
  for (int n = static_cast<int>(std::min<int64_t>(options_.ngram_max, n_ctx)); n >= options_.ngram_min; --n) {
    const std::span<const int32_t> suffix = context.subspan(static_cast<size_t>(n_ctx - n));
    auto found = [&](int64_t start) {
      return start + n < n_pred &&
             std::equal(suffix.begin(), suffix.end(), prediction_.begin() + start);
    };
    int64_t at = -1;
    for (int64_t s = cursor_ + 1; at < 0 && s + n < n_pred; ++s)
      if (found(s)) at = s;
    for (int64_t s = 0; at < 0 && s <= cursor_ && s + n < n_pred; ++s)
      if (found(s)) at = s;
    if (at < 0) continue;
    cursor_ = at;
    const int64_t from = at + n;
    const int64_t take = std::min<int64_t>(want, n_pred - from);
    return std::vector<int32_t>(prediction_.begin() + from, prediction_.begin() + from + take);
  }
  if (options_.model) return options_.model->propose(context, want, options_.p_min);
  return lookup_draft(context, options_, want);
}

}  // namespace exq::runtime
