// exq's CPU measurement of SmolLM2 layers 0 and 15 against exllamav2's measurement.json
// (fixtures/exl2): the per-row errors must rank the option table the same way (Spearman) and
// the mean error over the table must not exceed exllamav2's by more than the bound.
//
// This is the small version of bench/measure_quality_bench (16 x 2048, layers 0/15/29; results
// in docs/quality.md): 4 rows x 256 tokens (wiki, c4, code, multilingual), so it runs in well
// under a minute on 2 cores. The smaller calibration does not need looser bounds: errors
// measured in-sample on fewer tokens come out lower, not higher (layer 0 MLP: ratio 0.64 here,
// 1.02 at 16 x 2048). One bound is looser for another reason: layer 0's attention block.
// exllamav2's numbers for SmolLM2 come from attention without the causal mask (its FP16 ppl and
// all measured modules are reproduced by such a forward, docs/quality.md), which lowers layer-0
// attention errors ~1.3x against exq's causal, HF-exact forward. Its ratio is 1.14 here, 1.27
// at 16 x 2048; the bound is 1.35. Layer 15 passes because there the causal errors are the
// lower ones (0.84 / 0.44 x at 16 x 2048).
#include <gtest/gtest.h>

#include "io/hf_config.h"
#include "quant/calibration.h"
#include "quant/measure_layers.h"
#include "test_support.h"
#include "tokenizer/tokenizer.h"

namespace exq::quant {
namespace {

TEST(MeasureSmolLM2, Layers0And15RankOptionsLikeExllamav2) {
  EXQ_REQUIRE_MODEL();
  const auto model = test::test_model();
  const auto tok = tokenizer::Tokenizer::from_file(model / "tokenizer.json");
  const io::ModelConfig config = io::load_model_config(model);
  const CalibrationRows cal = calibration_rows(tok, test::shared_dir() / "data", 4, 256,
                                               static_cast<int32_t>(config.vocab_size));
  const LayerMeasureResult res = measure_layers(model, cal, {0, 15});
  const Measurement ref =
      read_measurement(test::shared_dir() / "fixtures" / "exl2" / "smollm2_measurement.json");
  ASSERT_EQ(res.modules.size(), 4u);
  for (const ModuleResult& m : res.modules) {
    const ModuleMeasurement* theirs = ref.find(m.measurement.key);
    ASSERT_NE(theirs, nullptr) << m.measurement.key;
    const MeasureComparison c = compare_measurements(m.measurement, *theirs);
    const double bound = m.measurement.key == "model.layers.0.self_attn" ? 1.35 : 1.10;
    std::printf("%-26s mean error exq %.5f  exllamav2 %.5f  ratio %.3f (bound %.2f)  "
                "spearman %.3f  gptq %.1f s  test %.1f s\n",
                m.measurement.key.c_str(), c.mean_error, c.ref_mean_error, c.ratio, bound,
                c.spearman, m.timing.gptq_s, m.timing.test_s);
    EXPECT_LE(c.ratio, bound) << m.measurement.key;
    EXPECT_GE(c.spearman, 0.9) << m.measurement.key;
  }
}

}  // namespace
}  // namespace exq::quant
