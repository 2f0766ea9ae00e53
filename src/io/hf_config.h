// Hugging Face config.json of a Llama-family model (llama, mistral, qwen2, qwen3, phi3, gemma*,
// granite, and the mixtures of experts mixtral and qwen3_moe), validated into
// the plain numbers the model and the converter need. Anything exq cannot run faithfully
// (another model_type, activation or rope scaling) is rejected with an exq::Error naming
// the file and the field, rather than silently producing wrong logits.
#pragma once

#include <nlohmann/json.hpp>

#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <vector>

#include "core/dtype.h"

namespace exq::io {

enum class RopeScalingType { None, Linear, Llama3, Yarn, LongRope };

// The MLP's gate activation: silu (SwiGLU), or gemma's tanh-approximated GELU (GeGLU).
enum class Activation { Silu, GeluTanh };
const char* activation_name(Activation a);

struct RopeScaling {
  RopeScalingType type = RopeScalingType::None;
  double factor = 1.0;                     // linear, llama3 and yarn; longrope: context / original
  double low_freq_factor = 1.0;            // llama3
  double high_freq_factor = 4.0;           // llama3
  // llama3; yarn: the trained context the correction range is found for (defaults to
  // max_position_embeddings there); longrope: the context above which long_factor applies.
  int64_t original_max_position_embeddings = 8192;
  // yarn (transformers' names and defaults); attention_factor <= 0: derived from the factor, or
  // from mscale / mscale_all_dim when both are set.
  double beta_fast = 32.0;
  double beta_slow = 1.0;
  double attention_factor = 0.0;
  double mscale = 0.0;
  double mscale_all_dim = 0.0;
  bool truncate = true;  // floor / ceil the correction range's ends
  // longrope (Phi-3 / Phi-3.5 / Phi-4): a divisor per frequency, [rope_dim() / 2] each; long_factor
  // when the run's context exceeds original_max_position_embeddings (as llama.cpp picks them),
  // else short_factor. attention_factor <= 0: sqrt(1 + ln(factor) / ln(original)).
  std::vector<double> short_factor, long_factor;
};

// "none", "linear", "llama3", "yarn" or "longrope".
const char* rope_scaling_name(RopeScalingType type);

struct ModelConfig {
  // "llama", "mistral", "qwen2", "qwen3", "phi3", "gemma", "gemma2", "gemma3_text", "granite",
  // "granitemoe", "mixtral" or "qwen3_moe"
  std::string model_type;
  // "gemma3" / "mistral3": the config is a multimodal checkpoint's text_config (model_type
  // gemma3_text / mistral), its tensors under language_model. (io::SafetensorsModel presents them
  // under the plain names).
  std::string language_model_of;
  int64_t hidden_size = 0;
  int64_t intermediate_size = 0;
  int64_t num_hidden_layers = 0;
  int64_t num_attention_heads = 0;
  int64_t num_key_value_heads = 0;  // defaults to num_attention_heads
  int64_t head_dim = 0;             // defaults to hidden_size / num_attention_heads
  // Dimensions of each head the rotary turns (the first ones, pairs (i, i + rotary_dim / 2));
  // the rest pass unrotated. head_dim * partial_rotary_factor (Phi-4-mini: 96 of 128); 0: head_dim.
  int64_t rotary_dim = 0;
  int64_t vocab_size = 0;
  int64_t max_position_embeddings = 0;
  double rms_norm_eps = 1e-6;
  double rope_theta = 10000.0;
  RopeScaling rope_scaling;
  bool attention_qkv_bias = false;  // qwen2 always; llama and qwen3 when attention_bias
  bool attention_out_bias = false;  // llama and qwen3 attention_bias
  bool qk_norm = false;             // qwen3: RMSNorm of each head of q and k before rotary
  bool mlp_bias = false;            // llama mlp_bias
  Activation activation = Activation::Silu;
  // gemma: RMSNorm weights are stored as w and multiply by 1 + w (the loaders add the 1 in f32);
  // the embedding is scaled by sqrt(hidden_size) rounded to the table's dtype.
  bool norm_plus_one = false;
  bool embed_scale = false;
  // gemma2 / gemma3: the attention and MLP outputs are RMS-normed before the residual add
  // (post_attention_layernorm, post_feedforward_layernorm), the MLP input by
  // pre_feedforward_layernorm.
  bool sandwich_norms = false;
  // Attention scores are scaled by query_pre_attn_scalar^-0.5 when > 0 (gemma2 / gemma3), else
  // head_dim^-0.5; then softcapped, s = cap * tanh(s / cap), when attn_softcap > 0 (gemma2).
  double query_pre_attn_scalar = 0.0;
  double attn_softcap = 0.0;
  double final_softcap = 0.0;  // the logits: cap * tanh(logits / cap) (gemma2)
  // granite (1 elsewhere): the embedding rows times embedding_multiplier; each sublayer's output
  // times residual_multiplier before its residual add; the logits divided by logits_scaling.
  // attention_multiplier > 0 is the attention scale itself, instead of head_dim^-0.5.
  double embedding_multiplier = 1.0;
  double residual_multiplier = 1.0;
  double logits_scaling = 1.0;
  double attention_multiplier = 0.0;
  // gemma3: the sliding-window layers turn with this theta and no scaling (rope_local_base_freq,
  // or rope_parameters.sliding_attention); 0: every layer uses rope_theta / rope_scaling.
  double rope_local_theta = 0.0;
  // Sliding-window attention: layer l's queries see the layer_window[l] latest keys, themselves
  // included (transformers' and llama.cpp's rule); 0, or an empty list, attends to the whole
  // context. mistral and phi3 `sliding_window` (every layer); qwen2 / qwen3 with
  // use_sliding_window, the layers from max_window_layers on; `layer_types` when given.
  std::vector<int64_t> layer_window;
  int64_t window_of(int64_t layer) const {
    return layer >= 0 && layer < static_cast<int64_t>(layer_window.size()) ? layer_window[static_cast<size_t>(layer)] : 0;
  }
  // phi3: q/k/v stored as one self_attn.qkv_proj and gate/up as one mlp.gate_up_proj (rows in
  // that order) in unquantized checkpoints; the loader takes either those or the split names.
  bool fused_projections = false;
  // Mixture of experts (mixtral, qwen3_moe): a router picks experts_per_token of num_experts
  // SwiGLU experts of expert_intermediate rows for each token, by softmax probability, and adds
  // their outputs weighted by those probabilities (renormalized to sum 1 when norm_topk_prob).
  // layer_moe[l]: layer l has experts (qwen3_moe's decoder_sparse_step and mlp_only_layers leave
  // some dense, of intermediate_size); empty when num_experts is 0.
  int64_t num_experts = 0;
  int64_t experts_per_token = 0;
  int64_t expert_intermediate = 0;
  bool norm_topk_prob = true;
  std::vector<uint8_t> layer_moe;
  bool moe_layer(int64_t layer) const {
    return layer >= 0 && layer < static_cast<int64_t>(layer_moe.size()) && layer_moe[static_cast<size_t>(layer)] != 0;
  }
  bool tie_word_embeddings = false;
  std::optional<int32_t> bos_token_id;
  std::vector<int32_t> eos_token_ids;  // config's eos_token_id, int or list
  std::optional<DType> torch_dtype;    // F16 / BF16 / F32 when given
  nlohmann::json quantization_config;  // raw, null when absent (read by the EXL2 loader)

