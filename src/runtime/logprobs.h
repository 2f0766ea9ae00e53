// Log-probabilities of tokens under the model's raw next-token distribution (log-softmax of the
// logits, before repetition penalty, temperature and truncation), as OpenAI's `logprobs` and
// vLLM report them: for each sampled token its own and the most likely alternatives.
#pragma once

#include <cstdint>
#include <span>
#include <utility>
#include <vector>

namespace exq::runtime {

// Most alternatives a token's entry may list (OpenAI's top_logprobs limit).
inline constexpr int kMaxTopLogprobs = 20;

struct TokenLogprob {
  int32_t id = -1;
  float logprob = 0.0f;
  std::vector<std::pair<int32_t, float>> top;  // (id, logprob), most likely first, ties by lower id
};

// log softmax(logits)[id] and the top_n (0..kMaxTopLogprobs) most likely tokens (the log-sum
// summed in double). Throws exq::Error for an id outside the row, top_n out of range or a
// non-finite logit (named by its id).
TokenLogprob token_logprob(std::span<const float> logits, int32_t id, int top_n);

}  // namespace exq::runtime
