// Which tokens a model's KV cache holds after a generation, so that a later prompt that begins
// with them (a chat's next turn: the last prompt, its answer, then a new message) runs only
// from where the two differ, as llama.cpp's server (cache_prompt) and exllamav2's generator
// reuse a cached prefix.
#pragma once

#include <cstdint>
#include <functional>
#include <span>
#include <vector>

#include "runtime/generator.h"

namespace exq::runtime {

// Length of the longest common prefix of a and b.
int64_t common_prefix(std::span<const int32_t> a, std::span<const int32_t> b);

class PromptCache {
 public:
  // One generation over the context (runtime::generate or the CUDA one).
  using Run = std::function<GenerateResult(std::span<const int32_t> prompt, const GenerateOptions& options)>;

  // Keeps the part of `context` that `prompt` begins with (nothing unless `reuse`, nor with
  // options.prompt_logprobs; at most the prompt's size - 1, since its last token runs for the
  // logits), empties the rest, runs `run`
  // with options.cached_prompt_tokens set to what was kept, then records what the context
  // holds. A context whose position is not what this cache recorded (used elsewhere) keeps
  // nothing. If `run` throws, the context is emptied (what it holds is then unknown) and the
  // exception goes on.
  GenerateResult generate(StepFunction& context, std::span<const int32_t> prompt, GenerateOptions options,
                          bool reuse, const Run& run);

  std::span<const int32_t> tokens() const { return tokens_; }  // the context's tokens, in order

 private:
  std::vector<int32_t> tokens_;
};

}  // namespace exq::runtime
