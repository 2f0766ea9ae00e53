// The Llama-family decoder (llama / mistral / qwen2 / qwen3 / phi3) on the CPU backend: loads a Hugging Face
// folder and runs tokens through it with a KV cache. All activations and arithmetic are
// float32 (SmolLM2's residual stream reaches ~25,000, beyond what half precision keeps).
#pragma once

#include <cstdint>
#include <filesystem>
#include <functional>
#include <span>

#include "backend/cpu/rotary.h"
#include "io/hf_config.h"
#include "model/kv_cache.h"
#include "model/llama_weights.h"
#include "model/lora.h"

namespace exq::model {

class LlamaModel {
 public:
  // Reads config.json and the safetensors weights of `dir`; see load_llama_weights for errors.
  static LlamaModel load(const std::filesystem::path& dir);
  LlamaModel(io::ModelConfig config, LlamaWeights weights);

  const io::ModelConfig& config() const { return config_; }
  const LlamaWeights& weights() const { return weights_; }
  // A cache of the model's KV quantization (set_kv_quant; none at first).
  KvCache make_cache(int64_t max_len) const;
  // The KV cache kind of every later make_cache, and of a CudaLlama built from this model
  // (CUDA: a q8 cache is int8 + fp16 scales on the device). Throws exq::Error when the model's
  // head_dim does not suit it.
  void set_kv_quant(KvQuant quant);
  KvQuant kv_quant() const { return kv_quant_; }
  // Experts of the MoE layers 0 .. n-1 stay in host memory and run on the CPU in a CudaLlama
  // built from this model (the CLI's --cpu-moe / --n-cpu-moe); the model must then outlive it.
  // No effect on the CPU forward.
  void set_cpu_moe_layers(int64_t n);
  int64_t cpu_moe_layers() const { return cpu_moe_layers_; }
  // Replaces the rotary settings (the CLI's --rope-* flags): every later forward, make_cache and
  // CudaLlama built from this model use them. Throws exq::Error for values check_rope refuses.
  void set_rope(double theta, const io::RopeScaling& scaling, int64_t max_position_embeddings);
  // Merges a LoRA adapter into the linear weights (model/lora.h); before any CudaLlama is built
  // from this model. Throws exq::Error for a target that is not a dense linear of it.
  void merge_lora(const LoraAdapter& adapter);

  // Runs tokens at positions cache.length() .. +T-1 (one batched pass: prefill or decode) and
  // appends their keys/values to the cache. Returns F32 logits [T, vocab] when all_logits,
  // else [1, vocab] for the last token. Throws exq::Error for an empty input, a token id
  // outside the vocabulary, a full cache or a cache of another shape; the cache is unchanged then.
  Tensor forward(std::span<const int32_t> tokens, KvCache& cache, bool all_logits = false);
  // One token for each of several sequences in one pass (the linears see all rows at once):
  // tokens[r] runs at caches[r]'s next position and is appended there. Returns F32 logits
  // [rows, vocab]. Throws exq::Error as forward() does, and for a cache given twice or a count
  // of caches other than the tokens'; no cache changes then.
  Tensor forward_batch(std::span<const int32_t> tokens, std::span<KvCache* const> caches);
  // forward() without the head: the final norm's output F32 [T, hidden] (what embedding models
  // pool: runtime/embedding.h).
  Tensor hidden_states(std::span<const int32_t> tokens, KvCache& cache);

  // For tests: called with the residual stream [T, hidden] entering layer l, and with
  // l = num_layers for the final-norm output. An empty function turns it off.
  void set_hidden_capture(std::function<void(int layer, const TensorView& hidden)> cb);

 private:
  // forward() (one cache, T tokens) and forward_batch() (T caches, a token each): the logits of
  // the last row or of every row, or the final norm's output.
  enum class Output { kLastLogits, kAllLogits, kHidden };
  Tensor run(std::span<const int32_t> tokens, std::span<KvCache* const> caches, Output output);
  void check_cache(const KvCache& cache, int64_t tokens) const;
  void init_rope();  // inv_freq_, rope_scale_ and rope_ from config_

  io::ModelConfig config_;
  LlamaWeights weights_;
  std::vector<float> inv_freq_;  // [head_dim / 2]
  float rope_scale_ = 1.0f;      // YaRN's / longrope's attention factor on cos / sin
  bool rope_long_ = false;       // longrope: inv_freq_ holds the long factors' frequencies
  cpu::RopeTable rope_;          // cos/sin [positions, head_dim / 2], grown on demand
  cpu::RopeTable rope_local_;    // gemma3's sliding-window layers (rope_local_theta), else empty
  std::vector<float> inv_freq_local_;
  std::function<void(int, const TensorView&)> capture_;
  KvQuant kv_quant_ = KvQuant::kNone;
  int64_t cpu_moe_layers_ = 0;
};

}  // namespace exq::model
