#include "quant/module_forward.h"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <cstring>

#include "backend/cpu/attention.h"
#include "backend/cpu/elementwise.h"
#include "backend/cpu/matmul.h"
#include "backend/cpu/norm.h"
#include "core/error.h"
#include "core/half.h"
#include "core/thread_pool.h"
#include "model/llama_weights.h"
#include "model/moe.h"
#include "model/rope.h"

namespace exq::quant {
namespace {

// to_f32 with the element loop split over the pool (an 8B layer is ~220M weights); the same
// per-element conversion, so the bytes match to_f32's.
Tensor widen_f32(const TensorView& t, bool use_pool) {
  const DType d = t.dtype();
  if (!t.is_contiguous() || (d != DType::F16 && d != DType::BF16 && d != DType::F32))
    return to_f32(t);
  Tensor out(DType::F32, t.shape());
  float* dst = out.data<float>();
  const int64_t n = t.numel();
  const auto run = [&](int64_t begin, int64_t end) {
    if (d == DType::F32) {
      std::memcpy(dst + begin, static_cast<const float*>(t.raw()) + begin,
                  static_cast<size_t>(end - begin) * sizeof(float));
      return;
    }
    const auto* s = static_cast<const uint16_t*>(t.raw());
    if (d == DType::F16)
      for (int64_t i = begin; i < end; ++i) dst[i] = half_to_float(s[i]);
    else
      for (int64_t i = begin; i < end; ++i) dst[i] = bf16_to_float(s[i]);
  };
  if (use_pool)
    parallel_for(n, run, int64_t{1} << 16);
  else if (n > 0)
    run(0, n);
  return out;
}

Tensor load_f32(const io::SafetensorsModel& files, const std::string& name, const Shape& shape,
                int64_t layer, bool use_pool) {
  const TensorView t = files.get(name);
  EXQ_CHECK(t.shape() == shape, "layer {}: tensor {} has shape {}, expected {}", layer, name,
            shape_str(t.shape()), shape_str(shape));
  return widen_f32(t, use_pool);
}

// An RMSNorm weight as the model multiplies by it (model::norm_weight: gemma's 1 + w).
Tensor load_norm(const io::SafetensorsModel& files, const io::ModelConfig& c,
                 const std::string& name, int64_t n, int64_t layer, bool use_pool) {
  Tensor w = load_f32(files, name, {n}, layer, use_pool);
  if (!c.norm_plus_one) return w;
  return model::norm_weight(c, w);
}

Tensor load_bias(const io::SafetensorsModel& files, const std::string& name, int64_t out,
                 int64_t layer, bool use_pool) {
  if (!files.contains(name)) return {};
  return load_f32(files, name, {out}, layer, use_pool);
}

void linear(const TensorView& x, const TensorView& w, const TensorView& bias,
            const TensorView& y) {
  cpu::matmul(x, w, y);
  if (!bias.empty()) cpu::add_bias(y, bias);
}

// Built for three instruction sets and picked at load time, as in backend/cpu/attention.cpp.
#define EXQ_MULTIVERSION \
  __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))

// Scales (and softcaps, when softcap > 0) then softmaxes a row, as cpu::attention does.
EXQ_MULTIVERSION void softmax_row(float* r, int64_t n, float scale, float softcap) {
  float mx = -INFINITY;
  if (softcap > 0.0f)
    for (int64_t j = 0; j < n; ++j)
      mx = std::max(mx, r[j] = softcap * std::tanh(r[j] * scale / softcap));
  else
    for (int64_t j = 0; j < n; ++j) mx = std::max(mx, r[j] *= scale);
  float sum = 0.0f;
  for (int64_t j = 0; j < n; ++j) sum += (r[j] = std::exp(r[j] - mx));
  const float inv = 1.0f / sum;
  for (int64_t j = 0; j < n; ++j) r[j] *= inv;
}

// Query rows per score block of the unmasked attention.
constexpr int64_t kBlock = 64;

