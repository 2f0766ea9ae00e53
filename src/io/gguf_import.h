// GGUF (llama, qwen2, qwen3, qwen3moe or granite architecture, gpt2 byte-level BPE tokenizer; llama files
// with experts are Mixtral) -> Hugging Face folder: fp16
// model.safetensors with HF tensor names and layouts, config.json, generation_config.json,
// tokenizer.json, tokenizer_config.json and special_tokens_map.json. What the import cannot
// reproduce faithfully (other architectures, tokenizers, tensor types) is an exq::Error.
#pragma once

#include <filesystem>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "core/tensor.h"
#include "io/gguf.h"

namespace exq::io {

// "blk.3.attn_q.weight" -> "model.layers.3.self_attn.q_proj.weight"; experts by the names of
// `arch` (llama: Mixtral's, qwen3moe: Qwen3-MoE's), "blk.3.ffn_gate_exps.weight" (all of a
// layer's experts) -> "model.layers.3.block_sparse_moe.experts.*.w1.weight". Throws for names
// the import does not know.
std::string gguf_to_hf_name(const std::string& gguf_name, const std::string& arch = "llama");

struct HfTensor {
  std::string name;
  Tensor tensor;  // float16, HF shape (GGUF dims reversed), q/k rows in HF rotary order
};
// Every tensor of the file, dequantized in parallel, in GGUF order; a layer's 3-D expert tensor
// becomes one tensor an expert.
std::vector<HfTensor> gguf_to_hf_tensors(const GgufFile& gguf);

nlohmann::ordered_json hf_config_from_gguf(const GgufFile& gguf);
nlohmann::ordered_json hf_generation_config_from_gguf(const GgufFile& gguf);
// tokenizer.ggml.model must be "gpt2" and tokenizer.ggml.pre one of smollm, llama-bpe,
// qwen2, gpt2; the pre-tokenizer written is the one HF uses for that family.
nlohmann::ordered_json hf_tokenizer_from_gguf(const GgufFile& gguf);
nlohmann::ordered_json hf_tokenizer_config_from_gguf(const GgufFile& gguf);
nlohmann::ordered_json hf_special_tokens_map_from_gguf(const GgufFile& gguf);

// What a GGUF file holds and whether import_gguf can take it, without dequantizing: format
// version, architecture and sizes (as the config would have them), tensor count per ggml type,
// data bytes and bits per value, the tokenizer's model and pre type, and "problems": every
// reason the import would stop (architecture, tokenizer, unsupported tensor types with their
// counts, unknown tensor names), empty when it would succeed.
nlohmann::ordered_json gguf_summary(const GgufFile& gguf);

// Writes the whole folder (created if needed), every file atomically. Returns the files.
std::vector<std::filesystem::path> import_gguf(const std::filesystem::path& gguf_path,
                                               const std::filesystem::path& out_dir);

}  // namespace exq::io
