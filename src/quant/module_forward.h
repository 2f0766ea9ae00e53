// The reference forward of one decoder module, as the converter measures and quantizes it:
// attention block (RMSNorm, q/k/v, rotary, causal GQA attention, o, residual) and MLP block
// (RMSNorm, gate/up SwiGLU or GeGLU, down, residual), float32, one calibration row (a whole
// sequence from position 0) at a time. gemma: norms 1 + w, the config's attention scale and
// softcap, gemma3's local rotary on its sliding-window layers, gemma2 / 3's output norms before
// the residual adds; granite's attention multiplier and residual multiplier. Sliding windows are not applied (calibration rows fit them). Weights are plain float32 [out, in] tensors so quantized
// candidates (dequantized GPTQ results) drop in for the originals. Same ops and arithmetic as
// model::LlamaModel's forward, so the states match it bit for bit.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "backend/cpu/rotary.h"
#include "core/tensor.h"
#include "io/hf_config.h"
#include "io/safetensors.h"
#include "model/moe.h"

namespace exq::quant {

// One decoder layer's weights widened to float32 (HF names and layouts). Biases are empty
// tensors when the model has none.
// Norms hold the weight the model multiplies by (gemma: 1 + the stored w).
struct LayerF32 {
  Tensor attn_norm;                       // input_layernorm [hidden]
  Tensor q, k, v, o;                      // self_attn.*_proj [out, in]
  Tensor q_bias, k_bias, v_bias, o_bias;  // [out] or empty
  Tensor q_norm, k_norm;                  // qwen3 / gemma3: self_attn.q_norm / k_norm [head_dim], else empty
  Tensor ffn_norm;                        // post_attention_layernorm (gemma2 / 3: pre_feedforward_layernorm) [hidden]
  Tensor gate, up, down;                  // mlp.*_proj [out, in]
  Tensor gate_bias, up_bias, down_bias;   // [out] or empty
  // gemma2 / 3 (sandwich_norms): post_attention_layernorm / post_feedforward_layernorm [hidden],
  // else empty.
  Tensor post_attn_norm, post_ffn_norm;
  bool local_rope = false;                // gemma3: a sliding-window layer (rope_local_theta)
  // Mixture-of-experts layers (config.moe_layer): gate / up / down stay empty, the router
  // [num_experts, hidden] and each expert's linears (model::expert_key names) are set.
  struct Expert {
    Tensor gate, up, down;                // [expert_inter, hidden], [.., hidden], [hidden, expert_inter]
  };
  Tensor router;
  std::vector<Expert> experts;
};

// Reads model.layers.<layer>.* from `files`; shapes are checked against the config and errors
// name the tensor and layer. use_pool: widen on exq::parallel_for; false keeps it on the calling
// thread (for a background prefetch beside other pool users: the pool serves one caller).
LayerF32 load_layer_f32(const io::SafetensorsModel& files, const io::ModelConfig& config,
                        int64_t layer, bool use_pool = true);

// Views of the weights one module forward uses; swap a linear's view to test a candidate.
struct AttnWeights {
  TensorView norm;              // [hidden]
  TensorView q, k, v, o;        // [out, in] F32 (or F16/BF16)
  TensorView q_bias, k_bias, v_bias, o_bias;
  TensorView q_norm, k_norm;    // qwen3: [head_dim] each head of q / k is RMS-normed by; else empty
  TensorView post_norm;         // gemma2 / 3: [hidden] the o_proj output is RMS-normed by; else empty
  bool local_rope = false;      // gemma3: rotary with rope_local_theta
};
struct MlpWeights {
  TensorView norm;              // [hidden]
  TensorView gate, up, down;    // [out, in] F32 (or F16/BF16)
  TensorView gate_bias, up_bias, down_bias;
  TensorView post_norm;         // gemma2 / 3: [hidden] the down_proj output is RMS-normed by; else empty
};
// A mixture-of-experts MLP block: RMSNorm, the router, each token's top-k experts (SwiGLU).
struct MoeWeights {
  TensorView norm;              // [hidden]
  TensorView router;            // [num_experts, hidden] F32 (or F16/BF16)
  struct Expert {
    TensorView gate, up, down;  // [out, in] F32 (or F16/BF16)
  };
  std::vector<Expert> experts;
};
AttnWeights attn_weights(const LayerF32& layer);
MlpWeights mlp_weights(const LayerF32& layer);
MoeWeights moe_weights(const LayerF32& layer);

// Runs modules of one model shape on rows of up to max_tokens tokens. Owns its scratch, so one
// object serves one thread; the ops inside are parallel (exq::parallel_for).
class ModuleForward {
 public:
  ModuleForward(const io::ModelConfig& config, int64_t max_tokens);

