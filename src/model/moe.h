// The mixture-of-experts MLP (mixtral, qwen3_moe) as transformers runs it: router logits, a
// float32 softmax over the experts, the top k probabilities (renormalized to sum 1 when the
// config says), and the chosen experts' SwiGLU outputs added in expert order, each times its
// weight.
#pragma once

#include <cstdint>
#include <span>

#include "core/tensor.h"
#include "io/hf_config.h"
#include "model/llama_weights.h"

namespace exq::model {

// Routing of one token from its router logits [num_experts]: ids and weights [k], the most
// probable first (ties: the lower id). renormalize: weights divided by their sum.
void route_token(std::span<const float> logits, int64_t k, bool renormalize, std::span<int32_t> ids,
                 std::span<float> weights);

// Routing of T tokens: logits F32 [T, num_experts] -> ids / weights [T * k] (token-major).
void route_tokens(const TensorView& logits, int64_t k, bool renormalize, std::span<int32_t> ids,
                  std::span<float> weights);

// out [T, hidden] = the layer's mixture of experts applied to xn [T, hidden] (F32, contiguous).
// Each expert runs once on the rows routed to it, gathered.
void moe_mlp(const io::ModelConfig& config, const LayerWeights& layer, const TensorView& xn, const TensorView& out);

}  // namespace exq::model
