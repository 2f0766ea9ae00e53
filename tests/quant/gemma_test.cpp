// gemma, gemma2 and gemma3_text in the converter: the module forward the measurement and
// quantization run (norms as 1 + w, GeGLU, the attention scale and softcap, gemma3's local
// rotary, gemma2 / 3's output norms) gives the transformers-checked models' own layer outputs,
// and tiny gemma2 / gemma3 models convert end to end on the CPU into EXL2 folders that load,
// keep their norms as stored and stay close to the originals.
#include <gtest/gtest.h>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include <cmath>
#include <cstring>
#include <fstream>

#include "backend/cpu/norm.h"
#include "io/exl2.h"
#include "io/safetensors.h"
#include "model/llama.h"
#include "quant/measure.h"
#include "quant/module_forward.h"
#include "test_support.h"
#include "tiny_gemma.h"

namespace exq::quant {
namespace {
namespace fs = std::filesystem;
using tiny_gemma::data_dir;

// The model with every sliding window widened past the test's tokens: the converter attends to
// whole calibration rows (module_forward.h), the windowed layers keep their kind (gemma3's
// local rotary).
model::LlamaModel without_windows(const fs::path& dir) {
  io::ModelConfig c = io::load_model_config(dir);
  for (int64_t& w : c.layer_window)
    if (w > 0) w = int64_t{1} << 20;
  model::LlamaWeights weights = model::load_llama_weights(c, dir);
  return model::LlamaModel(std::move(c), std::move(weights));
}

// Max over layers of the module forward's relative error against the model's layer outputs.
double module_forward_error(const std::string& name) {
  const fs::path dir = data_dir(name);
  model::LlamaModel m = without_windows(dir);
  const io::ModelConfig c = io::load_model_config(dir);  // the converter's config
  std::vector<Tensor> inputs;  // residual stream before each layer, then the final norm's output
  m.set_hidden_capture([&](int, const TensorView& x) { inputs.push_back(Tensor::copy_of(x)); });
  const std::vector<int32_t> ids = {2, 123, 42, 299, 5, 77, 180, 3, 250, 61, 14, 200, 33, 8, 271, 95, 160, 1, 45, 310};
  const auto T = static_cast<int64_t>(ids.size());
  model::KvCache cache = m.make_cache(T);
  m.forward(ids, cache, true);
  EXPECT_EQ(inputs.size(), static_cast<size_t>(c.num_hidden_layers) + 1);
  const io::SafetensorsModel files = io::SafetensorsModel::open(dir);
  // The calibration embedding is the model's, scaled by sqrt(hidden) in the table's dtype.
  const TensorView table = files.get("model.embed_tokens.weight");
  const Tensor x0 = embed_rows(table, ids, 1, T, model::embedding_scale(c, table.dtype()));
  EXPECT_EQ(std::memcmp(x0.raw(), inputs[0].raw(), inputs[0].nbytes()), 0) << name << ": embedding";
  ModuleForward fwd(c, T);
  double worst = 0;
  for (int64_t l = 0; l < c.num_hidden_layers; ++l) {
    const LayerF32 layer = load_layer_f32(files, c, l);
    EXPECT_EQ(layer.post_attn_norm.empty(), !c.sandwich_norms);
    EXPECT_EQ(layer.local_rope, c.local_rope(l));
    Tensor mid(DType::F32, {T, c.hidden_size}), out(DType::F32, {T, c.hidden_size});
    fwd.attention(attn_weights(layer), inputs[static_cast<size_t>(l)], mid);
    fwd.mlp(mlp_weights(layer), mid, out);
    if (l + 1 == c.num_hidden_layers)  // the last capture is after the final norm
      cpu::rms_norm(out, m.weights().final_norm, static_cast<float>(c.rms_norm_eps), out);
    const double err = relative_error(out, inputs[static_cast<size_t>(l) + 1]);
    std::printf("  %s layer %lld: module forward vs model, relative error %.3g\n", name.c_str(),
                static_cast<long long>(l), err);
    worst = std::max(worst, err);
  }
  return worst;
}

TEST(GemmaModuleForward, MatchesTheModelsLayers) {
  for (const char* name : {"gemma_tiny", "gemma2_tiny", "gemma3_tiny"}) EXPECT_LE(module_forward_error(name), 1e-6) << name;
}

// The module forward follows each gemma rule: dropping any one of them moves a layer's output
// far beyond the 1e-6 above.
TEST(GemmaModuleForward, EveryRuleMatters) {
  const fs::path dir = data_dir("gemma3_tiny");
  const io::ModelConfig c = io::load_model_config(dir);
  const io::SafetensorsModel files = io::SafetensorsModel::open(dir);
  const LayerF32 layer = load_layer_f32(files, c, 0);  // a sliding-window layer: local rotary
  ASSERT_TRUE(layer.local_rope);
  const int64_t T = 12;
  Tensor x(DType::F32, {T, c.hidden_size});
  for (int64_t i = 0; i < x.numel(); ++i) x.data<float>()[i] = std::sin(0.37f * static_cast<float>(i)) * 4.0f;
  auto run = [&](const io::ModelConfig& cfg, AttnWeights a, MlpWeights m) {
    ModuleForward fwd(cfg, T);
    Tensor mid(DType::F32, x.shape()), out(DType::F32, x.shape());
    fwd.attention(a, x, mid);
    fwd.mlp(m, mid, out);
    return out;
  };
  const Tensor want = run(c, attn_weights(layer), mlp_weights(layer));
  auto expect_differs = [&](const char* what, const io::ModelConfig& cfg, AttnWeights a, MlpWeights m) {
    const double d = relative_error(run(cfg, a, m), want);
    std::printf("  without %s: relative change %.3g\n", what, d);
    EXPECT_GT(d, 1e-3) << what;
  };
  io::ModelConfig silu = c;
  silu.activation = io::Activation::Silu;
  expect_differs("GeGLU", silu, attn_weights(layer), mlp_weights(layer));
  io::ModelConfig scaled = c;  // its query_pre_attn_scalar is head_dim: another one must count
  scaled.query_pre_attn_scalar = 64;
  expect_differs("(with another) attention scale", scaled, attn_weights(layer), mlp_weights(layer));
  io::ModelConfig capped = c;
  capped.attn_softcap = 0.5;
  expect_differs("(with) a softcap", capped, attn_weights(layer), mlp_weights(layer));
  AttnWeights global = attn_weights(layer);
  global.local_rope = false;
  expect_differs("the local rotary", c, global, mlp_weights(layer));
  AttnWeights no_post = attn_weights(layer);
  no_post.post_norm = TensorView();
  expect_differs("post_attention_layernorm", c, no_post, mlp_weights(layer));
  MlpWeights no_post_ffn = mlp_weights(layer);
  no_post_ffn.post_norm = TensorView();
  expect_differs("post_feedforward_layernorm", c, attn_weights(layer), no_post_ffn);
  io::ModelConfig stored = c;  // norms as stored, without the + 1
  stored.norm_plus_one = false;
  const LayerF32 raw = load_layer_f32(files, stored, 0);
  expect_differs("norms as 1 + w", c, attn_weights(raw), mlp_weights(raw));
}

// Every non-quantized tensor of the output is the original's, as stored (norms without the
// + 1), in fp16; the linears are EXL2 under their HF names.
void expect_norms_as_stored(const fs::path& model, const fs::path& out, const io::ModelConfig& c) {
  const io::SafetensorsModel a = io::SafetensorsModel::open(model), b = io::SafetensorsModel::open(out);
  int norms = 0;
  for (const std::string& name : a.names()) {
    if (name.find("_proj.") != std::string::npos) continue;
    ASSERT_TRUE(b.contains(name)) << name;
    const Tensor want = to_f32(a.get(name)), got = to_f32(b.get(name));
    ASSERT_EQ(got.shape(), want.shape()) << name;
    for (int64_t i = 0; i < want.numel(); ++i)
      ASSERT_EQ(got.data<float>()[i], want.data<float>()[i]) << name << " [" << i << "]";
    norms += name.find("norm") != std::string::npos ? 1 : 0;
  }
  // Per layer: input, post_attention, pre_ / post_feedforward (and q / k for gemma3); model.norm.
  EXPECT_EQ(norms, c.num_hidden_layers * (c.qk_norm ? 6 : 4) + 1);
  for (int64_t l = 0; l < c.num_hidden_layers; ++l)
    for (const char* p : {"self_attn.q_proj", "self_attn.o_proj", "mlp.gate_proj", "mlp.down_proj"})
      EXPECT_TRUE(io::has_exl2(b, fmt::format("model.layers.{}.{}", l, p))) << l << " " << p;
}

TEST(GemmaQuantize, TinyModelsConvertOnTheCpu) {
  if (!fs::exists(fs::path(EXQ_BINARY_DIR) / "exq")) GTEST_SKIP() << "exq binary not built";
  for (const char* name : {"gemma2_tiny", "gemma3_tiny"}) {
    SCOPED_TRACE(name);
    const std::vector<double> err = tiny_gemma::conversion_errors(
        name, {{4.0}, {8.0}}, [](const fs::path& model, const fs::path& out, const io::ModelConfig& c) {
          const auto cfg = nlohmann::json::parse(test::read_file(out / "config.json"));
          EXPECT_EQ(cfg.at("model_type"), c.model_type);
          EXPECT_EQ(cfg.at("quantization_config").at("quant_method"), "exl2");
          expect_norms_as_stored(model, out, c);
        });
    // 4-bit noise on 64-wide random layers; at 8 bits it shrinks tenfold, so no rule of the
    // converter leaves an error floor (a wrong norm or scale would keep it at 0.2 or more).
    EXPECT_LE(err[0], 0.3);
    EXPECT_LE(err[1], 0.15 * err[0]);
  }
}

}  // namespace
}  // namespace exq::quant
