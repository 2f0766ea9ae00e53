#include "runtime/model_step.h"

#include <algorithm>

#include "core/error.h"

namespace exq::runtime {

LlamaStep::LlamaStep(model::LlamaModel& model, int64_t max_context)
    : model_(model), cache_(model.make_cache(max_context)) {}

std::span<const float> LlamaStep::forward(std::span<const int32_t> tokens) {
  logits_ = model_.forward(tokens, cache_, /*all_logits=*/false);
  EXQ_ASSERT(logits_.dtype() == DType::F32 && logits_.numel() == model_.config().vocab_size);
  return logits_.span<const float>();
}

std::span<const float> LlamaStep::forward_all(std::span<const int32_t> tokens) {
  logits_ = model_.forward(tokens, cache_, /*all_logits=*/true);
  EXQ_ASSERT(logits_.dtype() == DType::F32 &&
             logits_.numel() == static_cast<int64_t>(tokens.size()) * model_.config().vocab_size);
  return logits_.span<const float>();
}

std::vector<int32_t> dry_breaker_ids(const tokenizer::Tokenizer& tok, std::span<const std::string> breakers) {
  std::vector<int32_t> ids;
  for (const std::string& b : breakers) {
    if (b.empty()) continue;
    const std::vector<int32_t> t = tok.encode("a" + b, /*add_special_tokens=*/false);
    if (!t.empty() && std::find(ids.begin(), ids.end(), t.back()) == ids.end()) ids.push_back(t.back());
  }
  return ids;
}

std::vector<std::string> default_dry_breakers() { return {"\n", ":", "\"", "*"}; }

void set_dry_breakers(SamplerConfig& config, const tokenizer::Tokenizer& tok,
                      const std::vector<std::string>* breakers) {
  if (config.dry_multiplier <= 0.0f) return;
  config.dry_breakers = dry_breaker_ids(tok, breakers ? *breakers : default_dry_breakers());
}

void check_prompt_ids(std::span<const int32_t> prompt, int64_t vocab) {
  for (int32_t id : prompt)
    EXQ_CHECK(id >= 0 && id < vocab, "prompt token id {} is outside the model's vocabulary ({} tokens)", id,
              vocab);
}

LlamaSession::LlamaSession(model::LlamaModel& model, const tokenizer::Tokenizer& tok, int64_t max_context)
    : step_(model, max_context), decoder_(tok), vocab_(model.config().vocab_size) {}

GenerateResult LlamaSession::generate(std::span<const int32_t> prompt, const GenerateOptions& options,
                                      bool reuse, const TextCallback& on_text) {
  check_prompt_ids(prompt, vocab_);
  return cache_.generate(step_, prompt, options, reuse,
                         [&](std::span<const int32_t> p, const GenerateOptions& o) {
                           return runtime::generate(step_, &decoder_, p, o, on_text);
                         });
}

std::vector<int32_t> stop_token_ids(const GenerationConfig& gen, const io::ModelConfig& config,
                                    const tokenizer::Tokenizer& tok, const std::string& eos_token) {
  std::vector<int32_t> ids;
  auto add = [&](int32_t id) {
    if (std::find(ids.begin(), ids.end(), id) == ids.end()) ids.push_back(id);
  };
  for (int32_t id : gen.eos_token_ids) add(id);
  for (int32_t id : config.eos_token_ids) add(id);
  if (!eos_token.empty()) {
    if (auto id = tok.token_to_id(eos_token)) add(*id);
  }
  return ids;
}

int64_t generation_context(const io::ModelConfig& config, size_t prompt_tokens, int64_t max_new_tokens) {
  const int64_t limit = config.context_length();
  EXQ_CHECK(static_cast<int64_t>(prompt_tokens) <= limit,
            "the prompt has {} tokens, more than the model's context of {} (max_position_embeddings, or "
            "yarn's original context x factor)",
            prompt_tokens, limit);
  const int64_t wanted = static_cast<int64_t>(prompt_tokens) + std::max<int64_t>(max_new_tokens, 0);
  return std::min(limit, std::max<int64_t>(wanted, 1));
}

GenerateResult generate_text(model::LlamaModel& model, const tokenizer::Tokenizer& tok,
                             std::span<const int32_t> prompt, const GenerateOptions& options,
                             const TextCallback& on_text) {
  check_prompt_ids(prompt, model.config().vocab_size);
  LlamaStep step(model, generation_context(model.config(), prompt.size(), options.max_new_tokens));
  TokenizerTextDecoder decoder(tok);
  return generate(step, &decoder, prompt, options, on_text);
}

}  // namespace exq::runtime
