// The CUDA engine with its GPTQ results in pinned host memory (engine_plan.h: host_candidates),
// forced or picked by a tight budget, against the same engine with everything on the device:
// byte-identical errors, targets, packed tensors and outputs, and the budget respected. On a
// small random Llama-shaped layer; needs a GPU, not the test model.
#include <gtest/gtest.h>

#include <cstdio>
#include <random>
#include <string>
#include <vector>

#include "core/half.h"
#include "engine_test_util.h"
#include "quant/cuda/cuda_engine.h"
#include "quant/engine.h"
#include "quant/module_forward.h"
#include "synthetic_layer.h"

namespace exq::quant::cuda {
namespace {

constexpr int64_t kRows = 4, kTokens = 64;

io::ModelConfig tiny_config() { return test::tiny_config(/*out_bias=*/false); }

Tensor random(Shape shape, std::mt19937& rng, float scale, float offset) {
  return test::random_tensor(std::move(shape), rng, scale, offset, /*f16_exact=*/true);
}

LayerF32 random_layer(const io::ModelConfig& c, uint32_t seed) {
  return test::random_layer(c, seed, /*all_f16=*/true);
}

void progress(const char* what) {
  std::fprintf(stderr, "[host_candidates] %s\n", what);
  std::fflush(stderr);
}

TEST(CudaEngineHostCandidates, ForcedModeGivesIdenticalResults) {
  EXQ_REQUIRE_GPU();
  const io::ModelConfig c = tiny_config();
  const LayerF32 layer = random_layer(c, 31);
  std::mt19937 rng(31);
  const Tensor x = random({kRows, kTokens, c.hidden_size}, rng, 1.0f, 0.0f);
  const auto ref = make_cuda_engine(c, kTokens, {});
  progress("reference engine");
  const ModuleResult a0 = ref->measure_attention(layer, x, "a", {});
  EXPECT_FALSE(ref->module_stats().at("host_candidates").get<bool>());
  const ModuleResult m0 = ref->measure_mlp(layer, a0.target, "m", {});
  const QuantStep qa0 = ref->quantize_attention(layer, 0, x, attn_option_table()[3]);
  const QuantStep qm0 = ref->quantize_mlp(layer, 0, qa0.output, mlp_option_table()[4]);
  for (int64_t slots : {0, 1}) {
    SCOPED_TRACE(::testing::Message() << "max_rows_on_device " << slots);
    CudaEngineOptions o;
    o.host_candidates = true;
    o.max_rows_on_device = slots;
    const auto host = make_cuda_engine(c, kTokens, o);
    progress("forced engine: attention");
    test::expect_measurements_identical(host->measure_attention(layer, x, "a", {}), a0);
    const auto stats = host->module_stats();
    std::printf("%s\n", stats.dump().c_str());
    EXPECT_TRUE(stats.at("host_candidates").get<bool>());
    EXPECT_GE(stats.at("candidate_cache_slots").get<int64_t>(), 4);
    progress("forced engine: MLP");
    test::expect_measurements_identical(host->measure_mlp(layer, a0.target, "m", {}), m0);
    EXPECT_TRUE(host->module_stats().at("host_candidates").get<bool>());
    progress("forced engine: quantize");
    test::expect_packed_identical(host->quantize_attention(layer, 0, x, attn_option_table()[3]),
                                  qa0);
    test::expect_packed_identical(host->quantize_mlp(layer, 0, qa0.output, mlp_option_table()[4]),
                                  qm0);
  }
}

// Lowers the budget below what the all-on-device plan needs: the engine switches to host
// candidates (with a cache too small for all of them, so chunks and swaps happen) and still
// gives the same errors and target within the budget. The layer is wide enough (MLP 1024 x
// 4096: ~40 GPTQ results of 8 MiB) that the results, not GPTQ's working memory, decide.
TEST(CudaEngineHostCandidates, TightBudgetPicksHostCandidates) {
  EXQ_REQUIRE_GPU();
  io::ModelConfig c = tiny_config();
  c.hidden_size = 1024;
  c.intermediate_size = 4096;
  c.num_attention_heads = 16;
  c.num_key_value_heads = 4;
  const LayerF32 layer = random_layer(c, 32);
  std::mt19937 rng(32);
  const Tensor x = random({kRows, kTokens, c.hidden_size}, rng, 1.0f, 0.0f);
  const auto ref = make_cuda_engine(c, kTokens, {});
  const ModuleResult m0 = ref->measure_mlp(layer, x, "m", {});
  const auto ref_stats = ref->module_stats();
  ASSERT_FALSE(ref_stats.at("host_candidates").get<bool>());
  const auto plan = ref_stats.at("vram_plan_bytes").get<size_t>();
  int host_runs = 0;
  for (int pct = 95; pct >= 30 && host_runs < 2; pct -= 5) {
    const size_t budget = plan / 100 * static_cast<size_t>(pct);
    CudaEngineOptions o;
    o.vram_budget_bytes = budget;
    const auto tight = make_cuda_engine(c, kTokens, o);
    ModuleResult m;
    try {
      m = tight->measure_mlp(layer, x, "m", {});
    } catch (const Error& e) {
      std::printf("budget %zu (%d %% of the device plan): %s\n", budget, pct, e.what());
      EXPECT_NE(std::string(e.what()).find("VRAM budget of"), std::string::npos) << e.what();
      break;
    }
    const auto stats = tight->module_stats();
    SCOPED_TRACE(stats.dump());
    EXPECT_LE(stats.at("peak_vram_bytes").get<size_t>(), budget);
    test::expect_measurements_identical(m, m0);
    if (stats.at("host_candidates").get<bool>()) {
      std::printf("budget %zu (%d %%): %s\n", budget, pct, stats.dump().c_str());
      ++host_runs;
    }
  }
  EXPECT_GT(host_runs, 0) << "no budget down to 30 % of " << plan << " chose host candidates";
}

}  // namespace
}  // namespace exq::quant::cuda
