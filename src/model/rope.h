// Rotary inverse frequencies of a config, as transformers computes them (float32), including
// linear and llama3 rope scaling.
#pragma once

#include <vector>

#include "io/hf_config.h"

namespace exq::model {

// inv_freq[i], i < head_dim / 2.
std::vector<float> rope_inv_freq(const io::ModelConfig& config);

}  // namespace exq::model
