// The VRAM plan of a mixture-of-experts block (host arithmetic, no GPU needed), at the shapes of
// a Mixtral-8x7B layer and the default calibration (16 rows of 2048 tokens to measure, 100 to
// quantize): results on the device when they fit, in host memory with a cache of groups
// otherwise, and a clear error when not even that fits.
#include "quant/cuda/moe_plan.h"

#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "core/error.h"
#include "quant/measure.h"
#include "quant/options.h"

namespace exq::quant::cuda {
namespace {

constexpr size_t kGiB = size_t{1} << 30, kMiB = size_t{1} << 20;

int64_t table_groups() { return table_picks(table_rows(std::vector<MlpOptions>{}, mlp_option_table()), 3).groups(); }

MoeShape mixtral(int64_t rows, int64_t groups) { return {rows, 2048, 4096, 8, 2, 14336, groups}; }

std::string error_of(const MoeFootprint& f, size_t budget) {
  try {
    plan_moe(f, budget);
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

TEST(MoePlan, MixtralLayerSizes) {
  EXPECT_EQ(table_groups(), 40);
  const MoeFootprint f = moe_footprint(mixtral(16, table_groups()), 0);
  EXPECT_EQ(f.states, 1 * kGiB);                  // 2 x 16 x 2048 x 4096 f32
  EXPECT_EQ(f.candidate, 112 * kMiB);             // 14336 x 4096 f16
  EXPECT_EQ(f.group, 896 * kMiB);                 // every expert's
  EXPECT_EQ(f.gate_hessian, 64 * kMiB);           // 4096^2 f32
  EXPECT_GE(f.expert, 5 * size_t{784} * kMiB);    // a down Hessian's prepare: 5 x 14336^2 f32
  EXPECT_LT(f.expert, 5 * kGiB);
  // 40 groups of 0.875 GiB: about 41 GiB on the device in all.
  EXPECT_GT(f.device_need(), 40 * kGiB);
  EXPECT_LT(f.device_need(), 42 * kGiB);
}

TEST(MoePlan, ResultsOnTheDeviceWhenTheyFit) {
  const MoeFootprint f = moe_footprint(mixtral(16, table_groups()), 0);
  const MoePlan p = plan_moe(f, 80 * kGiB);
  EXPECT_FALSE(p.host_candidates);
  EXPECT_EQ(p.estimate, f.device_need());
}

TEST(MoePlan, ResultsInHostMemoryUnderA24GBBudget) {
  const MoeFootprint f = moe_footprint(mixtral(16, table_groups()), 200 * kMiB);
  const MoePlan p = plan_moe(f, 24 * kGiB);
  EXPECT_TRUE(p.host_candidates);
  EXPECT_EQ(p.cache_groups, static_cast<int64_t>((24 * kGiB - f.base()) / f.group));
  EXPECT_GE(p.cache_groups, 20);
  EXPECT_LE(p.estimate, 24 * kGiB);
  // The least it needs: the states, one expert's GPTQ and two results, or three groups.
  EXPECT_LT(f.host_need(), 8 * kGiB);
  const MoePlan least = plan_moe(f, f.host_need());
  EXPECT_TRUE(least.host_candidates);
  EXPECT_EQ(least.cache_groups, static_cast<int64_t>((f.host_need() - f.base()) / f.group));
  EXPECT_GE(least.cache_groups, 3);
  EXPECT_THROW(plan_moe(f, f.host_need() - 1), Error);
}

TEST(MoePlan, ForcedHostPlanCachesAtMostEveryGroup) {
  const MoeFootprint f = moe_footprint({3, 64, 64, 8, 2, 128, 12}, 0);
  const MoePlan p = plan_moe(f, 80 * kGiB, true);
  EXPECT_TRUE(p.host_candidates);
  EXPECT_EQ(p.cache_groups, 12);
}

TEST(MoePlan, TooSmallBudgetNamesTheSizes) {
  const MoeFootprint f = moe_footprint(mixtral(16, table_groups()), 0);
  // Sizes in GB of 10^9 bytes, as --vram-budget reads them.
  const std::string e = error_of(f, 4'000'000'000);
  EXPECT_NE(e.find("VRAM budget of 4.00 GB is too small for this MoE block"), std::string::npos) << e;
  EXPECT_NE(e.find("host memory"), std::string::npos) << e;
  EXPECT_NE(e.find("calibration states 1.07 GB"), std::string::npos) << e;
  // The quantization pass's 100 rows alone take 6.71 GB of states.
  const MoeFootprint q = moe_footprint(mixtral(100, 3), 0);
  EXPECT_EQ(q.states, 6 * kGiB + 256 * kMiB);
  EXPECT_NE(error_of(q, 8'000'000'000).find("calibration states 6.71 GB"), std::string::npos);
  EXPECT_FALSE(plan_moe(q, 16 * kGiB).host_candidates);
}

TEST(MoePlan, ForwardOnlyNeedsOneExpert) {
  const MoeFootprint f = moe_footprint(mixtral(16, 0), 0);
  const MoePlan p = plan_moe(f, 4 * kGiB);
  EXPECT_FALSE(p.host_candidates);
  EXPECT_EQ(p.estimate, f.base() + f.expert);
  EXPECT_LT(p.estimate, 3 * kGiB);
}

}  // namespace
}  // namespace exq::quant::cuda
