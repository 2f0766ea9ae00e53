#include "runtime/kl_divergence.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <random>

#include "core/error.h"

namespace exq::runtime {
namespace {

// KL(P || Q) of the softmaxes, in long double, straight from the definition.
long double reference_kl(const std::vector<float>& b, const std::vector<float>& t) {
  auto log_softmax = [](const std::vector<float>& x) {
    const long double m = *std::max_element(x.begin(), x.end());
    long double s = 0;
    for (float v : x) s += std::exp(static_cast<long double>(v) - m);
    std::vector<long double> out;
    for (float v : x) out.push_back(static_cast<long double>(v) - m - std::log(s));
    return out;
  };
  const auto lb = log_softmax(b), lt = log_softmax(t);
  long double kl = 0;
  for (size_t i = 0; i < b.size(); ++i) kl += std::exp(lb[i]) * (lb[i] - lt[i]);
  return kl;
}

TEST(KlDivergence, TwoTokensByHand) {
  // P = (1/2, 1/2), Q = (1/4, 3/4): KL = 1/2 ln 2 + 1/2 ln(2/3) = 1/2 ln(4/3).
  const std::vector<float> b = {0.0f, 0.0f}, t = {0.0f, static_cast<float>(std::log(3.0))};
  const PositionCompare c = compare_position(b, t, 1);
  EXPECT_NEAR(c.kl, 0.5 * std::log(4.0 / 3.0), 1e-7);
  EXPECT_FALSE(c.same_top);  // ties take the first index: 0 against 1
  EXPECT_NEAR(c.p_base, 0.5, 1e-12);
  EXPECT_NEAR(c.p_test, 0.75, 1e-7);
  EXPECT_NEAR(c.nll_base, std::log(2.0), 1e-12);
  EXPECT_NEAR(c.nll_test, -std::log(0.75), 1e-7);
  // The other direction is a different number: KL is not symmetric.
  EXPECT_NEAR(compare_position(t, b, 0).kl, 0.25 * std::log(0.5) + 0.75 * std::log(1.5), 1e-7);
}

TEST(KlDivergence, LargeVocabularyAgainstDefinition) {
  std::mt19937 rng(7);
  std::normal_distribution<float> d(0.0f, 3.0f), noise(0.0f, 0.3f);
  for (float shift : {0.0f, 1000.0f, -5000.0f}) {
    std::vector<float> b(49152), t(49152);
    for (size_t i = 0; i < b.size(); ++i) {
      b[i] = d(rng);
      t[i] = b[i] + noise(rng) + shift;  // a softmax does not see the shift
    }
    const PositionCompare c = compare_position(b, t, 17);
    const auto want = static_cast<double>(reference_kl(b, t));
    EXPECT_GT(want, 0.01);
    EXPECT_NEAR(c.kl, want, 2e-6 * want) << "shift " << shift;
  }
}

TEST(KlDivergence, IdenticalRowsAreZero) {
  std::vector<float> b = {3.0f, -1.0f, 7.5f, 7.5f, 0.25f};
  const PositionCompare c = compare_position(b, b, 2);
  EXPECT_EQ(c.kl, 0.0);
  EXPECT_TRUE(c.same_top);
  EXPECT_EQ(c.p_base, c.p_test);
}

TEST(KlDivergence, BadRowsAreErrors) {
  const std::vector<float> b = {1.0f, 2.0f, 3.0f};
  std::vector<float> t = {1.0f, std::numeric_limits<float>::quiet_NaN(), 3.0f};
  try {
    compare_position(b, t, 0);
    FAIL() << "NaN accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("token id 1"), std::string::npos) << e.what();
  }
  t = {1.0f, std::numeric_limits<float>::infinity(), 3.0f};
  EXPECT_THROW(compare_position(t, b, 0), Error);
  EXPECT_THROW(compare_position(b, std::vector<float>{1.0f, 2.0f}, 0), Error);
  EXPECT_THROW(compare_position(b, b, 3), Error);
  EXPECT_THROW(compare_position(b, b, -1), Error);
  EXPECT_THROW(compare_position({}, {}, 0), Error);
}

// Windows of pseudo-random logits: the totals, percentiles and perplexities against the
// positions compared one by one and against score_windows.
TEST(KlDivergence, WindowsAggregate) {
  const int64_t vocab = 300;
  const std::vector<std::vector<int32_t>> windows = {{1, 5, 299, 0, 7, 7, 3}, {2, 4, 6, 8, 10}, {9, 9}};
  auto logits_of = [&](uint32_t seed, float spread) {
    return [=](size_t w, std::span<const int32_t> inputs) {
      std::mt19937 rng(seed + static_cast<uint32_t>(w));
      std::normal_distribution<float> d(0.0f, spread);
      Tensor l(DType::F32, {static_cast<int64_t>(inputs.size()), vocab});
      for (float& v : l.span<float>()) v = d(rng);
      return l;
    };
  };
  const WindowLogits base = logits_of(11, 2.0f), test = logits_of(11, 2.5f);  // same draws, scaled
  std::vector<int64_t> seen;
  const KlResult r = compare_windows(windows, vocab, base, test, [&](int64_t w, const KlResult& so_far) {
    seen.push_back(w);
    EXPECT_EQ(so_far.window_kl.size(), static_cast<size_t>(w + 1));
  });
  EXPECT_EQ(seen, (std::vector<int64_t>{0, 1, 2}));
  EXPECT_EQ(r.tokens, 6 + 4 + 1);

  std::vector<double> kls;
  double same = 0, dp = 0, dp_sq = 0;
  for (size_t w = 0; w < windows.size(); ++w) {
    const auto inputs = std::span(windows[w]).first(windows[w].size() - 1);
    const Tensor lb = base(w, inputs), lt = test(w, inputs);
    double win = 0;
    for (size_t t = 0; t < inputs.size(); ++t) {
      const auto row = [&](const Tensor& l) { return std::span<const float>(l.data<float>() + t * vocab, vocab); };
      const PositionCompare c = compare_position(row(lb), row(lt), windows[w][t + 1]);
      kls.push_back(c.kl);
      win += c.kl;
      same += c.same_top;
      dp += c.p_test - c.p_base;
      dp_sq += (c.p_test - c.p_base) * (c.p_test - c.p_base);
    }
    EXPECT_NEAR(r.window_kl[w], win / static_cast<double>(inputs.size()), 1e-12);
  }
  double sum = 0;
  for (double k : kls) sum += k;
  EXPECT_NEAR(r.kl_mean, sum / 11, 1e-12);
  std::sort(kls.begin(), kls.end());
  EXPECT_EQ(r.kl_median, kls[5]);  // nearest rank: ceil(0.5 * 11) = 6th
  EXPECT_EQ(r.kl_p90, kls[9]);     // ceil(9.9) = 10th
  EXPECT_EQ(r.kl_p99, kls[10]);
  EXPECT_EQ(r.kl_max, kls[10]);
  EXPECT_GT(r.kl_stderr, 0.0);
  EXPECT_NEAR(r.same_top, same / 11, 1e-12);
  EXPECT_NEAR(r.dp_mean, dp / 11, 1e-12);
  EXPECT_NEAR(r.dp_rms, std::sqrt(dp_sq / 11), 1e-12);

  // Each model's perplexity is the one score_windows gives for its logits.
  const PerplexityResult pb = score_windows(windows, vocab, base), pt = score_windows(windows, vocab, test);
  EXPECT_NEAR(r.base.ppl, pb.ppl, 1e-12 * pb.ppl);
  EXPECT_NEAR(r.test.ppl, pt.ppl, 1e-12 * pt.ppl);
  for (size_t w = 0; w < windows.size(); ++w) EXPECT_NEAR(r.test.window_ppl[w], pt.window_ppl[w], 1e-12 * pt.window_ppl[w]);
  EXPECT_NEAR(r.ln_ppl_ratio, std::log(pt.ppl / pb.ppl), 1e-12);
}

TEST(KlDivergence, WindowErrorsNamePosition) {
  const int64_t vocab = 4;
  const std::vector<std::vector<int32_t>> windows = {{0, 1, 2}, {3, 2, 1, 0}};
  auto ok = [&](size_t, std::span<const int32_t> inputs) {
    Tensor l(DType::F32, {static_cast<int64_t>(inputs.size()), vocab});
    for (float& v : l.span<float>()) v = 0.5f;
    return l;
  };
  auto bad = [&](size_t w, std::span<const int32_t> inputs) {
    Tensor l = ok(w, inputs);
    if (w == 1) l.data<float>()[2 * vocab + 3] = std::numeric_limits<float>::quiet_NaN();
    return l;
  };
  try {
    compare_windows(windows, vocab, ok, bad);
    FAIL() << "NaN logits accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("window 1 position 2"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("token id 3"), std::string::npos) << e.what();
  }
  EXPECT_THROW(compare_windows({}, vocab, ok, ok), Error);
  EXPECT_THROW(compare_windows(std::vector<std::vector<int32_t>>{std::vector<int32_t>{5}}, vocab, ok, ok), Error);
}

}  // namespace
}  // namespace exq::runtime
