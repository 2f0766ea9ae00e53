#include "model/moe.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <numeric>
#include <vector>

#include "backend/cpu/elementwise.h"
#include "core/error.h"

namespace exq::model {

void route_token(std::span<const float> logits, int64_t k, bool renormalize, std::span<int32_t> ids,
                 std::span<float> weights) {
  const auto n = static_cast<int64_t>(logits.size());
  EXQ_CHECK(k >= 1 && k <= n && static_cast<int64_t>(ids.size()) == k && static_cast<int64_t>(weights.size()) == k,
            "route_token: {} of {} experts into {} / {} slots", k, n, ids.size(), weights.size());
  float top = logits[0];
  for (float v : logits) top = std::max(top, v);
  std::vector<float> p(logits.size());
  float sum = 0.0f;
  for (size_t e = 0; e < p.size(); ++e) sum += p[e] = std::exp(logits[e] - top);
  for (float& v : p) v /= sum;
  std::vector<int32_t> order(p.size());
  std::iota(order.begin(), order.end(), 0);
  std::partial_sort(order.begin(), order.begin() + k, order.end(),
                    [&](int32_t a, int32_t b) { return p[static_cast<size_t>(a)] > p[static_cast<size_t>(b)] ||
                                                       (p[static_cast<size_t>(a)] == p[static_cast<size_t>(b)] && a < b); });
  float chosen = 0.0f;
  for (int64_t i = 0; i < k; ++i) {
    ids[static_cast<size_t>(i)] = order[static_cast<size_t>(i)];
    chosen += weights[static_cast<size_t>(i)] = p[static_cast<size_t>(order[static_cast<size_t>(i)])];
  }
  if (renormalize)
    for (float& w : weights) w /= chosen;
}

void route_tokens(const TensorView& logits, int64_t k, bool renormalize, std::span<int32_t> ids,
                  std::span<float> weights) {
  const int64_t T = logits.dim(0), E = logits.dim(1);
  EXQ_CHECK(static_cast<int64_t>(ids.size()) == T * k && static_cast<int64_t>(weights.size()) == T * k,
            "route_tokens: {} tokens x {} experts into {} slots", T, k, ids.size());
  for (int64_t t = 0; t < T; ++t)
    route_token(std::span(logits.data<float>() + t * E, static_cast<size_t>(E)), k, renormalize,
                ids.subspan(static_cast<size_t>(t * k), static_cast<size_t>(k)),
                weights.subspan(static_cast<size_t>(t * k), static_cast<size_t>(k)));
}

void moe_mlp(const io::ModelConfig& c, const LayerWeights& w, const TensorView& xn, const TensorView& out) {
  const int64_t T = xn.dim(0), hidden = c.hidden_size, E = c.num_experts, K = c.experts_per_token;
  const int64_t inter = c.expert_intermediate;
  EXQ_CHECK(static_cast<int64_t>(w.experts.size()) == E && w.router, "moe_mlp: layer without its {} experts", E);
  Tensor logits(DType::F32, {T, E});
  w.router->forward(xn, logits);
  std::vector<int32_t> ids(static_cast<size_t>(T * K));
  std::vector<float> weights(ids.size());
  route_tokens(logits, K, c.norm_topk_prob, ids, weights);
  std::memset(out.data<float>(), 0, static_cast<size_t>(T * hidden) * sizeof(float));
  Tensor rows(DType::F32, {T, hidden}), gate(DType::F32, {T, inter}), up(DType::F32, {T, inter});
  Tensor y(DType::F32, {T, hidden});
  std::vector<int64_t> token;
  std::vector<float> scale;
  for (int64_t e = 0; e < E; ++e) {
    token.clear();
    scale.clear();
    for (int64_t i = 0; i < T * K; ++i)
      if (ids[static_cast<size_t>(i)] == e) {
        token.push_back(i / K);
        scale.push_back(weights[static_cast<size_t>(i)]);
      }
    if (token.empty()) continue;
    const auto n = static_cast<int64_t>(token.size());
    for (int64_t r = 0; r < n; ++r)
      std::memcpy(rows.data<float>() + r * hidden, xn.data<float>() + token[static_cast<size_t>(r)] * hidden,
                  static_cast<size_t>(hidden) * sizeof(float));
    const ExpertWeights& ex = w.experts[static_cast<size_t>(e)];
    const TensorView g = gate.view().slice0(0, n), u = up.view().slice0(0, n), yv = y.view().slice0(0, n);
    ex.gate->forward(rows.view().slice0(0, n), g);
    ex.up->forward(rows.view().slice0(0, n), u);
    cpu::swiglu(g, u, g);
    ex.down->forward(g, yv);
    for (int64_t r = 0; r < n; ++r) {
      float* o = out.data<float>() + token[static_cast<size_t>(r)] * hidden;
      const float* src = y.data<float>() + r * hidden;
      const float s = scale[static_cast<size_t>(r)];
      for (int64_t i = 0; i < hidden; ++i) o[i] += s * src[i];
    }
  }
}

}  // namespace exq::model