// Unmasked GQA attention of q [T, H, D] on k, v [T, KVH, D] into out [T, H, D]: every row
// sees all T keys (cpu::attention's blocked GEMMs without the mask). kc [>= T, D],
// vt [D, >= T], s [kBlock, >= T] are scratch.
void attention_unmasked(const TensorView& q, const TensorView& k, const TensorView& v,
                        const TensorView& out, float scale, float softcap, Tensor& kc, Tensor& vt,
                        Tensor& s) {
  const int64_t T = q.dim(0), H = q.dim(1), D = q.dim(2), KVH = k.dim(1), group = H / KVH;
  const float* qp = q.data<float>();
  const float* kp = k.data<float>();
  const float* vp = v.data<float>();
  float* op = out.data<float>();
  float* kcp = kc.data<float>();
  float* vtp = vt.data<float>();
  const TensorView keys(kcp, DType::F32, {T, D});
  const TensorView values(vtp, DType::F32, {D, T});  // V^T of one kv head
  for (int64_t g = 0; g < KVH; ++g) {
    parallel_for(T, [&](int64_t b, int64_t e) {
      for (int64_t j = b; j < e; ++j) {
        std::copy_n(kp + (j * KVH + g) * D, D, kcp + j * D);
        for (int64_t d = 0; d < D; ++d) vtp[d * T + j] = vp[(j * KVH + g) * D + d];
      }
    }, 256);
    for (int64_t t0 = 0; t0 < T; t0 += kBlock) {
      const int64_t rows = std::min(T, t0 + kBlock) - t0;
      const TensorView sv(s.data<float>(), DType::F32, {rows, T});
      for (int64_t h = g * group; h < (g + 1) * group; ++h) {
        const TensorView qv(const_cast<float*>(qp) + (t0 * H + h) * D, DType::F32, {rows, D},
                            {H * D, 1});
        cpu::matmul(qv, keys, sv);  // S = Q K^T
        parallel_for(rows, [&](int64_t b, int64_t e) {
          for (int64_t i = b; i < e; ++i) softmax_row(sv.data<float>() + i * T, T, scale, softcap);
        }, 8);
        const TensorView ov(op + (t0 * H + h) * D, DType::F32, {rows, D}, {H * D, 1});
        cpu::matmul(sv, values, ov);  // O = P V
      }
    }
  }
}

}  // namespace

