#include "quant/measure_layers.h"

#include <fmt/format.h>

#include <algorithm>
#include <chrono>

#include "core/error.h"
#include "io/hf_config.h"
#include "io/safetensors.h"
#include "model/llama_weights.h"
#include "quant/quantize.h"

namespace exq::quant {

Measurement LayerMeasureResult::measurement() const {
  Measurement m;
  for (const ModuleResult& r : modules) m.modules.push_back(r.measurement);
  return m;
}

LayerMeasureResult measure_layers(const std::filesystem::path& model_dir,
                                  const CalibrationRows& calibration,
                                  const std::vector<int64_t>& layers,
                                  const MeasureOptions& options,
                                  const std::function<void(const ModuleResult&)>& progress) {
  const io::ModelConfig config = io::load_model_config(model_dir);
  const io::SafetensorsModel files = io::SafetensorsModel::open(model_dir);
  std::vector<int64_t> selected = layers;
  if (selected.empty())
    for (int64_t l = 0; l < config.num_hidden_layers; ++l) selected.push_back(l);
  EXQ_CHECK(std::is_sorted(selected.begin(), selected.end()) && selected.front() >= 0 &&
                selected.back() < config.num_hidden_layers,
            "measure: layers must be ascending within 0..{}", config.num_hidden_layers - 1);

  const int64_t R = calibration.rows, T = calibration.length;
  const TensorView embed = files.get("model.embed_tokens.weight");
  Tensor states = embed_rows(embed, calibration.ids, R, T, model::embedding_scale(config, embed.dtype()));
  Tensor mid(DType::F32, {R, T, config.hidden_size});
  ModuleForward fwd(config, T);
  LayerMeasureResult out;
  for (int64_t l = 0; l <= selected.back(); ++l) {
    const LayerF32 layer = load_layer_f32(files, config, l);
    if (!std::binary_search(selected.begin(), selected.end(), l)) {
      const auto t0 = std::chrono::steady_clock::now();
      fwd.attention_rows(attn_weights(layer), states, mid, options.causal);
      if (config.moe_layer(l))
        fwd.moe_rows(moe_weights(layer), mid, states);
      else
        fwd.mlp_rows(mlp_weights(layer), mid, states);
      out.carry_s += std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
      continue;
    }
    ModuleResult attn = measure_attention(fwd, layer, states,
                                          fmt::format("model.layers.{}.self_attn", l), options);
    if (progress) progress(attn);
    ModuleResult mlp = config.moe_layer(l)
                           ? measure_moe(fwd, layer, attn.target, moe_module_key(l), options)
                           : measure_mlp(fwd, layer, attn.target, fmt::format("model.layers.{}.mlp", l), options);
    if (progress) progress(mlp);
    states = std::move(mlp.target);
    attn.target = Tensor();
    out.modules.push_back(std::move(attn));
    out.modules.push_back(std::move(mlp));
  }
  return out;
}

}  // namespace exq::quant
