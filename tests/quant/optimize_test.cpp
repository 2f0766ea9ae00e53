#include "quant/optimize.h"

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <cmath>

#include "core/error.h"
#include "test_support.h"

namespace exq::quant {
namespace {

// SmolLM2-135M: per layer q,o [576x576], k,v [192x576], gate,up,down 1536x576; 30 layers.
constexpr int64_t kDecoderWeights = 30 * (2 * 576 * 576 + 2 * 192 * 576 + 3 * 1536 * 576);

std::vector<ModuleCandidates> load_exllamav2_measurement() {
  const auto j = nlohmann::json::parse(
      test::read_file(test::shared_dir() / "fixtures/exl2/smollm2_measurement.json"));
  std::vector<ModuleCandidates> mods;
  for (const auto& [name, rows] : j.at("measurement").items()) {
    if (name.find("model.layers.") != 0) continue;  // decoder modules only
    ModuleCandidates m{name, {}};
    for (const auto& r : rows)
      m.rows.push_back({r.at("total_bits").get<int64_t>(), 1.0 - r.at("accuracy").get<double>()});
    mods.push_back(std::move(m));
  }
  return mods;
}

struct Bar {
  double bpw, sum_log_err, max_err;  // exllamav2's optimizer on the same file
};

class OptimizeExllamav2Measurement : public ::testing::TestWithParam<Bar> {};

TEST_P(OptimizeExllamav2Measurement, BeatsExllamav2AndStaysWithinBudget) {
  const Bar bar = GetParam();
  const auto mods = load_exllamav2_measurement();
  ASSERT_EQ(mods.size(), 60u);
  const auto res = optimize(mods, {.target_bpw = bar.bpw, .decoder_weights = kDecoderWeights});
  int64_t bits = 0;
  double sum_log = 0, max_err = 0;
  for (size_t k = 0; k < mods.size(); ++k) {
    const auto& r = mods[k].rows.at(static_cast<size_t>(res.choice[k]));
    bits += r.total_bits;
    sum_log += std::log(r.error);
    max_err = std::max(max_err, r.error);
  }
  EXPECT_EQ(bits, res.total_bits);
  EXPECT_LE(static_cast<double>(bits), bar.bpw * kDecoderWeights);
  EXPECT_GT(res.bpw, bar.bpw - 0.01);  // the budget is used, not wasted
  EXPECT_LE(sum_log, bar.sum_log_err);
  EXPECT_LE(max_err, bar.max_err);
  EXPECT_DOUBLE_EQ(sum_log, res.sum_log_err);
  RecordProperty("sum_log_err", std::to_string(sum_log));
  RecordProperty("max_err", std::to_string(max_err));
}

INSTANTIATE_TEST_SUITE_P(Targets, OptimizeExllamav2Measurement,
                         ::testing::Values(Bar{4.0, -240.28, 0.030409}, Bar{2.5, -173.98, 0.101647}));

TEST(Optimize, ExactOnASmallProblem) {
  // Two modules; budget 30 bits. Best: (10 bits, err .1) + (20 bits, err .01) vs others.
  std::vector<ModuleCandidates> mods = {
      {"a", {{10, 0.1}, {20, 0.05}}},
      {"b", {{10, 0.2}, {20, 0.01}}},
  };
  const auto res = optimize(mods, {.target_bpw = 1.0, .decoder_weights = 30, .max_err_slack = 10,
                                   .bits_unit = 1});
  EXPECT_EQ(res.choice, (std::vector<int>{0, 1}));
  EXPECT_EQ(res.total_bits, 30);
}

TEST(Optimize, RejectsImpossibleTargets) {
  std::vector<ModuleCandidates> mods = {{"a", {{100, 0.1}}}};
  EXPECT_THROW(optimize(mods, {.target_bpw = 0.5, .decoder_weights = 100}), Error);
  mods[0].rows[0].error = std::nan("");
  EXPECT_THROW(optimize(mods, {.target_bpw = 2, .decoder_weights = 100}), Error);
}

}  // namespace
}  // namespace exq::quant
