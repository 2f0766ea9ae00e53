// Adapters that plug the real model and tokenizer into the generation loop (generator.h):
// LlamaStep runs LlamaModel over its own KV cache, TokenizerTextDecoder streams text through
// the tokenizer's IncrementalDecoder. Plus the stop-id rule and a one-call generate_text().
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "model/llama.h"
#include "runtime/generation_config.h"
#include "runtime/generator.h"
#include "runtime/prompt_cache.h"
#include "tokenizer/tokenizer.h"

namespace exq::runtime {

// LlamaModel + a KV cache of max_context positions. The model must outlive this object.
class LlamaStep : public StepFunction {
 public:
  LlamaStep(model::LlamaModel& model, int64_t max_context);

  std::span<const float> forward(std::span<const int32_t> tokens) override;
  std::span<const float> forward_all(std::span<const int32_t> tokens) override;  // one pass
  int64_t position() const override { return cache_.length(); }
  int64_t max_context() const override { return cache_.max_len(); }
  void reset() override { cache_.reset(); }
  void truncate(int64_t n) override { cache_.truncate(n); }

 private:
  model::LlamaModel& model_;
  model::KvCache cache_;
  Tensor logits_;  // [1, vocab] or [T, vocab] of the last forward
};

class TokenizerTextDecoder : public TextDecoder {
 public:
  explicit TokenizerTextDecoder(const tokenizer::Tokenizer& tok, bool skip_special_tokens = true)
      : decoder_(tok, skip_special_tokens) {}
  std::string push(int32_t id) override { return decoder_.step(id); }
  std::string finish() override { return decoder_.flush(); }
  void reset() override { decoder_.reset(); }

 private:
  tokenizer::IncrementalDecoder decoder_;
};

// Ids that end generation: generation_config.json's eos ids, config.json's, and the
// tokenizer's eos_token (tokenizer_config.json), deduplicated in that order.
std::vector<int32_t> stop_token_ids(const GenerationConfig& gen, const io::ModelConfig& config,
                                    const tokenizer::Tokenizer& tok, const std::string& eos_token);

// DRY's sequence breakers as token ids: for each string, the last token of "a" + string (how
// text-generation-webui maps them); empty strings are skipped.
std::vector<int32_t> dry_breaker_ids(const tokenizer::Tokenizer& tok, std::span<const std::string> breakers);
// llama.cpp's default breakers: newline, colon, double quote, asterisk.
std::vector<std::string> default_dry_breakers();
// With DRY on, config.dry_breakers from `breakers` (null: the defaults).
void set_dry_breakers(SamplerConfig& config, const tokenizer::Tokenizer& tok,
                      const std::vector<std::string>* breakers);

// Throws exq::Error naming the first id of `prompt` outside [0, vocab).
void check_prompt_ids(std::span<const int32_t> prompt, int64_t vocab);

// Generations on one LlamaModel over one KV cache of max_context positions kept between calls
// (exq serve): with `reuse`, a prompt that begins with what the cache holds runs only from
// where the two differ (PromptCache). The model and tokenizer must outlive it.
class LlamaSession {
 public:
  LlamaSession(model::LlamaModel& model, const tokenizer::Tokenizer& tok, int64_t max_context);
  GenerateResult generate(std::span<const int32_t> prompt, const GenerateOptions& options, bool reuse,
                          const TextCallback& on_text = {});
  std::span<const int32_t> context_tokens() const { return cache_.tokens(); }

 private:
  LlamaStep step_;
  TokenizerTextDecoder decoder_;
  PromptCache cache_;
  int64_t vocab_;
};

// KV cache positions a generation of one prompt uses: prompt + max_new_tokens, at least 1,
// capped at config.context_length(). Throws exq::Error when the prompt alone exceeds that.
int64_t generation_context(const io::ModelConfig& config, size_t prompt_tokens, int64_t max_new_tokens);

// Generates from prompt ids with a fresh cache of generation_context() positions, streaming
// decoded text to on_text.
GenerateResult generate_text(model::LlamaModel& model, const tokenizer::Tokenizer& tok,
                             std::span<const int32_t> prompt, const GenerateOptions& options,
                             const TextCallback& on_text = {});

}  // namespace exq::runtime
