// Rotary inverse frequencies of a config, as transformers computes them (float32), including
// linear, llama3 and YaRN rope scaling, and YaRN's attention factor (cos and sin are scaled by it).
#pragma once

#include <vector>

#include "backend/cpu/rotary.h"
#include "io/hf_config.h"

namespace exq::model {

// Throws exq::Error naming the value when the config's rotary settings cannot run (a theta or
// factor out of range, llama3's band upside down, a yarn context below 1). read_config checks a
// config.json's; this checks the --rope-* flags' result.
void check_rope(const io::ModelConfig& config);
// inv_freq[i], i < head_dim / 2.
std::vector<float> rope_inv_freq(const io::ModelConfig& config);
// The factor cos and sin are multiplied by: 1 but for YaRN (0.1 ln(factor) + 1 by default).
float rope_attention_factor(const io::ModelConfig& config);
// cos / sin of the config's rotary for positions [0, positions).
cpu::RopeTable rope_table(const io::ModelConfig& config, int64_t positions);

}  // namespace exq::model
