// The synthetic model of cuda_decode_bench.cpp: random EXL2 layers of a Llama-3-8B, SmolLM2,
// Mixtral or Qwen3-MoE shape, built on the host with fixed seeds so every run times the same
// weights. Included by that one program.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "core/tensor.h"
#include "io/exl2.h"
#include "io/hf_config.h"
#include "model/llama_weights.h"

namespace exq::decode_bench {

// The model's host side: packed layers shared by every layer of one shape (each layer still
// gets its own device copy), an fp16 table used as embedding and, untied, as head.
struct HostModel {
  io::ModelConfig config;
  std::vector<std::unique_ptr<io::Exl2Packed>> packed;  // q, k, v, o, gate, up, down
  std::vector<std::string> options;                     // their options' descriptions
  Tensor table;                                         // [vocab, hidden] f16
  Tensor router;                                        // mixtral: [experts, hidden] f16
  model::LlamaWeights weights;
};

// A model of `layers` layers and `vocab` tokens (config, per-layer Linears over `packed`).
// attn_row / mlp_row: exllamav2 option table rows, -1 for 1:4b_128g everywhere.
// smol: SmolLM2-135M's shape (hidden 576, intermediate 1536, 9 / 3 heads of 64) instead;
// mixtral / qwen3moe: their mixture-of-experts shapes (every expert views the same packed layers).
std::unique_ptr<HostModel> make_model(int64_t layers, int64_t vocab, int attn_row = -1,
                                      int mlp_row = -1, bool smol = false, bool mixtral = false,
                                      bool qwen3moe = false);

}  // namespace exq::decode_bench
