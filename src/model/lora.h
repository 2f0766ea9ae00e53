// PEFT LoRA adapters (adapter_config.json + adapter_model.safetensors) merged into a dense
// model's linear weights: W + scale * B A with scale = lora_alpha / r (lora_alpha / sqrt(r) with
// use_rslora), as peft's merge_and_unload computes it. What the merge cannot reproduce (DoRA,
// fan_in_fan_out, trained biases or full modules, embedding adapters; an EXL2 base for a merged
// folder) is an exq::Error naming the file and field or tensor.
#pragma once

#include <filesystem>
#include <map>
#include <string>
#include <vector>

#include "core/tensor.h"
#include "io/safetensors.h"
#include "model/llama_weights.h"

namespace exq::model {

struct LoraPair {
  TensorView a;  // lora_A [r, in]
  TensorView b;  // lora_B [out, r]
};

struct LoraAdapter {
  std::filesystem::path dir;
  double alpha = 0;        // lora_alpha
  bool rslora = false;     // use_rslora: the scale divides by sqrt(r)
  double user_scale = 1;   // llama.cpp's --lora-scaled
  io::SafetensorsFile file;
  std::map<std::string, LoraPair> pairs;  // base weight name ("model.layers.0.self_attn.q_proj.weight")

  // The factor of B A for a pair of rank r.
  double scale(int64_t r) const;
};

// Reads and checks an adapter folder. user_scale multiplies the adapter's own scale.
LoraAdapter load_lora(const std::filesystem::path& dir, double user_scale = 1.0);

// W + scale * B A in W's dtype (F32, F16 or BF16; the sum in float32, rounded once). Throws
// exq::Error naming `name` for shapes that do not fit.
Tensor merge_lora(const TensorView& w, const LoraPair& pair, double scale, const std::string& name);

// Merges an adapter into loaded weights (--lora of generate, chat, ppl, serve, bench): each
// target becomes a DenseLinear over a merged copy kept in w.owned; an EXL2 target is dequantized
// to fp16 first and stays fp16. Throws exq::Error naming the tensor for a target that is not a
// linear of the model (the embedding, a tied head, a layer past the last).
void merge_lora(LlamaWeights& w, const LoraAdapter& adapter);

// A dense Hugging Face folder with every adapter merged, written to out_dir: model.safetensors
// (sharded as HF does past 5 GB) and the base's other files (config, tokenizer) copied. Every
// adapter tensor must name a 2-D weight of the base. Returns the files written.
std::vector<std::filesystem::path> merge_lora_folder(const std::filesystem::path& base_dir,
                                                     const std::vector<LoraAdapter>& adapters,
                                                     const std::filesystem::path& out_dir);

}  // namespace exq::model