LayerF32 load_layer_f32(const io::SafetensorsModel& files, const io::ModelConfig& c,
                        int64_t layer, bool use_pool) {
  EXQ_CHECK(layer >= 0 && layer < c.num_hidden_layers, "layer {} out of range (model has {})",
            layer, c.num_hidden_layers);
  const std::string p = fmt::format("model.layers.{}.", layer);
  const int64_t hidden = c.hidden_size, inter = c.intermediate_size;
  const model::NormNames nn = model::norm_names(c);
  auto norm = [&](const char* name, int64_t n) {
    return load_norm(files, c, p + name + ".weight", n, layer, use_pool);
  };
  LayerF32 w;
  w.attn_norm = norm(nn.attn, hidden);
  // phi3: the rows of the fused qkv_proj / gate_up_proj (the parts' names when stored split).
  auto fused = [&](const model::FusedLinear& f, std::vector<Tensor*> parts, std::vector<int64_t> rows) {
    const std::string key = p + f.fused + ".weight";
    if (!c.fused_projections || !files.contains(key)) {
      for (size_t i = 0; i < parts.size(); ++i)
        *parts[i] = load_f32(files, p + f.parts[i] + ".weight", {rows[i], hidden}, layer, use_pool);
      return;
    }
    int64_t total = 0;
    for (int64_t r : rows) total += r;
    const Tensor all = load_f32(files, key, {total, hidden}, layer, use_pool);
    int64_t at = 0;
    for (size_t i = 0; i < parts.size(); ++i) {
      *parts[i] = Tensor::copy_of(all.view().slice0(at, at + rows[i]));
      at += rows[i];
    }
  };
  fused(model::kFusedLinears[0], {&w.q, &w.k, &w.v}, {c.q_dim(), c.kv_dim(), c.kv_dim()});
  w.o = load_f32(files, p + "self_attn.o_proj.weight", {hidden, c.q_dim()}, layer, use_pool);
  w.q_bias = load_bias(files, p + "self_attn.q_proj.bias", c.q_dim(), layer, use_pool);
  w.k_bias = load_bias(files, p + "self_attn.k_proj.bias", c.kv_dim(), layer, use_pool);
  w.v_bias = load_bias(files, p + "self_attn.v_proj.bias", c.kv_dim(), layer, use_pool);
  w.o_bias = load_bias(files, p + "self_attn.o_proj.bias", hidden, layer, use_pool);
  if (c.qk_norm) {
    w.q_norm = norm("self_attn.q_norm", c.head_dim);
    w.k_norm = norm("self_attn.k_norm", c.head_dim);
  }
  w.ffn_norm = norm(nn.ffn, hidden);
  if (nn.post_attn) {
    w.post_attn_norm = norm(nn.post_attn, hidden);
    w.post_ffn_norm = norm(nn.post_ffn, hidden);
  }
  w.local_rope = c.local_rope(layer);
  if (c.moe_layer(layer)) {
    const int64_t ei = c.expert_intermediate;
    const model::MoeNames mn = model::moe_names(c);
    w.router = load_f32(files, model::router_key(c, layer) + ".weight", {c.num_experts, hidden}, layer, use_pool);
    for (int64_t e = 0; e < c.num_experts; ++e) {
      auto part = [&](const char* name, const Shape& shape) {
        return load_f32(files, model::expert_key(c, layer, e, name) + ".weight", shape, layer, use_pool);
      };
      w.experts.push_back({part(mn.gate, {ei, hidden}), part(mn.up, {ei, hidden}), part(mn.down, {hidden, ei})});
    }
    return w;
  }
  fused(model::kFusedLinears[1], {&w.gate, &w.up}, {inter, inter});
  w.down = load_f32(files, p + "mlp.down_proj.weight", {hidden, inter}, layer, use_pool);
  w.gate_bias = load_bias(files, p + "mlp.gate_proj.bias", inter, layer, use_pool);
  w.up_bias = load_bias(files, p + "mlp.up_proj.bias", inter, layer, use_pool);
  w.down_bias = load_bias(files, p + "mlp.down_proj.bias", hidden, layer, use_pool);
  return w;
}

AttnWeights attn_weights(const LayerF32& l) {
  return AttnWeights{l.attn_norm, l.q,      l.k,      l.v,        l.o,      l.q_bias,
                     l.k_bias,    l.v_bias, l.o_bias, l.q_norm,   l.k_norm, l.post_attn_norm,
                     l.local_rope};
}

MlpWeights mlp_weights(const LayerF32& l) {
  return MlpWeights{l.ffn_norm,  l.gate,    l.up,      l.down,
                    l.gate_bias, l.up_bias, l.down_bias, l.post_ffn_norm};
}

MoeWeights moe_weights(const LayerF32& l) {
  MoeWeights w{l.ffn_norm, l.router, {}};
  for (const LayerF32::Expert& e : l.experts) w.experts.push_back({e.gate, e.up, e.down});
  return w;
}

