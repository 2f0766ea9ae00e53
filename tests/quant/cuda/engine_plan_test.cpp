// The CUDA engine's VRAM plan (host arithmetic, no GPU needed): states resident when they fit
// next to the largest phase, streamed through as many slots as fit otherwise, a clear error
// when not even one row fits, and the slot cap tests use.
#include "quant/cuda/engine_plan.h"

#include <gtest/gtest.h>

#include <string>

#include "core/error.h"

namespace exq::quant::cuda {
namespace {

constexpr size_t kMiB = size_t{1} << 20;

ModuleFootprint footprint() {
  ModuleFootprint f;
  f.persistent = 1 * kMiB;
  f.weights = 100 * kMiB;
  f.hessians = 200 * kMiB;
  f.prepared = 100 * kMiB;
  f.candidates = 1000 * kMiB;
  f.gptq = 300 * kMiB;
  f.scratch = 50 * kMiB;
  f.row_bytes = 10 * kMiB;
  return f;
}

TEST(EnginePlan, PhasesAddUp) {
  const ModuleFootprint f = footprint();
  EXPECT_EQ(f.phase_reference(), 350 * kMiB);
  EXPECT_EQ(f.phase_gptq(), 1700 * kMiB);
  EXPECT_EQ(f.phase_gptq_min(), 1400 * kMiB);
  EXPECT_EQ(f.phase_test(), 1051 * kMiB);
  EXPECT_EQ(f.slot_bytes(), 20 * kMiB);
}

TEST(EnginePlan, ResidentWhenEverythingFits) {
  const VramPlan p = plan_vram(footprint(), 16, 1700 * kMiB + 16 * 20 * kMiB);
  EXPECT_TRUE(p.resident);
  EXPECT_EQ(p.slots, 16);
  EXPECT_EQ(p.estimate, 2020 * kMiB);
}

TEST(EnginePlan, StreamsWhenGptqDoesNotFitBesideAllRows) {
  // 1700 MiB of GPTQ + 320 MiB of rows > 1800 MiB: the rows are freed during GPTQ and copied
  // again for the tests; the forward phases (1051 MiB) still hold all 16 of them.
  const VramPlan p = plan_vram(footprint(), 16, 1800 * kMiB);
  EXPECT_FALSE(p.resident);
  EXPECT_EQ(p.slots, 16);
  EXPECT_EQ(p.estimate, 1700 * kMiB);
}

TEST(EnginePlan, SlotCountFollowsTheBudget) {
  ModuleFootprint f = footprint();
  f.candidates = 0;
  f.gptq = 0;
  f.prepared = 0;
  // base = max(reference 350, test 51) = 350 MiB; three slots of 20 MiB fit in 410.
  const VramPlan p = plan_vram(f, 16, 415 * kMiB);
  EXPECT_FALSE(p.resident);
  EXPECT_EQ(p.slots, 3);
  EXPECT_EQ(p.estimate, 410 * kMiB);
}

TEST(EnginePlan, CapForcesStreaming) {
  const VramPlan p = plan_vram(footprint(), 16, size_t{1} << 40, 2);
  EXPECT_FALSE(p.resident);
  EXPECT_EQ(p.slots, 2);
  const VramPlan all = plan_vram(footprint(), 4, size_t{1} << 40, 8);  // cap above the rows
  EXPECT_TRUE(all.resident);
  EXPECT_EQ(all.slots, 4);
}

TEST(EnginePlan, TooSmallNamesTheSizes) {
  try {
    plan_vram(footprint(), 16, 1000 * kMiB);
    FAIL() << "expected exq::Error";
  } catch (const Error& e) {
    const std::string m = e.what();
    EXPECT_NE(m.find("VRAM budget of 0.98 GB is too small"), std::string::npos) << m;
    EXPECT_NE(m.find("needs at least 1.39 GB"), std::string::npos) << m;
  }
  EXPECT_THROW(plan_vram(footprint(), 0, size_t{1} << 40), Error);
}

TEST(EnginePlan, GptqEstimateCoversItsBuffers) {
  // Two F32 copies, f16 and codes of a 4096 x 14336 weight, plus an [in, in] matrix.
  const size_t e = gptq_scratch_estimate(4096, 14336);
  EXPECT_GE(e, size_t{4096} * 14336 * 11 + size_t{14336} * 14336 * 4);
  EXPECT_LT(e, size_t{4096} * 14336 * 12 + size_t{14336} * 14336 * 4 + 100 * kMiB);
}

}  // namespace
}  // namespace exq::quant::cuda
