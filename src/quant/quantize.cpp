#include "quant/quantize.h"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <initializer_list>
#include <numeric>
#include <string>

#include "backend/cpu/matmul.h"
#include "backend/cpu/norm.h"
#include "core/error.h"
#include "core/half.h"
#include "core/thread_pool.h"
#include "quant/gptq.h"
#include "quant/hessian.h"
#include "quant/measure.h"

namespace exq::quant {
namespace {

TensorView weight_view(const GptqResult& r) {
  return TensorView(const_cast<float*>(r.weight.data()), DType::F32, {r.layer.out, r.layer.in});
}

io::Exl2Packed pack_with_bias(const GptqResult& r, const Tensor& bias) {
  if (bias.empty()) return io::pack_exl2(r.layer);
  io::Exl2Linear layer = r.layer;
  layer.bias.resize(static_cast<size_t>(bias.numel()));
  const float* b = bias.data<float>();
  for (size_t i = 0; i < layer.bias.size(); ++i) layer.bias[i] = float_to_half(b[i]);
  return io::pack_exl2(layer);
}

// Points the module's weight slots at the quantized weights and packs each linear (with its
// bias) under KEY.<name>, in the order of qm.linears.
void take_quantized(const QuantizedModule& qm, const std::string& key,
                    std::initializer_list<TensorView*> slots,
                    std::initializer_list<const Tensor*> biases, QuantStep& out) {
  EXQ_ASSERT(qm.linears.size() == slots.size() && slots.size() == biases.size());
  auto slot = slots.begin();
  auto bias = biases.begin();
  for (const auto& linear : qm.linears) {
    **slot++ = weight_view(linear.result);
    out.packed.emplace_back(key + "." + linear.name, pack_with_bias(linear.result, **bias++));
  }
}

}  // namespace

QuantStep quantize_attention_step(ModuleForward& fwd, const LayerF32& layer, int64_t index,
                                  const TensorView& states, const AttnOptions& options) {
  const std::string key = fmt::format("model.layers.{}.self_attn", index);
  QuantizedModule qm = quantize_attention(fwd, layer, states, key, options);
  AttnWeights w = attn_weights(layer);
  QuantStep out;
  take_quantized(qm, key, {&w.q, &w.k, &w.v, &w.o},
                 {&layer.q_bias, &layer.k_bias, &layer.v_bias, &layer.o_bias}, out);
  out.output = Tensor(DType::F32, states.shape());
  fwd.attention_rows(w, states, out.output);
  out.rfn = relative_error(out.output, qm.target);
  return out;
}

QuantStep quantize_mlp_step(ModuleForward& fwd, const LayerF32& layer, int64_t index,
                            const TensorView& states, const MlpOptions& options) {
  const std::string key = fmt::format("model.layers.{}.mlp", index);
  QuantizedModule qm = quantize_mlp(fwd, layer, states, key, options);
  MlpWeights w = mlp_weights(layer);
  QuantStep out;
  take_quantized(qm, key, {&w.gate, &w.up, &w.down},
                 {&layer.gate_bias, &layer.up_bias, &layer.down_bias}, out);
  out.output = Tensor(DType::F32, states.shape());
  fwd.mlp_rows(w, states, out.output);
  out.rfn = relative_error(out.output, qm.target);
  return out;
}

QuantStep quantize_moe_step(ModuleForward& fwd, const LayerF32& layer, int64_t index,
                            const TensorView& states, const MlpOptions& options) {
  const std::string key = moe_module_key(index);
  QuantizedModule qm = quantize_moe(fwd, layer, index, states, key, options);
  MoeWeights w = moe_weights(layer);
  EXQ_ASSERT(qm.linears.size() == 3 * w.experts.size());
  QuantStep out;
  for (size_t i = 0; i < qm.linears.size(); ++i) {
    MoeWeights::Expert& e = w.experts[i / 3];
    (i % 3 == 0 ? e.gate : i % 3 == 1 ? e.up : e.down) = weight_view(qm.linears[i].result);
    out.packed.emplace_back(qm.linears[i].name, io::pack_exl2(qm.linears[i].result.layer));
  }
  out.output = Tensor(DType::F32, states.shape());
  fwd.moe_rows(w, states, out.output);
  out.rfn = relative_error(out.output, qm.target);
  return out;
}

std::string moe_module_key(int64_t layer) { return fmt::format("model.layers.{}.block_sparse_moe", layer); }

QuantStep quantize_head_step(const TensorView& states, const TensorView& final_norm,
                             const TensorView& head_weight, float eps, int head_bits) {
  const int64_t rows = states.dim(0), T = states.dim(1), hidden = states.dim(2);
  const int64_t vocab = head_weight.dim(0);
  EXQ_CHECK(head_weight.dim(1) == hidden, "lm_head: expected [{}, {}], got {}", vocab, hidden,
            shape_str(head_weight.shape()));
  const Tensor norm_w = to_f32(final_norm);
  Tensor normed(DType::F32, {rows * T, hidden});
  cpu::rms_norm(states.reshape({rows * T, hidden}), norm_w, eps, normed);
  HessianAccumulator acc(hidden);
  for (int64_t r = 0; r < rows; ++r) acc.add_batch(normed.data<float>() + r * T * hidden, T);
  const PreparedHessian h = prepare_hessian(acc.hessian(), hidden);
  const Tensor w = to_f32(head_weight);
  const GptqResult q = gptq_quantize(w.data<float>(), vocab, hidden, h, head_option(head_bits));

  QuantStep out;
  out.packed.emplace_back("lm_head", io::pack_exl2(q.layer));
  const TensorView row0 = normed.view().slice0(0, T);
  Tensor ref(DType::F32, {T, vocab}), got(DType::F32, {T, vocab});
  cpu::matmul(row0, w, ref);
  cpu::matmul(row0, weight_view(q), got);
  out.rfn = relative_error(got, ref);
  return out;
}

int64_t check_states(const TensorView& states, const std::string& key) {
  float* p = states.data<float>();
  const int64_t n = states.numel();
  // Chunked over the pool (3.3 GB per module for an 8B model); the first NaN and the Inf count
  // are the same whatever the split, so messages and results match a serial scan.
  constexpr int64_t kChunk = int64_t{1} << 18;
  const int64_t chunks = (n + kChunk - 1) / kChunk;
  std::vector<int64_t> first_nan(static_cast<size_t>(chunks), n), infs(static_cast<size_t>(chunks), 0);
  parallel_for(chunks, [&](int64_t begin, int64_t end) {
    for (int64_t c = begin; c < end; ++c) {
      const int64_t b = c * kChunk, e = std::min(n, b + kChunk);
      int64_t inf = 0;
      bool bad = false;
      for (int64_t i = b; i < e; ++i) {
        const float v = p[i];
        bad |= std::isnan(v);
        inf += std::isinf(v) ? 1 : 0;
      }
      if (bad) {
        for (int64_t i = b; i < e; ++i)
          if (std::isnan(p[i])) {
            first_nan[static_cast<size_t>(c)] = i;
            break;
          }
      }
      infs[static_cast<size_t>(c)] = inf;
    }
  });
  const int64_t nan_at = chunks > 0 ? *std::min_element(first_nan.begin(), first_nan.end()) : n;
  if (nan_at < n)
    throw Error(fmt::format("{}: NaN in the hidden states (value {} of {})", key, nan_at, n));
  const int64_t inf = std::accumulate(infs.begin(), infs.end(), int64_t{0});
  if (inf == 0) return 0;
  if (static_cast<double>(inf) >= 0.005 * static_cast<double>(n))
    throw Error(fmt::format("{}: {} of {} hidden-state values are infinite (limit 0.5 %)", key, inf, n));
  parallel_for(chunks, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin * kChunk, e = std::min(n, end * kChunk); i < e; ++i)
      if (std::isinf(p[i])) p[i] = p[i] > 0 ? 65504.0f : -65504.0f;
  });
  return inf;
}

}  // namespace exq::quant