ModuleForward::ModuleForward(const io::ModelConfig& c, int64_t max_tokens)
    : config_(c), max_tokens_(max_tokens) {
  EXQ_CHECK(max_tokens > 0, "module forward: max_tokens must be positive, got {}", max_tokens);
  const int64_t H = c.num_attention_heads, KVH = c.num_key_value_heads, D = c.head_dim;
  rope_ = model::rope_table(c, max_tokens);
  if (c.rope_local_theta > 0.0)
    rope_local_ = model::rope_table(model::local_rope_config(c), max_tokens);
  normed_ = Tensor(DType::F32, {max_tokens, c.hidden_size});
  q_ = Tensor(DType::F32, {max_tokens, H, D});
  k_ = Tensor(DType::F32, {max_tokens, KVH, D});
  v_ = Tensor(DType::F32, {max_tokens, KVH, D});
  att_ = Tensor(DType::F32, {max_tokens, H, D});
  // Dense MLP scratch only when a layer has a dense MLP (mixtral's intermediate_size is its
  // experts', 14336: 235 MB of scratch for nothing).
  bool dense = false;
  for (int64_t l = 0; l < c.num_hidden_layers; ++l) dense = dense || !c.moe_layer(l);
  if (dense || c.num_experts == 0) {
    gate_ = Tensor(DType::F32, {max_tokens, c.intermediate_size});
    up_ = Tensor(DType::F32, {max_tokens, c.intermediate_size});
  }
  if (c.num_experts > 0) {
    logits_ = Tensor(DType::F32, {max_tokens, c.num_experts});
    rows_ = Tensor(DType::F32, {max_tokens, c.hidden_size});
    expert_y_ = Tensor(DType::F32, {max_tokens, c.hidden_size});
    expert_up_ = Tensor(DType::F32, {max_tokens, c.expert_intermediate});
    expert_act_ = Tensor(DType::F32, {max_tokens * c.experts_per_token, c.expert_intermediate});
    groups_.first.assign(static_cast<size_t>(c.num_experts) + 1, 0);
  }
}

TensorView ModuleForward::normed() const { return normed_.view().slice0(0, tokens_); }
TensorView ModuleForward::attn_out() const {
  return att_.view().slice0(0, tokens_).reshape({tokens_, config_.q_dim()});
}
TensorView ModuleForward::act() const { return gate_.view().slice0(0, tokens_); }

void ModuleForward::attention(const AttnWeights& w, const TensorView& x, const TensorView& y,
                              bool causal) {
  const int64_t T = x.rank() == 2 ? x.dim(0) : 0, hidden = config_.hidden_size;
  EXQ_CHECK(T > 0 && T <= max_tokens_, "attention block: {} tokens, expected 1..{}", T,
            max_tokens_);
  x.expect(DType::F32, {T, hidden}, "attention block input");
  y.expect(DType::F32, {T, hidden}, "attention block output");
  tokens_ = T;
  const int64_t H = config_.num_attention_heads, KVH = config_.num_key_value_heads;
  const int64_t D = config_.head_dim;
  const TensorView xn = normed();                           // [T, hidden]
  const TensorView q = q_.view().slice0(0, T);              // [T, H, D]
  const TensorView k = k_.view().slice0(0, T);              // [T, KVH, D]
  const TensorView v = v_.view().slice0(0, T);              // [T, KVH, D]
  const TensorView att = att_.view().slice0(0, T);          // [T, H, D]
  cpu::rms_norm(x, w.norm, static_cast<float>(config_.rms_norm_eps), xn);
  linear(xn, w.q, w.q_bias, q.reshape({T, H * D}));
  linear(xn, w.k, w.k_bias, k.reshape({T, KVH * D}));
  linear(xn, w.v, w.v_bias, v.reshape({T, KVH * D}));
  if (!w.q_norm.empty()) {  // qwen3: each head RMS-normed before rotary
    const float eps = static_cast<float>(config_.rms_norm_eps);
    cpu::rms_norm(q.reshape({T * H, D}), w.q_norm, eps, q.reshape({T * H, D}));
    cpu::rms_norm(k.reshape({T * KVH, D}), w.k_norm, eps, k.reshape({T * KVH, D}));
  }
  EXQ_CHECK(!w.local_rope || !rope_local_.cos.empty(), "attention block: a local rotary layer "
            "without rope_local_theta");
  const cpu::RopeTable& rope = w.local_rope ? rope_local_ : rope_;
  cpu::apply_rotary(q, rope, 0);
  cpu::apply_rotary(k, rope, 0);
  const auto scale = static_cast<float>(config_.attention_scale());
  const auto softcap = static_cast<float>(config_.attn_softcap);
  if (causal) {
    cpu::attention(q, k, v, 0, att, 0, scale, softcap);    // keys/values of rows 0..T-1
  } else {
    if (kc_.empty()) {
      kc_ = Tensor(DType::F32, {max_tokens_, D});
      vt_ = Tensor(DType::F32, {D, max_tokens_});
      scores_ = Tensor(DType::F32, {std::min(kBlock, max_tokens_), max_tokens_});
    }
    attention_unmasked(q, k, v, att, scale, softcap, kc_, vt_, scores_);
  }
  linear(att.reshape({T, H * D}), w.o, w.o_bias, y);       // y [T, hidden]
  post_norm_residual(w.post_norm, x, y);
}

