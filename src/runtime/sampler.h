// Next-token sampling from a logits row: logit bias, presence / frequency penalties (OpenAI's),
// repetition penalty, DRY, an optional mask of allowed tokens (a grammar's), then temperature,
// top-n-sigma, top-k, top-p, min-p, typical-p (the order of Hugging Face's logits processors,
// top-n-sigma first as llama.cpp puts it), then XTC, then a draw from a seeded std::mt19937_64
// so a given seed gives the same tokens on every run and machine.
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
  // Top-n-sigma (Tang et al. 2024): keep the tokens whose scaled logit is within n standard
  // deviations (of the finite logits) of the largest. <= 0: off.
  float top_n_sigma = 0.0f;
  // Locally typical sampling (Meister et al., HF's TypicalLogitsWarper): keep the tokens whose
  // surprise is closest to the entropy until their probability reaches typical_p. >= 1: off.
  float typical_p = 1.0f;
  // XTC, exclude top choices (llama.cpp's and text-generation-webui's): with probability
  // xtc_probability (one extra random number per draw), of the tokens at least xtc_threshold
  // likely, all but the least likely are removed, when there are two or more. 0: off.
  float xtc_probability = 0.0f;
  float xtc_threshold = 0.1f;
  // DRY, "don't repeat yourself" (text-generation-webui's, as llama.cpp and exllamav2 have it): a
  // token that would extend a sequence the history already holds (the tokens ending at the last
  // one, seen before and followed there by that token) at least dry_allowed_length long loses
  // dry_multiplier * dry_base^(length - dry_allowed_length); dry_breakers (token ids) end
  // sequences; dry_range: the last tokens searched (0: all). A logit penalty, after the
  // repetition penalty; also when greedy. 0: off.
  float dry_multiplier = 0.0f;
  float dry_base = 1.75f;
  int dry_allowed_length = 2;
  int dry_range = 0;
  std::vector<int32_t> dry_breakers;
  std::optional<uint64_t> seed;     // unset: random

  bool greedy() const { return temperature <= 0.0f || top_k == 1; }
  // Settings the GPU's sampling kernel does not have: the GPU loop then samples on the host.
  bool host_only() const {
    return dry_multiplier > 0.0f || (!greedy() && (top_n_sigma > 0.0f || typical_p < 1.0f || xtc_probability > 0.0f));
  }
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

// SamplerConfig's DRY penalty over `history` (prompt + generated so far). Ids outside the row are
// ignored.
void apply_dry(std::span<float> logits, std::span<const int32_t> history, const SamplerConfig& config);

// Adds config.logit_bias, then subtracts the presence / frequency penalties of the `generated`
// tokens. Ids outside the row are ignored.
void apply_logit_adjustments(std::span<float> logits, std::span<const int32_t> generated,
                             const SamplerConfig& config);

// Probabilities after temperature, top-n-sigma, top-k, top-p, min-p, typical-p and, when
// xtc_uniform < xtc_probability, XTC: removed tokens get exactly 0 and the rest sum to 1.
// Greedy settings give a one-hot row. Logits must be finite or -inf.
std::vector<float> sampling_probs(std::span<const float> logits, const SamplerConfig& config,
                                  double xtc_uniform = 1.0);

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
  // with 0 removed before temperature and truncation. Draws one random number unless greedy
  // (two with XTC on: XTC's first).
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
