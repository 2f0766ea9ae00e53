// A tiny model of tests/model/data stored as a multimodal checkpoint: config.json of the
// wrapper's model_type (gemma3: Gemma 3 4B-27B; mistral3: Mistral Small 3.1 / 3.2) with the
// language model's config under text_config, its tensors under language_model.model.
// (transformers 4.5x) or model.language_model. (transformers 5) and its head, when untied, as
// language_model.lm_head (4.5x) or lm_head (5), beside a vision tower and a projector exq leaves
// alone. Header-only, for the model and quant tests.
#pragma once

#include <nlohmann/json.hpp>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "io/safetensors.h"
#include "test_support.h"

namespace exq::test {

struct Multimodal {
  const char* tiny;         // the folder under tests/model/data
  const char* model_type;   // the wrapper's
  const char* architecture;
  nlohmann::json eos;       // the wrapper's eos_token_id
};
inline const Multimodal kGemma3Multimodal{"gemma3_tiny", "gemma3", "Gemma3ForConditionalGeneration", {1, 106}};
inline const Multimodal kMistral3Multimodal{"mistral_swa_tiny", "mistral3", "Mistral3ForConditionalGeneration", 2};

inline void write_multimodal(const std::filesystem::path& dir, const Multimodal& mm, bool transformers5) {
  const std::filesystem::path src = std::filesystem::path(EXQ_SOURCE_DIR) / "tests" / "model" / "data" / mm.tiny;
  std::filesystem::create_directories(dir);
  nlohmann::json text = nlohmann::json::parse(read_file(src / "config.json"));
  nlohmann::json config = {{"architectures", {mm.architecture}},
                           {"model_type", mm.model_type},
                           {"bos_token_id", text["bos_token_id"]},
                           {"eos_token_id", mm.eos},
                           {"torch_dtype", text["torch_dtype"]},
                           {"vision_config", {{"model_type", "vision"}, {"hidden_size", 8}}}};
  for (const char* k : {"architectures", "bos_token_id", "eos_token_id", "pad_token_id", "torch_dtype"}) text.erase(k);
  config["text_config"] = text;
  std::ofstream(dir / "config.json") << config.dump(2);
  const io::SafetensorsModel files = io::SafetensorsModel::open(src);
  const std::string prefix = transformers5 ? "model.language_model." : "language_model.model.";
  std::vector<io::NamedTensor> list;
  for (const std::string& n : files.names()) {
    if (n == "lm_head.weight") list.push_back({transformers5 ? n : "language_model." + n, files.get(n)});
    else list.push_back({prefix + n.substr(6), files.get(n)});  // "model."
  }
  Tensor vision(DType::F16, {8, 8}), projector(DType::F16, {8, 64});
  std::memset(vision.raw(), 0, vision.nbytes());
  std::memset(projector.raw(), 0, projector.nbytes());
  list.push_back({transformers5 ? "model.vision_tower.patch_embedding.weight" : "vision_tower.patch_embedding.weight",
                  vision.view()});
  list.push_back({transformers5 ? "model.multi_modal_projector.linear_1.weight" : "multi_modal_projector.linear_1.weight",
                  projector.view()});
  io::write_safetensors(dir / "model.safetensors", list);
}

}  // namespace exq::test
