#include "model/moe.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
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
  // NaN (an overflowed activation) ranks last, so the order stays a strict weak one.
  auto key = [&](int32_t e) {
    const float v = p[static_cast<size_t>(e)];
    return std::isnan(v) ? -std::numeric_limits<float>::infinity() : v;
  };
  std::partial_sort(order.begin(), order.begin() + k, order.end(),
                    [&](int32_t a, int32_t b) { return key(a) > key(b) || (key(a) == key(b) && a < b); });
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

ExpertGroups group_by_expert(std::span<const int32_t> ids, std::span<const float> weights, int64_t num_experts,
                             int64_t k) {
  EXQ_CHECK(ids.size() == weights.size() && k > 0 && ids.size() % static_cast<size_t>(k) == 0,
            "group_by_expert: {} ids, {} weights for top {}", ids.size(), weights.size(), k);
  ExpertGroups g;
  g.first.assign(static_cast<size_t>(num_experts) + 1, 0);
  for (int32_t id : ids) {
    EXQ_CHECK(id >= 0 && id < num_experts, "group_by_expert: expert {} of {}", id, num_experts);
    ++g.first[static_cast<size_t>(id) + 1];
  }
  for (size_t e = 0; e < static_cast<size_t>(num_experts); ++e) g.first[e + 1] += g.first[e];
  g.token.resize(ids.size());
  g.weight.resize(ids.size());
  std::vector<int64_t> at(g.first.begin(), g.first.end() - 1);
  for (size_t i = 0; i < ids.size(); ++i) {  // slots are token-major: tokens come ascending
    const auto slot = static_cast<size_t>(at[static_cast<size_t>(ids[i])]++);
    g.token[slot] = static_cast<int32_t>(i / static_cast<size_t>(k));
    g.weight[slot] = weights[i];
  }
  return g;
}

void gather_rows(const TensorView& x, std::span<const int32_t> token, const TensorView& rows) {
  const int64_t n = x.dim(1);
  for (size_t r = 0; r < token.size(); ++r)
    std::memcpy(rows.data<float>() + static_cast<int64_t>(r) * n, x.data<float>() + token[r] * n,
                static_cast<size_t>(n) * sizeof(float));
}

void add_weighted_rows(const TensorView& y, std::span<const int32_t> token, std::span<const float> weight,
                       const TensorView& out) {
  const int64_t n = out.dim(1);
  for (size_t r = 0; r < token.size(); ++r) {
    float* o = out.data<float>() + token[r] * n;
    const float* src = y.data<float>() + static_cast<int64_t>(r) * n;
    for (int64_t i = 0; i < n; ++i) o[i] += weight[r] * src[i];
  }
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
  const ExpertGroups groups = group_by_expert(ids, weights, E, K);
  std::memset(out.data<float>(), 0, static_cast<size_t>(T * hidden) * sizeof(float));
  Tensor rows(DType::F32, {T, hidden}), gate(DType::F32, {T, inter}), up(DType::F32, {T, inter});
  Tensor y(DType::F32, {T, hidden});
  for (int64_t e = 0; e < E; ++e) {
    const int64_t n = groups.count(e);
    if (n == 0) continue;
    const TensorView x = rows.view().slice0(0, n), g = gate.view().slice0(0, n), u = up.view().slice0(0, n);
    const TensorView yv = y.view().slice0(0, n);
    gather_rows(xn, groups.tokens(e), x);
    const ExpertWeights& ex = w.experts[static_cast<size_t>(e)];
    ex.gate->forward(x, g);
    ex.up->forward(x, u);
    cpu::swiglu(g, u, g);
    ex.down->forward(g, yv);
    add_weighted_rows(yv, groups.tokens(e), groups.weights(e), out);
  }
}

}  // namespace exq::model
