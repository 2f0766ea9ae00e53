// Where the converter's per-module work runs. The pipeline (pipeline.h) drives an Engine; the
// CPU engine wraps measure.h / quantize.h, the CUDA engine (quant/cuda/cuda_engine.h) runs the
// same steps on the GPU. Both take and return host F32 states [rows, T, hidden] so resume
// snapshots and NaN checks stay in one place; a GPU engine streams them through its VRAM
// budget (memory/).
#pragma once

#include <memory>
#include <string>

#include <nlohmann/json.hpp>

#include "io/hf_config.h"
#include "quant/measure.h"
#include "quant/module_forward.h"
#include "quant/quantize.h"

namespace exq::quant {

class Engine {
 public:
  virtual ~Engine() = default;
  virtual std::string name() const = 0;  // "cpu", "cuda"

  // Measurement of one module: reference output (the next module's input), and one row per
  // table row of exllamav2's option table (measure.h for the semantics).
  virtual ModuleResult measure_attention(const LayerF32& layer, const TensorView& states,
                                         const std::string& key, const MeasureOptions& options) = 0;
  virtual ModuleResult measure_mlp(const LayerF32& layer, const TensorView& states,
                                   const std::string& key, const MeasureOptions& options) = 0;

  // Mixture-of-experts MLP blocks (measure_moe / quantize_moe_step, forward_moe for replay,
  // with the contracts of their MLP counterparts). Default: throws exq::Error (the engine
  // cannot convert MoE models).
  virtual ModuleResult measure_moe(const LayerF32& layer, const TensorView& states,
                                   const std::string& key, const MeasureOptions& options);
  virtual QuantStep quantize_moe(const LayerF32& layer, int64_t index, const TensorView& states,
                                 const MlpOptions& options);
  virtual void forward_moe(const MoeWeights& weights, const TensorView& x, const TensorView& y);

  // Quantization pass of one module at one option per linear (quantize.h): packed tensors,
  // the quantized module's output and its rfn error.
  virtual QuantStep quantize_attention(const LayerF32& layer, int64_t index,
                                       const TensorView& states, const AttnOptions& options) = 0;
  virtual QuantStep quantize_mlp(const LayerF32& layer, int64_t index, const TensorView& states,
                                 const MlpOptions& options) = 0;

  // Quantization of the output head (untied models) at head_bits: packed "lm_head" and the rfn
  // of the first row's logits; no output states (quantize.h quantize_head_step). states F32
  // [rows, T, hidden] enter the final norm. Default: the CPU step.
  virtual QuantStep quantize_head(const TensorView& states, const TensorView& final_norm,
                                  const TensorView& head_weight, float eps, int head_bits);

  // Forward only, for rebuilding states on resume: the pipeline replays the modules committed
  // after the last state snapshot. y = module(x) on every row, x and y host F32
  // [rows, T, hidden] (either may be a file-backed mapping, memory/host_store.h), with the
  // weights given: the layer's own (measurement pass, attn_weights(layer)) or its dequantized
  // EXL2 weights as F32 [out, in] (quantization pass; biases and norms stay the layer's).
  // Contract: bit for bit what this engine's measure_* returned as `target` / quantize_*
  // returned as `output` for the same input and weights, or a resumed job's output differs
  // from an uninterrupted one. Default: throws exq::Error (the engine cannot replay; snapshots
  // after every module, --snapshot-interval 0, avoid needing it).
  virtual void forward_attention(const AttnWeights& weights, const TensorView& x,
                                 const TensorView& y);
  virtual void forward_mlp(const MlpWeights& weights, const TensorView& x, const TensorView& y);

  // Fields for the status block of the module just done (e.g. gpu_s, copy_s, copy_hidden,
  // peak_vram_bytes); empty object when the engine has none.
  virtual nlohmann::ordered_json module_stats() { return nlohmann::ordered_json::object(); }
};

// The CPU reference engine for rows of up to max_tokens tokens.
std::unique_ptr<Engine> make_cpu_engine(const io::ModelConfig& config, int64_t max_tokens);

}  // namespace exq::quant