void ModuleForward::mlp(const MlpWeights& w, const TensorView& x, const TensorView& y) {
  const int64_t T = x.rank() == 2 ? x.dim(0) : 0, hidden = config_.hidden_size;
  EXQ_CHECK(T > 0 && T <= max_tokens_, "MLP block: {} tokens, expected 1..{}", T, max_tokens_);
  EXQ_CHECK(!gate_.empty(), "MLP block: the model has no dense MLP layer (mixture of experts)");
  x.expect(DType::F32, {T, hidden}, "MLP block input");
  y.expect(DType::F32, {T, hidden}, "MLP block output");
  tokens_ = T;
  const TensorView xn = normed();                           // [T, hidden]
  const TensorView g = gate_.view().slice0(0, T);           // [T, intermediate]
  const TensorView u = up_.view().slice0(0, T);             // [T, intermediate]
  cpu::rms_norm(x, w.norm, static_cast<float>(config_.rms_norm_eps), xn);
  linear(xn, w.gate, w.gate_bias, g);
  linear(xn, w.up, w.up_bias, u);
  if (config_.activation == io::Activation::GeluTanh)
    cpu::geglu(g, u, g);
  else
    cpu::swiglu(g, u, g);
  linear(g, w.down, w.down_bias, y);                        // y [T, hidden]
  post_norm_residual(w.post_norm, x, y);
}

TensorView ModuleForward::expert_act(int64_t e) const {
  const int64_t first = groups_.first[static_cast<size_t>(e)];
  return expert_act_.view().slice0(first, first + groups_.count(e));
}

void ModuleForward::moe(const MoeWeights& w, const TensorView& x, const TensorView& y) {
  const int64_t T = x.rank() == 2 ? x.dim(0) : 0, hidden = config_.hidden_size;
  const int64_t E = config_.num_experts, K = config_.experts_per_token;
  EXQ_CHECK(T > 0 && T <= max_tokens_, "MoE block: {} tokens, expected 1..{}", T, max_tokens_);
  EXQ_CHECK(E > 0 && static_cast<int64_t>(w.experts.size()) == E, "MoE block: {} experts, the config has {}",
            w.experts.size(), E);
  x.expect(DType::F32, {T, hidden}, "MoE block input");
  y.expect(DType::F32, {T, hidden}, "MoE block output");
  tokens_ = T;
  const TensorView xn = normed();
  cpu::rms_norm(x, w.norm, static_cast<float>(config_.rms_norm_eps), xn);
  const TensorView logits = logits_.view().slice0(0, T);
  cpu::matmul(xn, w.router, logits);
  std::vector<int32_t> ids(static_cast<size_t>(T * K));
  std::vector<float> weights(ids.size());
  model::route_tokens(logits, K, config_.norm_topk_prob, ids, weights);
  groups_ = model::group_by_expert(ids, weights, E, K);
  std::memset(y.data<float>(), 0, static_cast<size_t>(T * hidden) * sizeof(float));
  for (int64_t e = 0; e < E; ++e) {
    const int64_t n = groups_.count(e);
    if (n == 0) continue;
    // The model's ops on the same n rows (model/moe.cpp), so the bits are the same.
    const MoeWeights::Expert& ex = w.experts[static_cast<size_t>(e)];
    const TensorView rows = rows_.view().slice0(0, n), g = expert_act(e);
    const TensorView u = expert_up_.view().slice0(0, n), yv = expert_y_.view().slice0(0, n);
    model::gather_rows(xn, groups_.tokens(e), rows);
    cpu::matmul(rows, ex.gate, g);
    cpu::matmul(rows, ex.up, u);
    cpu::swiglu(g, u, g);
    cpu::matmul(g, ex.down, yv);
    model::add_weighted_rows(yv, groups_.tokens(e), groups_.weights(e), y);
  }
  post_norm_residual(TensorView(), x, y);
}

