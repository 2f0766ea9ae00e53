// The CUDA engine against the CPU engine on a granite-shaped random layer: the attention
// multiplier as the score scale and each block's output times the residual multiplier before
// its residual add (the target the candidates are compared against and the next layer's input).
// Measurement, quantization and the forward-only replay match; leaving out either rule moves
// the CPU target by far more than the tolerances. And `exq quantize --device cuda` of the tiny
// granite gives an EXL2 folder as close to the original as the CPU's. Needs a GPU.
#include <gtest/gtest.h>

#include <cmath>
#include <random>

#include "engine_agreement.h"
#include "engine_test_util.h"
#include "quant/module_forward.h"
#include "../tiny_gemma.h"
#include "synthetic_layer.h"

namespace exq::quant::cuda {
namespace {

constexpr int64_t kRows = 3, kTokens = 77;

// tiny_config's sizes with granite-3.1-8b's rules (its scalars scaled to head_dim 64).
io::ModelConfig granite_config() {
  io::ModelConfig c = test::tiny_config(/*out_bias=*/false);
  c.model_type = "granite";
  c.attention_multiplier = 0.0625;  // not 64^-0.5: the scale must come from the config
  c.residual_multiplier = 0.22;
  c.embedding_multiplier = 12;
  c.logits_scaling = 16;
  return c;
}

TEST(CudaEngineGranite, MatchesTheCpuEngine) {
  EXQ_REQUIRE_GPU();
  const io::ModelConfig c = granite_config();
  const LayerF32 layer = test::random_layer(c, 51, /*all_f16=*/false);
  std::mt19937 rng(51);
  // The embedding multiplier makes the residual larger than a llama's.
  const Tensor x = test::random_tensor({kRows, kTokens, c.hidden_size}, rng, 3.0f, 0.0f, false);
  test::expect_engines_agree(c, layer, x);
  io::ModelConfig unscaled = c;
  unscaled.residual_multiplier = 1;
  test::expect_rule_matters("the residual multiplier", c, layer, unscaled, layer, x);
  io::ModelConfig head_scale = c;
  head_scale.attention_multiplier = 0;
  test::expect_rule_matters("the attention multiplier", c, layer, head_scale, layer, x);
}

// A whole conversion (the calibration embedding's multiplier, every module, the tied head) on
// the GPU and on the CPU: the logits of both results about equally far from the fp16 model's.
TEST(CudaEngineGranite, TinyModelConvertsOnTheGpuAsOnTheCpu) {
  EXQ_REQUIRE_GPU();
  const std::vector<double> err = tiny_gemma::conversion_errors("granite_tiny", {{4.0, "cpu"}, {4.0, "cuda"}});
  EXPECT_LE(err[1], 1.25 * err[0] + 0.01);
}

}  // namespace
}  // namespace exq::quant::cuda