  const io::ModelConfig& config() const { return config_; }
  int64_t max_tokens() const { return max_tokens_; }

  // x, y: F32 [T, hidden] contiguous, T <= max_tokens, y must not alias x. Positions 0..T-1.
  // causal = false: every token attends to all T tokens of its row (no mask). Not the model's
  // function; it exists only so MeasureOptions::causal can reproduce exllamav2 0.3.2's recorded
  // SmolLM2 measurement (docs/quality.md).
  void attention(const AttnWeights& w, const TensorView& x, const TensorView& y,
                 bool causal = true);
  void mlp(const MlpWeights& w, const TensorView& x, const TensorView& y);
  // The mixture-of-experts block as model::moe_mlp runs it (model::route_tokens, each expert
  // once on its gathered tokens, outputs added in expert order times their weights), + x.
  void moe(const MoeWeights& w, const TensorView& x, const TensorView& y);

  // Inputs of the linears in the last call, [T, n] views into the scratch (valid until the
  // next call): attention: normed() feeds q/k/v, attn_out() feeds o; MLP: normed() feeds
  // gate/up, act() (silu(gate) * up, or gelu_tanh(gate) * up) feeds down.
  TensorView normed() const;
  TensorView attn_out() const;
  TensorView act() const;
  // After moe(): expert e's down_proj input [tokens routed to e, expert_inter] (0 rows when
  // none was) and how many tokens it got.
  TensorView expert_act(int64_t e) const;
  int64_t expert_tokens(int64_t e) const { return groups_.count(e); }

  // Whole calibration sets: x, y F32 [rows, T, hidden].
  void attention_rows(const AttnWeights& w, const TensorView& x, const TensorView& y,
                      bool causal = true);
  void mlp_rows(const MlpWeights& w, const TensorView& x, const TensorView& y);
  void moe_rows(const MoeWeights& w, const TensorView& x, const TensorView& y);

 private:
  // y = y + x, with y RMS-normed by post_norm first when it is not empty (gemma2 / 3), then
  // times the residual multiplier (granite).
  void post_norm_residual(const TensorView& post_norm, const TensorView& x, const TensorView& y);

  io::ModelConfig config_;
  int64_t max_tokens_;
  int64_t tokens_ = 0;      // T of the last call
  cpu::RopeTable rope_;     // [max_tokens, head_dim / 2]
  cpu::RopeTable rope_local_;  // gemma3's sliding-window layers, else empty
  Tensor normed_;           // [max_tokens, hidden]
  Tensor q_;                // [max_tokens, heads, head_dim]
  Tensor k_, v_;            // [max_tokens, kv_heads, head_dim]
  Tensor att_;              // [max_tokens, heads, head_dim]
  Tensor kc_, vt_, scores_; // non-causal attention: one kv head's K, V^T, a block of scores
  Tensor gate_, up_;        // [max_tokens, intermediate]; gate_ ends as act(gate) * up
  // Mixture of experts (empty otherwise): router logits [max_tokens, E], gathered rows and an
  // expert's output [max_tokens, hidden], every expert's act rows [max_tokens * k, expert_inter]
  // (in the order of groups_, the last call's routing).
  Tensor logits_, rows_, expert_y_, expert_up_, expert_act_;
  model::ExpertGroups groups_;
};

// Embeddings of token rows: ids [rows * tokens] -> F32 [rows, tokens, hidden], times `scale`
// when it is not 1 (gemma: model::embedding_scale).
Tensor embed_rows(const TensorView& embed_table, std::span<const int32_t> ids, int64_t rows,
                  int64_t tokens, float scale = 1.0f);

}  // namespace exq::quant
