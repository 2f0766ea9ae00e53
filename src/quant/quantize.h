// The quantization pass's work for one module (docs exl2.md section 2, step 5): GPTQ of each
// linear at its chosen option with Hessians from the quantized-so-far inputs, packing to EXL2,
// and the forward of the quantized module, whose output is the next module's input, so errors
// are seen downstream. Also the head (quantized with the head_bits option unless tied) and the
// state checks every module output goes through.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "core/tensor.h"
#include "io/exl2.h"
#include "quant/module_forward.h"
#include "quant/options.h"

namespace exq::quant {

struct QuantStep {
  Tensor output;  // F32 [rows, T, hidden]: the quantized module's output (empty for the head)
  double rfn = 0;  // ||y_q - y_ref||_F / ||y_ref||_F on the same inputs
  std::vector<std::pair<std::string, io::Exl2Packed>> packed;  // full tensor key -> tensors
};

// states: F32 [rows, T, hidden]; layer: index for the keys (model.layers.N.self_attn.q_proj).
QuantStep quantize_attention_step(ModuleForward& fwd, const LayerF32& layer, int64_t index,
                                  const TensorView& states, const AttnOptions& options);
QuantStep quantize_mlp_step(ModuleForward& fwd, const LayerF32& layer, int64_t index,
                            const TensorView& states, const MlpOptions& options);
// A mixture-of-experts block: every expert's gate / up / down at the w1 / w3 / w2 option,
// packed under model::expert_key names.
QuantStep quantize_moe_step(ModuleForward& fwd, const LayerF32& layer, int64_t index,
                            const TensorView& states, const MlpOptions& options);
// "model.layers.N.block_sparse_moe": a MoE block's measurement and job key (exllamav2's, for
// qwen3_moe too).
std::string moe_module_key(int64_t layer);
// lm_head: Hessian from RMSNorm(states) with the final norm weight; rfn measured on the logits
// of the first calibration row only (a full-vocabulary product per row is the costliest op of
// the pass and adds nothing to the quantization).
QuantStep quantize_head_step(const TensorView& states, const TensorView& final_norm,
                             const TensorView& head_weight, float eps, int head_bits);

// NaN anywhere: throws exq::Error naming `key`. Inf: clamped to +-65504 when under 0.5 % of the
// values (returns how many were clamped), else throws.
int64_t check_states(const TensorView& states, const std::string& key);

}  // namespace exq::quant
