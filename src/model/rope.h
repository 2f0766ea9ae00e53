// Rotary inverse frequencies of a config, as transformers computes them (float32), including
// linear, llama3, YaRN and LongRoPE scaling, and their attention factor (cos and sin are scaled by it).
#pragma once

#include <vector>

#include "backend/cpu/rotary.h"
#include "io/hf_config.h"

namespace exq::model {

// Throws exq::Error naming the value when the config's rotary settings cannot run (a theta or
// factor out of range, llama3's band upside down, a yarn context below 1). read_config checks a
// config.json's; this checks the --rope-* flags' result.
void check_rope(const io::ModelConfig& config);
// inv_freq[i], i < rope_dim() / 2, for a run whose context (KV cache) holds `context` positions:
// longrope takes its long factors above the original context (llama.cpp's rule), else the short.
std::vector<float> rope_inv_freq(const io::ModelConfig& config, int64_t context);
bool rope_uses_long_factors(const io::ModelConfig& config, int64_t context);
// The factor cos and sin are multiplied by: 1 but for YaRN (0.1 ln(factor) + 1 by default) and
// longrope (sqrt(1 + ln(factor) / ln(original)) by default).
float rope_attention_factor(const io::ModelConfig& config);
// gemma3's sliding-window layers: the config with rope_local_theta and no scaling.
io::ModelConfig local_rope_config(const io::ModelConfig& config);
// cos / sin of the config's rotary for positions [0, positions), `positions` being the context.
cpu::RopeTable rope_table(const io::ModelConfig& config, int64_t positions);

}  // namespace exq::model
