// The mixture-of-experts MLP (mixtral, qwen3_moe) as transformers runs it: router logits, a
// float32 softmax over the experts, the top k probabilities (renormalized to sum 1 when the
// config says), and the chosen experts' SwiGLU outputs added in expert order, each times its
// weight.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

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

// The slots of a routing (ids / weights [T * k], token-major) grouped by expert: expert e's are
// [first[e], first[e + 1]) of token / weight, its tokens ascending. Every device gathers an
// expert's rows and adds its outputs back in this order, so their sums agree.
struct ExpertGroups {
  std::vector<int64_t> first;   // [experts + 1]
  std::vector<int32_t> token;   // [T * k]
  std::vector<float> weight;    // [T * k]
  int64_t count(int64_t e) const { return first[static_cast<size_t>(e) + 1] - first[static_cast<size_t>(e)]; }
  std::span<const int32_t> tokens(int64_t e) const {
    return std::span(token).subspan(static_cast<size_t>(first[static_cast<size_t>(e)]), static_cast<size_t>(count(e)));
  }
  std::span<const float> weights(int64_t e) const {
    return std::span(weight).subspan(static_cast<size_t>(first[static_cast<size_t>(e)]), static_cast<size_t>(count(e)));
  }
};
ExpertGroups group_by_expert(std::span<const int32_t> ids, std::span<const float> weights, int64_t num_experts,
                             int64_t k);

// rows[r] = x[token[r]] (F32, contiguous rows).
void gather_rows(const TensorView& x, std::span<const int32_t> token, const TensorView& rows);
// out[token[r]] += weight[r] * y[r], r in order (F32, contiguous rows).
void add_weighted_rows(const TensorView& y, std::span<const int32_t> token, std::span<const float> weight,
                       const TensorView& out);

// out [T, hidden] = the layer's mixture of experts applied to xn [T, hidden] (F32, contiguous).
// Each expert runs once on the rows routed to it, gathered.
void moe_mlp(const io::ModelConfig& config, const LayerWeights& layer, const TensorView& xn, const TensorView& out);

}  // namespace exq::model
