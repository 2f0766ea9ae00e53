// A model folder's generation_config.json (Hugging Face): stop ids and sampling defaults.
// Every field is optional; the CLI layers its flags over what the file sets.
#pragma once

#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <vector>

#include "runtime/sampler.h"

namespace exq::runtime {

struct GenerationConfig {
  std::vector<int32_t> eos_token_ids;  // eos_token_id: an int or a list
  std::optional<int32_t> bos_token_id;
  std::optional<int32_t> pad_token_id;
  std::optional<bool> do_sample;
  std::optional<float> temperature;
  std::optional<int> top_k;
  std::optional<float> top_p;
  std::optional<float> min_p;
  std::optional<float> typical_p;
  std::optional<float> repetition_penalty;
  std::optional<int> max_new_tokens;
};

// Parses the JSON text; `file` names it in errors. Wrong types throw exq::Error naming the key.
GenerationConfig parse_generation_config(const std::string& json_text, const std::string& file);
// Reads model_dir/generation_config.json; a missing file gives an empty config.
GenerationConfig load_generation_config(const std::filesystem::path& model_dir);

// Sampler settings: SamplerConfig's defaults, overridden by what the file sets.
// do_sample: false (explicit) means greedy, as in transformers.
SamplerConfig sampler_defaults(const GenerationConfig& gen);

}  // namespace exq::runtime
