#include "model/llama.h"

#include <algorithm>
#include <cstring>

#include "backend/cpu/attention.h"
#include "backend/cpu/elementwise.h"
#include "backend/cpu/norm.h"
#include "model/moe.h"
#include "model/rope.h"

namespace exq::model {

LlamaModel LlamaModel::load(const std::filesystem::path& dir) {
  io::ModelConfig config = io::load_model_config(dir);
  LlamaWeights weights = load_llama_weights(config, dir);
  return LlamaModel(std::move(config), std::move(weights));
}

LlamaModel::LlamaModel(io::ModelConfig config, LlamaWeights weights)
    : config_(std::move(config)), weights_(std::move(weights)) {
  EXQ_CHECK(static_cast<int64_t>(weights_.layers.size()) == config_.num_hidden_layers,
            "model has {} layers, config says {}", weights_.layers.size(), config_.num_hidden_layers);
  init_rope();
}

void LlamaModel::init_rope() {
  const int64_t n = std::min<int64_t>(config_.context_length(), 4096);
  inv_freq_ = rope_inv_freq(config_, n);
  rope_long_ = rope_uses_long_factors(config_, n);
  rope_scale_ = rope_attention_factor(config_);
  rope_ = cpu::make_rope_table(inv_freq_, n, rope_scale_);
  if (config_.rope_local_theta > 0.0) {
    inv_freq_local_ = rope_inv_freq(local_rope_config(config_), n);
    rope_local_ = cpu::make_rope_table(inv_freq_local_, n, 1.0f);
  }
}

void LlamaModel::set_rope(double theta, const io::RopeScaling& scaling, int64_t max_position_embeddings) {
  io::ModelConfig c = config_;
  c.rope_theta = theta;
  c.rope_scaling = scaling;
  c.max_position_embeddings = max_position_embeddings;
  check_rope(c);
  config_ = std::move(c);
  init_rope();
}

void LlamaModel::merge_lora(const LoraAdapter& adapter) { model::merge_lora(weights_, adapter); }

KvCache LlamaModel::make_cache(int64_t max_len) const {
  return KvCache(config_.num_hidden_layers, max_len, config_.num_key_value_heads, config_.head_dim, kv_quant_);
}

void LlamaModel::set_kv_quant(KvQuant quant) {
  check_kv_quant(quant, config_.head_dim);
  kv_quant_ = quant;
}

void LlamaModel::set_cpu_moe_layers(int64_t n) {
  EXQ_CHECK(n >= 0, "the number of layers whose experts run on the CPU must be >= 0, got {}", n);
  cpu_moe_layers_ = n;
}

void LlamaModel::set_hidden_capture(std::function<void(int, const TensorView&)> cb) {
  capture_ = std::move(cb);
}

void LlamaModel::check_cache(const KvCache& cache, int64_t tokens) const {
  const io::ModelConfig& c = config_;
  EXQ_CHECK(cache.num_layers() == c.num_hidden_layers && cache.kv_heads() == c.num_key_value_heads &&
                cache.head_dim() == c.head_dim,
            "forward: cache of {} layers x {} kv heads x {} dims does not fit this model ({} x {} x {})",
            cache.num_layers(), cache.kv_heads(), cache.head_dim(), c.num_hidden_layers, c.num_key_value_heads,
            c.head_dim);
  EXQ_CHECK(cache.length() + tokens <= cache.max_len(), "forward: {} tokens after {} exceed the cache of {}", tokens,
            cache.length(), cache.max_len());
}

Tensor LlamaModel::forward(std::span<const int32_t> tokens, KvCache& cache, bool all_logits) {
  KvCache* one[] = {&cache};
  return run(tokens, one, all_logits ? Output::kAllLogits : Output::kLastLogits);
}

Tensor LlamaModel::hidden_states(std::span<const int32_t> tokens, KvCache& cache) {
  KvCache* one[] = {&cache};
  return run(tokens, one, Output::kHidden);
}

Tensor LlamaModel::forward_batch(std::span<const int32_t> tokens, std::span<KvCache* const> caches) {
  EXQ_CHECK(!tokens.empty() && tokens.size() == caches.size(),
            "forward_batch: {} tokens for {} caches; one token per cache", tokens.size(), caches.size());
  for (size_t r = 0; r < caches.size(); ++r)
    for (size_t q = 0; q < r; ++q)
      EXQ_CHECK(caches[q] != caches[r], "forward_batch: caches {} and {} are the same", q, r);
  return run(tokens, caches, Output::kAllLogits);
}

Tensor LlamaModel::run(std::span<const int32_t> tokens, std::span<KvCache* const> caches, Output output) {
  const io::ModelConfig& c = config_;
  const int64_t T = static_cast<int64_t>(tokens.size());
  const int64_t hidden = c.hidden_size, H = c.num_attention_heads, KVH = c.num_key_value_heads;
  const int64_t D = c.head_dim, inter = c.intermediate_size;
  const float eps = static_cast<float>(c.rms_norm_eps);
  EXQ_CHECK(T > 0, "forward: no tokens");
  // One cache: rows are consecutive positions of it. Several: row r is the next position of cache r.
  const bool batch = caches.size() > 1;
  int64_t end = 0, context = 0;
  for (const KvCache* cache : caches) {
    check_cache(*cache, batch ? 1 : T);
    end = std::max(end, cache->length() + (batch ? 1 : T));
    context = std::max(context, cache->max_len());
  }
  // longrope: the cache's capacity is the run's context, which picks the factor set.
  if (const bool want = rope_uses_long_factors(c, context); want != rope_long_) {
    inv_freq_ = rope_inv_freq(c, context);
    rope_long_ = want;
    rope_ = cpu::make_rope_table(inv_freq_, std::max(end, rope_.positions()), rope_scale_);
  }
  if (rope_.positions() < end)
    rope_ = cpu::make_rope_table(inv_freq_, std::max(end, 2 * rope_.positions()), rope_scale_);
  if (!inv_freq_local_.empty() && rope_local_.positions() < end)
    rope_local_ = cpu::make_rope_table(inv_freq_local_, std::max(end, 2 * rope_local_.positions()), 1.0f);
  const float att_scale = static_cast<float>(c.attention_scale()), softcap = static_cast<float>(c.attn_softcap);

  Tensor x(DType::F32, {T, hidden});        // residual stream
  Tensor xn(DType::F32, {T, hidden});       // normed input of a sublayer
  Tensor q(DType::F32, {T, H, D});          // queries
  Tensor att(DType::F32, {T, H, D});        // attention output per head
  Tensor proj(DType::F32, {T, hidden});     // sublayer output before the residual add
  Tensor gate(DType::F32, {T, inter});      // gate_proj, then silu(gate) * up
  Tensor up(DType::F32, {T, inter});        // up_proj
  Tensor k_rows, v_rows;                    // several caches: the new keys / values [T, KVH, D]
  if (batch) {
    k_rows = Tensor(DType::F32, {T, KVH, D});
    v_rows = Tensor(DType::F32, {T, KVH, D});
  }
  const TensorView q2 = q.view().reshape({T, H * D});
  const TensorView att2 = att.view().reshape({T, H * D});

  cpu::embedding(weights_.embed, tokens, x);  // x [T, hidden]
  if (const float s = embedding_scale(c, weights_.embed.dtype()); s != 1.0f) cpu::scale_inplace(x, s);
  // granite: a sublayer's output times residual_multiplier, then the residual add.
  const auto residual_add = [&, m = static_cast<float>(c.residual_multiplier)](const TensorView& delta) {
    if (m != 1.0f) cpu::scale_inplace(delta, m);
    cpu::add_inplace(x, delta);
  };
  for (int64_t l = 0; l < c.num_hidden_layers; ++l) {
    const LayerWeights& w = weights_.layers[static_cast<size_t>(l)];
    const cpu::RopeTable& rope = c.local_rope(l) ? rope_local_ : rope_;
    if (capture_) capture_(static_cast<int>(l), x);
    // Attention. One cache: new keys/values go straight into its rows start..start+T-1.
    const int64_t start = caches[0]->length();
    const TensorView k_new = batch ? k_rows.view() : caches[0]->keys(l).slice0(start, start + T);  // [T, KVH, D]
    const TensorView v_new = batch ? v_rows.view() : caches[0]->values(l).slice0(start, start + T);
    cpu::rms_norm(x, w.attn_norm, eps, xn);                               // xn [T, hidden]
    w.q->forward(xn, q2);                                                 // q [T, H*D]
    w.k->forward(xn, k_new.reshape({T, KVH * D}));                        // k [T, KVH*D]
    w.v->forward(xn, v_new.reshape({T, KVH * D}));                        // v [T, KVH*D]
    if (c.qk_norm) {  // qwen3: each head of q and k RMS-normed before rotary
      cpu::rms_norm(q2.reshape({T * H, D}), w.q_norm, eps, q2.reshape({T * H, D}));
      cpu::rms_norm(k_new.reshape({T * KVH, D}), w.k_norm, eps, k_new.reshape({T * KVH, D}));
    }
    if (!batch) {
      cpu::apply_rotary(q, rope, start);
      cpu::apply_rotary(k_new, rope, start);
      caches[0]->finish_rows(l, start, start + T);
      cpu::attention(q, caches[0]->keys(l), caches[0]->values(l), start, att, c.window_of(l), att_scale,
                     softcap);  // att [T, H, D]
    } else {
      for (int64_t r = 0; r < T; ++r) {
        const KvCache& cache = *caches[static_cast<size_t>(r)];
        const int64_t pos = cache.length();
        const TensorView qr = q.view().slice0(r, r + 1), kr = k_new.slice0(r, r + 1);
        cpu::apply_rotary(qr, rope, pos);
        cpu::apply_rotary(kr, rope, pos);
        const auto row_bytes = static_cast<size_t>(KVH * D) * sizeof(float);
        std::memcpy(cache.keys(l).slice0(pos, pos + 1).data<float>(), kr.data<float>(), row_bytes);
        std::memcpy(cache.values(l).slice0(pos, pos + 1).data<float>(), v_new.slice0(r, r + 1).data<float>(),
                    row_bytes);
        cache.finish_rows(l, pos, pos + 1);
        cpu::attention(qr, cache.keys(l), cache.values(l), pos, att.view().slice0(r, r + 1), c.window_of(l),
                       att_scale, softcap);
      }
    }
    w.o->forward(att2, proj);                                             // proj [T, hidden]
    if (!w.post_attn_norm.empty()) cpu::rms_norm(proj, w.post_attn_norm, eps, proj);  // gemma2 / 3
    residual_add(proj);
    // MLP: down(act(gate(xn)) * up(xn)), act silu or gemma's gelu; or a mixture of experts.
    cpu::rms_norm(x, w.ffn_norm, eps, xn);
    if (!w.experts.empty()) {
      moe_mlp(c, w, xn, proj);
      residual_add(proj);
      continue;
    }
    w.gate->forward(xn, gate);                                            // [T, inter]
    w.up->forward(xn, up);                                                // [T, inter]
    if (c.activation == io::Activation::Silu) cpu::swiglu(gate, up, gate);
    else cpu::geglu(gate, up, gate);
    w.down->forward(gate, proj);                                          // [T, hidden]
    if (!w.post_ffn_norm.empty()) cpu::rms_norm(proj, w.post_ffn_norm, eps, proj);
    residual_add(proj);
  }
  for (KvCache* cache : caches) cache->commit(cache->length() + (batch ? 1 : T));
  cpu::rms_norm(x, weights_.final_norm, eps, x);
  if (capture_) capture_(static_cast<int>(c.num_hidden_layers), x);
  if (output == Output::kHidden) return x;

  const TensorView rows = output == Output::kAllLogits ? x.view() : x.view().slice0(T - 1, T);
  Tensor logits(DType::F32, {rows.dim(0), c.vocab_size});               // [T or 1, vocab]
  weights_.head->forward(rows, logits);
  if (c.final_softcap > 0.0) cpu::softcap_inplace(logits, static_cast<float>(c.final_softcap));
  if (c.logits_scaling != 1.0) cpu::scale_inplace(logits, static_cast<float>(1.0 / c.logits_scaling));  // granite
  return logits;
}

}  // namespace exq::model
