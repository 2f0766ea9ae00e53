// Next-token sampling from a logits row: logit bias, presence / frequency penalties (OpenAI's),
// repetition penalty, an optional mask of allowed tokens (a grammar's), then temperature, top-k,
// top-p and min-p in that order (the order of Hugging Face's logits processors), then a draw
// from a seeded std::mt19937_64 so a given seed gives the same tokens on every run and machine.
#pragma once

#include <cstdint>
#include <optional>
#include <random>
#include <span>
#include <vector>

namespace exq::runtime {

// OpenAI's logit_bias: `bias` added to the logit of token `id` before anything else.
struct LogitBias {
  int32_t id = 0;
  float bias = 0.0f;  // [-100, 100]; -100 in effect bans the token
};

struct SamplerConfig {
  float temperature = 0.8f;         // <= 0: greedy (argmax)
  int top_k = 40;                   // <= 0: off
  float top_p = 0.95f;              // >= 1: off
  float min_p = 0.05f;              // <= 0: off
  float repetition_penalty = 1.0f;  // 1: off; applied over prompt + generated tokens
  // OpenAI's: logit -= presence * (n > 0) + frequency * n, n = times the token was generated
  // (prompt tokens do not count). 0: off; each in [-2, 2].
  float presence_penalty = 0.0f;
  float frequency_penalty = 0.0f;
  std::vector<LogitBias> logit_bias;  // ids must be inside the vocabulary
  std::optional<uint64_t> seed;     // unset: random

  bool greedy() const { return temperature <= 0.0f || top_k == 1; }
  // Bias or presence / frequency penalties change the logits before the rest.
  bool adjusts_logits() const {
    return !logit_bias.empty() || presence_penalty != 0.0f || frequency_penalty != 0.0f;
  }
  // Throws exq::Error naming the setting when a value is out of range.
  void validate() const;
  // validate(), and every logit_bias id inside a vocabulary of `vocab` tokens.
  void validate(int64_t vocab) const;
};

// Index of the largest logit (first one on ties), as torch.argmax does.
int32_t argmax(std::span<const float> logits);

// HF RepetitionPenaltyLogitsProcessor: for each distinct seen token, a positive logit is
// divided by the penalty and a negative one multiplied by it. Ids outside the row are ignored.
void apply_repetition_penalty(std::span<float> logits, std::span<const int32_t> seen, float penalty);

// Adds config.logit_bias, then subtracts the presence / frequency penalties of the `generated`
// tokens. Ids outside the row are ignored.
void apply_logit_adjustments(std::span<float> logits, std::span<const int32_t> generated,
                             const SamplerConfig& config);

// Probabilities after temperature, top-k, top-p and min-p: removed tokens get exactly 0 and
// the rest sum to 1. Greedy settings give a one-hot row. Logits must be finite or -inf.
std::vector<float> sampling_probs(std::span<const float> logits, const SamplerConfig& config);

// Turns a 64-bit draw into a double in [0, 1) with 53 random bits (platform independent,
// unlike std::uniform_real_distribution).
double uniform_from_bits(uint64_t bits);

// Stateful sampler: owns the random generator, so successive calls continue one stream.
class Sampler {
 public:
  explicit Sampler(SamplerConfig config);

  // Samples the next token from a logits row; `history` is prompt + generated so far (for the
  // repetition penalty), its tokens from `generated_from` on generated (for the presence and
  // frequency penalties; the default: none). `allowed`: empty, or [vocab] flags, the tokens
  // with 0 removed before temperature and truncation. Draws one random number unless greedy.
  // Throws exq::Error when the row has no finite value (or nothing allowed).
  int32_t sample(std::span<const float> logits, std::span<const int32_t> history,
                 size_t generated_from = SIZE_MAX, std::span<const uint8_t> allowed = {});

  const SamplerConfig& config() const { return config_; }
  uint64_t seed() const { return seed_; }

 private:
  SamplerConfig config_;
  uint64_t seed_;
  std::mt19937_64 rng_;
  std::vector<float> scratch_;  // [vocab] penalized logits, reused between calls
};

}  // namespace exq::runtime
