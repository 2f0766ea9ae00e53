// The output head's quantization step on the GPU (CPU reference: quant::quantize_head_step):
// final RMSNorm of every calibration row, the head's Hessian with tensor cores, GPTQ at the
// head option, and the rfn of the first row's logits. Every device byte comes from the
// engine's budgeted allocator; rows are uploaded one at a time.
#pragma once

#include "core/tensor.h"
#include "quant/cuda/engine_context.h"
#include "quant/quantize.h"

namespace exq::quant::cuda {

// states: host F32 [rows, T, hidden]; final_norm [hidden] and head_weight [vocab, hidden] in
// any float dtype. Returns the packed "lm_head" and rfn (no output states: the head leaves them
// unchanged). Throws exq::Error on shape mismatches or NaN/Inf in the states.
// Device bytes quantize_head_cuda needs at most (weights, Hessian, GPTQ scratch and result,
// one row and the first row's two logit matrices).
size_t head_step_bytes(int64_t vocab, int64_t hidden, int64_t tokens);

QuantStep quantize_head_cuda(EngineContext& ctx, const TensorView& states,
                             const TensorView& final_norm, const TensorView& head_weight,
                             float eps, int head_bits);

}  // namespace exq::quant::cuda
