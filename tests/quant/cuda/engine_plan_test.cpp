// The CUDA engine's VRAM plan (host arithmetic, no GPU needed): states resident when they fit
// next to the largest phase, streamed through as many slots as fit otherwise, a clear error
// when not even one row fits, and the slot cap tests use.
#include "quant/cuda/engine_plan.h"

#include <gtest/gtest.h>

#include <string>
#include <vector>

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
    EXPECT_NE(m.find("VRAM budget of 1.05 GB is too small"), std::string::npos) << m;
    EXPECT_NE(m.find("needs at least 1.49 GB"), std::string::npos) << m;
  }
  EXPECT_THROW(plan_vram(footprint(), 0, size_t{1} << 40), Error);
}

TEST(EnginePlan, GptqEstimateCoversItsBuffers) {
  // Two F32 copies, f16 and codes of a 4096 x 14336 weight, plus an [in, in] matrix.
  const size_t e = gptq_scratch_estimate(4096, 14336);
  EXPECT_GE(e, size_t{4096} * 14336 * 11 + size_t{14336} * 14336 * 4);
  EXPECT_LT(e, size_t{4096} * 14336 * 12 + size_t{14336} * 14336 * 4 + 100 * kMiB);
}

// Results too large for the device: 20 candidates of at most 50 MiB for 3 linears.
ModuleFootprint host_footprint() {
  ModuleFootprint f = footprint();
  f.candidate_max = 50 * kMiB;
  f.linears = 3;
  f.candidate_count = 20;
  f.kept = 1 * kMiB;
  return f;
}

TEST(EnginePlan, HostCandidatesWhenOneRowDoesNotFitBesideTheResults) {
  const ModuleFootprint f = host_footprint();
  EXPECT_EQ(f.phase_gptq_host(), 800 * kMiB);  // two results on the device at a time
  EXPECT_EQ(f.phase_test_host(), 202 * kMiB);  // one candidate per linear
  // On the device it needs 1400 + 20 MiB; with host candidates 800 + 20.
  const VramPlan p = plan_vram(f, 16, 1000 * kMiB);
  EXPECT_TRUE(p.host_candidates);
  EXPECT_FALSE(p.resident);  // 800 + 320 MiB of rows > 1000
  EXPECT_EQ(p.slots, kHostCandidateSlots);
  // The rest of the test phase: 1000 - (1 + 1 + 50 + 3 * 20) = 888 MiB, 17 candidates.
  EXPECT_EQ(p.cache_slots, 17);
  EXPECT_EQ(p.estimate, 962 * kMiB);
  EXPECT_LE(p.estimate, 1000 * kMiB);
  // Enough for the rows beside GPTQ: resident, the cache takes what the rows leave.
  const VramPlan r = plan_vram(f, 16, 1150 * kMiB);
  EXPECT_TRUE(r.host_candidates);
  EXPECT_TRUE(r.resident);
  EXPECT_EQ(r.slots, 16);
  EXPECT_EQ(r.cache_slots, 15);
  EXPECT_EQ(r.estimate, 1122 * kMiB);
  // The slot cap still applies; the device plan wins whenever it fits.
  EXPECT_EQ(plan_vram(f, 16, 1000 * kMiB, 1).slots, 1);
  const VramPlan d = plan_vram(f, 16, 1420 * kMiB);
  EXPECT_FALSE(d.host_candidates);
  EXPECT_EQ(d.cache_slots, 0);
}

TEST(EnginePlan, HostCandidatesCanBeForced) {
  const VramPlan p = plan_vram(host_footprint(), 16, size_t{1} << 40, 0, true);
  EXPECT_TRUE(p.host_candidates);
  EXPECT_TRUE(p.resident);
  EXPECT_EQ(p.cache_slots, 20);  // never more than there are candidates
  // Forward-only footprints have no candidates: forcing changes nothing.
  const VramPlan f = plan_vram(footprint(), 16, size_t{1} << 40, 0, true);
  EXPECT_FALSE(f.host_candidates);
}

TEST(EnginePlan, TooSmallEvenWithHostCandidatesNamesBoth) {
  try {
    plan_vram(host_footprint(), 16, 700 * kMiB);
    FAIL() << "expected exq::Error";
  } catch (const Error& e) {
    const std::string m = e.what();
    EXPECT_NE(m.find("VRAM budget of 0.73 GB is too small"), std::string::npos) << m;
    EXPECT_NE(m.find("needs at least 1.49 GB"), std::string::npos) << m;
    EXPECT_NE(m.find("or 0.86 GB with the GPTQ results kept in host memory"), std::string::npos)
        << m;
  }
}

TEST(EnginePlan, TableChunksFitTheCacheAndShareCandidates) {
  const std::vector<std::vector<size_t>> pick = {{1, 0, 2}, {0, 0, 0}, {0, 0, 1},
                                                 {1, 0, 0}, {0, 1, 0}, {1, 1, 1}};
  // Sorted: 1 {0,0,0}, 2 {0,0,1}, 4 {0,1,0}, 3 {1,0,0}, 0 {1,0,2}, 5 {1,1,1}.
  const auto chunks = table_chunks(pick, 4);
  const std::vector<std::vector<size_t>> want = {{1, 2}, {4}, {3, 0}, {5}};
  EXPECT_EQ(chunks, want);
  const auto one = table_chunks(pick, 100);
  ASSERT_EQ(one.size(), 1u);
  EXPECT_EQ(one[0], (std::vector<size_t>{1, 2, 4, 3, 0, 5}));
  EXPECT_EQ(table_chunks(pick, 3).size(), 6u);  // exactly one row's candidates
  EXPECT_THROW(table_chunks(pick, 2), Error);
  EXPECT_TRUE(table_chunks({}, 3).empty());
}

}  // namespace
}  // namespace exq::quant::cuda
