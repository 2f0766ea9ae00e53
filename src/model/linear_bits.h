// Bits per weight of every linear layer of a Llama-family folder, read from the stored tensors
// without loading the model: EXL2 layers from their group table (q_groups, counted as
// exllamav2 does, see exl2_bits), plain layers from their dtype. `exq info` prints it.
#pragma once

#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

#include "io/hf_config.h"
#include "io/safetensors.h"
#include "model/exl2_linear.h"

namespace exq::model {

struct LinearBits {
  // "self_attn.q_proj", ..., or "lm_head"; a mixture of experts' "experts.gate", "experts.up",
  // "experts.down": each the sum over the layer's experts (format "mixed" when they differ).
  std::string name;
  std::string format;  // "exl2", or the dtype of a plain weight ("F16", "BF16", "F32")
  int64_t groups = 0;  // EXL2 groups, 0 for plain weights
  Exl2Bits bits;
};

struct LayerBits {
  std::vector<LinearBits> linears;  // q, k, v, o, gate, up, down (or the experts')
  Exl2Bits total;                   // their sum
};

struct ModelBits {
  std::vector<LayerBits> layers;
  Exl2Bits decoder;  // all decoder linears together
  LinearBits head;   // format "tied" when the head is the embedding
};

// Validates every EXL2 layer (io::validate_exl2) and the shape of every plain one; errors are
// exq::Error naming the tensor and its file. A GPTQ layer (KEY.qweight) is rejected.
ModelBits linear_bits(const io::ModelConfig& config, const io::SafetensorsModel& files,
                      const std::filesystem::path& dir);

}  // namespace exq::model
