// Next-token sampling from a logits row: repetition penalty, then temperature, top-k, top-p
// and min-p in that order (the order of Hugging Face's logits processors), then a draw from a
// seeded std::mt19937_64 so a given seed gives the same tokens on every run and machine.
#pragma once

#include <cstdint>
#include <optional>
#include <random>
#include <span>
#include <vector>

namespace exq::runtime {

struct SamplerConfig {
  float temperature = 0.8f;         // <= 0: greedy (argmax)
  int top_k = 40;                   // <= 0: off
  float top_p = 0.95f;              // >= 1: off
  float min_p = 0.05f;              // <= 0: off
  float repetition_penalty = 1.0f;  // 1: off; applied over prompt + generated tokens
  std::optional<uint64_t> seed;     // unset: random

  bool greedy() const { return temperature <= 0.0f || top_k == 1; }
  // Throws exq::Error naming the setting when a value is out of range.
  void validate() const;
};

// Index of the largest logit (first one on ties), as torch.argmax does.
int32_t argmax(std::span<const float> logits);

// HF RepetitionPenaltyLogitsProcessor: for each distinct seen token, a positive logit is
// divided by the penalty and a negative one multiplied by it. Ids outside the row are ignored.
void apply_repetition_penalty(std::span<float> logits, std::span<const int32_t> seen, float penalty);

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
  // repetition penalty). Throws exq::Error when the row has no finite value.
  int32_t sample(std::span<const float> logits, std::span<const int32_t> history);

  const SamplerConfig& config() const { return config_; }
  uint64_t seed() const { return seed_; }

 private:
  SamplerConfig config_;
  uint64_t seed_;
  std::mt19937_64 rng_;
  std::vector<float> scratch_;  // [vocab] penalized logits, reused between calls
};

}  // namespace exq::runtime