void ModuleForward::post_norm_residual(const TensorView& post_norm, const TensorView& x,
                                       const TensorView& y) {
  if (!post_norm.empty()) cpu::rms_norm(y, post_norm, static_cast<float>(config_.rms_norm_eps), y);
  if (config_.residual_multiplier != 1.0) cpu::scale_inplace(y, static_cast<float>(config_.residual_multiplier));
  cpu::add_inplace(y, x);
}

namespace {

void check_rows(const TensorView& x, const TensorView& y, int64_t hidden, const char* what) {
  EXQ_CHECK(x.rank() == 3 && x.dtype() == DType::F32 && x.is_contiguous() && x.dim(2) == hidden &&
                y.shape() == x.shape() && y.dtype() == DType::F32 && y.is_contiguous(),
            "{}: expected contiguous F32 [rows, T, {}] in and out, got {} and {}", what, hidden,
            shape_str(x.shape()), shape_str(y.shape()));
}

}  // namespace

void ModuleForward::attention_rows(const AttnWeights& w, const TensorView& x, const TensorView& y,
                                   bool causal) {
  check_rows(x, y, config_.hidden_size, "attention rows");
  for (int64_t r = 0; r < x.dim(0); ++r)
    attention(w, x.slice0(r, r + 1).reshape({x.dim(1), x.dim(2)}),
              y.slice0(r, r + 1).reshape({x.dim(1), x.dim(2)}), causal);
}

void ModuleForward::mlp_rows(const MlpWeights& w, const TensorView& x, const TensorView& y) {
  check_rows(x, y, config_.hidden_size, "MLP rows");
  for (int64_t r = 0; r < x.dim(0); ++r)
    mlp(w, x.slice0(r, r + 1).reshape({x.dim(1), x.dim(2)}),
        y.slice0(r, r + 1).reshape({x.dim(1), x.dim(2)}));
}

void ModuleForward::moe_rows(const MoeWeights& w, const TensorView& x, const TensorView& y) {
  check_rows(x, y, config_.hidden_size, "MoE rows");
  for (int64_t r = 0; r < x.dim(0); ++r)
    moe(w, x.slice0(r, r + 1).reshape({x.dim(1), x.dim(2)}), y.slice0(r, r + 1).reshape({x.dim(1), x.dim(2)}));
}

Tensor embed_rows(const TensorView& table, std::span<const int32_t> ids, int64_t rows,
                  int64_t tokens, float scale) {
  EXQ_CHECK(table.rank() == 2 && rows > 0 && tokens > 0 &&
                static_cast<int64_t>(ids.size()) == rows * tokens,
            "embed_rows: {} ids for {} rows x {} tokens, table {}", ids.size(), rows, tokens,
            shape_str(table.shape()));
  Tensor out(DType::F32, {rows, tokens, table.dim(1)});
  cpu::embedding(table, ids, out.view().reshape({rows * tokens, table.dim(1)}));
  if (scale != 1.0f) cpu::scale_inplace(out, scale);  // as the model scales its embedding
  return out;
}

}  // namespace exq::quant
