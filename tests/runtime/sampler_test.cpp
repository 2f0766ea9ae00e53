#include "runtime/sampler.h"

#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <random>
#include <vector>

#include "core/error.h"

namespace exq::runtime {
namespace {

// All filters off: plain softmax(logits / temperature).
SamplerConfig plain(float temperature = 1.0f) {
  SamplerConfig c;
  c.temperature = temperature;
  c.top_k = 0;
  c.top_p = 1.0f;
  c.min_p = 0.0f;
  c.repetition_penalty = 1.0f;
  return c;
}

std::vector<float> log_of(std::vector<double> p) {
  std::vector<float> out;
  for (double v : p) out.push_back(static_cast<float>(std::log(v)));
  return out;
}

void expect_probs(const std::vector<float>& got, const std::vector<double>& want, double tol = 1e-6) {
  ASSERT_EQ(got.size(), want.size());
  for (size_t i = 0; i < want.size(); ++i) EXPECT_NEAR(got[i], want[i], tol) << "index " << i;
}

TEST(Sampler, ArgmaxTakesFirstOfTies) {
  EXPECT_EQ(argmax(std::vector<float>{1, 5, 5, 2}), 1);
  EXPECT_EQ(argmax(std::vector<float>{-3, -1, -2}), 1);
}

TEST(Sampler, PlainSoftmax) {
  // softmax([0, ln 2, ln 5]) = [1, 2, 5] / 8
  const std::vector<float> logits = {0.0f, std::log(2.0f), std::log(5.0f)};
  expect_probs(sampling_probs(logits, plain()), {0.125, 0.25, 0.625});
}

TEST(Sampler, TemperatureSharpensAndFlattens) {
  const std::vector<float> logits = {0.0f, std::log(2.0f)};
  // T = 0.5 doubles the logits: [1, 4] / 5. T = 2 halves them: [1, sqrt 2] / (1 + sqrt 2).
  expect_probs(sampling_probs(logits, plain(0.5f)), {0.2, 0.8});
  const double s = std::sqrt(2.0);
  expect_probs(sampling_probs(logits, plain(2.0f)), {1 / (1 + s), s / (1 + s)});
}

TEST(Sampler, TemperatureZeroIsGreedy) {
  const std::vector<float> logits = {0.1f, 3.0f, 2.9f, -1.0f};
  SamplerConfig c = plain(0.0f);
  expect_probs(sampling_probs(logits, c), {0, 1, 0, 0}, 0.0);
  Sampler s(c);  // unseeded: greedy must not depend on the seed
  for (int i = 0; i < 10; ++i) EXPECT_EQ(s.sample(logits, {}), 1);
}

TEST(Sampler, TopKMask) {
  const std::vector<float> logits = {1, 2, 3, 4, 5};
  SamplerConfig c = plain();
  c.top_k = 2;
  const double e = std::exp(1.0);
  expect_probs(sampling_probs(logits, c), {0, 0, 0, 1 / (1 + e), e / (1 + e)});
  c.top_k = 5;  // k = vocab keeps everything
  EXPECT_GT(sampling_probs(logits, c)[0], 0.0f);
}

TEST(Sampler, TopKKeepsTies) {
  // As HF: every token whose logit reaches the k-th largest stays.
  SamplerConfig c = plain();
  c.top_k = 2;
  expect_probs(sampling_probs(std::vector<float>{1, 3, 3, 3}, c), {0, 1.0 / 3, 1.0 / 3, 1.0 / 3});
}

TEST(Sampler, TopPMask) {
  const auto logits = log_of({0.5, 0.3, 0.15, 0.05});
  SamplerConfig c = plain();
  // top_p 0.75: ascending cumulative 0.05, 0.20 <= 0.25 are removed; 0.5 > 0.25 stays.
  c.top_p = 0.75f;
  expect_probs(sampling_probs(logits, c), {0.625, 0.375, 0, 0});
  // top_p 0.9: only 0.05 <= 0.1 is removed.
  c.top_p = 0.9f;
  expect_probs(sampling_probs(logits, c), {0.5 / 0.95, 0.3 / 0.95, 0.15 / 0.95, 0});
  // A tiny top_p still keeps the most likely token.
  c.top_p = 0.01f;
  expect_probs(sampling_probs(logits, c), {1, 0, 0, 0});
}

TEST(Sampler, MinPMask) {
  const auto logits = log_of({0.5, 0.3, 0.15, 0.05});
  SamplerConfig c = plain();
  c.min_p = 0.2f;  // cut at 0.1: only 0.05 goes
  expect_probs(sampling_probs(logits, c), {0.5 / 0.95, 0.3 / 0.95, 0.15 / 0.95, 0});
  c.min_p = 0.5f;  // cut at 0.25
  expect_probs(sampling_probs(logits, c), {0.625, 0.375, 0, 0});
}

TEST(Sampler, FiltersApplyInHfOrder) {
  // Temperature 0.5 squares the probabilities: [0.4, 0.3, 0.2, 0.1] -> [16, 9, 4, 1] / 30.
  // top_k 3 drops 1/30 -> [16, 9, 4] / 29; top_p 0.8 drops 4/29 (<= 0.2) -> [16, 9] / 25;
  // min_p 0.6 cuts at 0.6 * 16/25: 9/25 < 9.6/25 goes -> [1, 0, 0, 0].
  const auto logits = log_of({0.4, 0.3, 0.2, 0.1});
  SamplerConfig c = plain(0.5f);
  c.top_k = 3;
  expect_probs(sampling_probs(logits, c), {16.0 / 29, 9.0 / 29, 4.0 / 29, 0});
  c.top_p = 0.8f;
  expect_probs(sampling_probs(logits, c), {16.0 / 25, 9.0 / 25, 0, 0});
  c.min_p = 0.6f;
  expect_probs(sampling_probs(logits, c), {1, 0, 0, 0});
}

TEST(Sampler, MaskedInputLogitsStayMasked) {
  const float ninf = -std::numeric_limits<float>::infinity();
  expect_probs(sampling_probs(std::vector<float>{ninf, 0.0f, 0.0f}, plain()), {0, 0.5, 0.5});
}

TEST(Sampler, RepetitionPenaltyHfSemantics) {
  std::vector<float> logits = {2.0f, -2.0f, 1.0f, 0.5f, 3.0f};
  // Token 1 is seen twice but penalized once; ids out of range are ignored.
  const std::vector<int32_t> seen = {0, 1, 1, 3, 99, -1};
  apply_repetition_penalty(logits, seen, 2.0f);
  EXPECT_FLOAT_EQ(logits[0], 1.0f);
  EXPECT_FLOAT_EQ(logits[1], -4.0f);
  EXPECT_FLOAT_EQ(logits[2], 1.0f);
  EXPECT_FLOAT_EQ(logits[3], 0.25f);
  EXPECT_FLOAT_EQ(logits[4], 3.0f);
}

TEST(Sampler, RepetitionPenaltyChangesGreedyChoice) {
  const std::vector<float> logits = {3.0f, 2.0f};
  SamplerConfig c = plain(0.0f);
  c.repetition_penalty = 2.0f;
  Sampler s(c);
  EXPECT_EQ(s.sample(logits, {}), 0);
  const std::vector<int32_t> seen = {0};
  EXPECT_EQ(s.sample(logits, seen), 1);  // 3 / 2 = 1.5 < 2
}

TEST(Sampler, FrequenciesMatchProbabilities) {
  // 20,000 draws; each frequency within 5 standard errors of its probability.
  const std::vector<double> p = {0.5, 0.3, 0.15, 0.05};
  const auto logits = log_of(p);
  SamplerConfig c = plain();
  c.seed = 1234;
  Sampler s(c);
  const int n = 20000;
  std::vector<int> counts(p.size(), 0);
  for (int i = 0; i < n; ++i) counts[static_cast<size_t>(s.sample(logits, {}))]++;
  for (size_t i = 0; i < p.size(); ++i) {
    const double se = std::sqrt(p[i] * (1 - p[i]) / n);
    EXPECT_NEAR(counts[i] / static_cast<double>(n), p[i], 5 * se) << "token " << i;
  }
}

TEST(Sampler, FrequenciesWithFilters) {
  // top_k 3 + temperature 0.5 on [0.4, 0.3, 0.2, 0.1]: expected [16, 9, 4, 0] / 29.
  const auto logits = log_of({0.4, 0.3, 0.2, 0.1});
  SamplerConfig c = plain(0.5f);
  c.top_k = 3;
  c.seed = 99;
  Sampler s(c);
  const int n = 20000;
  std::vector<int> counts(4, 0);
  for (int i = 0; i < n; ++i) counts[static_cast<size_t>(s.sample(logits, {}))]++;
  const std::vector<double> want = {16.0 / 29, 9.0 / 29, 4.0 / 29, 0};
  EXPECT_EQ(counts[3], 0);
  for (size_t i = 0; i < 3; ++i) {
    const double se = std::sqrt(want[i] * (1 - want[i]) / n);
    EXPECT_NEAR(counts[i] / static_cast<double>(n), want[i], 5 * se) << "token " << i;
  }
}

TEST(Sampler, SameSeedSameSequence) {
  std::vector<float> logits(100);
  for (size_t i = 0; i < logits.size(); ++i) logits[i] = std::sin(static_cast<float>(i));
  auto draw = [&](uint64_t seed) {
    SamplerConfig c = plain();
    c.seed = seed;
    Sampler s(c);
    std::vector<int32_t> out;
    for (int i = 0; i < 200; ++i) out.push_back(s.sample(logits, {}));
    return out;
  };
  EXPECT_EQ(draw(7), draw(7));
  EXPECT_NE(draw(7), draw(8));
}

TEST(Sampler, UniformIsPlatformIndependent) {
  // std::mt19937_64's 10000th output is fixed by the C++ standard, so a seed reproduces
  // the same uniforms on every platform.
  std::mt19937_64 rng;
  rng.discard(9999);
  const uint64_t x = rng();
  EXPECT_EQ(x, 9981545732273789042ull);
  EXPECT_DOUBLE_EQ(uniform_from_bits(x), static_cast<double>(x >> 11) / 9007199254740992.0);
  EXPECT_EQ(uniform_from_bits(0), 0.0);
  EXPECT_LT(uniform_from_bits(~0ull), 1.0);
}

TEST(Sampler, RejectsNonFiniteLogits) {
  Sampler s(plain());
  const float nan = std::numeric_limits<float>::quiet_NaN();
  EXPECT_THROW(s.sample(std::vector<float>{0.0f, nan}, {}), Error);
  EXPECT_THROW(s.sample(std::vector<float>{0.0f, std::numeric_limits<float>::infinity()}, {}), Error);
  const float ninf = -std::numeric_limits<float>::infinity();
  EXPECT_THROW(s.sample(std::vector<float>{ninf, ninf}, {}), Error);
  EXPECT_THROW(s.sample(std::vector<float>{}, {}), Error);
  Sampler g(plain(0.0f));
  EXPECT_THROW(g.sample(std::vector<float>{0.0f, nan}, {}), Error);
}

TEST(Sampler, ValidatesSettings) {
  auto bad = [](auto edit) {
    SamplerConfig c = plain();
    edit(c);
    return c;
  };
  EXPECT_THROW(Sampler(bad([](SamplerConfig& c) { c.temperature = -1; })), Error);
  EXPECT_THROW(Sampler(bad([](SamplerConfig& c) { c.top_k = -2; })), Error);
  EXPECT_THROW(Sampler(bad([](SamplerConfig& c) { c.top_p = 0.0f; })), Error);
  EXPECT_THROW(Sampler(bad([](SamplerConfig& c) { c.top_p = 1.5f; })), Error);
  EXPECT_THROW(Sampler(bad([](SamplerConfig& c) { c.min_p = 2.0f; })), Error);
  EXPECT_THROW(Sampler(bad([](SamplerConfig& c) { c.repetition_penalty = 0.0f; })), Error);
  EXPECT_THROW(Sampler(bad([](SamplerConfig& c) { c.presence_penalty = 2.5f; })), Error);
  EXPECT_THROW(Sampler(bad([](SamplerConfig& c) { c.frequency_penalty = -2.01f; })), Error);
  EXPECT_THROW(Sampler(bad([](SamplerConfig& c) { c.logit_bias = {{-1, 1.0f}}; })), Error);
  EXPECT_THROW(Sampler(bad([](SamplerConfig& c) { c.logit_bias = {{3, 100.5f}}; })), Error);
  EXPECT_NO_THROW(Sampler(bad([](SamplerConfig& c) { c.presence_penalty = -2.0f; })));
  EXPECT_NO_THROW(Sampler(SamplerConfig{}));
  SamplerConfig c = plain();
  c.logit_bias = {{4, 1.0f}};
  EXPECT_NO_THROW(c.validate(5));
  EXPECT_THROW(c.validate(4), Error);
}

// OpenAI's formula: logit - presence * (n > 0) - frequency * n over the generated tokens, after
// the bias (repeated bias entries add up).
TEST(Sampler, LogitAdjustmentsFollowOpenAisFormula) {
  SamplerConfig c = plain();
  c.presence_penalty = 0.5f;
  c.frequency_penalty = 0.25f;
  c.logit_bias = {{0, 1.0f}, {3, -100.0f}, {0, 0.5f}, {9, 5.0f}};  // 9: outside the row, ignored
  std::vector<float> logits{1.0f, 2.0f, 3.0f, 4.0f, -1.0f};
  apply_logit_adjustments(logits, std::vector<int32_t>{2, 2, 3, 2, -1, 7}, c);
  EXPECT_FLOAT_EQ(logits[0], 2.5f);
  EXPECT_FLOAT_EQ(logits[1], 2.0f);
  EXPECT_FLOAT_EQ(logits[2], 3.0f - 0.5f - 0.75f);
  EXPECT_FLOAT_EQ(logits[3], 4.0f - 100.0f - 0.5f - 0.25f);
  EXPECT_FLOAT_EQ(logits[4], -1.0f);
}

TEST(Sampler, PenaltiesCountOnlyGeneratedTokens) {
  SamplerConfig c = plain(0.0f);
  c.presence_penalty = 2.0f;
  Sampler s(c);
  const std::vector<float> logits{0.0f, 3.0f, 2.0f};
  const std::vector<int32_t> history{2, 1, 1};
  EXPECT_EQ(s.sample(logits, history), 1);     // all prompt: no penalty
  EXPECT_EQ(s.sample(logits, history, 1), 2);  // 1 generated: 3 - 2 = 1 < 2
  EXPECT_EQ(s.sample(logits, history, 0), 1);  // 1: 3 - 2 = 1, 2: 2 - 2 = 0
  c.presence_penalty = 0.0f;
  c.frequency_penalty = 1.2f;
  Sampler f(c);
  EXPECT_EQ(f.sample(logits, history, 0), 2);  // 1 twice: 3 - 2.4 = 0.6; 2 once: 2 - 1.2 = 0.8
  EXPECT_EQ(f.sample(logits, history, 2), 2);  // 1 once: 3 - 1.2 = 1.8 < 2
  EXPECT_EQ(f.sample(logits, history, 3), 1);  // nothing generated
}

TEST(Sampler, LogitBiasMovesTheDraw) {
  SamplerConfig c = plain(0.0f);
  c.logit_bias = {{0, 3.5f}};
  Sampler s(c);
  EXPECT_EQ(s.sample(std::vector<float>{0.0f, 3.0f, 2.0f}, {}), 0);
  c.logit_bias = {{1, -100.0f}};
  Sampler ban(c);
  EXPECT_EQ(ban.sample(std::vector<float>{0.0f, 3.0f, 2.0f}, {}), 2);
}

// A mask removes tokens before temperature and truncation: the draw is the masked softmax's.
TEST(Sampler, AllowedMaskRestrictsTheDraw) {
  const std::vector<float> logits{2.0f, 1.0f, 0.5f, 0.0f};
  const std::vector<uint8_t> allowed{0, 1, 0, 1};
  Sampler g(plain(0.0f));
  EXPECT_EQ(g.sample(logits, {}, SIZE_MAX, allowed), 1);
  EXPECT_THROW(g.sample(logits, {}, SIZE_MAX, std::vector<uint8_t>(4, 0)), Error);
  EXPECT_THROW(g.sample(logits, {}, SIZE_MAX, std::vector<uint8_t>(3, 1)), Error);
  // Frequencies of 20000 draws against the masked softmax e^1 / (e^1 + e^0).
  SamplerConfig c = plain();
  c.seed = 7;
  Sampler s(c);
  int ones = 0;
  constexpr int kDraws = 20000;
  for (int i = 0; i < kDraws; ++i) {
    const int32_t t = s.sample(logits, {}, SIZE_MAX, allowed);
    ASSERT_TRUE(t == 1 || t == 3);
    ones += t == 1;
  }
  const double want = std::exp(1.0) / (std::exp(1.0) + 1.0);
  EXPECT_NEAR(static_cast<double>(ones) / kDraws, want, 0.01);
}

// Typical-p, top-n-sigma and XTC against values worked out by hand; XTC's random number is
// drawn before the token's.
std::vector<float> logs(std::initializer_list<double> probs) {
  std::vector<float> v;
  for (const double p : probs) v.push_back(static_cast<float>(std::log(p)));
  return v;
}

TEST(SamplerExtras, TypicalKeepsTheTokensNearestTheEntropy) {
  // p = .5 .3 .15 .05: entropy 1.1422; |surprise - entropy| = .449 .062 .755 1.853, so the order
  // is 1, 0, 2, 3.
  const std::vector<float> l = logs({0.5, 0.3, 0.15, 0.05});
  SamplerConfig c = plain();
  c.typical_p = 0.5f;  // 0.3, then 0.8 >= 0.5: tokens 1 and 0
  std::vector<float> p = sampling_probs(l, c);
  EXPECT_NEAR(p[0], 0.625f, 1e-6f);
  EXPECT_NEAR(p[1], 0.375f, 1e-6f);
  EXPECT_EQ(p[2], 0.0f);
  EXPECT_EQ(p[3], 0.0f);
  c.typical_p = 0.2f;  // 0.3 >= 0.2 at once: token 1 alone, though 0 is likelier
  p = sampling_probs(l, c);
  EXPECT_EQ(p[1], 1.0f);
  EXPECT_EQ(p[0], 0.0f);
  c.typical_p = 0.99f;  // 0.3 + 0.5 + 0.15 = 0.95 < 0.99: all four
  p = sampling_probs(l, c);
  EXPECT_GT(p[3], 0.0f);
}

TEST(SamplerExtras, TopNSigmaCutsBelowTheTopMinusNSigma) {
  // Logits 4 3 0 -1: mean 1.5, sigma sqrt(4.25) = 2.0616.
  const std::vector<float> l{4.0f, 3.0f, 0.0f, -1.0f};
  SamplerConfig c = plain();
  c.top_n_sigma = 1.0f;  // cut 1.94: tokens 0, 1
  std::vector<float> p = sampling_probs(l, c);
  EXPECT_NEAR(p[0], 1.0f / (1.0f + std::exp(-1.0f)), 1e-6f);
  EXPECT_EQ(p[2], 0.0f);
  c.top_n_sigma = 2.0f;  // cut -0.12: tokens 0, 1, 2
  p = sampling_probs(l, c);
  EXPECT_GT(p[2], 0.0f);
  EXPECT_EQ(p[3], 0.0f);
  c.temperature = 0.5f;  // scaled logits, scaled sigma: the same set
  p = sampling_probs(l, c);
  EXPECT_GT(p[2], 0.0f);
  EXPECT_EQ(p[3], 0.0f);
}

TEST(SamplerExtras, XtcRemovesAllLikelyTokensButTheLeastLikely) {
  const std::vector<float> l = logs({0.5, 0.3, 0.15, 0.05});
  SamplerConfig c = plain();
  c.xtc_probability = 0.5f;
  c.xtc_threshold = 0.1f;
  std::vector<float> p = sampling_probs(l, c, 0.2);  // applies: 0, 1, 2 are >= 0.1; 2 stays
  EXPECT_EQ(p[0], 0.0f);
  EXPECT_EQ(p[1], 0.0f);
  EXPECT_NEAR(p[2], 0.75f, 1e-6f);
  EXPECT_NEAR(p[3], 0.25f, 1e-6f);
  p = sampling_probs(l, c, 0.7);  // its draw missed: unchanged
  EXPECT_NEAR(p[0], 0.5f, 1e-6f);
  c.xtc_threshold = 0.4f;  // one token over the threshold: nothing removed
  p = sampling_probs(l, c, 0.2);
  EXPECT_NEAR(p[0], 0.5f, 1e-6f);

  // The sampler draws XTC's number first, then the token's, from one stream.
  c.xtc_threshold = 0.1f;
  c.seed = 77;
  Sampler s(c);
  std::mt19937_64 rng(77);
  for (int i = 0; i < 50; ++i) {
    const double xtc_u = uniform_from_bits(rng());
    const double u = uniform_from_bits(rng());
    const std::vector<float> probs = sampling_probs(l, c, xtc_u);
    double cum = 0.0;
    int32_t want = -1;
    for (size_t k = 0; k < probs.size() && want < 0; ++k) {
      cum += probs[k];
      if (probs[k] > 0.0f && u < cum) want = static_cast<int32_t>(k);
    }
    EXPECT_EQ(s.sample(l, {}), want) << i;
  }
}

TEST(SamplerExtras, ValidatesAndNeedsTheHostOnlyWhenSampling) {
  SamplerConfig c = plain();
  EXPECT_FALSE(c.host_only());
  c.typical_p = 0.9f;
  EXPECT_TRUE(c.host_only());
  c.temperature = 0.0f;  // greedy ignores them
  EXPECT_FALSE(c.host_only());
  for (auto bad : {+[](SamplerConfig& s) { s.typical_p = 0.0f; }, +[](SamplerConfig& s) { s.typical_p = 1.5f; },
                   +[](SamplerConfig& s) { s.top_n_sigma = -1.0f; }, +[](SamplerConfig& s) { s.xtc_probability = 2.0f; },
                   +[](SamplerConfig& s) { s.xtc_threshold = 0.0f; }}) {
    SamplerConfig x = plain();
    bad(x);
    EXPECT_THROW(x.validate(), Error);
  }
}

// DRY against text-generation-webui's rule, worked by hand.
TEST(SamplerExtras, DryPenalizesWhatWouldExtendARepeat) {
  SamplerConfig c = plain();
  c.dry_multiplier = 1.0f;
  c.dry_base = 2.0f;
  c.dry_allowed_length = 2;
  auto penalties = [&](std::vector<int32_t> history) {
    std::vector<float> row(12, 0.0f);
    apply_dry(row, history, c);
    return row;
  };
  // "1 2 3" was followed by 4: a match of 3 tokens, 2^(3 - 2) = 2 off token 4.
  std::vector<float> p = penalties({1, 2, 3, 4, 9, 1, 2, 3});
  EXPECT_FLOAT_EQ(p[4], -2.0f);
  for (int t : {0, 1, 2, 3, 5, 9}) EXPECT_EQ(p[static_cast<size_t>(t)], 0.0f) << t;
  // The longest of several matches counts: "2 3" then 5 (length 2: 2^0 = 1), "1 2 3" then 4.
  p = penalties({2, 3, 5, 1, 2, 3, 4, 7, 1, 2, 3});
  EXPECT_FLOAT_EQ(p[5], -1.0f);
  EXPECT_FLOAT_EQ(p[4], -2.0f);
  // Shorter than the allowed length: nothing.
  EXPECT_EQ(penalties({3, 4, 9, 3})[4], 0.0f);
  // A breaker inside the sequence ends it; a breaker as the last token or the next one: nothing.
  c.dry_breakers = {2};
  EXPECT_EQ(penalties({1, 2, 3, 4, 9, 1, 2, 3})[4], 0.0f);
  EXPECT_EQ(penalties({1, 3, 2, 9, 1, 3})[2], 0.0f);
  c.dry_breakers = {3};
  EXPECT_EQ(penalties({1, 2, 3, 4, 9, 1, 2, 3})[4], 0.0f);
  c.dry_breakers = {4};
  EXPECT_EQ(penalties({1, 2, 3, 4, 9, 1, 2, 3})[4], 0.0f);
  c.dry_breakers.clear();
  // The range: the earlier "1 2 3 4" out of the last 5 tokens.
  c.dry_range = 5;
  EXPECT_EQ(penalties({1, 2, 3, 4, 9, 1, 2, 3})[4], 0.0f);
  c.dry_range = 0;
  // A long repeat: the penalty grows with it, capped so it stays finite.
  std::vector<int32_t> rep;
  for (int i = 0; i < 400; ++i) rep.push_back(1 + i % 2);
  p = penalties(rep);
  EXPECT_TRUE(std::isfinite(p[1]));
  EXPECT_LT(p[1], -1e15f);

  // In the sampler, greedy too: the repeat's token loses its lead.
  c.temperature = 0.0f;
  c.dry_multiplier = 3.0f;
  Sampler s(c);
  std::vector<float> logits(12, 0.0f);
  logits[4] = 2.0f;
  logits[7] = 1.5f;
  const std::vector<int32_t> history{1, 2, 3, 4, 9, 1, 2, 3};
  EXPECT_EQ(s.sample(logits, history), 7);
  EXPECT_EQ(s.sample(logits, std::vector<int32_t>{5, 6}), 4);
  c.dry_base = 0.5f;
  EXPECT_THROW(c.validate(), Error);
}

}  // namespace
}  // namespace exq::runtime