  // The positions exq allows: max_position_embeddings, or for yarn original x factor when that is
  // more (as vLLM derives it: Qwen2.5 / Qwen3 with factor 4 reach 131072).
  int64_t context_length() const;
  int64_t rope_dim() const { return rotary_dim > 0 ? rotary_dim : head_dim; }
  double attention_scale() const;
  // gemma3: layer l turns with the local theta (it is a sliding-window layer).
  bool local_rope(int64_t layer) const { return rope_local_theta > 0.0 && window_of(layer) > 0; }
  int64_t q_dim() const { return num_attention_heads * head_dim; }
  int64_t kv_dim() const { return num_key_value_heads * head_dim; }
};

// "gemma3" or "mistral3" when config.json is a multimodal checkpoint whose language model exq
// runs (text only), else "".
std::string multimodal_wrapper(const nlohmann::json& root);

// A multimodal checkpoint's language model as a config of its own: text_config with the
// wrapper's token ids and dtype; gemma3's as gemma3_text (Gemma3TextConfig's defaults for what it
// leaves out), mistral3's as mistral (or the model_type text_config names). Null when
// text_config is missing; any other config as given.
nlohmann::json text_model_config(const nlohmann::json& root);

// Reads `dir/config.json` (or the given .json file) and validates it. Throws exq::Error with
// the file set and the message naming the offending field.
ModelConfig load_model_config(const std::filesystem::path& dir_or_config_json);
// Same, from JSON text already read; `file` only names the source in errors.
ModelConfig parse_model_config(const std::string& json_text, const std::string& file);

}  // namespace exq::io
