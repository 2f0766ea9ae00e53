// The transformers-side settings of a model folder (tokenizer_config.json, falling back to
// special_tokens_map.json and chat_template.jinja / chat_template.json): chat template and the
// names of the BOS / EOS / PAD tokens.
#pragma once

#include <filesystem>
#include <string>

namespace exq::tokenizer {

struct TokenizerConfig {
  std::string chat_template;  // the template string, or the "default" one of a named list
  std::string bos_token, eos_token, pad_token;  // token contents; empty when unset
  bool add_bos = false, add_eos = false;
};

// Missing files give defaults; a file that is not valid JSON or has a field of the wrong type
// throws exq::Error naming the file and the field.
TokenizerConfig load_tokenizer_config(const std::filesystem::path& model_dir);

}  // namespace exq::tokenizer
