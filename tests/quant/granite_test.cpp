// granite in the converter: the module forward the measurement and quantization run (the
// attention multiplier as the score scale, each block's output times the residual multiplier
// before its residual add) gives the transformers-checked tiny model's own layer outputs, and
// the model converts end to end on the CPU into an EXL2 folder that keeps the four scalars and
// stays close to the original.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include <cmath>
#include <cstring>

#include "backend/cpu/norm.h"
#include "io/safetensors.h"
#include "model/llama.h"
#include "quant/measure.h"
#include "quant/module_forward.h"
#include "test_support.h"
#include "tiny_gemma.h"

namespace exq::quant {
namespace {
namespace fs = std::filesystem;

// Each layer's module forward against the model's residual stream; `change` edits the
// converter's config (to show a rule matters). Returns the worst relative error.
double module_forward_error(const std::function<void(io::ModelConfig&)>& change = {}) {
  const fs::path dir = tiny_gemma::data_dir("granite_tiny");
  model::LlamaModel m = model::LlamaModel::load(dir);
  io::ModelConfig c = io::load_model_config(dir);
  if (change) change(c);
  std::vector<Tensor> inputs;  // residual stream before each layer, then the final norm's output
  m.set_hidden_capture([&](int, const TensorView& x) { inputs.push_back(Tensor::copy_of(x)); });
  const std::vector<int32_t> ids = {2, 123, 42, 299, 5, 77, 180, 3, 250, 61, 14, 200, 33, 8, 271, 95};
  const auto T = static_cast<int64_t>(ids.size());
  model::KvCache cache = m.make_cache(T);
  m.forward(ids, cache, true);
  const io::SafetensorsModel files = io::SafetensorsModel::open(dir);
  // The calibration embedding is the model's: the rows times embedding_multiplier.
  const TensorView table = files.get("model.embed_tokens.weight");
  const Tensor x0 = embed_rows(table, ids, 1, T, model::embedding_scale(c, table.dtype()));
  if (!change) {
    EXPECT_EQ(std::memcmp(x0.raw(), inputs[0].raw(), inputs[0].nbytes()), 0) << "embedding";
  }
  ModuleForward fwd(c, T);
  double worst = 0;
  for (int64_t l = 0; l < c.num_hidden_layers; ++l) {
    const LayerF32 layer = load_layer_f32(files, c, l);
    Tensor mid(DType::F32, {T, c.hidden_size}), out(DType::F32, {T, c.hidden_size});
    fwd.attention(attn_weights(layer), inputs[static_cast<size_t>(l)], mid);
    fwd.mlp(mlp_weights(layer), mid, out);
    if (l + 1 == c.num_hidden_layers)  // the last capture is after the final norm
      cpu::rms_norm(out, m.weights().final_norm, static_cast<float>(c.rms_norm_eps), out);
    worst = std::max(worst, relative_error(out, inputs[static_cast<size_t>(l) + 1]));
  }
  return worst;
}

TEST(GraniteModuleForward, MatchesTheModelsLayers) {
  const double err = module_forward_error();
  std::printf("  granite_tiny: module forward vs model, worst layer relative error %.3g\n", err);
  EXPECT_LE(err, 1e-6);
  // Without either rule the layers' outputs move far beyond that.
  const double no_res = module_forward_error([](io::ModelConfig& c) { c.residual_multiplier = 1.0; });
  const double no_att = module_forward_error([](io::ModelConfig& c) { c.attention_multiplier = 0.0; });
  std::printf("  without the residual multiplier %.3g, without the attention multiplier %.3g\n", no_res, no_att);
  EXPECT_GT(no_res, 1e-2);
  EXPECT_GT(no_att, 1e-4);
}

TEST(GraniteQuantize, TinyModelConvertsOnTheCpu) {
  if (!fs::exists(fs::path(EXQ_BINARY_DIR) / "exq")) GTEST_SKIP() << "exq binary not built";
  const std::vector<double> err = tiny_gemma::conversion_errors(
      "granite_tiny", {{4.0}, {8.0}}, [](const fs::path&, const fs::path& out, const io::ModelConfig& c) {
        const auto cfg = nlohmann::json::parse(test::read_file(out / "config.json"));
        EXPECT_EQ(cfg.at("model_type"), "granite");
        EXPECT_EQ(cfg.at("quantization_config").at("quant_method"), "exl2");
        const io::ModelConfig q = io::load_model_config(out);
        EXPECT_EQ(q.embedding_multiplier, c.embedding_multiplier);
        EXPECT_EQ(q.residual_multiplier, c.residual_multiplier);
        EXPECT_EQ(q.logits_scaling, c.logits_scaling);
        EXPECT_EQ(q.attention_scale(), c.attention_scale());
      });
  // As the tiny gemma models: 4-bit noise on 64-wide random layers, ten times less at 8 bits
  // (a rule the converter missed would leave a floor).
  EXPECT_LE(err[0], 0.3);
  EXPECT_LE(err[1], 0.15 * err[0]);
}

}  // namespace
}  // namespace exq::quant
