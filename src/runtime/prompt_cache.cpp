#include "runtime/prompt_cache.h"

#include <algorithm>

namespace exq::runtime {

int64_t common_prefix(std::span<const int32_t> a, std::span<const int32_t> b) {
  const auto [ia, ib] = std::mismatch(a.begin(), a.end(), b.begin(), b.end());
  return static_cast<int64_t>(ia - a.begin());
}

GenerateResult PromptCache::generate(StepFunction& context, std::span<const int32_t> prompt,
                                     GenerateOptions options, bool reuse, const Run& run) {
  int64_t keep = 0;
  // Scoring the prompt needs logits of all of it: nothing is kept then.
  if (reuse && !options.prompt_logprobs && !prompt.empty() &&
      context.position() == static_cast<int64_t>(tokens_.size()))
    keep = std::min(common_prefix(tokens_, prompt), static_cast<int64_t>(prompt.size()) - 1);
  if (keep > 0)
    context.truncate(keep);
  else
    context.reset();
  tokens_.resize(static_cast<size_t>(keep));
  options.cached_prompt_tokens = keep;
  GenerateResult r;
  try {
    r = run(prompt, options);
  } catch (...) {
    tokens_.clear();
    context.reset();
    throw;
  }
  // The context now holds the prompt and the generated ids that ran (all but the last, which
  // was sampled after the last step).
  const auto held = static_cast<size_t>(context.position());
  tokens_.assign(prompt.begin(), prompt.end());
  tokens_.insert(tokens_.end(), r.ids.begin(), r.ids.end());
  if (held > tokens_.size()) {  // not a context this generation filled: trust none of it
    tokens_.clear();
    context.reset();
  } else {
    tokens_.resize(held);
  }
  return r;
}

}  // namespace exq::runtime
