// The CUDA engine against the CPU engine on gemma2- and gemma3-shaped random layers: GeGLU,
// the output norms before the residual adds, an attention scale other than 1/sqrt(head_dim),
// gemma2's score softcap (head_dim 256: the exact f32 attention; 128: the tensor-core one too),
// gemma3's q/k norms and local rotary. Measurement, quantization and the forward-only replay
// match; leaving out any gemma rule moves the CPU target by far more than the tolerances. And
// `exq quantize --device cuda` of the tiny gemma2 / gemma3 models gives EXL2 folders as close to
// the originals as the CPU's. Needs a GPU, not the test model.
#include <gtest/gtest.h>

#include <cmath>
#include <random>
#include <string>

#include "engine_agreement.h"
#include "engine_test_util.h"
#include "quant/cuda/cuda_engine.h"
#include "quant/engine.h"
#include "quant/module_forward.h"
#include "../tiny_gemma.h"
#include "synthetic_layer.h"

namespace exq::quant::cuda {
namespace {

constexpr int64_t kRows = 3, kTokens = 77;

// tiny_config's sizes with gemma2's rules; head_dim 256 (gemma2-2b / 9b) or 128 (27b).
io::ModelConfig gemma2_config(int64_t head_dim) {
  io::ModelConfig c = test::tiny_config(/*out_bias=*/false);
  c.model_type = "gemma2";
  c.head_dim = head_dim;
  c.activation = io::Activation::GeluTanh;
  c.norm_plus_one = c.embed_scale = c.sandwich_norms = true;
  c.query_pre_attn_scalar = 96;  // not head_dim: the scale must come from the config
  c.attn_softcap = 1.5;          // low enough that most scores are capped
  c.layer_window = {4096};
  return c;
}

// gemma3: q/k norms, local rotary on the (windowed) layer 0, global on layer 1; no softcap.
io::ModelConfig gemma3_config() {
  io::ModelConfig c = gemma2_config(256);
  c.model_type = "gemma3_text";
  c.attn_softcap = 0;
  c.qk_norm = true;
  c.attention_qkv_bias = false;
  c.rope_theta = 1e6;
  c.rope_local_theta = 10000;
  c.num_hidden_layers = 2;
  c.layer_window = {512, 0};
  return c;
}

LayerF32 gemma_layer(const io::ModelConfig& c, int64_t index, uint32_t seed) {
  LayerF32 l = test::random_layer(c, seed, /*all_f16=*/false);
  std::mt19937 rng(seed + 1000);
  l.post_attn_norm = test::random_tensor({c.hidden_size}, rng, 0.1f, 1.0f, true);
  l.post_ffn_norm = test::random_tensor({c.hidden_size}, rng, 0.1f, 1.0f, true);
  if (c.qk_norm) {
    l.q_bias = Tensor();
    l.k_bias = Tensor();
    l.v_bias = Tensor();
    l.q_norm = test::random_tensor({c.head_dim}, rng, 0.2f, 1.0f, true);
    l.k_norm = test::random_tensor({c.head_dim}, rng, 0.2f, 1.0f, true);
  }
  l.local_rope = c.local_rope(index);
  return l;
}

// States ~ N(0, 3): gemma's scaled embedding makes the residual larger than a llama's.
Tensor random_states(const io::ModelConfig& c, uint32_t seed) {
  std::mt19937 rng(seed);
  return test::random_tensor({kRows, kTokens, c.hidden_size}, rng, 3.0f, 0.0f, false);
}

TEST(CudaEngineGemma, Gemma2MatchesTheCpuEngine) {
  EXQ_REQUIRE_GPU();
  for (const int64_t head_dim : {256, 128}) {
    SCOPED_TRACE(::testing::Message() << "head_dim " << head_dim);
    const io::ModelConfig c = gemma2_config(head_dim);
    const LayerF32 layer = gemma_layer(c, 0, 31);
    const Tensor x = random_states(c, 31);
    test::expect_engines_agree(c, layer, x);
    io::ModelConfig uncapped = c;
    uncapped.attn_softcap = 0;
    test::expect_rule_matters("the softcap", c, layer, uncapped, layer, x);
  }
}

TEST(CudaEngineGemma, Gemma3MatchesTheCpuEngine) {
  EXQ_REQUIRE_GPU();
  const io::ModelConfig c = gemma3_config();
  for (const int64_t index : {0, 1}) {
    SCOPED_TRACE(::testing::Message() << "layer " << index);
    const LayerF32 layer = gemma_layer(c, index, static_cast<uint32_t>(41 + index));
    ASSERT_EQ(layer.local_rope, index == 0);
    const Tensor x = random_states(c, 41);
    test::expect_engines_agree(c, layer, x);
    LayerF32 other_rope = gemma_layer(c, index, static_cast<uint32_t>(41 + index));
    other_rope.local_rope = !layer.local_rope;
    test::expect_rule_matters("its rotary table", c, layer, c, other_rope, x);
  }
  // The other rules, on layer 1.
  const LayerF32 layer = gemma_layer(c, 1, 42);
  const Tensor x = random_states(c, 41);
  io::ModelConfig silu = c;
  silu.activation = io::Activation::Silu;
  test::expect_rule_matters("GeGLU", c, layer, silu, layer, x);
  io::ModelConfig scale = c;
  scale.query_pre_attn_scalar = 0;
  test::expect_rule_matters("the attention scale", c, layer, scale, layer, x);
  LayerF32 no_post = gemma_layer(c, 1, 42);
  no_post.post_attn_norm = Tensor();
  no_post.post_ffn_norm = Tensor();
  test::expect_rule_matters("the output norms", c, layer, c, no_post, x);
}

// Whole conversions (the calibration embedding's sqrt(hidden) scale, every module, the tied
// head) on the GPU and on the CPU: the logits of both results are about equally far from the
// fp16 model's. head_dim 32 / 16: the exact attention path.
TEST(CudaEngineGemma, TinyModelsConvertOnTheGpuAsOnTheCpu) {
  EXQ_REQUIRE_GPU();
  for (const char* name : {"gemma2_tiny", "gemma3_tiny"}) {
    SCOPED_TRACE(name);
    const std::vector<double> err = tiny_gemma::conversion_errors(name, {{4.0, "cpu"}, {4.0, "cuda"}});
    EXPECT_LE(err[1], 1.25 * err[0] + 0.01);
  }
}

}  // namespace
}  // namespace exq::quant::cuda
