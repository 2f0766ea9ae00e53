// Small helpers shared by the model-running commands (info, generate, ppl): argument checks
// that turn user mistakes into one precise exq::Error line, and number formatting.
#pragma once

#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <vector>

#include <CLI/CLI.hpp>

#include "model/llama.h"
#include "runtime/generation_config.h"
#include "tokenizer/tokenizer.h"
#include "tokenizer/tokenizer_config.h"

namespace exq::cli {

// Throws exq::Error when `dir` is not an existing folder with a config.json.
void require_model_dir(const std::filesystem::path& dir);
// Reads a whole text file; throws exq::Error naming it when it cannot be read.
std::string read_text_file(const std::filesystem::path& path);
// Applies --threads (0 keeps the default); throws exq::Error for a negative count.
void apply_threads(int threads);
// A model folder ready to generate from (generate, serve): weights, tokenizer, tokenizer config,
// generation_config.json and the stop ids (runtime::stop_token_ids). Checks the folder first.
struct GenerationModel {
  model::LlamaModel model;
  tokenizer::Tokenizer tok;
  tokenizer::TokenizerConfig tc;
  runtime::GenerationConfig gen;
  std::vector<int32_t> eos_ids;
};
GenerationModel load_generation_model(const std::filesystem::path& dir);

// The whole of `text` as a number (std::stod), or nothing.
std::optional<double> parse_number(const std::string& text);

// 134515008 -> "134,515,008".
std::string group_digits(int64_t v);

// --device of generate / ppl: "cpu", "cuda", or "auto" (CUDA when this build has it and a usable
// GPU is present, else the CPU). Throws exq::Error for another value, and for "cuda" without
// CUDA built in or without a usable GPU (saying why).
enum class Device { Cpu, Cuda };
Device resolve_device(const std::string& flag);

// --cache-type of generate, chat, ppl, serve and bench (llama.cpp's names), and llama.cpp's
// --cache-type-k / --cache-type-v (-ctk / -ctv), which must then name the same type: the cache
// takes one type for keys and values.
struct CacheTypeFlags {
  std::string both = "f16";  // --cache-type
  std::string k, v;          // --cache-type-k, --cache-type-v (empty: --cache-type's)
};
void add_cache_type_flags(CLI::App& cmd, CacheTypeFlags& flags);
// Sets the model's KV cache kind from the flags ("f16", "q8_0" / "q8" or "q4"); exq::Error for
// another value, keys and values of different types, or a model whose head_dim does not suit it.
void apply_cache_type(model::LlamaModel& model, const CacheTypeFlags& flags);

// llama.cpp's rotary overrides, for generate, chat, ppl, serve and bench. Unset flags keep the
// model's config.json.
struct RopeFlags {
  std::optional<double> freq_base;   // --rope-freq-base: rope_theta
  std::string scaling;               // --rope-scaling: none, linear or yarn ("" keeps the model's)
  std::optional<double> scale;       // --rope-scale N: the factor (context x N)
  std::optional<double> freq_scale;  // --rope-freq-scale F: the factor 1 / F
  std::optional<int64_t> yarn_orig_ctx;  // --yarn-orig-ctx: yarn's trained context
  bool any() const { return freq_base || !scaling.empty() || scale || freq_scale || yarn_orig_ctx; }
};
void add_rope_flags(CLI::App& cmd, RopeFlags& flags);
// Applies the flags to the model (LlamaModel::set_rope). A scale without --rope-scaling changes
// the model's own scaling's factor, or adds linear scaling to a model without one; linear set
// here extends the context (max_position_embeddings) by the factor, yarn reaches
// original x factor. Throws exq::Error for a bad value or combination, naming the flag.
void apply_rope_flags(model::LlamaModel& model, const RopeFlags& flags);

// llama.cpp's --cpu-moe (the experts of every MoE layer) and --n-cpu-moe N (those of layers
// 0 .. N-1) kept in host memory and run on the CPU when the model runs on CUDA; for generate,
// chat, ppl, serve and bench.
struct CpuMoeFlags {
  bool all = false;     // --cpu-moe
  int64_t layers = 0;   // --n-cpu-moe N
};
void add_cpu_moe_flags(CLI::App& cmd, CpuMoeFlags& flags);
// LlamaModel::set_cpu_moe_layers from the flags; a note on stderr when they are given for a
// model without experts. Throws exq::Error for N < 0.
void apply_cpu_moe_flags(model::LlamaModel& model, const CpuMoeFlags& flags);

// LoRA adapters (llama.cpp's --lora ADAPTER and --lora-scaled ADAPTER SCALE, repeatable), for
// merge-lora and, merged at load into a dense model, generate, chat, ppl, serve and bench.
struct LoraFlags {
  std::vector<std::string> lora;
  std::vector<std::string> lora_scaled;  // ADAPTER SCALE pairs
  bool any() const { return !lora.empty() || !lora_scaled.empty(); }
};
void add_lora_flags(CLI::App& cmd, LoraFlags& flags);
// Reads every adapter the flags name; exq::Error for a bad scale or adapter.
std::vector<model::LoraAdapter> load_lora_flags(const LoraFlags& flags);
// Merges them into the model (LlamaModel::merge_lora).
void apply_lora_flags(model::LlamaModel& model, const LoraFlags& flags);

}  // namespace exq::cli
