// tests/model/data/gemma3_tiny stored as a multimodal Gemma 3 checkpoint (4B-27B): config.json
// of model_type gemma3 with the language model's config under text_config, its tensors under
// language_model.model. (transformers 4.50) or model.language_model. (transformers 5), beside a
// vision tower and a projector exq leaves alone. Header-only, for the model and quant tests.
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

inline void write_multimodal_gemma3(const std::filesystem::path& dir, bool transformers5) {
  const std::filesystem::path src = std::filesystem::path(EXQ_SOURCE_DIR) / "tests" / "model" / "data" / "gemma3_tiny";
  std::filesystem::create_directories(dir);
  nlohmann::json text = nlohmann::json::parse(read_file(src / "config.json"));
  nlohmann::json config = {{"architectures", {"Gemma3ForConditionalGeneration"}},
                           {"model_type", "gemma3"},
                           {"bos_token_id", text["bos_token_id"]},
                           {"eos_token_id", {1, 106}},
                           {"torch_dtype", text["torch_dtype"]},
                           {"mm_tokens_per_image", 256},
                           {"vision_config", {{"model_type", "siglip_vision_model"}, {"hidden_size", 8}}}};
  for (const char* k : {"architectures", "bos_token_id", "eos_token_id", "pad_token_id", "torch_dtype"}) text.erase(k);
  config["text_config"] = text;
  std::ofstream(dir / "config.json") << config.dump(2);
  const io::SafetensorsModel files = io::SafetensorsModel::open(src);
  const std::string prefix = transformers5 ? "model.language_model." : "language_model.model.";
  std::vector<io::NamedTensor> list;
  for (const std::string& n : files.names()) list.push_back({prefix + n.substr(6), files.get(n)});  // "model."
  Tensor vision(DType::F16, {8, 8}), projector(DType::F16, {8, 64});
  std::memset(vision.raw(), 0, vision.nbytes());
  std::memset(projector.raw(), 0, projector.nbytes());
  list.push_back({transformers5 ? "model.vision_tower.vision_model.embeddings.patch_embedding.weight"
                                : "vision_tower.vision_model.embeddings.patch_embedding.weight",
                  vision.view()});
  list.push_back({transformers5 ? "model.multi_modal_projector.mm_input_projection_weight"
                                : "multi_modal_projector.mm_input_projection_weight",
                  projector.view()});
  io::write_safetensors(dir / "model.safetensors", list);
}

}  // namespace exq::test
