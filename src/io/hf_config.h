// Hugging Face config.json of a Llama-family model (llama, mistral, qwen2, qwen3), validated into
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

enum class RopeScalingType { None, Linear, Llama3 };

struct RopeScaling {
  RopeScalingType type = RopeScalingType::None;
  double factor = 1.0;                     // linear and llama3
  double low_freq_factor = 1.0;            // llama3
  double high_freq_factor = 4.0;           // llama3
  int64_t original_max_position_embeddings = 8192;  // llama3
};

struct ModelConfig {
  std::string model_type;  // "llama", "mistral", "qwen2" or "qwen3"
  int64_t hidden_size = 0;
  int64_t intermediate_size = 0;
  int64_t num_hidden_layers = 0;
  int64_t num_attention_heads = 0;
  int64_t num_key_value_heads = 0;  // defaults to num_attention_heads
  int64_t head_dim = 0;             // defaults to hidden_size / num_attention_heads
  int64_t vocab_size = 0;
  int64_t max_position_embeddings = 0;
  double rms_norm_eps = 1e-6;
  double rope_theta = 10000.0;
  RopeScaling rope_scaling;
  bool attention_qkv_bias = false;  // qwen2 always; llama and qwen3 when attention_bias
  bool attention_out_bias = false;  // llama and qwen3 attention_bias
  bool qk_norm = false;             // qwen3: RMSNorm of each head of q and k before rotary
  bool mlp_bias = false;            // llama mlp_bias
  bool tie_word_embeddings = false;
  std::optional<int32_t> bos_token_id;
  std::vector<int32_t> eos_token_ids;  // config's eos_token_id, int or list
  std::optional<DType> torch_dtype;    // F16 / BF16 / F32 when given
  nlohmann::json quantization_config;  // raw, null when absent (read by the EXL2 loader)

  int64_t q_dim() const { return num_attention_heads * head_dim; }
  int64_t kv_dim() const { return num_key_value_heads * head_dim; }
};

// Reads `dir/config.json` (or the given .json file) and validates it. Throws exq::Error with
// the file set and the message naming the offending field.
ModelConfig load_model_config(const std::filesystem::path& dir_or_config_json);
// Same, from JSON text already read; `file` only names the source in errors.
ModelConfig parse_model_config(const std::string& json_text, const std::string& file);

}  // namespace exq::io
